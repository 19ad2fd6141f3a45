"""Subscribing to the supervisor's events socket, with a handshake so no early event is missed.

PUB/SUB drops whatever is published before a subscription reaches the publisher. A subscriber
therefore also subscribes to ``sys.sync.<nonce>`` and asks the supervisor to publish that topic
until it arrives: subscriptions travel in order on one connection, so once the sync event is seen
every earlier subscription is live too.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable

import msgspec
import zmq
import zmq.asyncio

from spacebot.errors import ProcessTimeout
from spacebot.ipc import codec
from spacebot.ipc.credentials import Credentials
from spacebot.ipc.messages import Event

SYNC_PREFIX = "sys.sync."


class EventStream:
    """An async iterator of :class:`Event` s matching topic prefixes."""

    def __init__(
        self,
        endpoint: str,
        topics: Iterable[str] = ("",),
        *,
        context: zmq.asyncio.Context | None = None,
        credentials: Credentials | None = None,
    ) -> None:
        self._own_context = context is None
        self.context = context or zmq.asyncio.Context()
        self._sock: zmq.asyncio.Socket = self.context.socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.RCVHWM, 100_000)
        self.topics = list(topics)
        for topic in self.topics:
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
        self._nonce = secrets.token_hex(8)
        self._sync_topic = SYNC_PREFIX + self._nonce
        self._sock.setsockopt(zmq.SUBSCRIBE, self._sync_topic.encode())
        if credentials is not None:  # the events socket only serves authenticated subscribers
            credentials.apply(self._sock)
        self._sock.connect(endpoint)
        self.malformed = 0

    def add_topic(self, topic: str) -> None:
        """Also receive events whose topic starts with ``topic`` (takes effect asynchronously)."""
        if topic not in self.topics:
            self.topics.append(topic)
            self._sock.setsockopt(zmq.SUBSCRIBE, topic.encode())

    async def sync(self, trigger: Callable[[str], Awaitable[None]], *, timeout: float = 5.0) -> None:
        """Return once the subscription is live; ``trigger(nonce)`` asks the supervisor to publish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await trigger(self._nonce)
            try:
                async with asyncio.timeout(0.05):
                    while True:
                        topic, _payload = await self._recv_raw()
                        if topic == self._sync_topic:
                            self._sock.setsockopt(zmq.UNSUBSCRIBE, self._sync_topic.encode())
                            return
            except TimeoutError:
                continue
        raise ProcessTimeout(f"event subscription was not confirmed within {timeout:g}s")

    async def _recv_raw(self) -> tuple[str, bytes]:
        frames = await self._sock.recv_multipart()
        if len(frames) != 2:
            self.malformed += 1
            return "", b""
        return frames[0].decode(errors="replace"), frames[1]

    async def next(self, timeout: float | None = None) -> Event:
        """The next matching event (sync events and undecodable frames are skipped)."""
        async with asyncio.timeout(timeout):
            while True:
                topic, payload = await self._recv_raw()
                if not payload or topic.startswith(SYNC_PREFIX):
                    continue
                try:
                    return codec.event_decoder.decode(payload)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
                    self.malformed += 1

    async def wait_for(self, predicate: Callable[[Event], bool], *, timeout: float = 10.0) -> Event:
        """Skip events until one satisfies ``predicate``; raise ``TimeoutError`` at the deadline."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.next()
                if predicate(event):
                    return event

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            yield await self.next()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return bool(self._sock.closed)

    def close(self) -> None:
        """Close the socket (and the context if this stream made it); closing twice is harmless."""
        if self._sock.closed:
            return
        self._sock.close(linger=0)
        if self._own_context:
            self.context.term()
