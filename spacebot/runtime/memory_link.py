"""Requests to an agent's memory process, retried while it restarts or starts."""

from __future__ import annotations

from typing import Any, TypeVar, overload

from spacebot.ipc.replies import retry_transient
from spacebot.runtime.child import ChildContext

T = TypeVar("T")


PATIENT = 60
"""Attempts that wait out a memory restart on a busy machine (about 30 s at ``POLL`` pauses)."""
POLL = 0.5
"""Longest pause between two attempts: a request to a memory process that is down fails at once, so
polling every half second costs nothing and answers within half a second of its return."""


class MemoryLink:
    """Requests to ``memory:<agent>``: a transient error (restarting, starting, busy) is retried
    with back-off (at most :data:`POLL` apart) for ``attempts`` calls; anything else is raised at
    once."""

    def __init__(self, ctx: ChildContext, memory: str, *, timeout: float = 10.0) -> None:
        self.ctx = ctx
        self.memory = memory
        self.timeout = timeout

    @overload
    async def request(self, body: Any, *, returns: type[T], attempts: int = PATIENT) -> T: ...
    @overload
    async def request(self, body: Any, *, returns: None, attempts: int = PATIENT) -> None: ...
    async def request(self, body: Any, *, returns: Any, attempts: int = PATIENT) -> Any:
        """``body`` to memory; the reply converted to ``returns`` (``None``: no value expected)."""
        return await retry_transient(
            lambda: self.ctx.request(self.memory, body, returns=returns, timeout=self.timeout),
            attempts=attempts,
            max_delay=POLL,
            what=f"memory request {type(body).__name__}",
        )
