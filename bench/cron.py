"""Cron: time from due to delivered for 1,000 jobs due at the same moment, and the scheduler's CPU
while 10,000 jobs are scheduled and none is due.

What runs for real: the scheduler (``spacebot.cron.runner.CronRunner``: heap, sleep until due,
claim, prompt, delivery, run log) and every storage step it makes, on a real DuckDB file and
tantivy index through the memory process's own request handlers (``spacebot.procs.memory.HANDLERS``,
in a thread pool as there). What is replaced: the bus hops and the conversation process. Each
run's prompt is answered at once by an in-process stand-in that stores the reply as a channel does
and sends the ``OutMessage`` back; a real run adds a process start from the zygote and a model call,
which ``bench/spawn.py`` and ``bench/chat.py`` measure, and 1,000 conversation processes at once do
not fit on a 2-core test machine. "Delivered" is the moment the answer is stored in the target web
conversation and handed to its gateway. Runs go ``[defaults] cron_max_concurrent`` (8) at a time.

Idle: 10,000 jobs due in an hour or more; the CPU time of this whole process (every thread, from
``/proc/self/task/*/schedstat``) over ``--idle-seconds``, in percent of one core, and how many times
the scheduler loop woke (0 expected).

Run: ``python bench/cron.py [--json] [--jobs 1000] [--idle-jobs 10000] [--idle-seconds 20]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, parser, percentile

from spacebot import config as config_mod
from spacebot.cron.runner import CronRunner
from spacebot.cron.store import CronStore
from spacebot.ipc.messages import (
    CronJob,
    Envelope,
    EventBody,
    Inbound,
    OutMessage,
    ReplyState,
    Stop,
    StoredMessage,
)
from spacebot.ipc.replies import typed
from spacebot.memory.store import Store
from spacebot.memory.text import TextIndex
from spacebot.memory.transcripts import Transcripts
from spacebot.procs.memory import HANDLERS
from spacebot.testing import short_tempdir


class LocalHost:
    """The cortex's view of the bus, in one process: memory requests go to the memory handlers on
    a real database; a prompt to a conversation is answered at once."""

    def __init__(self, data: Path, config: config_mod.Config) -> None:
        self.id = "cortex:main"
        self.config = config
        self.store = Store(data / "agent.duckdb")
        self.engine = SimpleNamespace(
            store=self.store, transcripts=Transcripts(self.store, TextIndex(data / "transcripts"))
        )
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="memory")
        self.runner: CronRunner | None = None
        self.delivered: dict[str, float] = {}
        self.done = asyncio.Event()
        self.expect = 0

    async def request(self, dst: str, body: Any, *, returns: Any, timeout: float = 5.0) -> Any:
        if isinstance(body, Inbound):
            asyncio.get_running_loop().create_task(self._answer(body))
            return None
        handler = HANDLERS[type(body)]
        value = await asyncio.get_running_loop().run_in_executor(self.pool, handler, self.engine, body)
        return typed(msgspec.to_builtins(value), returns, dst)

    async def _answer(self, inbound: Inbound) -> None:
        """What a conversation process does with the prompt, minus the model: store the reply
        (answering the prompt in the same transaction) and send it to the conversation's gateway."""
        reply = await asyncio.get_running_loop().run_in_executor(
            self.pool,
            lambda: self.engine.transcripts.append(
                inbound.conversation,
                f"done: {inbound.text}",
                author_id="agent:main",
                author_name="Spacebot",
                role="assistant",
                answers=[inbound.stored_id],
                answers_state=ReplyState.ANSWERED,
            ),
        )
        assert self.runner is not None
        message = msgspec.convert(msgspec.to_builtins(reply), StoredMessage)
        env = Envelope(inbound.conversation, self.id, 0, 0, OutMessage(inbound.conversation, message))
        self.runner.on_message(env)

    def send(self, dst: str, body: Any) -> bool:
        if isinstance(body, OutMessage) and dst == "gateway:webchat":
            self.delivered[body.message.platform_message_id or ""] = time.time()
            if len(self.delivered) >= self.expect:
                self.done.set()
        elif not isinstance(body, Stop):
            raise AssertionError(f"unexpected send to {dst}: {type(body).__name__}")
        return True

    def publish(self, topic: str, body: EventBody) -> bool:
        return True

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.engine.transcripts.index.close()
        self.store.close()


def _config(home: Path) -> config_mod.Config:
    return config_mod.from_dict({"agents": ["main"], "home": str(home), "webchat": {"enabled": False}}, {})


async def due_to_delivered(root: Path, jobs: int) -> dict[str, Any]:
    data = root / "due"
    data.mkdir(parents=True)
    host = LocalHost(data, _config(root))
    host.expect = jobs
    due = time.time() + 3.0
    cron = CronStore(host.store)
    for i in range(jobs):
        cron.put(
            CronJob(
                id=f"job{i}", prompt=f"report {i}", cron="0 0 1 1 *", deliver_to="web:bench", next_run_at=due
            )
        )
    runner = CronRunner(None, "main", host=host)
    host.runner = runner
    task = asyncio.get_running_loop().create_task(runner.run())
    try:
        async with asyncio.timeout(600):
            await host.done.wait()
            while runner.tasks:  # the last runs' log rows
                await asyncio.gather(*list(runner.tasks), return_exceptions=True)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    latencies = [(at - due) * 1000 for at in host.delivered.values()]
    runs = cron.runs(None, jobs + 10)
    host.close()
    return {
        "jobs": jobs,
        "delivered": len(latencies),
        "runs_logged": sum(1 for r in runs if r.outcome == "success" and r.delivered),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
    }


async def idle(root: Path, jobs: int, seconds: float) -> dict[str, Any]:
    data = root / "idle"
    data.mkdir(parents=True)
    host = LocalHost(data, _config(root))
    cron = CronStore(host.store)
    start = time.time()
    for i in range(jobs):
        cron.put(
            CronJob(
                id=f"job{i}",
                prompt="later",
                cron="0 0 * * *",
                timezone="UTC",
                next_run_at=start + 3600 + i,
                deliver_to="web:bench",
            )
        )
    runner = CronRunner(None, "main", host=host)
    host.runner = runner
    task = asyncio.get_running_loop().create_task(runner.run())
    await runner.loaded.wait()
    await asyncio.sleep(0.5)  # let start-up work (loading, the first tick) finish before measuring
    before, wakes, t0 = _cpu_ns(), runner.wakeups, time.monotonic()
    await asyncio.sleep(seconds)  # the measurement window itself: nothing here waits for an event
    after, t1 = _cpu_ns(), time.monotonic()
    woke = runner.wakeups - wakes
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    host.close()
    cpu = (after - before) / 1e9
    return {"jobs": len(runner.jobs), "seconds": t1 - t0, "cpu_pct": cpu / (t1 - t0) * 100, "wakeups": woke}


def _cpu_ns() -> int:
    """CPU time of every thread of this process, in ns (``schedstat``: finer than ``cpu_times()``'s
    10 ms ticks)."""
    total = 0
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[0])
    return total


async def main() -> int:
    p = parser(__doc__ or "")
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--idle-jobs", type=int, default=10_000)
    p.add_argument("--idle-seconds", type=float, default=20.0)
    args = p.parse_args()
    root = short_tempdir("sb-cron-")
    try:
        burst = await due_to_delivered(root, args.jobs)
        quiet = await idle(root, args.idle_jobs, args.idle_seconds)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = [
        ("measure", "value"),
        (
            "jobs due at once / delivered / logged",
            f"{burst['jobs']} / {burst['delivered']} / {burst['runs_logged']}",
        ),
        ("due → delivered p50", f"{burst['p50_ms']:.1f} ms"),
        ("due → delivered p99", f"{burst['p99_ms']:.1f} ms"),
        ("due → delivered max", f"{burst['max_ms']:.1f} ms"),
        (
            f"idle: {quiet['jobs']} jobs scheduled, {quiet['seconds']:.0f} s",
            f"{quiet['cpu_pct']:.3f} % CPU",
        ),
        ("idle: scheduler wake-ups in the window", str(quiet["wakeups"])),
    ]
    result = {
        "due_to_delivered_p50_ms": round(burst["p50_ms"], 2),
        "due_to_delivered_p99_ms": round(burst["p99_ms"], 2),
        "idle_cpu_pct": round(quiet["cpu_pct"], 4),
        "jobs": burst["jobs"],
        "idle_jobs": quiet["jobs"],
        "idle_wakeups": quiet["wakeups"],
        "covers": "scheduler, storage and delivery; the conversation process and model answer at once",
        "machine": machine(),
    }
    emit(result, rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
