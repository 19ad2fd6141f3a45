"""Provider adapters over the official SDKs."""

from __future__ import annotations

from spacebot.llm.providers.base import Provider, make_provider

__all__ = ["Provider", "make_provider"]
