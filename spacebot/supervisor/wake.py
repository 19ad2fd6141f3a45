"""Conversation processes start on their first message and may hibernate when idle.

Nobody spawns a ``channel:<agent>:<conversation>`` process explicitly: a message addressed to
one that is not connected makes the broker ask :meth:`Waker.unroutable`, which starts it through
the zygote while the broker holds every message for it; the held messages are delivered, in
order, the moment the process says ``Ready``. A channel that hibernated (exited after its idle
timeout), crashed, or was killed is started again the same way and reloads its history.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from spacebot.ipc import ids
from spacebot.ipc.messages import Err, ErrorCode, Kind, Ok, ProcState, SpawnSpec
from spacebot.ipc.replies import Reply

if TYPE_CHECKING:
    import asyncio

    from spacebot.config import Config
    from spacebot.ipc.broker import Broker
    from spacebot.supervisor.table import ProcessRecord, ProcessTable


class WakeHost(Protocol):
    """What waking a conversation needs of the supervisor (and nothing else)."""

    config: Config
    table: ProcessTable
    shutting_down: bool

    @property
    def broker(self) -> Broker | None: ...
    def spawn_task(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[object]: ...
    async def spawn(self, spec: SpawnSpec, *, parent: str) -> Reply: ...
    async def wait_ready(self, rec: ProcessRecord, timeout: float) -> ProcState: ...
    async def wait_exit(self, rec: ProcessRecord, timeout: float) -> ProcState: ...


log = logging.getLogger("spacebot.supervisor")

CHANNEL_TARGET = "spacebot.procs.channel:serve"
"""Entry point of conversation processes."""


def channel_spec(ident: str, agents: list[str]) -> SpawnSpec | None:
    """The spawn spec for bus id ``ident`` if it names a conversation of a configured agent."""
    try:
        agent, conv = ids.parse_channel(ident)
    except ids.IdError:
        return None
    if agent not in agents:
        return None
    conversation = str(conv)
    return SpawnSpec(
        kind=Kind.CHANNEL,
        target=CHANNEL_TARGET,
        id=ident,
        args={"agent": agent, "conversation": conversation},
        task=f"conversation {conversation}",
    )


class Waker:
    """Starts conversation processes on demand for the broker."""

    def __init__(self, supervisor: WakeHost) -> None:
        self.sup = supervisor
        self.waking: set[str] = set()

    def unroutable(self, dst: str) -> bool:
        """Broker hook: True when ``dst`` is a conversation we are (now) starting."""
        if self.sup.shutting_down:
            return False
        spec = channel_spec(dst, self.sup.config.agents)
        if spec is None:
            return False
        if dst not in self.waking:
            self.waking.add(dst)
            self.sup.spawn_task(self._wake(spec), f"wake:{dst}")
        return True

    async def ensure(self, ident: str) -> Reply:
        """Start conversation process ``ident`` unless it runs; returns once it is ready (or not).

        Used for conversations that owe an answer but have no message in flight to wake them
        (see ``supervisor/resume.py``)."""
        spec = channel_spec(ident, self.sup.config.agents)
        if spec is None:
            return Err(ErrorCode.BAD_REQUEST, f"{ident!r} is not a conversation of a configured agent")
        if ident in self.waking:
            return Ok()  # a message is waking it already
        self.waking.add(ident)
        await self._wake(spec)
        rec = self.sup.table.get(ident)
        ok = rec is not None and rec.state in (ProcState.READY, ProcState.BUSY, ProcState.IDLE)
        return Ok() if ok else Err(ErrorCode.SPAWN_FAILED, f"{ident!r} did not start")

    async def _wake(self, spec: SpawnSpec) -> None:
        try:
            result = await self._start(spec)
        finally:
            self.waking.discard(spec.id)
        broker = self.sup.broker
        if broker is None:
            return
        if isinstance(result, Err):
            n = broker.reject_held(spec.id, result.code, result.message)
            log.error("wake failed id=%s held=%d error=%s", spec.id, n, result.message)
        else:
            broker.release(spec.id)  # normally already released on Ready; this catches the rest

    async def _start(self, spec: SpawnSpec) -> Reply:
        sup = self.sup
        timeout = sup.config.policy(Kind.CHANNEL).ready_timeout + 1.0
        for _ in range(3):
            rec = sup.table.get(spec.id)
            if rec is None or rec.state in (ProcState.EXITED, ProcState.FAILED):
                if rec is not None:
                    rec.cancel_restart()  # a pending crash restart: start it now instead
                log.info("waking id=%s", spec.id)
                return await sup.spawn(spec, parent="supervisor")
            if rec.state is ProcState.STARTING:
                # No pid yet: the fork waits for a zygote being replaced, which can take its
                # whole start-up; only then does the process's ready budget begin.
                wait = timeout + (0.0 if rec.pid else sup.config.supervisor.zygote_start_timeout)
                state = await sup.wait_ready(rec, wait)
                if state in (ProcState.READY, ProcState.BUSY, ProcState.IDLE):
                    return Ok()
                return Err(ErrorCode.SPAWN_FAILED, f"{spec.id!r} did not start (state {state.value})")
            # Alive in the table but not connected: it is on its way out (hibernating, crashing).
            await sup.wait_exit(rec, sup.config.policy(Kind.CHANNEL).grace + 5.0)
        return Err(ErrorCode.SPAWN_FAILED, f"{spec.id!r} could not be started")
