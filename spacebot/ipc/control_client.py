"""An asyncio client for the control socket (tests, benchmarks, other tools).

It authenticates with the run's key (``<runtime_dir>/ctl.key``), read when the first call is made:
a client may be created before the supervisor has written it.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar, overload

import zmq
import zmq.asyncio

from spacebot.ipc import codec
from spacebot.ipc.credentials import Credentials, operator_ctl
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import ControlFrame, ControlRequest, ErrorCode, SyncEvents
from spacebot.ipc.replies import UNTYPED, BusError, PendingReplies
from spacebot.paths import Endpoints

T = TypeVar("T")


class ControlClient:
    """Request/reply over ``ctl`` with a deadline on every call; replies matched by id."""

    def __init__(
        self,
        endpoints: Endpoints,
        context: zmq.asyncio.Context | None = None,
        *,
        credentials: Credentials | None = None,
    ) -> None:
        self.endpoints = endpoints
        self.credentials = credentials
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket = self.context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._connected = False
        self._replies = PendingReplies()
        self._streams: set[EventStream] = set()
        """Open subscriptions made through this client, closed with it: one its caller dropped without
        closing would otherwise keep the shared context from terminating."""
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            raw = await self._sock.recv()
            reply = codec.control_reply_decoder.decode(raw)
            self._replies.resolve(reply.id, reply.result)

    def _credentials(self) -> Credentials:
        """The credentials to use (raises ``CredentialError`` when the key cannot be read)."""
        if self.credentials is None:
            self.credentials = operator_ctl(self.endpoints.dir)
        return self.credentials

    def _connect(self) -> None:
        if not self._connected:
            self._credentials().apply(self._sock)
            self._sock.connect(self.endpoints.ctl)
            self._connected = True

    @overload
    async def call(self, request: ControlRequest, *, returns: type[T], timeout: float = 10.0) -> T: ...
    @overload
    async def call(self, request: ControlRequest, *, returns: None, timeout: float = 10.0) -> None: ...
    @overload
    async def call(self, request: ControlRequest, *, timeout: float = 10.0) -> Any: ...
    async def call(self, request: ControlRequest, *, returns: Any = UNTYPED, timeout: float = 10.0) -> Any:
        """Send ``request``; return ``Ok.value`` converted to ``returns`` or raise :class:`BusError`
        (``bad_reply`` when the value does not fit; see :meth:`spacebot.ipc.bus.BusClient.request`)."""
        self._connect()
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        rid, fut = self._replies.open()
        try:
            # The send is under the deadline too: a DEALER with no completed connection (nobody
            # listening, or the handshake refused) waits in send, not in the reply.
            async with asyncio.timeout(timeout):
                await self._sock.send(codec.encode(ControlFrame(rid, request)))
        except TimeoutError:
            self._replies.discard(rid)
            raise BusError(
                ErrorCode.TIMEOUT, f"could not send to {self.endpoints.ctl!r} within {timeout:g}s"
            ) from None
        return await self._replies.wait(rid, fut, timeout, self.endpoints.ctl, returns)

    async def events(self, *topics: str) -> EventStream:
        """A subscription that is confirmed live before it is returned."""
        stream = EventStream(
            self.endpoints.events, topics or ("",), context=self.context, credentials=self._credentials()
        )
        self._streams = {s for s in self._streams if not s.closed}
        self._streams.add(stream)

        async def trigger(nonce: str) -> None:
            await self.call(SyncEvents(nonce), returns=None, timeout=2.0)

        await stream.sync(trigger)
        return stream

    async def close(self) -> None:
        """Close the socket (and the context if this client made it); calls still waiting for a
        reply fail with a :class:`BusError` saying so."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self._replies.fail_all("the control client was closed")
        for stream in list(self._streams):
            stream.close()
        self._sock.close(linger=0)
        if self._own_context:
            self.context.term()
