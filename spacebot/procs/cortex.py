"""``cortex:<agent>``: sees every process of one agent and keeps its memory in shape.

Its parts (``spacebot.cortex``) each do one job; this module only wires them together:

* :class:`~spacebot.cortex.schedule.Maintenance` — decay, prune, merge and association passes on
  their intervals, only when memory changed, with a time budget and a circuit breaker;
* :class:`~spacebot.cortex.knowledge.Knowledge` — the knowledge block conversations put in their
  system prompts (``KnowledgeGet``);
* :class:`~spacebot.cortex.supervision.Supervision` — ends the agent's stuck work through the
  supervisor's kill path;
* :class:`~spacebot.cortex.history.History` — the agent's process runs, from the bus's events, in
  ``process_runs`` (``HistoryGet``).

Requests reach a part through :class:`Dispatch`: a table from request type to handler; a body no
table entry names is offered to the other registered receivers in turn. The status line
(``spacebotctl status``) joins what the parts want an operator to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from spacebot.cortex.history import History
from spacebot.cortex.knowledge import Knowledge
from spacebot.cortex.schedule import Maintenance
from spacebot.cortex.supervision import Supervision
from spacebot.cron.runner import CronRunner
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    SUPERVISOR_ID,
    CortexReport,
    CortexStatus,
    Envelope,
    Err,
    ErrorCode,
    HistoryGet,
    KnowledgeGet,
    Ok,
    StatusReply,
    StatusRequest,
)
from spacebot.ipc.replies import BusError, Reply
from spacebot.runtime.child import ChildContext
from spacebot.runtime.memory_link import MemoryLink

log = logging.getLogger("spacebot.cortex")

Receiver = Callable[[Envelope], Reply | Awaitable[Reply] | None]
"""A part that takes whole envelopes (returns ``None`` for a body it does not handle)."""


class Dispatch:
    """Request type → handler, then the receivers (``add_receiver``) for anything else."""

    def __init__(self) -> None:
        self.handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {}
        self.receivers: list[Receiver] = []

    def add(self, body_type: type, handler: Callable[[Any], Awaitable[Any]]) -> None:
        """Answer ``body_type`` requests with ``await handler(body)`` (its value in an ``Ok``)."""
        self.handlers[body_type] = handler

    def add_receiver(self, receiver: Receiver) -> None:
        """Offer unknown bodies to ``receiver``; the first that does not return ``None`` answers."""
        self.receivers.append(receiver)

    def __call__(self, env: Envelope) -> Reply | Awaitable[Reply] | None:
        handler = self.handlers.get(type(env.body))
        if handler is not None:
            return _answer(handler(env.body))
        for receiver in self.receivers:
            reply = receiver(env)
            if reply is not None:
                return reply
        return Err(ErrorCode.UNSUPPORTED, f"the cortex does not handle {type(env.body).__name__}")


async def _answer(work: Awaitable[Any]) -> Reply:
    try:
        return Ok(await work)
    except BusError as exc:  # memory away: the caller may try again
        return Err(exc.code, exc.message)
    except Exception as exc:
        log.exception("cortex request failed")
        return Err(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")


async def _every(seconds: float, work: Callable[[], Awaitable[Any]], what: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s failed: %s", what, exc)


async def serve(ctx: ChildContext, agent: str = "main") -> None:
    """Run the agent's cortex until told to stop."""
    cfg = ctx.config.cortex
    memory = MemoryLink(ctx, ids.memory(agent))
    history = History(agent, memory, cfg)
    knowledge = Knowledge(memory, cfg)
    supervision = Supervision(ctx, agent, history)

    def show() -> None:
        line = maintenance.line() or "idle"
        if supervision.kills:
            line += f"; ended {supervision.kills} stuck process(es)"
        if line != ctx.task:
            ctx.progress(line)
            ctx.heartbeat()

    maintenance = Maintenance(ctx, memory, cfg, changed=show)

    async def report(_: CortexStatus) -> CortexReport:
        return CortexReport(
            task=ctx.task,
            kills=supervision.kills,
            knowledge_version=knowledge.block.version,
            **maintenance.report(),
        )

    dispatch = Dispatch()
    dispatch.add(KnowledgeGet, knowledge.get)
    dispatch.add(HistoryGet, history.get)
    dispatch.add(CortexStatus, report)
    cron = CronRunner(ctx, agent)  # the agent's scheduled jobs (docs/cron.md)
    dispatch.add_receiver(lambda env: cron.on_message(env) if cron.handles(env.body) else None)
    ctx.on_message(dispatch)

    # Subscribed before the table is read: a process that starts in between is in one or the other.
    events = await ctx.events("proc.", f"channel.channel:{agent}:")
    with contextlib.suppress(BusError):
        status = await ctx.request(SUPERVISOR_ID, StatusRequest(), returns=StatusReply, timeout=5.0)
        history.seed(status.processes)

    async def follow() -> None:
        async for event in events:
            history.feed(event)
            supervision.feed(event)

    async def supervise() -> None:
        if await supervision.tick():
            show()

    ctx.progress("idle")
    ctx.ready()  # only now: a process started after this is seen starting, and its end recorded
    tasks = [
        asyncio.create_task(follow(), name="cortex-events"),
        asyncio.create_task(history.write(), name="cortex-history"),
        asyncio.create_task(maintenance.run(), name="cortex-maintenance"),
        asyncio.create_task(cron.run(), name="cortex-cron"),
        asyncio.create_task(
            _every(cfg.supervise_interval, supervise, "supervision"), name="cortex-supervision"
        ),
    ]
    log.info("cortex ready agent=%s", agent)
    try:
        await ctx.stopping.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(history.flush(), 2.0)  # what ended last is not lost
        events.close()


serve.manual_ready = True  # type: ignore[attr-defined]
