"""Child behaviours for tests, benchmarks and smoke checks, referenced by dotted path.

``spacebotctl spawn spacebot.procs.testkit:idle`` starts one; the test suite uses the rest to
prove the supervisor copes with children that hang, ignore signals, crash or fork.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from spacebot.ipc.messages import Echo, Envelope, Notice, Ok, SpawnSpec
from spacebot.runtime.child import ChildContext


async def idle(ctx: ChildContext) -> None:
    """Do nothing until told to stop: the cheapest well-behaved child."""
    await ctx.stopping.wait()


async def echo(ctx: ChildContext, publish: bool = False) -> None:
    """Answer every request with its own body; count one-way :class:`Echo` messages.

    With ``publish=True`` each one-way Echo is re-published as an event on ``echo.<id>``.
    """
    received = 0

    def handle(env: Envelope) -> Ok | None:
        nonlocal received
        if isinstance(env.body, Echo):
            received += 1
            if publish:
                ctx.publish(f"echo.{ctx.id}", env.body)
            return Ok(received) if env.id else None
        return Ok(env.body)

    ctx.on_message(handle)
    await ctx.stopping.wait()


async def block_loop(ctx: ChildContext, after: float = 0.0) -> None:
    """Wedge the event loop with ``time.sleep``: heartbeats stop although the process lives."""
    await asyncio.sleep(after)
    time.sleep(10_000)


async def ignore_sigterm(ctx: ChildContext) -> None:
    """Ignore SIGTERM (and ``Stop``) entirely: only SIGKILL ends it."""
    loop = asyncio.get_running_loop()
    loop.remove_signal_handler(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    while True:
        await asyncio.sleep(3600)


async def crash_on_start(ctx: ChildContext, code: int = 3) -> None:
    """Exit with ``code`` right away (after Ready), to exercise restarts and the flapping guard."""
    sys.stderr.flush()
    os._exit(code)


async def crash_after(ctx: ChildContext, seconds: float = 1.0, code: int = 4) -> None:
    """Run normally for ``seconds``, then exit with ``code``."""
    await asyncio.sleep(seconds)
    os._exit(code)


async def grandchildren(ctx: ChildContext, count: int = 3, own_group: int = 1) -> None:
    """Start ``count`` ``sleep`` processes (``own_group`` of them in a new session) and wait.

    The pids are published on ``testkit.<id>.pids`` so a test can check every one dies.
    """
    procs = []
    for i in range(count):
        procs.append(
            subprocess.Popen(["sleep", "1000"], start_new_session=i < own_group, stdin=subprocess.DEVNULL)
        )
    ctx.publish(f"testkit.{ctx.id}.pids", Notice("pids", {"pids": [p.pid for p in procs]}))
    await ctx.stopping.wait()


async def busy_without_progress(ctx: ChildContext) -> None:
    """Report busy once, then never report progress again (a model call that never returns)."""
    ctx.set_busy(True, "waiting forever")
    await ctx.stopping.wait()


async def spawner(ctx: ChildContext, target: str = "spacebot.procs.testkit:idle", count: int = 1) -> None:
    """Ask the supervisor for ``count`` children of its own (a channel spawning branches)."""
    from spacebot.ipc.messages import Kind

    ids = []
    for _ in range(count):
        spawned = await ctx.spawn(SpawnSpec(kind=Kind.BRANCH, target=target, task=f"child of {ctx.id}"))
        ids.append(spawned.id)
    ctx.publish(f"testkit.{ctx.id}.spawned", Notice("spawned", {"ids": ids}))
    await ctx.stopping.wait()


async def stuck_delegate(ctx: ChildContext, target: str = "spacebot.procs.testkit:idle") -> None:
    """A conversation whose worker reported its outcome but does not exit: start one worker, then
    announce its outcome as a channel does (``channel.<id>.delegate`` ``finished``)."""
    from spacebot.ipc.messages import Kind

    spawned = await ctx.spawn(SpawnSpec(kind=Kind.WORKER, target=target, task=f"worker of {ctx.id}"))
    ctx.publish(f"channel.{ctx.id}.delegate", Notice("finished", {"id": spawned.id, "outcome": "success"}))
    await ctx.stopping.wait()


async def slow_start(ctx: ChildContext, seconds: float = 0.5) -> None:
    """Take ``seconds`` before declaring itself ready (manual readiness)."""
    await asyncio.sleep(seconds)
    ctx.ready()
    await ctx.stopping.wait()


slow_start.manual_ready = True  # type: ignore[attr-defined]


async def leak_memory(ctx: ChildContext, mb_per_s: float = 10.0) -> None:
    """Grow by ``mb_per_s`` MiB every second (for memory-budget checks)."""
    hoard = []
    while not ctx.stopping.is_set():
        hoard.append(bytearray(int(mb_per_s * 1024 * 1024)))
        ctx.progress()
        await asyncio.sleep(1.0)


async def flood(ctx: ChildContext, target: str, count: int, size: int = 16) -> None:
    """Wait for an :class:`Echo` from anyone, then send ``count`` one-way Echos to ``target``.

    A full send queue is back-pressure, not loss: the sender waits and retries. When done it
    publishes ``testkit.<id>.sent``.
    """
    go = asyncio.Event()

    def handle(env: Envelope) -> Ok | None:
        go.set()
        return Ok() if env.id else None

    ctx.on_message(handle)
    await go.wait()
    payload = b"x" * size
    offer = ctx.bus.offer
    for seq in range(count):
        while not offer(target, Echo(seq, payload)):
            await asyncio.sleep(0.0005)
        if seq % 512 == 0:
            await asyncio.sleep(0)  # heartbeats and stop requests still get their turn
    ctx.publish(f"testkit.{ctx.id}.sent", Notice("sent", {"count": count}))
    await ctx.stopping.wait()


async def sink(ctx: ChildContext) -> None:
    """Count one-way Echos; a request answers ``[count, first_ts, last_ts]`` (perf_counter times)."""
    count = 0
    first = last = 0.0
    clock = time.perf_counter

    def handle(env: Envelope) -> Ok | None:
        nonlocal count, first, last
        if env.id:
            return Ok([count, first, last])
        if count == 0:
            first = clock()
        count += 1
        last = clock()
        return None

    ctx.on_message(handle)
    await ctx.stopping.wait()


async def llm_probe(ctx: ChildContext) -> None:
    """Complete one prompt per ``Echo(0, prompt)`` request through the bus-linked LLM.

    Replies ``[model, fallbacks]``. ``Echo(1, model)`` answers how long ``model`` still cools down
    in this process.
    """
    from spacebot.llm.types import Request, UserMessage
    from spacebot.runtime.llm_link import connect_llm

    linked = await connect_llm(ctx)

    async def complete(text: str) -> Ok:
        result = await linked.llm.complete(Request([UserMessage(text)]), process="channel")
        ctx.progress()
        return Ok([result.model, result.fallbacks])

    def handle(env: Envelope) -> Ok | asyncio.Future[Ok] | None:
        body = env.body
        if isinstance(body, Echo) and body.seq == 1:
            return Ok(linked.llm.cooldowns.remaining(body.payload.decode()))
        if isinstance(body, Echo):
            return asyncio.ensure_future(complete(body.payload.decode() or "hello"))
        return None

    ctx.on_message(handle)
    ctx.ready()  # only now: a request arriving earlier would find no handler
    try:
        await ctx.stopping.wait()
    finally:
        await linked.aclose()


llm_probe.manual_ready = True  # type: ignore[attr-defined]


async def gated_start(ctx: ChildContext, gate: str) -> None:
    """Connected to the bus but loading until the file ``gate`` exists (like memory opening its
    database); then answer requests like :func:`echo`. Requests before that get ``not_ready``."""
    ctx.ready()
    await _wait_for_file(gate, present=True)
    ctx.on_message(lambda env: Ok(env.body))
    ctx.publish(f"testkit.{ctx.id}.serving", Notice("serving"))
    await ctx.stopping.wait()


gated_start.manual_ready = True  # type: ignore[attr-defined]


async def _wait_for_file(path: str, *, present: bool, limit: float = 120.0) -> None:
    deadline = time.monotonic() + limit
    while os.path.exists(path) != present and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
