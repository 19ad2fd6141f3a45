"""The asyncio bus client every child process uses: one DEALER whose identity is the process id.

The broker accepts only authenticated peers: a child gets its credentials in its spawn request; a
client outside Spacebot's processes (tests, benchmarks) derives them from the run's key file when
it starts (``spacebot.ipc.credentials``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any, TypeVar, overload

import zmq
import zmq.asyncio

from spacebot.ipc import codec
from spacebot.ipc.credentials import Credentials, operator_bus
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
    Kind,
    Ok,
    Ping,
    ProcessExited,
    SyncEvents,
)
from spacebot.ipc.replies import (
    UNTYPED,
    BusError,
    Handler,
    PendingReplies,
    Reply,
    Responder,
    refuse_undecodable,
)

log = logging.getLogger("spacebot.ipc")

T = TypeVar("T")


class ExitWatch:
    """Fails this process's requests to another process the moment that one exits.

    A request already routed to a process that then dies is lost with it; without this the caller
    would learn it only at its deadline (10 s for memory requests — the longest part of recovering
    from a memory restart). Each destination's ``proc.<kind>.<id>.exit`` topic is subscribed on
    first use, on one events socket per process.
    """

    def __init__(self, bus: BusClient) -> None:
        self._bus = bus
        self._stream: EventStream | None = None
        self._task: asyncio.Task[None] | None = None

    def watch(self, dst: str) -> None:
        """Start following ``dst``'s exits (a no-op for the supervisor and ids of no kind)."""
        kind = dst.partition(":")[0]
        if dst == SUPERVISOR_ID or kind not in _KINDS or not self._bus.events_endpoint:
            return
        if self._stream is None:
            self._stream = EventStream(
                self._bus.events_endpoint, (), context=self._bus.context, credentials=self._bus.credentials
            )
            self._task = asyncio.get_running_loop().create_task(self._run(), name="exit-watch")
        self._stream.add_topic(f"proc.{kind}.{dst}.exit")

    async def _run(self) -> None:
        assert self._stream is not None
        async for event in self._stream:
            if isinstance(event.body, ProcessExited):
                failed = self._bus.peer_exited(event.body.id)
                if failed:
                    log.info("peer exited id=%s requests_failed=%d", event.body.id, failed)

    async def close(self) -> None:
        """Stop following exits."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._stream is not None:
            self._stream.close()


_KINDS = frozenset(k.value for k in Kind)


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
        credentials: Credentials | None = None,
    ) -> None:
        self.ident = ident
        self.endpoint = endpoint
        self.credentials = credentials
        """``None``: derived from ``<runtime_dir>/ctl.key`` at :meth:`start` (operator clients)."""
        self.events_endpoint = events_endpoint or endpoint.rsplit("/", 1)[0] + "/events"
        self.guard = codec.FrameGuard(ident, max_frame)
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self._sock: zmq.Socket[bytes] = zmq.Socket(self.context, zmq.DEALER)
        # No routing identity: the broker knows this socket by the user its credentials prove.
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        self._sock.setsockopt(zmq.RCVHWM, hwm)
        self._sock.setsockopt(zmq.LINGER, 1000)
        self._replies = PendingReplies()
        self._responder = Responder(ident, self.reply)
        self._handler: Handler | None = None
        self._pump: Pump | None = None
        self._streams: set[EventStream] = set()
        """Open subscriptions made through this client, closed with it: one its caller dropped without
        closing would otherwise keep the shared context from terminating."""
        self.exits = ExitWatch(self)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Connect and start the receive loop (call from inside the event loop).

        Raises ``CredentialError`` when no credentials were given and the key file cannot be read.
        """
        if self.credentials is None:
            runtime_dir = Path(self.endpoint.removeprefix("ipc://")).parent
            self.credentials = operator_bus(runtime_dir, self.ident)
        self.credentials.apply(self._sock)
        self._sock.connect(self.endpoint)
        self._pump = Pump(self._sock, self._on_frames, name=self.ident)

    async def close(self, linger: float = 1.0) -> None:
        """Stop receiving, fail pending requests, close the socket (flushing for ``linger`` s)."""
        if self._pump is not None:
            self._pump.close()
        await self.exits.close()
        self._replies.fail_all(f"bus client {self.ident!r} closed")
        for stream in list(self._streams):
            stream.close()  # they share our context, which cannot terminate while they are open
        await self._responder.close()
        self._sock.close(linger=int(linger * 1000))
        if self._own_context:
            self.context.term()

    def on_message(self, handler: Handler) -> None:
        """Set the function that receives every non-reply envelope."""
        self._handler = handler

    # -- sending -----------------------------------------------------------------------------

    def _transmit(self, frames: tuple[bytes, ...], shed: str | None) -> bool:
        """Send without blocking; a full queue is counted as shed when ``shed`` names why."""
        try:
            self._sock.send_multipart(frames, zmq.NOBLOCK)
        except zmq.Again:
            if shed is not None:
                self.guard.count("shed", shed)
            return False
        finally:
            if self._pump is not None:
                self._pump.kick()  # a send may have consumed the edge that announces input
        return True

    def _encode(self, dst: str, env: Envelope) -> bytes:
        """Encode ``env``, refusing what the receiver would drop as oversized.

        An oversized request or one-way message raises :class:`BusError`; an oversized reply
        becomes an ``Err`` the requester can read instead of a wait for nothing.
        """
        payload = codec.encode(env)
        if len(payload) <= self.guard.max_frame:
            return payload
        what = type(env.body).__name__
        self.guard.count("oversized", f"outgoing {what} to {dst!r}: {len(payload)} bytes")
        cap = f"over the frame cap ({self.guard.max_frame}; runtime.max_frame_bytes)"
        if not env.reply_to:
            raise BusError(ErrorCode.BAD_REQUEST, f"{what} to {dst!r} is {len(payload)} bytes, {cap}")
        err = Err(
            ErrorCode.OVERLOADED,
            f"the reply from {self.ident!r} is {len(payload)} bytes, {cap}: ask for less",
        )
        return codec.encode(Envelope(env.src, env.dst, 0, env.reply_to, err))

    def _send(self, dst: str, env: Envelope, *, count_shed: bool = True) -> bool:
        shed = f"send queue to {dst!r} full" if count_shed else None
        return self._transmit((dst.encode(), self._encode(dst, env)), shed)

    def send(self, dst: str, body: Body) -> bool:
        """Send a one-way message; ``False`` (counted as shed) if the send queue is full.

        Raises :class:`BusError` when the message is larger than the frame cap.
        """
        return self._send(dst, Envelope(self.ident, dst, 0, 0, body))

    def offer(self, dst: str, body: Body) -> bool:
        """Like :meth:`send`, but a full queue is not counted as shed: the caller will retry."""
        return self._send(dst, Envelope(self.ident, dst, 0, 0, body), count_shed=False)

    @overload
    async def request(self, dst: str, body: Body, *, returns: type[T], timeout: float = 5.0) -> T: ...
    @overload
    async def request(self, dst: str, body: Body, *, returns: None, timeout: float = 5.0) -> None: ...
    @overload
    async def request(self, dst: str, body: Body, *, timeout: float = 5.0) -> Any: ...
    async def request(self, dst: str, body: Body, *, returns: Any = UNTYPED, timeout: float = 5.0) -> Any:
        """Send ``body`` to ``dst`` and wait for its reply: ``Ok.value`` converted to ``returns``.

        ``returns=None`` expects no value. Raises :class:`BusError`: the peer's ``Err``, ``timeout``,
        or ``bad_reply`` when the value does not fit ``returns``. Without ``returns`` the value
        comes as decoded (plain data, unchecked): callers should say what they expect.
        """
        self.exits.watch(dst)
        rid, fut = self._replies.open(dst)
        try:
            sent = self._send(dst, Envelope(self.ident, dst, rid, 0, body))
        except BusError:
            self._replies.discard(rid)
            raise
        if not sent:
            self._replies.discard(rid)
            raise BusError(ErrorCode.OVERLOADED, f"send queue to {dst!r} is full")
        return await self._replies.wait(rid, fut, timeout, dst, returns)

    def peer_exited(self, peer: str) -> int:
        """``peer`` exited: its unanswered requests fail now with ``unavailable`` (transient, so
        callers retry against its next incarnation) instead of waiting for their deadlines."""
        return self._replies.fail_peer(peer, ErrorCode.UNAVAILABLE, f"{peer!r} exited before answering")

    def reply(self, env: Envelope, result: Reply) -> bool:
        """Answer ``env`` (a request) with ``result``."""
        if env.id == 0:
            return False
        return self._send(env.src, Envelope(self.ident, env.src, 0, env.id, result))

    def publish(self, topic: str, body: EventBody) -> bool:
        """Publish an event on the supervisor's events socket."""
        payload = codec.encode(Event(topic, self.ident, time.time(), body))
        return self._transmit(
            (PUBLISH_FRAME, topic.encode(), payload), f"publish queue full for topic {topic!r}"
        )

    async def sync_events(self, nonce: str) -> None:
        """Ask the supervisor to publish ``sys.sync.<nonce>`` (see :mod:`spacebot.ipc.events`)."""
        await self.request(SUPERVISOR_ID, SyncEvents(nonce), returns=None, timeout=2.0)

    async def subscribe(self, *topics: str) -> EventStream:
        """Events whose topic starts with one of ``topics`` (all when none), confirmed live on return."""
        stream = EventStream(
            self.events_endpoint, topics or ("",), context=self.context, credentials=self.credentials
        )
        self._streams = {s for s in self._streams if not s.closed}
        self._streams.add(stream)
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
        env = self.guard.envelope(frames, src, self._refused)
        if env is None:
            return
        if env.reply_to:
            self._replies.resolve(env.reply_to, env.body)
            return
        match env.body:
            case Ping(payload=payload):
                self.reply(env, Ok(payload))
            case _:
                self._dispatch(env)

    def _refused(self, head: codec.EnvelopeHead, why: codec.Refusal, detail: str) -> None:
        """A message whose body did not decode: its sender hears why rather than waiting for nothing."""
        answer = refuse_undecodable(self.ident, self._replies, head, why, detail)
        if answer is not None:
            self._send(head.src, answer)

    def _dispatch(self, env: Envelope) -> None:
        if self._handler is None:
            self.guard.count("unknown", f"{type(env.body).__name__} from {env.src!r} with no handler")
            self.reply(env, Err(ErrorCode.UNSUPPORTED, f"{self.ident!r} takes no {type(env.body).__name__}"))
            return
        self._responder.run(self._handler, env)
