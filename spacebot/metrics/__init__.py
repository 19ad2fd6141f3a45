"""Prometheus metrics of the whole service, built from the bus's event stream (docs/metrics.md)."""

from __future__ import annotations

from spacebot.metrics.aggregator import Aggregator

__all__ = ["Aggregator"]
