"""Answering while busy: first-token overhead of 50 conversations, idle vs. with work in flight.

Same system, same run, two phases over the same 50 web-chat conversations (their processes already
started): first with nothing else going on (idle), then while 20 workers run 10-second shell tasks
(real processes through the sandbox) and several conversations are being compacted (their
compaction model calls take a few seconds). The fake model waits ``L`` ms before its first event,
so overhead = first streamed characters seen by the sender − send − L.

    python bench/concurrency.py [--conversations 50] [--workers 20] [--rounds 4] [--latency-ms 200] [--json]
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_LIMITS, emit, machine, parser, percentile
from chat import _conversation, _Fake

from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import Notice
from spacebot.testing import ChatSystem, short_tempdir

WORKER = "You are a worker"
COMPACT = "You compact a chat transcript"
SUMMARY = '{"summary": "an earlier part of the conversation", "memories": [{"content": "bench memory"}]}'


def rules(work_seconds: float, compaction_seconds: float) -> list[dict[str, Any]]:
    def call(name: str, **args: Any) -> dict[str, Any]:
        return {"name": name, "arguments": args}

    return [
        {"name": "compaction", "system": COMPACT, "text": SUMMARY, "delay": compaction_seconds},
        {"name": "worker-done", "system": WORKER, "tool_result": "shell", "text": "the job is done"},
        {
            "name": "worker-shell",
            "system": WORKER,
            "tool_calls": [call("shell", command=f"sleep {work_seconds}; echo finished", timeout=600)],
        },
        {
            "name": "retrigger",
            "user": r"\(new\) finished \(",
            "tool_calls": [call("reply", content="work done")],
        },
        {
            "name": "start-work",
            "user": r"\(new\) \S+: start job (\d+)",
            "tool_calls": [call("spawn_worker", task="job {user_group}"), call("reply", content="started")],
        },
        {
            "name": "long",
            "user": r"\(new\) \S+: long ",
            "tool_calls": [call("reply", content="ok, long noted")],
        },
    ]


async def _phase(
    chats: list[Any], convs: list[str], rounds: int, think: float, tag: str
) -> list[float | None]:
    rng = random.Random(tag)
    results = await asyncio.gather(
        *(
            _conversation(i, [chats[i]], conv, rounds + 1, think, rng, prefix=tag)
            for i, conv in enumerate(convs)
        )
    )
    return [x for cold, warm in results for x in [cold, *warm]]


async def run(
    conversations: int, workers: int, rounds: int, latency_ms: float, think: float, work_seconds: float
) -> dict[str, Any]:
    root = short_tempdir("sb-conc-")
    fake = _Fake(latency_ms / 1000, root, rules(work_seconds, compaction_seconds=work_seconds / 2))
    await fake.start()
    lat = latency_ms / 1000
    compacting = max(2, conversations // 10)
    try:
        settings = {"idle_timeout": 0, "max_workers": 5, "context_window": 8000}
        async with ChatSystem(
            root, fake, channel=settings, worker={"wall_clock_limit": 0.0}, webchat=BENCH_LIMITS
        ) as system:
            bus = BusClient("bench", system.sup.endpoints.bus)
            bus.start()
            events = await bus.subscribe("channel.")
            seen: list[Any] = []

            async def collect() -> None:
                async for e in events:
                    seen.append(e)

            collector = asyncio.get_running_loop().create_task(collect())
            owner = await system.client("Owner")
            convs = [await owner.create(f"measured {i}") for i in range(conversations)]
            chats = [await system.client(f"P{i}") for i in range(conversations)]
            for chat, conv in zip(chats, convs, strict=True):
                await chat.open(conv)
            # Start every conversation's process first (not measured), then measure them idle.
            warmup = await _phase(chats, convs, 0, think, "warm")
            idle_all = await _phase(chats, convs, rounds, think, "idle")
            idle = [x for i, x in enumerate(idle_all) if i % (rounds + 1) != 0]

            # Make the system busy: workers in their own conversations, compactions in others.
            work_convs = [await owner.create(f"work {i}") for i in range(workers)]
            for i, conv in enumerate(work_convs):
                await owner.send(conv, f"start job {i}")
            big = [await owner.create(f"compact {i}") for i in range(compacting)]
            for conv in big:
                for j in range(4):
                    await owner.send(conv, f"long {j} " + "lorem ipsum " * 700)
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:  # until every worker runs and a compaction started
                status = await system.sup.status()
                running = [
                    p for p in status.processes if p.kind == "worker" and p.state in ("busy", "idle", "ready")
                ]
                compacting_now = sum(
                    1 for e in seen if isinstance(e.body, Notice) and e.body.text == "started"
                )
                jobs = [p for p in running if not p.task.startswith("compacting")]
                if len(jobs) >= workers and compacting_now >= 1:
                    break
                await asyncio.sleep(0.1)
            busy_workers = len(jobs)
            busy_all = await _phase(chats, convs, rounds, think, "busy")
            busy = [x for i, x in enumerate(busy_all) if i % (rounds + 1) != 0]
            compactions = sum(1 for e in seen if isinstance(e.body, Notice) and e.body.text == "started")
            doubled = 0
            for conv in convs:
                history = await owner.open(conv)
                texts = [m["text"] for m in history["messages"] if m["role"] == "assistant"]
                for m in history["messages"]:
                    if m["role"] == "user":
                        marker = m["text"]  # "question <phase>r<round>c<conversation>." (unique)
                        doubled += max(0, sum(1 for t in texts if marker in t) - 1)
            collector.cancel()
            await bus.close()
    finally:
        await fake.stop()

    def stats(xs: list[float | None]) -> dict[str, float]:
        got = [x - lat for x in xs if x is not None]
        return {
            "overhead_p50_ms": round(percentile(got, 50) * 1000, 2),
            "overhead_p99_ms": round(percentile(got, 99) * 1000, 2),
        }

    idle_s, busy_s = stats(idle), stats(busy)
    return {
        "idle": idle_s,
        "busy": {**busy_s, "workers": busy_workers, "compactions": compactions},
        "ratio_p99": round(busy_s["overhead_p99_ms"] / idle_s["overhead_p99_ms"], 2),
        "lost": sum(1 for x in [*warmup, *idle_all, *busy_all] if x is None),
        "doubled": doubled,
        "conversations": conversations,
        "llm_latency_ms": latency_ms,
        "messages": len(warmup) + len(idle_all) + len(busy_all),
        "machine": machine(),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--conversations", type=int, default=50)
    p.add_argument("--workers", type=int, default=20)
    p.add_argument("--rounds", type=int, default=4, help="measured messages per conversation and phase")
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--think", type=float, default=1.0)
    p.add_argument("--work-seconds", type=float, default=10.0, help="length of each worker's shell task")
    a = p.parse_args()
    r = asyncio.run(run(a.conversations, a.workers, a.rounds, a.latency_ms, a.think, a.work_seconds))
    rows = [
        ("phase", "overhead p50 ms", "overhead p99 ms", "workers", "compactions"),
        ("idle", f"{r['idle']['overhead_p50_ms']:.1f}", f"{r['idle']['overhead_p99_ms']:.1f}", "0", "0"),
        (
            "busy",
            f"{r['busy']['overhead_p50_ms']:.1f}",
            f"{r['busy']['overhead_p99_ms']:.1f}",
            str(r["busy"]["workers"]),
            str(r["busy"]["compactions"]),
        ),
        ("busy / idle p99", f"{r['ratio_p99']:.2f}x", "", "", ""),
        ("messages (lost / doubled)", f"{r['messages']} ({r['lost']} / {r['doubled']})", "", "", ""),
    ]
    emit(r, rows, a.json)


if __name__ == "__main__":
    main()
