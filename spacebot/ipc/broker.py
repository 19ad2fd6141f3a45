"""The message broker inside the supervisor: a ROUTER that forwards by destination id, and a PUB.

The broker never decodes a payload on the fast path: it reads the destination frame and forwards
``[dst, src, payload]``. Payloads are decoded only when they are addressed to the supervisor, or
to build an ``Err`` reply when a destination is unknown or its queue is full.

With an :class:`~spacebot.supervisor.auth.Authenticator` both sockets are PLAIN servers: only a
peer whose credentials the ZAP handler accepted connects at all, and a peer's name on the bus is
the ``User-Id`` its credentials proved, never a routing identity it declares (ZAP cannot see that
one: the peer sends it after authenticating). See :class:`_NamedRouter`.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, overload

import zmq
import zmq.asyncio

if TYPE_CHECKING:
    from spacebot.supervisor.auth import Authenticator

from spacebot.ipc import codec
from spacebot.ipc.credentials import DOMAIN_BUS, DOMAIN_EVENTS
from spacebot.ipc.drain import Pump
from spacebot.ipc.messages import (
    BROKER_ID,
    PUBLISH_FRAME,
    SUPERVISOR_ID,
    Body,
    Envelope,
    Err,
    ErrorCode,
    Event,
    EventBody,
    FramesDropped,
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

log = logging.getLogger("spacebot.broker")

T = TypeVar("T")

_SUPERVISOR_FRAME = SUPERVISOR_ID.encode()


class _NamedRouter(zmq.Socket[bytes]):
    """A ROUTER addressed by authenticated name instead of by the routing identity a peer declares.

    Peers connect without an identity (ZeroMQ gives each connection a fresh one) and a connection
    becomes the route for a name only by sending a message under that name's ``User-Id``, which
    ZAP set from its credentials. So the broker's routing code sees ``[name, ...]`` frames in and
    sends ``[name, ...]`` frames out, and no peer can be routed to under a name it cannot prove.
    ``ROUTER_HANDOVER`` is off: a peer declaring an identity already in use stays unattached.
    """

    routes: dict[bytes, bytes]
    on_refused: Callable[[bytes, str], None] | None = None

    names: dict[bytes, bytes]
    """Connection → the user its credentials proved (a connection's user never changes), so the
    metadata is read once per connection, not once per message: the hot path stays a dict lookup."""

    def recv_multipart(self, flags: int = 0, copy: bool = True, track: bool = False) -> list[Any]:
        while True:
            first = self.recv(flags, copy=False)  # a Frame: it carries the connection's metadata
            route = first.bytes
            parts: list[Any] = [route]
            while self.getsockopt(zmq.RCVMORE):
                parts.append(self.recv(flags))
            name = self.names.get(route, b"")
            if not name:
                try:
                    name = str(first.get("User-Id")).encode()
                except zmq.ZMQError:
                    name = b""
                if name:
                    if len(self.names) > 100_000:  # connections come and go: bound the cache
                        self.names.clear()
                    self.names[route] = name
            if name:
                if self.routes.get(name) != route:
                    self.routes[name] = route  # the newest connection of a name (a restart) wins
                parts[0] = name
                return parts
            if self.on_refused is not None:
                self.on_refused(route, "a message without an authenticated user")

    def send_multipart(
        self, msg_parts: Any, flags: int = 0, copy: bool = True, track: bool = False, **kw: Any
    ) -> Any:
        parts = list(msg_parts)
        name = parts[0]
        route = self.routes.get(name)
        if route is None:
            raise zmq.ZMQError(errno.EHOSTUNREACH)
        parts[0] = route
        try:
            return super().send_multipart(parts, flags, copy=copy, track=track, **kw)
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH and self.routes.get(name) == route:
                del self.routes[name]  # that connection is gone
                self.names.pop(route, None)
            raise


class Broker:
    """Routes envelopes between bus endpoints and publishes events."""

    def __init__(
        self,
        context: zmq.asyncio.Context,
        bus_endpoint: str,
        events_endpoint: str,
        *,
        max_frame: int = codec.DEFAULT_MAX_FRAME,
        hwm: int = 10_000,
        events_hwm: int = 100_000,
        auth: Authenticator | None = None,
    ) -> None:
        self.bus_endpoint = bus_endpoint
        self.events_endpoint = events_endpoint
        self.guard = codec.FrameGuard(BROKER_ID, max_frame)
        self.routed = 0
        self._auth = auth
        self._router: zmq.Socket[bytes]
        if auth is not None:
            router = _NamedRouter(context, zmq.ROUTER)
            router.routes = {}
            router.names = {}
            router.on_refused = self._refused_frame
            self._router = router
        else:  # peers name themselves by their routing identity (unauthenticated: benchmarks only)
            self._router = zmq.Socket(context, zmq.ROUTER)
            self._router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self._router.setsockopt(zmq.SNDHWM, hwm)
        self._router.setsockopt(zmq.RCVHWM, hwm)
        self._router.setsockopt(zmq.LINGER, 0)
        self._pub: zmq.Socket[bytes] = zmq.Socket(context, zmq.PUB)
        self._pub.setsockopt(zmq.SNDHWM, events_hwm)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._handler: Handler | None = None
        self._replies = PendingReplies()
        self._responder = Responder(SUPERVISOR_ID, self.reply)
        self._pump: Pump | None = None
        self._reported_drops = 0
        self._last_drop_event = 0.0
        self.on_batch: Callable[[], None] | None = None
        self.on_unroutable: Callable[[str], bool] | None = None
        """Asked when a destination is not connected; returning True means "hold its messages, I am
        starting it" (see :meth:`release`)."""
        self._held: dict[bytes, list[tuple[bytes, bytes]]] = {}
        self._hold_cap = hwm
        if auth is not None:
            auth.secure(self._router, DOMAIN_BUS)
            auth.secure(self._pub, DOMAIN_EVENTS)

    def _refused_frame(self, route: bytes, reason: str) -> None:
        self.guard.count("malformed", f"{reason} (connection {route[:16].hex()})")
        if self._auth is not None:
            self._auth.refuse(DOMAIN_BUS, reason)

    def bind(self) -> None:
        """Bind both sockets."""
        self._router.bind(self.bus_endpoint)
        self._pub.bind(self.events_endpoint)

    def start(self, handler: Handler) -> None:
        """Start routing; ``handler`` receives envelopes addressed to the supervisor."""
        self._handler = handler
        self._pump = Pump(self._router, self._on_frames, name="broker", on_batch=self._after_batch)

    async def close(self) -> None:
        """Stop routing and close the sockets."""
        if self._pump is not None:
            self._pump.close()
        self._replies.fail_all("broker closed")
        await self._responder.close()
        self._router.close(linger=0)
        self._pub.close(linger=0)

    # -- the supervisor's own endpoint ---------------------------------------------------------

    def send(self, dst: str, body: Body) -> bool:
        """Send a one-way message from the supervisor."""
        return self._deliver(dst, Envelope(SUPERVISOR_ID, dst, 0, 0, body))

    def reply(self, env: Envelope, result: Reply) -> bool:
        """Answer a request addressed to the supervisor."""
        if env.id == 0:
            return False
        return self._deliver(env.src, Envelope(SUPERVISOR_ID, env.src, 0, env.id, result))

    @overload
    async def request(self, dst: str, body: Body, *, returns: type[T], timeout: float = 5.0) -> T: ...
    @overload
    async def request(self, dst: str, body: Body, *, returns: None, timeout: float = 5.0) -> None: ...
    @overload
    async def request(self, dst: str, body: Body, *, timeout: float = 5.0) -> Any: ...
    async def request(self, dst: str, body: Body, *, returns: Any = UNTYPED, timeout: float = 5.0) -> Any:
        """Request/reply from the supervisor to a child; the reply's value converted to ``returns``
        (as :meth:`spacebot.ipc.bus.BusClient.request`)."""
        rid, fut = self._replies.open()
        if not self._deliver(dst, Envelope(SUPERVISOR_ID, dst, rid, 0, body)):
            self._replies.discard(rid)
            raise BusError(ErrorCode.NO_ROUTE, f"cannot deliver to {dst!r}")
        return await self._replies.wait(rid, fut, timeout, dst, returns)

    def publish(self, topic: str, body: EventBody, *, src: str = SUPERVISOR_ID) -> None:
        """Publish an event (PUB never blocks; past its high-water mark a slow subscriber loses events)."""
        payload = codec.encode(Event(topic, src, time.time(), body))
        self._pub.send_multipart((topic.encode(), payload), zmq.NOBLOCK)

    def _deliver(self, dst: str, env: Envelope) -> bool:
        try:
            self._router.send_multipart((dst.encode(), _SUPERVISOR_FRAME, codec.encode(env)), zmq.NOBLOCK)
        except zmq.ZMQError as exc:
            reason = "unknown destination" if exc.errno == errno.EHOSTUNREACH else "queue full"
            self.guard.count("shed", f"supervisor → {dst!r}: {reason}")
            return False
        finally:
            if self._pump is not None:
                self._pump.kick()  # a send may have consumed the edge that announces input
        return True

    # -- routing -------------------------------------------------------------------------------

    def _on_frames(self, frames: list[bytes]) -> None:
        n = len(frames)
        if n < 3:
            self.guard.count("malformed", f"{n} frames from {frames[0][:64]!r}, expected 3")
            return
        src_raw, dst_raw = frames[0], frames[1]
        if dst_raw == PUBLISH_FRAME:
            self._forward_publish(frames)
            return
        if n != 3:
            self.guard.count("malformed", f"{n} frames from {src_raw[:64]!r}, expected 3")
            return
        payload = frames[2]
        if len(payload) > self.guard.max_frame:
            self.guard.count("oversized", f"{len(payload)} bytes from {src_raw[:64]!r}")
            self._bounce(
                src_raw,
                payload,
                ErrorCode.BAD_REQUEST,
                f"message of {len(payload)} bytes is over the bus frame cap ({self.guard.max_frame}; "
                "runtime.max_frame_bytes)",
            )
            return
        if dst_raw == _SUPERVISOR_FRAME:
            self._to_supervisor(src_raw, payload)
            return
        if self._held and dst_raw in self._held:
            self._hold_frame(dst_raw, src_raw, payload)  # keep order behind the held ones
            return
        try:
            self._router.send_multipart((dst_raw, src_raw, payload), zmq.NOBLOCK)
            self.routed += 1
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH and self._wants_hold(dst_raw):
                self._hold_frame(dst_raw, src_raw, payload)
            elif exc.errno == errno.EHOSTUNREACH:
                self._bounce(
                    src_raw, payload, ErrorCode.NO_ROUTE, f"no process {dst_raw.decode(errors='replace')!r}"
                )
            else:
                self.guard.count("shed", f"queue to {dst_raw[:64]!r} full")
                self._bounce(
                    src_raw,
                    payload,
                    ErrorCode.OVERLOADED,
                    f"{dst_raw.decode(errors='replace')!r} is not keeping up",
                )

    # -- holding messages for a process being started -----------------------------------------

    def _wants_hold(self, dst_raw: bytes) -> bool:
        if self.on_unroutable is None:
            return False
        dst = codec.decode_source(dst_raw)
        if dst is None or not self.on_unroutable(dst):
            return False
        self._held.setdefault(dst_raw, [])
        return True

    def _hold_frame(self, dst_raw: bytes, src_raw: bytes, payload: bytes) -> None:
        held = self._held[dst_raw]
        if len(held) >= self._hold_cap:
            self.guard.count("shed", f"held queue for {dst_raw[:64]!r} full")
            self._bounce(
                src_raw, payload, ErrorCode.OVERLOADED, f"{dst_raw.decode(errors='replace')!r} is starting"
            )
            return
        held.append((src_raw, payload))

    def holding(self, dst: str) -> bool:
        """Whether messages for ``dst`` are being held."""
        return dst.encode() in self._held

    def release(self, dst: str) -> int:
        """Deliver, in order, what was held for ``dst`` (now connected); returns how many."""
        dst_raw = dst.encode()
        held = self._held.pop(dst_raw, [])
        for src_raw, payload in held:
            try:
                self._router.send_multipart((dst_raw, src_raw, payload), zmq.NOBLOCK)
                self.routed += 1
            except zmq.ZMQError:
                self._bounce(src_raw, payload, ErrorCode.NO_ROUTE, f"{dst!r} went away before delivery")
        if held and self._pump is not None:
            self._pump.kick()
        return len(held)

    def reject_held(self, dst: str, code: ErrorCode, message: str) -> int:
        """Answer every held request for ``dst`` with an error (it could not be started)."""
        held = self._held.pop(dst.encode(), [])
        for src_raw, payload in held:
            self._bounce(src_raw, payload, code, message)
        return len(held)

    def _forward_publish(self, frames: list[bytes]) -> None:
        if len(frames) != 4:
            self.guard.count("malformed", f"publish with {len(frames)} frames from {frames[0][:64]!r}")
            return
        if len(frames[3]) > self.guard.max_frame:
            self.guard.count("oversized", f"publish of {len(frames[3])} bytes from {frames[0][:64]!r}")
            return
        self._pub.send_multipart((frames[2], frames[3]), zmq.NOBLOCK)
        self.routed += 1

    def _bounce(self, src_raw: bytes, payload: bytes, code: ErrorCode, message: str) -> None:
        """Send an ``Err`` back to the sender of an undeliverable request."""
        src = codec.decode_source(src_raw)
        if src is None:
            self.guard.count("malformed", f"non-UTF-8 identity {src_raw[:64]!r}")
            return
        env = codec.head(payload)  # only the request id is needed; the body may be what is wrong
        if env is None or env.id == 0 or env.src != src:
            return  # one-way messages get no error reply; the counter and log have it
        err = Envelope(BROKER_ID, src, 0, env.id, Err(code, message))
        try:
            self._router.send_multipart((src_raw, BROKER_ID.encode(), codec.encode(err)), zmq.NOBLOCK)
        except zmq.ZMQError:
            self.guard.count("shed", f"error reply to {src!r} undeliverable")

    def _to_supervisor(self, src_raw: bytes, payload: bytes) -> None:
        src = codec.decode_source(src_raw)
        if src is None:
            self.guard.count("malformed", f"non-UTF-8 identity {src_raw[:64]!r}")
            return
        env = self.guard.envelope((src_raw, payload), src, self._refused)
        if env is None:
            return
        if env.reply_to:
            self._replies.resolve(env.reply_to, env.body)
            return
        assert self._handler is not None
        self._responder.run(self._handler, env)

    def _refused(self, head: codec.EnvelopeHead, why: codec.Refusal, detail: str) -> None:
        """A message to the supervisor whose body did not decode: its sender hears why."""
        answer = refuse_undecodable(SUPERVISOR_ID, self._replies, head, why, detail)
        if answer is not None:
            self._deliver(head.src, answer)

    def _after_batch(self) -> None:
        self.report_drops()
        if self.on_batch is not None:
            self.on_batch()

    def report_drops(self) -> None:
        """Publish a throttled :class:`FramesDropped` event if anything was dropped since the last one."""
        dropped = self.guard.errors + self.guard.shed
        if dropped != self._reported_drops:
            now = time.monotonic()
            if now - self._last_drop_event >= 1.0:
                self._last_drop_event = now
                self._reported_drops = dropped
                self.publish(
                    "bus.dropped.broker",
                    FramesDropped(BROKER_ID, self.guard.snapshot(), self.guard.last_reason),
                )
