"""Request ids, waiting for replies, and answering requests: shared by every bus endpoint.

A reply's value arrives as plain data; :meth:`PendingReplies.wait` converts it to the type the
requester names (``returns=``), the one place a reply is checked against what was expected.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec

from spacebot.errors import SpacebotError
from spacebot.ipc.codec import EnvelopeHead, Refusal
from spacebot.ipc.messages import TRANSIENT_CODES, Envelope, Err, ErrorCode, Ok

log = logging.getLogger("spacebot.ipc")

Reply = Ok | Err
Handler = Callable[[Envelope], "Awaitable[Reply | None] | Reply | None"]


class BusError(SpacebotError):
    """A request came back as :class:`Err` (or never came back)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


T = TypeVar("T")

UNTYPED: Any = ...
"""``returns`` left out: the reply's value as decoded (plain data), not checked."""


def typed(value: Any, returns: Any, peer: str) -> Any:
    """``value`` (a reply from ``peer``) converted to ``returns``; ``None`` means no value.

    Raises :class:`BusError` with :attr:`ErrorCode.BAD_REPLY`, naming the expected type, when the
    value does not fit. :data:`UNTYPED` returns ``value`` unchanged.
    """
    if returns is UNTYPED:
        return value
    target = type(None) if returns is None else returns
    try:
        return msgspec.convert(value, target)
    except msgspec.ValidationError as exc:
        raise BusError(
            ErrorCode.BAD_REPLY, f"reply from {peer!r} does not fit {type_name(target)}: {exc}"
        ) from None


def type_name(tp: Any) -> str:
    """``StoredMessage``, ``list[StoredMessage]``, ``None``: a type as a reader names it."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        return tp.__name__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)", r"\1", str(tp))


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int | None = None,
    deadline: float | None = None,
    what: str,
    first_delay: float = 0.1,
    max_delay: float = 2.0,
) -> T:
    """``await call()``, again after a growing pause while it fails with a transient code
    (:data:`~spacebot.ipc.messages.TRANSIENT_CODES`: the peer is restarting, starting or busy).

    It gives up after ``attempts`` calls, or once the monotonic clock passes ``deadline`` (at least
    one of them must be given). Any other error, or the last attempt's, is raised as it came.
    """
    if attempts is None and deadline is None:
        raise ValueError("retry_transient: give attempts or deadline")
    delay = first_delay
    attempt = 0
    while True:
        attempt += 1
        try:
            return await call()
        except BusError as exc:
            last = (attempts is not None and attempt >= attempts) or (
                deadline is not None and time.monotonic() + delay > deadline
            )
            if exc.code not in TRANSIENT_CODES or last:
                raise
            log.warning("%s: %s; retrying in %.1fs", what, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)


class PendingReplies:
    """Futures of requests in flight, by request id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._peers: dict[int, str] = {}

    def open(self, peer: str = "") -> tuple[int, asyncio.Future[Any]]:
        """A fresh request id and the future its reply will resolve (``peer``: who must answer)."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        if peer:
            self._peers[rid] = peer
        return rid, fut

    def fail_peer(self, peer: str, code: ErrorCode, why: str) -> int:
        """Fail every request in flight to ``peer`` (it exited: its answers will never come, and
        the caller should not wait out its deadline to learn that); returns how many."""
        failed = 0
        for rid in [r for r, p in self._peers.items() if p == peer]:
            self._peers.pop(rid, None)
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_exception(BusError(code, why))
                failed += 1
        return failed

    async def wait(
        self, rid: int, fut: asyncio.Future[Any], timeout: float, peer: str, returns: Any = UNTYPED
    ) -> Any:
        """The reply's value as ``returns`` (see :func:`typed`); :class:`BusError` for an ``Err``,
        a value that does not fit, or when ``timeout`` runs out."""
        try:
            async with asyncio.timeout(timeout):
                value = await fut
        except TimeoutError:
            raise BusError(ErrorCode.TIMEOUT, f"no reply from {peer!r} within {timeout:g}s") from None
        finally:
            self._pending.pop(rid, None)
            self._peers.pop(rid, None)
        return typed(value, returns, peer)

    def discard(self, rid: int) -> None:
        """Forget a request that was never sent."""
        self._pending.pop(rid, None)
        self._peers.pop(rid, None)

    def resolve(self, rid: int, result: object) -> None:
        """Deliver a reply; late replies (the requester gave up or was cancelled) are dropped."""
        fut = self._pending.get(rid)
        if fut is None or fut.done():
            return
        match result:
            case Ok(value=value):
                fut.set_result(value)
            case Err(code=code, message=message):
                fut.set_exception(BusError(code, message))
            case _:  # any other body sent as a reply: a bug in the peer
                fut.set_exception(BusError(ErrorCode.BAD_REPLY, f"reply of type {type(result).__name__}"))

    def fail(self, rid: int, code: ErrorCode, why: str) -> None:
        """Fail one request in flight (its reply arrived but could not be decoded)."""
        fut = self._pending.get(rid)
        if fut is not None and not fut.done():
            fut.set_exception(BusError(code, why))

    def fail_all(self, why: str) -> None:
        """Fail every request in flight (the endpoint is closing)."""
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BusError(ErrorCode.INTERNAL, why))
        self._pending.clear()
        self._peers.clear()


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


def refuse_undecodable(
    owner: str, replies: PendingReplies, head: EnvelopeHead, why: Refusal, detail: str
) -> Envelope | None:
    """A message to ``owner`` whose body did not decode: its sender hears why rather than waiting
    for nothing. A reply fails the request waiting for it (``bad_reply``); a request gets the
    returned ``Err`` envelope to send back; a one-way message gets nothing."""
    if head.reply_to:
        replies.fail(head.reply_to, ErrorCode.BAD_REPLY, f"undecodable reply from {head.src!r}: {detail}")
        return None
    if not head.id:
        return None
    code = ErrorCode.UNSUPPORTED if why == "unknown" else ErrorCode.BAD_REQUEST
    return Envelope(owner, head.src, 0, head.id, Err(code, f"{owner!r} cannot read the message: {detail}"))
