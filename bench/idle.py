"""CPU use of an idle system: the supervisor with 50 idle children, over 30 seconds.

Reports the supervisor's own CPU % (of one core), the zygote's, and all 50 children together,
from per-thread ``/proc/<pid>/task/<tid>/schedstat`` CPU-time deltas over the window. Children
heartbeat at the default interval.
Run: ``python bench/idle.py [--json] [--children 50] [--seconds 30]``.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, parser

from spacebot.testing import SupervisorProcess, short_tempdir

CONFIG = """
[runtime]
log_level = "warning"
[supervisor]
preload = ["msgspec", "zmq", "zmq.asyncio", "psutil", "numpy", "spacebot.llm.providers.anthropic",
           "spacebot.llm.providers.openai"]
allow_test_targets = true
"""


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """CPU time of every thread of ``procs``, in nanosecond resolution from schedstat.

    ``cpu_times()`` counts in 10 ms clock ticks: a child that heartbeats for 50 µs every two
    seconds would read as zero.
    """
    total = 0
    for proc in procs:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--children", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30.0)
    args = p.parse_args()
    root = short_tempdir("sb-bench-idle-")
    sup = SupervisorProcess(root, config_text=CONFIG)
    await sup.start(timeout=120)
    try:
        await asyncio.gather(
            *(sup.spawn("spacebot.procs.testkit:idle", id=f"worker:idle{i}") for i in range(args.children))
        )
        status = await sup.status()
        pids = {row.id: row.pid for row in status.processes}
        supervisor = [psutil.Process(sup.pid)]
        zygote = [psutil.Process(pids["zygote"])]
        children = [psutil.Process(pid) for ident, pid in pids.items() if ident.startswith("worker:idle")]
        await asyncio.sleep(2.0)  # let start-up work finish before the window opens
        groups = {"supervisor": supervisor, "zygote": zygote, "children": children}
        before = {name: cpu_seconds(procs) for name, procs in groups.items()}
        started = time.monotonic()
        await asyncio.sleep(args.seconds)
        elapsed = time.monotonic() - started
        after = {name: cpu_seconds(procs) for name, procs in groups.items()}
        alive = sum(1 for proc in children if proc.is_running())
    finally:
        await sup.stop()
        shutil.rmtree(root, ignore_errors=True)
    usage = {name: round(100 * (after[name] - before[name]) / elapsed, 3) for name in groups}
    result = {
        "children": args.children,
        "alive_at_end": alive,
        "seconds": round(elapsed, 1),
        "cpu_percent": {**usage, "total": round(sum(usage.values()), 3)},
        "machine": machine(),
    }
    rows = [("process", "CPU % of one core")]
    rows += [(name, f"{value:.3f}") for name, value in result["cpu_percent"].items()]
    rows.append(("(children alive at end)", f"{alive}/{args.children}"))
    emit(result, rows, args.json)


if __name__ == "__main__":
    asyncio.run(main())
