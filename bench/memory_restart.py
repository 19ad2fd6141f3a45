"""How long memory is away after a SIGKILL: kill → ``ready`` and kill → first answered request.

Starts a real Spacebot (one agent, a memory holding a few hundred memories and transcript lines),
SIGKILLs ``memory:main`` N times, and after each kill measures when the restarted process says
``Ready`` and when a transcript read sent from outside (retried while memory is away, as every
caller does) is answered. Goal: answering again within 2 s on 2 cores.

    .venv/bin/python bench/memory_restart.py [--kills 8] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import sys
import time

from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import (
    MemoryDraft,
    MemSave,
    ProcState,
    StateChanged,
    TranscriptAppend,
    TranscriptPage,
)
from spacebot.ipc.replies import retry_transient
from spacebot.testing import SupervisorProcess, fast_config, short_tempdir


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(kills: int) -> dict[str, object]:
    root = short_tempdir("sb-memrs-")
    sup = SupervisorProcess(
        root, config_text=fast_config(("main",), 4 * 1024 * 1024, memory={"ready_timeout": 60.0})
    )
    await sup.start(timeout=120)
    bus = BusClient("bench", sup.endpoints.bus)
    bus.start()
    ready_s: list[float] = []
    answer_s: list[float] = []
    try:
        drafts = [
            MemoryDraft(content=f"note {i}: the build server {i % 17} restarts at night") for i in range(300)
        ]
        await bus.request("memory:main", MemSave(drafts), timeout=120)
        for i in range(200):
            await bus.request(
                "memory:main",
                TranscriptAppend("web:bench", f"line {i}", author_id="p", author_name="P"),
                timeout=30,
            )
        assert sup.ctl is not None
        events = await sup.ctl.events("proc.memory.memory:main.state")
        for _ in range(kills):
            pid = (await sup.info("memory:main")).pid
            t0 = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            answered = asyncio.ensure_future(
                retry_transient(
                    lambda: bus.request("memory:main", TranscriptPage("web:bench", limit=20), timeout=10),
                    attempts=400,
                    what="page",
                    first_delay=0.02,
                    max_delay=0.05,
                )
            )
            await events.wait_for(
                lambda e: isinstance(e.body, StateChanged) and e.body.new is ProcState.READY, timeout=120
            )
            ready_s.append(time.monotonic() - t0)
            await answered
            answer_s.append(time.monotonic() - t0)
        events.close()
    finally:
        await bus.close()
        await sup.stop()
        shutil.rmtree(root, ignore_errors=True)
    return {
        "kills": kills,
        "ready_s": {"p50": statistics.median(ready_s), "max": max(ready_s)},
        "answering_s": {"p50": statistics.median(answer_s), "p90": _pct(answer_s, 0.9), "max": max(answer_s)},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args.kills))
    r, a = result["ready_s"], result["answering_s"]
    print(f"{'memory restart after SIGKILL':32} {'p50':>8} {'max':>8}")
    print(f"{'kill -> ready (s)':32} {r['p50']:8.2f} {r['max']:8.2f}")  # type: ignore[index]
    print(f"{'kill -> first answer (s)':32} {a['p50']:8.2f} {a['max']:8.2f}")  # type: ignore[index]
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
