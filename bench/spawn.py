"""Zygote fork vs a cold interpreter, to ``Ready`` on the bus: latency and idle USS per child.

Both modes run through a real supervisor (``supervisor.spawn_mode`` = ``zygote`` / ``cold``) with
the default preload (msgspec, zmq, psutil, numpy, anthropic, openai), so the child is the same
and so is the path: spawn request on the control socket → fork or exec → child connects its
DEALER → ``Ready`` reaches the supervisor → reply. Run: ``python bench/spawn.py [--json]``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, parser, percentile

from spacebot.config import SupervisorSection
from spacebot.ipc.messages import ProcState
from spacebot.testing import SupervisorProcess, short_tempdir

PRELOAD = SupervisorSection().preload


def config(mode: str) -> str:
    preload = ", ".join(f'"{m}"' for m in PRELOAD)
    return f"""
[runtime]
log_level = "warning"
[supervisor]
spawn_mode = "{mode}"
allow_test_targets = true
preload = [{preload}]
[processes.worker]
ready_timeout = 60.0
heartbeat_interval = 2.0
"""


async def measure(mode: str, count: int, settle: float) -> dict[str, float]:
    root = short_tempdir(f"sb-bench-{mode}-")
    sup = SupervisorProcess(root, config_text=config(mode))
    await sup.start(timeout=120)
    try:
        latencies = []
        pids = []
        for i in range(count):
            started = time.perf_counter()
            spawned = await sup.spawn("spacebot.procs.testkit:idle", id=f"worker:{mode}{i}", timeout=120)
            latencies.append((time.perf_counter() - started) * 1000)
            if "-v" in sys.argv:
                print(f"{mode} {i} {latencies[-1]:.1f}ms", file=sys.stderr)
            assert spawned.state in (ProcState.READY, ProcState.IDLE), spawned
            pids.append(spawned.pid)
        await asyncio.sleep(settle)  # let each child's first heartbeats and GCs happen before reading USS
        uss = [psutil.Process(pid).memory_full_info().uss / 2**20 for pid in pids]
        return {
            "p50_ms": round(percentile(latencies, 50), 2),
            "p99_ms": round(percentile(latencies, 99), 2),
            "idle_uss_mb": round(percentile(uss, 50), 2),
            "spawns": count,
        }
    finally:
        await sup.stop()
        shutil.rmtree(root, ignore_errors=True)


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--count", type=int, default=40, help="zygote spawns (default 40)")
    p.add_argument("--cold-count", type=int, default=8, help="cold spawns (default 8; each takes seconds)")
    p.add_argument("--settle", type=float, default=3.0, help="seconds idle before reading USS")
    p.add_argument("-v", action="store_true", help="print every spawn time")
    args = p.parse_args()
    zygote = await measure("zygote", args.count, args.settle)
    cold = await measure("cold", args.cold_count, args.settle)
    result = {
        "zygote": zygote,
        "cold": cold,
        "ratio_p50": round(cold["p50_ms"] / zygote["p50_ms"], 1),
        "machine": machine(),
    }
    rows = [("mode", "spawns", "p50 ms", "p99 ms", "idle USS MiB")]
    for name, r in (("zygote", zygote), ("cold", cold)):
        rows.append(
            (name, str(r["spawns"]), f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['idle_uss_mb']:.2f}")
        )
    rows.append(("cold/zygote p50", "", f"{result['ratio_p50']}x", "", ""))
    emit(result, rows, args.json)


if __name__ == "__main__":
    asyncio.run(main())
