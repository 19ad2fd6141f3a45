"""Request ids, waiting for replies, and answering requests: shared by every bus endpoint."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from spacebot.errors import SpacebotError
from spacebot.ipc.messages import Envelope, Err, ErrorCode, Ok

log = logging.getLogger("spacebot.ipc")

Reply = Ok | Err
Handler = Callable[[Envelope], "Awaitable[Reply | None] | Reply | None"]


class BusError(SpacebotError):
    """A request came back as :class:`Err` (or never came back)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class PendingReplies:
    """Futures of requests in flight, by request id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}

    def open(self) -> tuple[int, asyncio.Future[Any]]:
        """A fresh request id and the future its reply will resolve."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        return rid, fut

    async def wait(self, rid: int, fut: asyncio.Future[Any], timeout: float, peer: str) -> Any:
        """The reply's value; :class:`BusError` for an ``Err`` or when ``timeout`` runs out."""
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise BusError(ErrorCode.TIMEOUT, f"no reply from {peer!r} within {timeout:g}s") from None
        finally:
            self._pending.pop(rid, None)

    def discard(self, rid: int) -> None:
        """Forget a request that was never sent."""
        self._pending.pop(rid, None)

    def resolve(self, rid: int, result: object) -> None:
        """Deliver a reply; late replies (the requester gave up or was cancelled) are dropped."""
        fut = self._pending.get(rid)
        if fut is None or fut.done():
            return
        if isinstance(result, Ok):
            fut.set_result(result.value)
        elif isinstance(result, Err):
            fut.set_exception(BusError(result.code, result.message))
        else:
            fut.set_exception(BusError(ErrorCode.BAD_REQUEST, f"reply of type {type(result).__name__}"))

    def fail_all(self, why: str) -> None:
        """Fail every request in flight (the endpoint is closing)."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BusError(ErrorCode.INTERNAL, why))
        self._pending.clear()


class Responder:
    """Runs a handler for each request and sends its :class:`Ok`/:class:`Err` back.

    A handler may answer at once or return an awaitable, which runs as its own task so a slow
    handler never blocks the receive loop. Every failure becomes an ``Err``.
    """

    def __init__(self, owner: str, reply: Callable[[Envelope, Reply], bool]) -> None:
        self.owner = owner
        self._reply = reply
        self._tasks: set[asyncio.Task[None]] = set()

    def run(self, handler: Handler, env: Envelope) -> None:
        """Call ``handler`` on ``env`` and answer."""
        try:
            result = handler(env)
        except Exception as exc:
            self._reply(env, self._failure(env, exc))
            return
        if isinstance(result, Ok | Err):
            self._reply(env, result)
        elif result is not None:
            task = asyncio.get_running_loop().create_task(self._finish(env, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, env: Envelope, pending: Awaitable[Reply | None]) -> None:
        try:
            result = await pending
        except Exception as exc:
            result = self._failure(env, exc)
        if result is not None:
            self._reply(env, result)

    def _failure(self, env: Envelope, exc: Exception) -> Err:
        log.exception("handler failed owner=%s src=%s msg=%s", self.owner, env.src, type(env.body).__name__)
        return Err(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")

    async def close(self) -> None:
        """Cancel handlers still running."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
