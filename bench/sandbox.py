"""Tool-call overhead: the sandboxed spawner vs plain ``subprocess`` for ``/bin/true``.

``sandbox`` is :func:`spacebot.tools.sandbox.run` as a worker calls it — native spawner, Landlock
ruleset (files, /dev, TCP port rules for ``loopback-deny``, signal/abstract-socket scopes), no
capabilities, rlimits, output pipes, the end-of-call sweep of the session, group and escapees.
``plain`` is ``asyncio.create_subprocess_exec`` with pipes, waited and read to the end.
Both run from the same event loop, interleaved so load spikes hit both.
Run: ``python bench/sandbox.py [--json] [--calls N]``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, parser, percentile

from spacebot.tools import sandbox
from spacebot.tools.sandbox import Limits, Network


async def _plain() -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "/bin/true", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    await proc.communicate()
    return (time.perf_counter() - started) * 1000


async def _sandboxed(ws: Path, network: Network) -> float:
    started = time.perf_counter()
    result = await sandbox.run(
        ["/bin/true"], cwd=ws, workspace=ws, limits=Limits(timeout=30), network=network
    )
    elapsed = (time.perf_counter() - started) * 1000
    assert result.exit_code == 0, result
    return elapsed


async def main(calls: int) -> dict[str, object]:
    if not sandbox.isolated():
        raise SystemExit(f"the native sandbox with Landlock is not available: {sandbox.summary()}")
    ws = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    network = Network("loopback-deny", 65000)  # a port rule as in production (nothing listens)
    try:
        for _ in range(20):  # warm-up: imports, page cache, the loop's machinery
            await _plain()
            await _sandboxed(ws, network)
        plain: list[float] = []
        boxed: list[float] = []
        for _ in range(calls):
            plain.append(await _plain())
            boxed.append(await _sandboxed(ws, network))
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    sb = {"p50_ms": round(percentile(boxed, 50), 3), "p99_ms": round(percentile(boxed, 99), 3)}
    pl = {"p50_ms": round(percentile(plain, 50), 3), "p99_ms": round(percentile(plain, 99), 3)}
    return {
        "sandbox": sb,
        "plain": pl,
        "ratio_p50": round(sb["p50_ms"] / pl["p50_ms"], 3),
        "overhead_p50_ms": round(sb["p50_ms"] - pl["p50_ms"], 3),
        "calls": calls,
        "landlock_abi": sandbox.landlock_abi(),
        "machine": machine(),
    }


if __name__ == "__main__":
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=300, help="calls of each kind (default 300)")
    args = p.parse_args()
    r = asyncio.run(main(args.calls))
    sb, pl = r["sandbox"], r["plain"]
    assert isinstance(sb, dict) and isinstance(pl, dict)
    rows: list[tuple[str, ...]] = [
        ("spawner", "p50 ms", "p99 ms"),
        ("sandbox (native, landlock)", f"{sb['p50_ms']:.2f}", f"{sb['p99_ms']:.2f}"),
        ("plain subprocess", f"{pl['p50_ms']:.2f}", f"{pl['p99_ms']:.2f}"),
        ("ratio p50 / overhead p50", f"{r['ratio_p50']:.2f}x", f"{r['overhead_p50_ms']:+.2f} ms"),
    ]
    emit(r, rows, args.json)
