"""The asyncio bus client every child process uses: one DEALER whose identity is the process id."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio

from spacebot.errors import SpacebotError
from spacebot.ipc import codec
from spacebot.ipc.drain import Pump
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    PUBLISH_FRAME,
    SUPERVISOR_ID,
    Body,
    Envelope,
    Err,
    ErrorCode,
    Event,
    EventBody,
    Ok,
    Ping,
    SyncEvents,
)

log = logging.getLogger("spacebot.ipc")

Reply = Ok | Err
Handler = Callable[[Envelope], "Awaitable[Reply | None] | Reply | None"]


class BusError(SpacebotError):
    """A request came back as :class:`Err` (or never came back)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class BusClient:
    """Request/reply, one-way sends and publishing over the supervisor's broker.

    Incoming requests go to ``handler`` (set with :meth:`on_message`); a handler may return an
    :class:`Ok`/:class:`Err` (sent back when the envelope has an id), ``None``, or an awaitable of
    either, which runs as its own task so a slow handler never blocks the receive loop.
    ``Ping`` is answered by the client itself, from the event loop, so a reply proves the loop runs.
    """

    def __init__(
        self,
        ident: str,
        endpoint: str,
        *,
        events_endpoint: str = "",
        context: zmq.asyncio.Context | None = None,
        max_frame: int = codec.DEFAULT_MAX_FRAME,
        hwm: int = 10_000,
    ) -> None:
        self.ident = ident
        self.endpoint = endpoint
        self.events_endpoint = events_endpoint or endpoint.rsplit("/", 1)[0] + "/events"
        self.guard = codec.FrameGuard(ident, max_frame)
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self._sock: zmq.Socket[bytes] = zmq.Socket(self.context, zmq.DEALER)
        self._sock.setsockopt(zmq.IDENTITY, ident.encode())
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._handler: Handler | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._pump: Pump | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the receive loop (call from inside the event loop)."""
        self._sock.connect(self.endpoint)
        self._pump = Pump(self._sock, self._on_frames, name=self.ident)

    async def close(self, linger: float = 1.0) -> None:
        """Stop receiving, fail pending requests, close the socket (flushing for ``linger`` s)."""
        if self._pump is not None:
            self._pump.close()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BusError(ErrorCode.INTERNAL, f"bus client {self.ident!r} closed"))
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._sock.close(linger=int(linger * 1000))
        if self._own_context:
            self.context.term()

    def on_message(self, handler: Handler) -> None:
        """Set the function that receives every non-reply envelope."""
        self._handler = handler

    # -- sending -----------------------------------------------------------------------------

    def _send(self, dst: str, env: Envelope) -> bool:
        try:
            self._sock.send_multipart((dst.encode(), codec.encode(env)), zmq.NOBLOCK)
        except zmq.Again:
            self.guard.count("shed", f"send queue to {dst!r} full")
            return False
        finally:
            if self._pump is not None:
                self._pump.kick()
        return True

    def send(self, dst: str, body: Body) -> bool:
        """Send a one-way message; returns ``False`` (counted as shed) if the send queue is full."""
        return self._send(dst, Envelope(self.ident, dst, 0, 0, body))

    def offer(self, dst: str, body: Body) -> bool:
        """Like :meth:`send`, but a full queue is not counted as shed: the caller will retry."""
        try:
            self._sock.send_multipart(
                (dst.encode(), codec.encode(Envelope(self.ident, dst, 0, 0, body))), zmq.NOBLOCK
            )
        except zmq.Again:
            return False
        finally:
            if self._pump is not None:
                self._pump.kick()
        return True

    async def request(self, dst: str, body: Body, *, timeout: float = 5.0) -> Any:
        """Send ``body`` to ``dst`` and wait for its reply; return ``Ok.value`` or raise :class:`BusError`."""
        rid = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        try:
            if not self._send(dst, Envelope(self.ident, dst, rid, 0, body)):
                raise BusError(ErrorCode.OVERLOADED, f"send queue to {dst!r} is full")
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise BusError(ErrorCode.TIMEOUT, f"no reply from {dst!r} within {timeout:g}s") from None
        finally:
            self._pending.pop(rid, None)

    def reply(self, env: Envelope, result: Reply) -> bool:
        """Answer ``env`` (a request) with ``result``."""
        if env.id == 0:
            return False
        return self._send(env.src, Envelope(self.ident, env.src, 0, env.id, result))

    def publish(self, topic: str, body: EventBody) -> bool:
        """Publish an event on the supervisor's events socket."""
        payload = codec.encode(Event(topic, self.ident, time.time(), body))
        try:
            self._sock.send_multipart((PUBLISH_FRAME, topic.encode(), payload), zmq.NOBLOCK)
        except zmq.Again:
            self.guard.count("shed", f"publish queue full for topic {topic!r}")
            return False
        finally:
            if self._pump is not None:
                self._pump.kick()
        return True

    async def sync_events(self, nonce: str) -> None:
        """Ask the supervisor to publish ``sys.sync.<nonce>`` (see :mod:`spacebot.ipc.events`)."""
        await self.request(SUPERVISOR_ID, SyncEvents(nonce), timeout=2.0)

    async def subscribe(self, *topics: str) -> EventStream:
        """Events whose topic starts with one of ``topics`` (all when none), confirmed live on return."""
        stream = EventStream(self.events_endpoint, topics or ("",), context=self.context)
        try:
            await stream.sync(self.sync_events)
        except BaseException:
            stream.close()
            raise
        return stream

    # -- receiving ---------------------------------------------------------------------------

    def _on_frames(self, frames: list[bytes]) -> None:
        src = codec.decode_source(frames[0]) if frames else None
        if src is None:
            self.guard.count("malformed", "empty or non-UTF-8 source frame")
            return
        env = self.guard.envelope(frames, src)
        if env is None:
            return
        if env.reply_to:
            fut = self._pending.get(env.reply_to)
            if fut is None or fut.done():
                return  # the requester gave up (timeout or cancellation); nothing to deliver
            body = env.body
            if isinstance(body, Ok):
                fut.set_result(body.value)
            elif isinstance(body, Err):
                fut.set_exception(BusError(body.code, body.message))
            else:
                fut.set_exception(BusError(ErrorCode.BAD_REQUEST, f"reply of type {type(body).__name__}"))
            return
        if isinstance(env.body, Ping):
            self.reply(env, Ok(env.body.payload))
            return
        self._dispatch(env)

    def _dispatch(self, env: Envelope) -> None:
        if self._handler is None:
            self.guard.count("unknown", f"{type(env.body).__name__} from {env.src!r} with no handler")
            self.reply(env, Err(ErrorCode.UNSUPPORTED, f"{self.ident!r} takes no {type(env.body).__name__}"))
            return
        try:
            result = self._handler(env)
        except Exception as exc:
            log.exception("handler failed id=%s msg=%s", self.ident, type(env.body).__name__)
            self.reply(env, Err(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}"))
            return
        if isinstance(result, Ok | Err):
            self.reply(env, result)
        elif result is not None:
            task = asyncio.get_running_loop().create_task(self._finish(env, result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _finish(self, env: Envelope, pending: Awaitable[Reply | None]) -> None:
        try:
            result = await pending
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("handler failed id=%s msg=%s", self.ident, type(env.body).__name__)
            result = Err(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        if result is not None:
            self.reply(env, result)
