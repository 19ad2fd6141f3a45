"""A small client of the web chat WebSocket protocol (docs/webchat.md), for scripts, tests and benchmarks.

It keeps every frame it receives, lets a caller wait for a frame matching a condition, and (like the
page) reconnects by itself when the socket drops, re-sending ``hello`` and re-opening the
conversations it had open. Two frames are its own, never the server's: ``dropped`` (the socket
dropped; reconnecting) and ``closed`` (the client stopped).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Callable
from typing import Any

import aiohttp

Frame = dict[str, Any]


class ChatClient:
    """One person in one tab: ``async with ChatClient(url, name="Ana") as chat: ...``."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        person: str | None = None,
        token: str = "",
        reconnect: bool = True,
    ) -> None:
        self.url = url.rstrip("/") + "/ws"
        self.name = name
        self.person = person or f"p{secrets.token_hex(4)}"
        self.token = token
        self.reconnect = reconnect
        self.frames: list[Frame] = []
        self.welcome: Frame = {}
        self.opened: set[str] = set()
        self.reconnects = 0
        self.connected = asyncio.Event()
        self._changed = asyncio.Condition()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closing = False

    async def __aenter__(self) -> ChatClient:
        await self.connect()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- connection ----------------------------------------------------------------------------

    async def connect(self, timeout: float = 10.0) -> Frame:
        """Connect and say hello; returns the ``welcome`` frame."""
        self._session = self._session or aiohttp.ClientSession()
        await self._dial(timeout)
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return await self._hello(timeout)

    async def _dial(self, timeout: float) -> None:
        assert self._session is not None
        params = {"token": self.token} if self.token else None
        async with asyncio.timeout(timeout):
            self._ws = await self._session.ws_connect(
                self.url, params=params, timeout=aiohttp.ClientWSTimeout(ws_close=timeout)
            )

    async def _hello(self, timeout: float) -> Frame:
        mark = len(self.frames)
        await self.send_frame(
            {"type": "hello", "name": self.name, "person": self.person, "token": self.token}
        )
        self.welcome = await self.wait_for(
            lambda f: f["type"] in ("welcome", "error"), since=mark, timeout=timeout
        )
        if self.welcome["type"] == "error":
            raise ConnectionError(f"{self.welcome['code']}: {self.welcome['message']}")
        self.connected.set()
        return self.welcome

    async def _read(self) -> None:
        while not self._closing:
            ws = self._ws
            assert ws is not None
            with contextlib.suppress(aiohttp.ClientError, ConnectionError):
                async for msg in ws:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await self._add(msg.json())
            self.connected.clear()
            if self._closing or not self.reconnect or ws.close_code == 4401:
                await self._add({"type": "closed", "code": ws.close_code})
                return
            # Local, like "closed": whoever waits for an answer on the dropped socket (an ack)
            # learns at once that it will not come, and sends again once reconnected.
            await self._add({"type": "dropped", "code": ws.close_code})
            await self._redial()

    async def _redial(self) -> None:
        delay = 0.05
        while not self._closing:
            try:
                await self._dial(5.0)
            except (aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            self.reconnects += 1
            asyncio.get_running_loop().create_task(self._resume())
            return

    async def _resume(self) -> None:
        with contextlib.suppress(Exception):
            await self._hello(10.0)
            for conv in sorted(self.opened):
                await self.send_frame({"type": "open", "conversation": conv})

    async def _add(self, frame: Frame) -> None:
        async with self._changed:
            self.frames.append(frame)
            self._changed.notify_all()

    async def close(self) -> None:
        """Close the socket and the HTTP session."""
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    # -- frames --------------------------------------------------------------------------------

    async def send_frame(self, frame: Frame) -> None:
        """Send one raw frame."""
        assert self._ws is not None
        await self._ws.send_json(frame)

    async def wait_for(
        self, pred: Callable[[Frame], bool], *, since: int = 0, timeout: float = 15.0
    ) -> Frame:
        """The first frame (at index ``since`` or later) for which ``pred`` is true."""
        seen = since

        def find() -> Frame | None:
            nonlocal seen
            while seen < len(self.frames):
                frame = self.frames[seen]
                seen += 1
                if pred(frame):
                    return frame
            return None

        async with asyncio.timeout(timeout), self._changed:
            while (found := find()) is None:
                await self._changed.wait()
            return found

    async def create(self, title: str = "") -> str:
        """Create a conversation; returns its id."""
        mark = len(self.frames)
        await self.send_frame({"type": "create", "title": title})
        created = await self.wait_for(lambda f: f["type"] in ("created", "error"), since=mark)
        if created["type"] == "error":
            raise RuntimeError(created["message"])
        conv: str = created["conversation"]["id"]
        return conv

    async def open(self, conversation: str, before: int | None = None) -> Frame:
        """Open a conversation; returns its ``history`` frame."""
        mark = len(self.frames)
        self.opened.add(conversation)
        frame: Frame = {"type": "open", "conversation": conversation}
        if before is not None:
            frame["before"] = before
        await self.send_frame(frame)
        return await self.wait_for(
            lambda f: f["type"] == "error" or (f["type"] == "history" and f["conversation"] == conversation),
            since=mark,
        )

    async def send(self, conversation: str, text: str, client_id: str | None = None) -> Frame:
        """Send a message; returns its ``ack`` (or the ``error`` about it)."""
        client_id = client_id or secrets.token_hex(8)
        mark = len(self.frames)
        await self.send_frame(
            {"type": "send", "conversation": conversation, "text": text, "client_id": client_id}
        )
        return await self.wait_for(
            lambda f: f["type"] in ("ack", "error") and f.get("client_id") == client_id, since=mark
        )

    def replies(self, conversation: str) -> list[Frame]:
        """Final agent messages received for ``conversation``, in order."""
        return [
            f["message"]
            for f in self.frames
            if f["type"] == "message"
            and f["conversation"] == conversation
            and f["message"]["role"] == "assistant"
        ]
