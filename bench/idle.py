"""CPU use and model calls of an idle system: the supervisor, 50 idle children, and one agent
(memory, cortex, 10 idle conversations) over 30 seconds.

Reports the CPU % (of one core) of the supervisor, the zygote, the 50 children together, the
agent's memory, cortex and conversation processes, and the total, from per-thread
``/proc/<pid>/task/<tid>/schedstat`` CPU-time deltas over the window; and how many model calls
reached the fake model server the agent is configured with (``model_calls``; an idle agent must
make none). The cortex runs on an accelerated schedule (every maintenance interval and the
supervision check at ``--cortex-interval`` seconds) so the window holds many of its checks;
``cortex_checks`` counts those that found memory unchanged (and therefore did nothing).
Children heartbeat at the default interval.
Run: ``python bench/idle.py [--json] [--children 50] [--conversations 10] [--seconds 30]``.
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

from spacebot.ipc import ids
from spacebot.ipc.messages import CortexReport, CortexStatus, Kind
from spacebot.llm.fake import FakeLLM
from spacebot.testing import SupervisorProcess, llm_table, short_tempdir

CONFIG = """
agents = ["main"]
[runtime]
log_level = "warning"
[supervisor]
preload = ["msgspec", "zmq", "zmq.asyncio", "psutil", "numpy", "spacebot.llm.providers.anthropic",
           "spacebot.llm.providers.openai"]
allow_test_targets = true
[processes.memory]
ready_timeout = 120.0
[cortex]
decay_interval = {every}
prune_interval = {every}
merge_interval = {every}
association_interval = {every}
supervise_interval = {every}
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


async def cortex_checks(sup: SupervisorProcess) -> int:
    """Checks the cortex made that found memory unchanged (asked over the control client's bus)."""
    from spacebot.ipc.bus import BusClient

    client = BusClient("bench", sup.endpoints.bus)
    client.start()
    try:
        report = await client.request(ids.cortex("main"), CortexStatus(), returns=CortexReport, timeout=30)
    finally:
        await client.close()
    return report.skipped


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--children", type=int, default=50)
    p.add_argument("--conversations", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--cortex-interval", type=float, default=1.0)
    args = p.parse_args()
    root = short_tempdir("sb-bench-idle-")
    async with FakeLLM() as fake:
        fake.add(name="any", text="an idle agent should never ask this")
        config = CONFIG.format(every=args.cortex_interval) + llm_table(fake.openai_url)
        sup = SupervisorProcess(
            root,
            config_text=config,
            env={"SPACEBOT_LLM_BASE_URL": "", "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": ""},
        )
        await sup.start(timeout=180)
        try:
            idle = "spacebot.procs.testkit:idle"
            await asyncio.gather(*(sup.spawn(idle, id=f"worker:idle{i}") for i in range(args.children)))
            conversations = [f"web:idle{i}" for i in range(args.conversations)]
            for conv in conversations:  # one at a time: each loads its (empty) history from memory
                await sup.spawn(
                    "spacebot.procs.channel:serve",
                    kind=Kind.CHANNEL,
                    id=ids.channel("main", conv),
                    args={"agent": "main", "conversation": conv},
                    timeout=60,
                )
            status = await sup.status()
            pids = {row.id: row.pid for row in status.processes}
            groups = {
                "supervisor": [psutil.Process(sup.pid)],
                "zygote": [psutil.Process(pids["zygote"])],
                "children": [psutil.Process(pid) for i, pid in pids.items() if i.startswith("worker:idle")],
                "memory": [psutil.Process(pids[ids.memory("main")])],
                "cortex": [psutil.Process(pids[ids.cortex("main")])],
                "conversations": [psutil.Process(pids[ids.channel("main", c)]) for c in conversations],
            }
            await asyncio.sleep(2.0)  # let start-up work finish before the window opens
            calls_before = len(fake.requests)
            checks_before = await cortex_checks(sup)
            before = {name: cpu_seconds(procs) for name, procs in groups.items()}
            started = time.monotonic()
            await asyncio.sleep(args.seconds)
            elapsed = time.monotonic() - started
            after = {name: cpu_seconds(procs) for name, procs in groups.items()}
            checks = await cortex_checks(sup) - checks_before
            calls = len(fake.requests) - calls_before
            alive = sum(1 for proc in groups["children"] + groups["conversations"] if proc.is_running())
        finally:
            await sup.stop()
            shutil.rmtree(root, ignore_errors=True)
    usage = {name: round(100 * (after[name] - before[name]) / elapsed, 3) for name in groups}
    agent = round(usage["memory"] + usage["cortex"] + usage["conversations"], 3)
    result = {
        "children": args.children,
        "conversations": args.conversations,
        "alive_at_end": alive,
        "seconds": round(elapsed, 1),
        "cpu_percent": {**usage, "agent": agent, "total": round(sum(usage.values()), 3)},
        "model_calls": calls,
        "model_calls_total": len(fake.requests),
        "cortex_checks": checks,
        "cortex_interval": args.cortex_interval,
        "machine": machine(),
    }
    rows = [("process", "CPU % of one core")]
    rows += [(name, f"{value:.3f}") for name, value in result["cpu_percent"].items()]
    rows.append(("(alive at end)", f"{alive}/{args.children + args.conversations}"))
    rows.append(("(model calls in window / since start)", f"{calls} / {len(fake.requests)}"))
    rows.append(("(cortex checks, memory unchanged)", f"{checks}"))
    emit(result, rows, args.json)


if __name__ == "__main__":
    asyncio.run(main())
