"""Shared bits of the benchmark scripts: percentiles, the table, the JSON last line."""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Sequence
from typing import Any

BENCH_LIMITS = {
    "max_connections_per_ip": 1000,
    "create_per_minute": 10_000,
    "open_per_minute": 10_000,
    "list_per_minute": 10_000,
}
"""Every simulated person connects from loopback: the web chat's per-address rate limits (meant
for one browser) would throttle the bench, not measure it."""


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    return {"cores": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the shared ``--json`` flag."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return p


def table(rows: list[tuple[str, ...]]) -> str:
    """A plain aligned text table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(result: dict[str, Any], rows: list[tuple[str, ...]], as_json: bool) -> None:
    """Print the table, then (with ``--json``) the JSON object as the very last line."""
    print(table(rows), flush=True)
    if as_json:
        print(json.dumps(result), flush=True)
