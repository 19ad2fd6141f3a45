"""``FakeSlack``: a loopback Slack (Web API + Socket Mode) that the real ``slack_sdk`` talks to.

One aiohttp server on 127.0.0.1 serves:

* the Web API under ``/api/<method>`` (point ``AsyncWebClient(token, base_url=fake.api_url)`` at it;
  the trailing slash of ``api_url`` matters, ``slack_sdk`` joins method names with ``urljoin``);
* the Socket Mode WebSocket under ``/link/``, whose one-use URLs ``apps.connections.open`` hands out
  to the app-level (``xapp-``) token;
* file bodies: upload URLs from ``files.getUploadURLExternal`` and ``url_private`` downloads
  (bot token required);
* a test API under ``/_fake/...`` (JSON) for a fake running in another process
  (``spacebot fake-slack``); tests in the same event loop call the Python methods instead.

Like real Slack, an events envelope that is not acknowledged in time is delivered again with
``retry_attempt`` incremented (the same ``event_id``): deduplication is the bot's job. The bot's
own posts come back as ``message`` events carrying ``bot_id`` (``echo_bot_messages``), as they do
from Slack when the app subscribes to channel messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import logging
import re
import secrets
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import msgspec
from aiohttp import WSMsgType, web

from spacebot.messaging.fakes.base import FakeServer, json_action, serve_until_stopped

log = logging.getLogger(__name__)

ChannelKind = Literal["channel", "im", "group"]


class User(msgspec.Struct):
    """A workspace member (a person or the bot)."""

    id: str
    """``U...`` id."""
    name: str
    """Handle."""
    is_bot: bool = False
    """The app's bot user (or another bot)."""

    def info(self, team_id: str) -> dict[str, Any]:
        """The ``users.info`` object."""
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": self.name,
            "is_bot": self.is_bot,
            "deleted": False,
            "profile": {"display_name": self.name, "real_name": self.name},
        }


class Channel(msgspec.Struct):
    """A conversation: a public channel, a private group or a direct message."""

    id: str
    """``C...``, ``G...`` or ``D...`` id."""
    name: str
    """Channel name (for an im, the person's id)."""
    kind: ChannelKind = "channel"
    """Becomes the events' ``channel_type``."""
    user: str | None = None
    """For an im: the person on the other side."""

    def info(self) -> dict[str, Any]:
        """The ``conversations.info`` object."""
        out: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "is_channel": self.kind == "channel",
            "is_group": self.kind == "group",
            "is_im": self.kind == "im",
            "is_private": self.kind != "channel",
            "is_member": True,
            "is_archived": False,
        }
        if self.user is not None:
            out["user"] = self.user
        return out


class File(msgspec.Struct):
    """A file: attached to a person's post, or uploaded by the bot."""

    id: str
    """``F...`` id."""
    name: str
    """File name."""
    content: bytes = b""
    """The bytes (served at ``url_private`` to the bot token)."""
    title: str = ""
    """Title given at completion."""
    mimetype: str = "application/octet-stream"
    """MIME type."""
    user: str = ""
    """Who shared it."""
    channel: str | None = None
    """Where it was shared (``None``: uploaded, not shared)."""
    thread_ts: str | None = None
    """Thread it was shared in."""
    complete: bool = False
    """``files.completeUploadExternal`` (or a person's post) finished it."""

    def info(self, base: str, team_id: str) -> dict[str, Any]:
        """The file object of events and API answers."""
        url = f"{base}files-pri/{team_id}-{self.id}/{self.name}"
        return {
            "id": self.id,
            "name": self.name,
            "title": self.title or self.name,
            "mimetype": self.mimetype,
            "size": len(self.content),
            "user": self.user,
            "url_private": url,
            "url_private_download": url + "?download=1",
        }


class Message(msgspec.Struct):
    """One message in a channel, with its edit history and reactions."""

    channel: str
    """Channel id."""
    ts: str
    """Slack timestamp string, unique and increasing within the fake."""
    user: str
    """Author."""
    text: str = ""
    """Current text."""
    blocks: list[Any] | None = None
    """Current Block Kit blocks."""
    thread_ts: str | None = None
    """Parent ts for a thread reply."""
    reply_broadcast: bool = False
    """A thread reply also shown in the channel."""
    bot_id: str | None = None
    """Set when the bot (or another app) posted it."""
    files: list[str] = msgspec.field(default_factory=list)
    """Attached file ids."""
    history: list[dict[str, Any]] = msgspec.field(default_factory=list)
    """Earlier versions, oldest first: ``{"text", "blocks", "edited_ts"}``."""
    reactions: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Reaction name -> users who added it."""
    deleted: bool = False
    """Deleted (kept in the record, hidden from the API)."""
    edited_ts: str | None = None
    """When it was last edited."""


class Envelope(msgspec.Struct):
    """One events_api delivery waiting for its ack."""

    event_id: str
    """Same for every delivery of the event."""
    payload: dict[str, Any]
    """The ``event_callback`` payload."""
    attempts: int = 0
    """Deliveries made so far."""
    envelope_ids: list[str] = msgspec.field(default_factory=list)
    """One per delivery."""
    acked: bool = False
    """The client acknowledged one of its deliveries."""


class SlackApiFailure(Exception):
    """A Web API call answered ``{"ok": false, "error": error}``."""

    def __init__(self, error: str, status: int = 200) -> None:
        super().__init__(error)
        self.error, self.status = error, status


_MENTION = re.compile(r"<@([UW][A-Z0-9]+)(?:\|[^>]*)?>")


class FakeSlack(FakeServer):
    """A Slack workspace on loopback. ``async with FakeSlack() as slack:`` or ``await slack.start()``.

    Args:
        bot_token: The bot token (``xoxb-``) the Web API accepts.
        app_token: The app-level token (``xapp-``) ``apps.connections.open`` accepts.
        ack_timeout: Seconds before an unacknowledged envelope is delivered again.
        max_retries: Redeliveries per event (Slack makes three).
        disconnect_grace: Seconds a socket told to ``disconnect`` stays open for the client to leave.
        echo_bot_messages: Deliver the bot's own posts as ``message`` events with ``bot_id``.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_token: str = "xoxb-fake-bot-token",
        app_token: str = "xapp-fake-app-token",
        team_id: str = "T0FAKE",
        bot_user: str = "U0BOT",
        bot_id: str = "B0BOT",
        app_id: str = "A0FAKE",
        ack_timeout: float = 3.0,
        max_retries: int = 3,
        disconnect_grace: float = 5.0,
        echo_bot_messages: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.bot_token, self.app_token = bot_token, app_token
        self.team_id, self.bot_user, self.bot_id, self.app_id = team_id, bot_user, bot_id, app_id
        self.ack_timeout, self.max_retries = ack_timeout, max_retries
        self.disconnect_grace = disconnect_grace
        self.echo_bot_messages = echo_bot_messages
        self.users: dict[str, User] = {bot_user: User(bot_user, "spacebot", is_bot=True)}
        self.channels: dict[str, Channel] = {}
        self.messages: dict[str, list[Message]] = {}
        self.files: dict[str, File] = {}
        self.statuses: list[dict[str, Any]] = []
        """``assistant.threads.setStatus`` calls: ``{"channel_id", "thread_ts", "status"}``."""
        self.calls: Counter[str] = Counter()
        """Web API calls by method (429s included)."""
        self.ratelimited: Counter[str] = Counter()
        """429 answers served, by method."""
        self.events: list[dict[str, Any]] = []
        """Every event posted to Socket Mode, in order (one entry per event, not per delivery)."""
        self.acks: list[str] = []
        """Envelope ids the client acknowledged."""
        self.redeliveries = 0
        """Deliveries beyond the first."""
        self.unacked: set[str] = set()
        """Event ids still being delivered: neither acknowledged nor out of retries."""
        self.connections = 0
        """Socket Mode connections accepted (hello sent)."""
        self.disconnects: list[str] = []
        """Reasons of the ``disconnect`` messages sent."""
        self._limits: dict[str, list[int]] = {}  # method -> [calls left, retry_after]
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._leaving: set[web.WebSocketResponse] = set()  # told to disconnect
        self._transports: dict[web.WebSocketResponse, asyncio.Transport] = {}
        self._outbox: list[str] = []  # envelope texts waiting for a socket
        self._envelopes: dict[str, Envelope] = {}  # envelope id -> its event's delivery record
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._ids = itertools.count(1)
        self._last_ts = 0
        self._runner: web.AppRunner | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>/``: the root, with its trailing slash."""
        return f"http://{self.host}:{self.port}/"

    @property
    def api_url(self) -> str:
        """The ``base_url`` for ``AsyncWebClient`` (ends with a slash, as slack_sdk needs)."""
        return self.url + "api/"

    async def start(self) -> int:
        """Start listening; returns the bound port (``port=0`` picks a free one)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/link/", self._link)
        app.router.add_post("/upload/v1/{file_id}", self._upload)
        app.router.add_get("/files-pri/{team_file}/{name}", self._download)
        app.router.add_route("*", "/_fake/{action}", self._test_api)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self.port

    async def stop(self) -> None:
        """Close every socket, stop redelivering, release the port."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ws in list(self._sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- test API: the workspace ---------------------------------------------------------------
    def add_user(self, name: str, *, id: str | None = None, is_bot: bool = False) -> User:
        """Add a person (or another bot) to the workspace."""
        user = User(id or f"U{next(self._ids):06d}", name, is_bot=is_bot)
        self.users[user.id] = user
        self._notify()
        return user

    def add_channel(
        self, name: str, *, kind: ChannelKind = "channel", id: str | None = None, user: str | None = None
    ) -> Channel:
        """Add a channel; ``kind="im"`` with ``user`` is a direct message with that person."""
        if kind == "im" and (user is None or user not in self.users):
            raise ValueError(f"an im needs an existing user, got {user!r}")
        prefix = {"channel": "C", "group": "G", "im": "D"}[kind]
        channel = Channel(id or f"{prefix}{next(self._ids):06d}", name, kind=kind, user=user)
        self.channels[channel.id] = channel
        self.messages.setdefault(channel.id, [])
        self._notify()
        return channel

    def post(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> Message:
        """Post as a person: stored, then delivered over Socket Mode (``app_mention`` too on a mention).

        ``files`` items are ``{"name", "content" (str or bytes), "mimetype"?}``.
        """
        if channel not in self.channels:
            raise ValueError(f"unknown channel {channel!r}: add it with add_channel() first")
        if user not in self.users:
            raise ValueError(f"unknown user {user!r}: add it with add_user() first")
        file_ids = []
        for spec in files or ():
            content = spec.get("content", b"")
            f = File(
                id=f"F{next(self._ids):06d}",
                name=str(spec["name"]),
                content=content.encode() if isinstance(content, str) else bytes(content),
                mimetype=str(spec.get("mimetype", "text/plain")),
                user=user,
                channel=channel,
                thread_ts=thread_ts,
                complete=True,
            )
            self.files[f.id] = f
            file_ids.append(f.id)
        msg = self._store(Message(channel, self._ts(), user, text, thread_ts=thread_ts, files=file_ids))
        self._emit_message(msg)
        if self.channels[channel].kind != "im" and self.bot_user in _MENTION.findall(text):
            event = {k: v for k, v in self._message_json(msg).items() if k not in ("channel_type",)}
            event.update(type="app_mention", event_ts=msg.ts)
            self._emit(event)
        return msg

    def edit(self, channel: str, ts: str, text: str) -> Message:
        """Edit a message as its author: a ``message_changed`` event follows."""
        msg = self._find(channel, ts)
        previous = self._message_json(msg)
        self._revise(msg, text, None)
        self._emit_changed(msg, previous)
        return msg

    def delete(self, channel: str, ts: str) -> Message:
        """Delete a message as its author: a ``message_deleted`` event follows."""
        msg = self._find(channel, ts)
        self._remove(msg)
        return msg

    # ---- test API: what the bot did ------------------------------------------------------------
    def bot_messages(self, channel: str | None = None) -> list[Message]:
        """Every message the bot posted (deleted ones included, flagged), oldest first."""
        return [
            m
            for cid, msgs in self.messages.items()
            if channel is None or cid == channel
            for m in msgs
            if m.user == self.bot_user
        ]

    def uploads(self) -> list[File]:
        """Files the bot uploaded (completed or not)."""
        return [f for f in self.files.values() if f.user == self.bot_user]

    def rate_limit(self, method: str, times: int = 1, retry_after: int = 0) -> None:
        """Answer the next ``times`` calls of ``method`` with 429 and ``Retry-After``."""
        self._limits[method] = [times, retry_after]

    async def disconnect(self, reason: str = "refresh_requested") -> None:
        """Send ``{"type": "disconnect"}`` on every socket; close each once the client left or later."""
        for ws in list(self._sockets):
            self._leaving.add(ws)
            await self._send(ws, {"type": "disconnect", "reason": reason, "debug_info": {"host": "fake"}})
            self.disconnects.append(reason)
            self._spawn(self._close_later(ws))
        self._notify()

    def drop(self) -> int:
        """Cut every socket without a close frame (a network failure); returns how many."""
        dropped = 0
        for ws in list(self._sockets):
            transport = self._transports.get(ws)
            if transport is not None and not transport.is_closing():
                transport.abort()
                dropped += 1
        return dropped

    def state(self) -> dict[str, Any]:
        """Everything the fake recorded, as JSON-ready builtins (``GET /_fake/state``)."""
        return {
            "team_id": self.team_id,
            "bot_user": self.bot_user,
            "users": msgspec.to_builtins(list(self.users.values())),
            "channels": msgspec.to_builtins(list(self.channels.values())),
            "messages": {c: msgspec.to_builtins(m) for c, m in self.messages.items()},
            "bot_messages": msgspec.to_builtins(self.bot_messages()),
            "uploads": [
                {**f.info(self.url, self.team_id), "channel": f.channel, "complete": f.complete}
                for f in self.uploads()
            ],
            "statuses": self.statuses,
            "calls": dict(self.calls),
            "ratelimited": dict(self.ratelimited),
            "events": self.events,
            "acks": self.acks,
            "redeliveries": self.redeliveries,
            "unacked": sorted(self.unacked),
            "connections": self.connections,
            "open_sockets": len(self._sockets),
            "disconnects": self.disconnects,
        }

    def counts(self) -> dict[str, int]:
        """The counters ``/_fake/wait`` can wait on."""
        out = {
            "bot_messages": len(self.bot_messages()),
            "uploads": sum(f.complete for f in self.uploads()),
            "events": len(self.events),
            "acks": len(self.acks),
            "redeliveries": self.redeliveries,
            "unacked": len(self.unacked),
            "connections": self.connections,
            "open_sockets": len(self._sockets),
            "statuses": len(self.statuses),
        }
        out.update({f"calls.{m}": n for m, n in self.calls.items()})
        return out

    # ---- the state model -----------------------------------------------------------------------
    def _ts(self) -> str:
        micros = max(int(time.time() * 1_000_000), self._last_ts + 1)
        self._last_ts = micros
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _channel(self, channel: str) -> Channel:
        try:
            return self.channels[channel]
        except KeyError:
            raise SlackApiFailure("channel_not_found") from None

    def _find(self, channel: str, ts: str) -> Message:
        self._channel(channel)
        for msg in self.messages[channel]:
            if msg.ts == ts and not msg.deleted:
                return msg
        raise SlackApiFailure("message_not_found")

    def _store(self, msg: Message) -> Message:
        self.messages[msg.channel].append(msg)
        self._notify()
        return msg

    def _revise(self, msg: Message, text: str | None, blocks: list[Any] | None) -> None:
        msg.history.append({"text": msg.text, "blocks": msg.blocks, "edited_ts": msg.edited_ts})
        if text is not None:
            msg.text = text
        if blocks is not None:
            msg.blocks = blocks
        msg.edited_ts = self._ts()
        self._notify()

    def _remove(self, msg: Message) -> None:
        previous = self._message_json(msg)
        msg.deleted = True
        self._notify()
        if msg.user == self.bot_user and not self.echo_bot_messages:
            return
        channel = self.channels[msg.channel]
        self._emit(
            {
                "type": "message",
                "subtype": "message_deleted",
                "hidden": True,
                "channel": msg.channel,
                "channel_type": channel.kind,
                "ts": self._ts(),
                "deleted_ts": msg.ts,
                "previous_message": previous,
            }
        )

    def _message_json(self, msg: Message) -> dict[str, Any]:
        """The message as the Web API and events show it."""
        out: dict[str, Any] = {
            "type": "message",
            "channel": msg.channel,
            "channel_type": self.channels[msg.channel].kind,
            "user": msg.user,
            "text": msg.text,
            "ts": msg.ts,
            "team": self.team_id,
        }
        if msg.blocks is not None:
            out["blocks"] = msg.blocks
        if msg.bot_id is not None:
            out["bot_id"] = msg.bot_id
            out["app_id"] = self.app_id
        if msg.thread_ts is not None:
            out["thread_ts"] = msg.thread_ts
            parent = next((m for m in self.messages[msg.channel] if m.ts == msg.thread_ts), None)
            if parent is not None:
                out["parent_user_id"] = parent.user
            if msg.reply_broadcast:
                out["subtype"] = "thread_broadcast"
        if msg.files:
            out["files"] = [self.files[f].info(self.url, self.team_id) for f in msg.files]
            out.setdefault("subtype", "file_share")
        if msg.edited_ts is not None:
            out["edited"] = {"user": msg.user, "ts": msg.edited_ts}
        if msg.reactions:
            out["reactions"] = [
                {"name": name, "users": users, "count": len(users)} for name, users in msg.reactions.items()
            ]
        replies = [m for m in self.messages[msg.channel] if m.thread_ts == msg.ts and not m.deleted]
        if replies and msg.thread_ts is None:
            out["thread_ts"] = msg.ts
            out["reply_count"] = len(replies)
            out["latest_reply"] = replies[-1].ts
        return out

    # ---- Socket Mode ---------------------------------------------------------------------------
    def _emit_message(self, msg: Message) -> None:
        event = self._message_json(msg)
        event["event_ts"] = msg.ts
        self._emit(event)

    def _emit_changed(self, msg: Message, previous: dict[str, Any]) -> None:
        self._emit(
            {
                "type": "message",
                "subtype": "message_changed",
                "hidden": True,
                "channel": msg.channel,
                "channel_type": self.channels[msg.channel].kind,
                "ts": msg.edited_ts,
                "message": self._message_json(msg),
                "previous_message": previous,
            }
        )

    def _emit(self, event: dict[str, Any]) -> None:
        """Wrap an event in an ``event_callback`` payload and deliver it until acknowledged."""
        event.setdefault("event_ts", event.get("ts", self._ts()))
        event_id = f"Ev{next(self._ids):08d}"
        payload = {
            "token": "fake-verification-token",
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id,
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "team_id": self.team_id,
                    "user_id": self.bot_user,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }
        self.events.append(payload)
        self._spawn(self._deliver(Envelope(event_id, payload)))
        self._notify()

    async def _deliver(self, env: Envelope) -> None:
        """Send the envelope; send it again after every ``ack_timeout`` without an ack."""
        self.unacked.add(env.event_id)
        try:
            await self._deliver_until_acked(env)
        finally:
            self.unacked.discard(env.event_id)
            self._notify()

    async def _deliver_until_acked(self, env: Envelope) -> None:
        while not env.acked and env.attempts <= self.max_retries:
            envelope_id = secrets.token_hex(16)
            env.envelope_ids.append(envelope_id)
            self._envelopes[envelope_id] = env
            frame = {
                "envelope_id": envelope_id,
                "payload": env.payload,
                "type": "events_api",
                "accepts_response_payload": False,
                "retry_attempt": env.attempts,
                "retry_reason": "timeout" if env.attempts else "",
            }
            if env.attempts:
                self.redeliveries += 1
            env.attempts += 1
            text = json.dumps(frame)
            ws = next((s for s in reversed(self._sockets) if s not in self._leaving), None)
            if ws is None or not await self._send(ws, text):
                self._outbox.append(text)  # sent on the next hello; the clock runs meanwhile
            self._notify()
            with contextlib.suppress(TimeoutError):
                await self.wait_for(lambda: env.acked, timeout=self.ack_timeout)

    async def _send(self, ws: web.WebSocketResponse, message: dict[str, Any] | str) -> bool:
        if ws.closed:
            return False
        try:
            await ws.send_str(message if isinstance(message, str) else json.dumps(message))
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def _close_later(self, ws: web.WebSocketResponse) -> None:
        """After a ``disconnect``: give the client ``disconnect_grace`` to leave, then close."""
        with contextlib.suppress(TimeoutError):
            await self.wait_for(lambda: ws.closed or ws not in self._sockets, timeout=self.disconnect_grace)
        if not ws.closed:
            await ws.close(code=1000, message=b"disconnect")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _link(self, request: web.Request) -> web.StreamResponse:
        """``GET /link/?ticket=...``: one Socket Mode connection."""
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return web.Response(status=401, text=f"unknown or used Socket Mode ticket {ticket!r}")
        self._tickets.discard(ticket)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._sockets.append(ws)
        if request.transport is not None:
            self._transports[ws] = request.transport
        self.connections += 1
        await self._send(
            ws,
            {
                "type": "hello",
                "num_connections": len(self._sockets),
                "debug_info": {"host": "fake-slack", "approximate_connection_time": 3600},
                "connection_info": {"app_id": self.app_id},
            },
        )
        outbox, self._outbox = self._outbox, []
        for text in outbox:
            await self._send(ws, text)
        self._notify()
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    self._on_client_frame(frame.data)
        finally:
            self._sockets.remove(ws)
            self._leaving.discard(ws)
            self._transports.pop(ws, None)
            self._notify()
        return ws

    def _on_client_frame(self, data: str) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            log.warning("fake slack: a Socket Mode frame that is not JSON: %r", data[:200])
            return
        envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
        if not isinstance(envelope_id, str):
            log.warning("fake slack: a Socket Mode frame without an envelope_id: %r", data[:200])
            return
        self.acks.append(envelope_id)
        env = self._envelopes.get(envelope_id)
        if env is None:
            log.warning("fake slack: an ack for unknown envelope %r", envelope_id)
        else:
            env.acked = True
        self._notify()

    # ---- Web API -------------------------------------------------------------------------------
    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        self.calls[method] += 1
        self._notify()
        args: dict[str, Any] = dict(request.query)
        if request.content_type == "application/json":
            try:
                body = await request.json()
            except ValueError:
                return web.json_response({"ok": False, "error": "invalid_json"})
            if isinstance(body, dict):
                args.update(body)
        elif request.can_read_body:
            args.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        limit = self._limits.get(method)
        if limit is not None and limit[0] > 0:
            limit[0] -= 1
            self.ratelimited[method] += 1
            self._notify()
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(limit[1])}
            )
        handler = _METHODS.get(method)
        try:
            if handler is None:
                raise SlackApiFailure("unknown_method", status=404)
            self._check_token(request, args, app_level=method == "apps.connections.open")
            result = handler(self, args)
        except SlackApiFailure as exc:
            return web.json_response({"ok": False, "error": exc.error}, status=exc.status)
        return web.json_response({"ok": True, **result})

    def _check_token(self, request: web.Request, args: dict[str, Any], *, app_level: bool) -> None:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else args.get("token")
        if not token:
            raise SlackApiFailure("not_authed")
        wanted, other = (self.app_token, self.bot_token) if app_level else (self.bot_token, self.app_token)
        if token == other:
            raise SlackApiFailure("not_allowed_token_type")
        if token != wanted:
            raise SlackApiFailure("invalid_auth")

    def _bot_authed(self, request: web.Request) -> bool:
        return request.headers.get("Authorization", "") == f"Bearer {self.bot_token}"

    async def _upload(self, request: web.Request) -> web.Response:
        """The upload URL of ``files.getUploadURLExternal``: the file's bytes."""
        f = self.files.get(request.match_info["file_id"])
        if f is None or f.complete:
            return web.Response(status=404, text="unknown or completed upload")
        f.content = await request.read()
        self._notify()
        return web.Response(text=f"OK - {len(f.content)}")

    async def _download(self, request: web.Request) -> web.Response:
        """``url_private``: the file's bytes, to the bot token only."""
        if not self._bot_authed(request):
            return web.Response(status=403, text="url_private needs 'Authorization: Bearer <bot token>'")
        file_id = request.match_info["team_file"].removeprefix(f"{self.team_id}-")
        f = self.files.get(file_id)
        if f is None or not f.complete:
            return web.Response(status=404, text=f"no file {file_id!r}")
        return web.Response(body=f.content, content_type=f.mimetype.split(";")[0])

    # ---- test API over HTTP --------------------------------------------------------------------
    async def _test_api(self, request: web.Request) -> web.Response:
        return await json_action(request, self._test_action, self.counts, (SlackApiFailure,))

    async def _test_action(self, action: str, body: dict[str, Any]) -> Any:
        match action:
            case "state":
                return self.state()
            case "counts":
                return self.counts()
            case "users":
                return msgspec.to_builtins(
                    self.add_user(body["name"], id=body.get("id"), is_bot=body.get("is_bot", False))
                )
            case "channels":
                return msgspec.to_builtins(
                    self.add_channel(
                        body["name"],
                        kind=body.get("kind", "channel"),
                        id=body.get("id"),
                        user=body.get("user"),
                    )
                )
            case "post":
                msg = self.post(
                    body["channel"],
                    body["user"],
                    body["text"],
                    thread_ts=body.get("thread_ts"),
                    files=body.get("files"),
                )
                return msgspec.to_builtins(msg)
            case "edit":
                return msgspec.to_builtins(self.edit(body["channel"], body["ts"], body["text"]))
            case "delete":
                return msgspec.to_builtins(self.delete(body["channel"], body["ts"]))
            case "rate_limit":
                self.rate_limit(body["method"], int(body.get("times", 1)), int(body.get("retry_after", 0)))
                return {}
            case "disconnect":
                await self.disconnect(body.get("reason", "refresh_requested"))
                return {}
            case "drop":
                return {"dropped": self.drop()}
            case "wait":
                # {"counter": "bot_messages", "at_least": 2, "timeout": 10} (or "at_most": 0): a
                # long poll for another process, answered when the counter gets there.
                name = str(body["counter"])
                low, high = int(body.get("at_least", 0)), body.get("at_most")
                if high is None and "at_least" not in body:
                    low = 1

                def reached() -> bool:
                    value = self.counts().get(name, 0)
                    return value >= low and (high is None or value <= int(high))

                await self.wait_for(reached, timeout=float(body.get("timeout", 10)))
                return self.counts()
        raise ValueError(f"unknown test action {action!r}")


# ---- Web API methods: (fake, args) -> the answer's fields ---------------------------------------


def _required(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if value in (None, ""):
        raise SlackApiFailure(f"invalid_arguments: {name} is required")
    return str(value)


def _decoded(value: Any) -> Any:
    """A structured argument arrives as JSON text in a form body, as itself in a JSON body."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise SlackApiFailure("invalid_arguments") from None
    return value


def _auth_test(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {
        "url": fake.url,
        "team": "Fake Team",
        "user": fake.users[fake.bot_user].name,
        "team_id": fake.team_id,
        "user_id": fake.bot_user,
        "bot_id": fake.bot_id,
        "is_enterprise_install": False,
    }


def _connections_open(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    ticket = secrets.token_hex(16)
    fake._tickets.add(ticket)
    return {"url": f"ws://{fake.host}:{fake.port}/link/?ticket={ticket}&app_id={fake.app_id}"}


def _post_message(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel = fake._channel(_required(args, "channel")).id
    blocks = _decoded(args["blocks"]) if args.get("blocks") else None
    text = str(args.get("text") or "")
    if not text and not blocks:
        raise SlackApiFailure("no_text")
    broadcast = args.get("reply_broadcast") in (True, "true", "1", 1)
    msg = Message(
        channel,
        fake._ts(),
        fake.bot_user,
        text,
        blocks=blocks,
        thread_ts=args.get("thread_ts") or None,
        reply_broadcast=broadcast and bool(args.get("thread_ts")),
        bot_id=fake.bot_id,
    )
    fake._store(msg)
    if fake.echo_bot_messages:
        fake._emit_message(msg)
    return {"channel": channel, "ts": msg.ts, "message": fake._message_json(msg)}


def _update(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    msg = fake._find(_required(args, "channel"), _required(args, "ts"))
    if msg.user != fake.bot_user:
        raise SlackApiFailure("cant_update_message")
    blocks = _decoded(args["blocks"]) if args.get("blocks") else None
    if args.get("text") is None and blocks is None:
        raise SlackApiFailure("no_text")
    previous = fake._message_json(msg)
    fake._revise(msg, args.get("text"), blocks)
    if fake.echo_bot_messages:
        fake._emit_changed(msg, previous)
    return {"channel": msg.channel, "ts": msg.ts, "text": msg.text, "message": fake._message_json(msg)}


def _delete(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    msg = fake._find(_required(args, "channel"), _required(args, "ts"))
    if msg.user != fake.bot_user:
        raise SlackApiFailure("cant_delete_message")
    fake._remove(msg)
    return {"channel": msg.channel, "ts": msg.ts}


def _reactions_add(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    msg = fake._find(_required(args, "channel"), _required(args, "timestamp"))
    users = msg.reactions.setdefault(_required(args, "name"), [])
    if fake.bot_user in users:
        raise SlackApiFailure("already_reacted")
    users.append(fake.bot_user)
    fake._notify()
    return {}


def _page(items: list[dict[str, Any]], args: dict[str, Any]) -> dict[str, Any]:
    start = int(args.get("cursor") or 0)
    limit = max(1, min(int(args.get("limit") or 100), 1000))
    page = items[start : start + limit]
    more = start + limit < len(items)
    return {
        "messages": page,
        "has_more": more,
        "response_metadata": {"next_cursor": str(start + limit) if more else ""},
    }


def _history(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    channel = fake._channel(_required(args, "channel")).id
    latest, oldest = args.get("latest"), args.get("oldest")
    shown = [
        fake._message_json(m)
        for m in reversed(fake.messages[channel])
        if not m.deleted
        and (m.thread_ts is None or m.reply_broadcast)
        and (latest is None or float(m.ts) <= float(latest))
        and (oldest is None or float(m.ts) >= float(oldest))
    ]
    return _page(shown, args)


def _replies(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    parent = fake._find(_required(args, "channel"), _required(args, "ts"))
    root = parent.thread_ts or parent.ts
    thread = [
        fake._message_json(m)
        for m in fake.messages[parent.channel]
        if not m.deleted and (m.ts == root or m.thread_ts == root)
    ]
    return _page(thread, args)


def _conversation_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    return {"channel": fake._channel(_required(args, "channel")).info()}


def _users_info(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    user = fake.users.get(_required(args, "user"))
    if user is None:
        raise SlackApiFailure("user_not_found")
    return {"user": user.info(fake.team_id)}


def _upload_url(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    f = File(id=f"F{next(fake._ids):06d}", name=_required(args, "filename"), user=fake.bot_user)
    fake.files[f.id] = f
    fake._notify()
    return {"upload_url": f"{fake.url}upload/v1/{f.id}", "file_id": f.id}


def _complete_upload(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    items = _decoded(_required(args, "files"))
    channel = args.get("channel_id") or None
    if channel is not None:
        fake._channel(channel)
    done: list[File] = []
    for item in items:
        f = fake.files.get(str(item.get("id")))
        if f is None or f.user != fake.bot_user:
            raise SlackApiFailure("file_not_found")
        f.title = str(item.get("title") or f.name)
        f.complete, f.channel, f.thread_ts = True, channel, args.get("thread_ts") or None
        done.append(f)
    if channel is not None:
        msg = Message(
            channel,
            fake._ts(),
            fake.bot_user,
            str(args.get("initial_comment") or ""),
            thread_ts=args.get("thread_ts") or None,
            bot_id=fake.bot_id,
            files=[f.id for f in done],
        )
        fake._store(msg)
        if fake.echo_bot_messages:
            fake._emit_message(msg)
    fake._notify()
    return {"files": [{**f.info(fake.url, fake.team_id), "title": f.title} for f in done]}


def _set_status(fake: FakeSlack, args: dict[str, Any]) -> dict[str, Any]:
    fake._channel(_required(args, "channel_id"))
    fake.statuses.append(
        {
            "channel_id": args["channel_id"],
            "thread_ts": _required(args, "thread_ts"),
            "status": args.get("status", ""),
        }
    )
    fake._notify()
    return {}


_METHODS: dict[str, Callable[[FakeSlack, dict[str, Any]], dict[str, Any]]] = {
    "auth.test": _auth_test,
    "apps.connections.open": _connections_open,
    "chat.postMessage": _post_message,
    "chat.update": _update,
    "chat.delete": _delete,
    "reactions.add": _reactions_add,
    "conversations.history": _history,
    "conversations.replies": _replies,
    "conversations.info": _conversation_info,
    "users.info": _users_info,
    "files.getUploadURLExternal": _upload_url,
    "files.completeUploadExternal": _complete_upload,
    "assistant.threads.setStatus": _set_status,
}


# ---- ``spacebot fake-slack`` ----------------------------------------------------------------------


def fake_slack_handler(args: argparse.Namespace) -> int:
    """Run the fake until SIGINT/SIGTERM; the first line printed names its API base URL."""

    def make() -> FakeSlack:
        return FakeSlack(
            host=args.host,
            port=args.port,
            bot_token=args.bot_token,
            app_token=args.app_token,
            ack_timeout=args.ack_timeout,
        )

    def announce(fake: FakeServer) -> str:
        assert isinstance(fake, FakeSlack)
        return f"fake-slack listening: Web API base_url {fake.api_url} (test API {fake.url}_fake/)"

    return serve_until_stopped("slack", make, announce, f"{args.host}:{args.port}")
