"""Unanswered work is found, not waited for.

A conversation process normally starts when a message arrives for it. After the supervisor
restarts, or while memory was away, a conversation can hold messages that were acknowledged
(stored ``pending``) but never answered, with nothing in flight that would start its process.
:class:`Resumer` asks each agent's memory for those conversations and starts their processes,
oldest first, a few at a time; each one finds its pending messages on load and answers them.

It runs when the service is up, whenever a memory process becomes ready again after a restart,
and every ``[supervisor] resume_interval`` seconds as a safety net.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from spacebot.ipc import ids
from spacebot.ipc.messages import Err, Notice, PendingChannel, TranscriptPendingChannels
from spacebot.ipc.replies import BusError, Reply, retry_transient

log = logging.getLogger("spacebot.supervisor")

AskPending = Callable[[str, TranscriptPendingChannels], Awaitable[list[PendingChannel]]]
"""``ask(memory id, request)`` over the bus; returns the memory's answer or raises BusError."""


class Resumer:
    """Wakes every conversation that still owes an answer."""

    def __init__(
        self,
        ask_pending: AskPending,
        ensure: Callable[[str], Awaitable[Reply]],
        is_live: Callable[[str], bool],
        publish: Callable[[str, Notice], None],
        parallel: int = 4,
    ) -> None:
        self._ask_pending = ask_pending
        self._ensure = ensure
        self._is_live = is_live
        self._publish = publish
        self._parallel = asyncio.Semaphore(parallel)
        self._running: dict[str, asyncio.Task[int]] = {}

    def sweep_soon(self, agent: str) -> asyncio.Task[int]:
        """Start a sweep of ``agent`` unless one is already running; returns its task."""
        task = self._running.get(agent)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.sweep(agent), name=f"resume:{agent}")
            self._running[agent] = task
        return task

    async def sweep(self, agent: str) -> int:
        """Wake the conversations of ``agent`` with pending messages; returns how many were woken."""
        try:
            rows = await retry_transient(
                lambda: self._ask_pending(ids.memory(agent), TranscriptPendingChannels()),
                attempts=30,
                what=f"pending conversations of {agent}",
            )
        except BusError as exc:
            log.error("resume sweep failed agent=%s error=%s", agent, exc)
            return 0
        todo = []
        for row in rows:
            try:
                todo.append(ids.channel(agent, row.channel))
            except ids.IdError as exc:  # a row no process can serve: say so, never crash the sweep
                log.error("cannot resume conversation=%r agent=%s: %s", row.channel, agent, exc)
        todo = [ident for ident in todo if not self._is_live(ident)]
        if not todo:
            return 0
        log.info("resuming conversations agent=%s count=%d", agent, len(todo))

        async def one(ident: str) -> bool:
            async with self._parallel:
                if self._is_live(ident):
                    return False
                result = await self._ensure(ident)
                if isinstance(result, Err):
                    log.warning("resume failed id=%s error=%s", ident, result.message)
                    return False
                return True

        woken = sum(await asyncio.gather(*(one(ident) for ident in todo)))
        self._publish(f"sys.resume.{agent}", Notice("resume", {"woken": woken, "pending": len(todo)}))
        return woken

    async def close(self) -> None:
        """Cancel sweeps in progress."""
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)
