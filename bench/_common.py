"""Shared bits of the benchmark scripts: percentiles, the table, the JSON last line."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Awaitable, Callable, Sequence
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


def table(rows: Sequence[tuple[str, ...]]) -> str:
    """A plain aligned text table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def emit(result: dict[str, Any], rows: Sequence[tuple[str, ...]], as_json: bool) -> None:
    """Print the table, then (with ``--json``) the JSON object as the very last line."""
    print(table(rows), flush=True)
    if as_json:
        print(json.dumps(result), flush=True)


async def interleaved(
    ours: Callable[[], Awaitable[Any]], raw: Callable[[], Awaitable[Any]], calls: int
) -> dict[str, float]:
    """Time ``ours`` and ``raw`` alternately ``calls`` times (after a warm-up of 5 each, and in
    turn first, so drift hits both alike): p50/p99 of the per-pair difference ours − raw (ms), and
    each one's p50."""
    for _ in range(5):
        await ours()
        await raw()
    diffs: list[float] = []
    ours_ms: list[float] = []
    raw_ms: list[float] = []
    for i in range(calls):
        order = (ours, raw) if i % 2 == 0 else (raw, ours)
        took: dict[Any, float] = {}
        for fn in order:
            start = time.perf_counter()
            await fn()
            took[fn] = (time.perf_counter() - start) * 1000
        ours_ms.append(took[ours])
        raw_ms.append(took[raw])
        diffs.append(took[ours] - took[raw])
    return {
        "p50_ms": round(percentile(diffs, 50), 3),
        "p99_ms": round(percentile(diffs, 99), 3),
        "ours_p50_ms": round(percentile(ours_ms, 50), 3),
        "raw_p50_ms": round(percentile(raw_ms, 50), 3),
    }
