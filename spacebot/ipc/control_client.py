"""An asyncio client for the control socket (tests, benchmarks, other tools)."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

import zmq
import zmq.asyncio

from spacebot.ipc import codec
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import ControlFrame, ControlRequest, SyncEvents
from spacebot.ipc.replies import PendingReplies
from spacebot.paths import Endpoints


class ControlClient:
    """Request/reply over ``ctl`` with a deadline on every call; replies matched by id."""

    def __init__(self, endpoints: Endpoints, context: zmq.asyncio.Context | None = None) -> None:
        self.endpoints = endpoints
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket = self.context.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoints.ctl)
        self._replies = PendingReplies()
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        while True:
            raw = await self._sock.recv()
            reply = codec.control_reply_decoder.decode(raw)
            self._replies.resolve(reply.id, reply.result)

    async def call(self, request: ControlRequest, *, timeout: float = 10.0) -> Any:
        """Send ``request``; return ``Ok.value`` or raise :class:`BusError`."""
        if self._reader is None:
            self._reader = asyncio.get_running_loop().create_task(self._read())
        rid, fut = self._replies.open()
        await self._sock.send(codec.encode(ControlFrame(rid, request)))
        return await self._replies.wait(rid, fut, timeout, self.endpoints.ctl)

    async def events(self, *topics: str) -> EventStream:
        """A subscription that is confirmed live before it is returned."""
        stream = EventStream(self.endpoints.events, topics or ("",), context=self.context)
        self._streams.add(stream)

        async def trigger(nonce: str) -> None:
            await self.call(SyncEvents(nonce), timeout=2.0)

        await stream.sync(trigger)
        return stream

    async def close(self) -> None:
        """Close the socket (and the context if this client made it)."""
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        for stream in list(self._streams):
            stream.close()
        self._sock.close(linger=0)
        if self._own_context:
            self.context.term()
