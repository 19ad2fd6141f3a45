"""What the cron scheduler needs of its process: the bus (requests, one-way sends, events) and
the agent's memory, reached through it with retries while memory restarts."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from spacebot.config import Config
from spacebot.ipc.messages import EventBody
from spacebot.ipc.replies import BusError, retry_transient

log = logging.getLogger("spacebot.cron")

MEMORY_ATTEMPTS = 60
"""Tries at a memory request (about 30 s: a memory restart)."""


class CronHost(Protocol):
    """The scheduler's view of its process (``ChildContext`` through :class:`ContextHost`; the
    benchmark gives an in-process one)."""

    id: str
    config: Config

    async def request(self, dst: str, body: Any, *, returns: Any, timeout: float = 5.0) -> Any: ...
    def send(self, dst: str, body: Any) -> bool: ...
    def publish(self, topic: str, body: EventBody) -> bool: ...


class ContextHost:
    """A :class:`CronHost` over a child's context."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.id: str = ctx.id
        self.config: Config = ctx.config

    async def request(self, dst: str, body: Any, *, returns: Any, timeout: float = 5.0) -> Any:
        return await self.ctx.request(dst, body, returns=returns, timeout=timeout)

    def send(self, dst: str, body: Any) -> bool:
        try:
            return bool(self.ctx.bus.send(dst, body))
        except BusError as exc:
            log.error("cannot send to %s: %s", dst, exc)
            return False

    def publish(self, topic: str, body: EventBody) -> bool:
        return bool(self.ctx.publish(topic, body))


class Memory:
    """Requests to ``memory:<agent>``; transient errors are retried ``attempts`` times."""

    def __init__(self, host: CronHost, memory: str) -> None:
        self.host = host
        self.memory = memory

    async def __call__(self, body: Any, returns: Any, *, attempts: int = MEMORY_ATTEMPTS) -> Any:
        return await retry_transient(
            lambda: self.host.request(self.memory, body, returns=returns, timeout=10.0),
            attempts=attempts,
            max_delay=0.5 if attempts == MEMORY_ATTEMPTS else 2.0,
            what=f"cron memory request {type(body).__name__}",
        )
