"""``FakeDiscord``: a loopback Discord (REST v10 + JSON gateway) that the real discord.py talks to.

One aiohttp server on 127.0.0.1 serves the REST API under ``/api/v10``, the gateway WebSocket at
``/gateway`` and a test API under ``/_fake``. A client process points discord.py at it with
:func:`point_discord_py_at` (two class attributes), then ``client.start(fake.token)`` works as
against Discord: ``GET /users/@me`` and ``GET /oauth2/applications/@me`` log in, the gateway says
HELLO, takes IDENTIFY, sends READY and one GUILD_CREATE per guild, answers heartbeats, buffers
dispatches per session and replays them on RESUME.

Compression: discord.py always asks for ``compress=zlib-stream`` (or ``zstd-stream``) in the
gateway URL, and it decompresses only *binary* frames. The fake sends every payload as an
uncompressed *text* frame, which discord.py reads as-is, so no compression is negotiated.

People are driven from tests: :meth:`FakeDiscord.post` (and ``edit``/``delete``) create messages as
users and dispatch them; everything the bot does is recorded (messages with their edit history,
reactions, typing, threads) together with REST call counts per route. Faults: 429s on a route,
dropped gateway connections, op 7 RECONNECT, op 9 INVALID_SESSION, close codes on IDENTIFY, and a
revoked token. The same test API is served as JSON under ``/_fake/...`` for a fake started in
another process (``spacebot fake-discord``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import mimetypes
import secrets
import signal
import time
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import BodyPartReader, WSMsgType, web

from spacebot.messaging.fakes.base import FakeServer

log = logging.getLogger(__name__)

T = TypeVar("T")

API_PREFIX = "/api/v10"
DISCORD_EPOCH_MS = 1420070400000
NONCE_WINDOW_S = 300.0
"""How long Discord remembers an ``enforce_nonce`` nonce (a few minutes)."""

# Channel types (Discord's numbering).
GUILD_TEXT = 0
DM = 1
PUBLIC_THREAD = 11

# Gateway opcodes.
OP_DISPATCH, OP_HEARTBEAT, OP_IDENTIFY, OP_RESUME, OP_RECONNECT = 0, 1, 2, 6, 7
OP_REQUEST_MEMBERS, OP_INVALID_SESSION, OP_HELLO, OP_HEARTBEAT_ACK = 8, 9, 10, 11

# Intent bits that gate what the fake dispatches.
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_GUILD_MESSAGE_TYPING = 1 << 11
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_DIRECT_MESSAGE_TYPING = 1 << 14
INTENT_MESSAGE_CONTENT = 1 << 15


def _import_discord() -> None:
    # discord.py imports the stdlib ``audioop`` (for voice), deprecated since Python 3.11.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import discord  # noqa: F401


def point_discord_py_at(api_base: str, gateway_url: str) -> None:
    """Make every discord.py client in this process use the given REST base and gateway.

    ``api_base`` is the fake's ``api_url`` (``http://127.0.0.1:PORT/api/v10``, no trailing slash);
    ``gateway_url`` its ``gateway_url`` (``ws://127.0.0.1:PORT/gateway``). discord.py adds the
    ``v``/``encoding``/``compress`` query itself. Both are class attributes, so this is
    process-wide; :func:`restore_discord_py` undoes it.
    """
    import yarl

    _import_discord()
    import discord.gateway
    import discord.http

    discord.http.Route.BASE = api_base.rstrip("/")
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


def restore_discord_py() -> None:
    """Point discord.py back at the real Discord."""
    import yarl

    _import_discord()
    import discord.gateway
    import discord.http

    discord.http.Route.BASE = f"https://discord.com/api/v{discord.http.INTERNAL_API_VERSION}"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL("wss://gateway.discord.gg/")


# -- the state model -----------------------------------------------------------------------------


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).isoformat()


def _snowflake_ms(snowflake: int) -> int:
    return (snowflake >> 22) + DISCORD_EPOCH_MS


@dataclass
class User:
    """A Discord user: the bot or a person."""

    id: int
    username: str
    bot: bool = False

    def to_json(self) -> dict[str, Any]:
        """The user object."""
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": None if self.bot else self.username,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
        }


@dataclass
class Channel:
    """A guild text channel, a DM or a thread (``parent_id`` set)."""

    id: int
    type: int
    name: str | None
    guild_id: int | None = None
    parent_id: int | None = None
    owner_id: int | None = None
    recipient_ids: list[int] = field(default_factory=list)
    starter_message_id: int | None = None
    """For a thread started from a message: that message (whose id the thread shares)."""

    def to_json(self, fake: FakeDiscord) -> dict[str, Any]:
        """The channel object."""
        last = fake._messages_in(self.id)
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "last_message_id": str(last[-1].id) if last else None,
            "flags": 0,
        }
        if self.type == DM:
            data["recipients"] = [fake.users[u].to_json() for u in self.recipient_ids]
            return data
        data.update(
            {
                "guild_id": str(self.guild_id),
                "name": self.name,
                "position": 0,
                "permission_overwrites": [],
                "nsfw": False,
                "rate_limit_per_user": 0,
                "topic": None,
                "parent_id": str(self.parent_id) if self.parent_id else None,
            }
        )
        if self.type == PUBLIC_THREAD:
            count = len(last)
            data.update(
                {
                    "owner_id": str(self.owner_id),
                    "message_count": count,
                    "total_message_sent": count,
                    "member_count": 1,
                    "thread_metadata": {
                        "archived": False,
                        "auto_archive_duration": 1440,
                        "archive_timestamp": _iso(_snowflake_ms(self.id)),
                        "locked": False,
                        "invitable": True,
                        "create_timestamp": _iso(_snowflake_ms(self.id)),
                    },
                }
            )
        return data


@dataclass
class Guild:
    """A guild (server) with its channels and members."""

    id: int
    name: str
    owner_id: int
    channel_ids: list[int] = field(default_factory=list)
    member_ids: list[int] = field(default_factory=list)


@dataclass
class Message:
    """A message, by a person or by the bot, with what happened to it since."""

    id: int
    channel_id: int
    author_id: int
    content: str
    embeds: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[dict[str, Any]] = field(default_factory=list)
    """Attachment objects; the bot's uploads also carry ``data`` (the bytes, latin-1 decoded)."""
    mention_ids: list[int] = field(default_factory=list)
    mention_everyone: bool = False
    """Whether ``@everyone``/``@here`` in it notified everyone (``allowed_mentions`` permitting)."""
    allowed_mentions: dict[str, Any] | None = None
    """The ``allowed_mentions`` the bot sent with it (with its last edit, if edited)."""
    reply_to: int | None = None
    nonce: str | int | None = None
    edits: list[dict[str, Any]] = field(default_factory=list)
    """Earlier versions (``content``, ``embeds``), oldest first."""
    edited_ms: int | None = None
    reactions: list[tuple[str, int]] = field(default_factory=list)
    """(emoji, user id) pairs."""
    deleted: bool = False
    created_at: float = field(default_factory=time.monotonic)

    def record(self) -> dict[str, Any]:
        """A JSON view for the test API (includes deleted messages and upload bytes)."""
        return {
            "id": self.id,
            "channel_id": self.channel_id,
            "author_id": self.author_id,
            "content": self.content,
            "embeds": self.embeds,
            "attachments": self.attachments,
            "mention_ids": self.mention_ids,
            "mention_everyone": self.mention_everyone,
            "allowed_mentions": self.allowed_mentions,
            "reply_to": self.reply_to,
            "nonce": self.nonce,
            "edits": self.edits,
            "reactions": [list(r) for r in self.reactions],
            "deleted": self.deleted,
        }


@dataclass
class RateLimitFault:
    """Answer the next ``remaining`` calls of ``route`` with 429."""

    route: str
    remaining: int
    retry_after: float
    is_global: bool


@dataclass
class Session:
    """A gateway session: its sequence, the dispatches it was sent, and its live socket if any."""

    id: str
    intents: int
    seq: int = 0
    sent: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None
    request: web.Request | None = None
    closing_code: int | None = None


class FakeDiscordError(Exception):
    """A test asked the fake for something that does not exist (names what was wrong)."""


# -- the server ----------------------------------------------------------------------------------


class FakeDiscord(FakeServer):
    """Loopback Discord. ``async with FakeDiscord() as fake:`` then point discord.py at it.

    Attributes after start: ``url`` (``http://127.0.0.1:PORT``), ``api_url`` (``.../api/v10``),
    ``gateway_url`` (``ws://127.0.0.1:PORT/gateway``). ``bot`` is the bot user, ``token`` the only
    token accepted.
    """

    def __init__(
        self,
        *,
        token: str = "fake-bot-token",
        bot_name: str = "spacebot",
        host: str = "127.0.0.1",
        port: int = 0,
        heartbeat_interval_ms: int = 41250,
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self._last_snowflake = 0
        self.users: dict[int, User] = {}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.typing: Counter[int] = Counter()
        """Typing indicators the bot sent, per channel id."""
        self.threads_created: list[int] = []
        """Threads the bot created, in order."""
        self.rest_calls: Counter[str] = Counter()
        """REST calls per route (``"POST /channels/{channel_id}/messages"``)."""
        self.rate_limited: Counter[str] = Counter()
        """429s served per route."""
        self.identifies = 0
        self.heartbeats = 0
        self.resumes = 0
        self.sessions: dict[str, Session] = {}
        self._faults: list[RateLimitFault] = []
        self._identify_close: int | None = None
        self._gateway_open = asyncio.Event()
        self._gateway_open.set()
        self._changed = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self._files: dict[int, bytes] = {}
        self._runner: web.AppRunner | None = None
        self.url = self.api_url = self.gateway_url = ""
        self.bot = self.add_user(bot_name, bot=True)
        self.application_id = self._snowflake()

    # -- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> int:
        """Start serving; returns the port."""
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        self._add_rest_routes(app)
        self._add_test_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://{self.host}:{self.port}"
        self.api_url = self.url + API_PREFIX
        self.gateway_url = f"ws://{self.host}:{self.port}/gateway"
        return self.port

    async def stop(self) -> None:
        """Close every gateway socket and stop serving."""
        self._gateway_open.set()
        for session in self.sessions.values():
            if session.ws is not None:
                await session.ws.close(code=1001)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- world building --------------------------------------------------------------------------

    def _snowflake(self) -> int:
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self._last_snowflake = max(now, self._last_snowflake + 1)
        return self._last_snowflake

    def add_user(self, username: str, *, bot: bool = False, guild: int | None = None) -> User:
        """Add a person (or a bot) and, with ``guild``, make them a member of it."""
        user = User(self._snowflake(), username, bot)
        self.users[user.id] = user
        if guild is not None:
            self.add_member(guild, user.id)
        self._notify()
        return user

    def add_guild(self, name: str, *, channels: tuple[str, ...] = ("general",)) -> Guild:
        """Add a guild owned by the bot, with the bot as a member and the named text channels."""
        guild = Guild(self._snowflake(), name, owner_id=self.bot.id, member_ids=[self.bot.id])
        self.guilds[guild.id] = guild
        for name_ in channels:
            channel = Channel(self._snowflake(), GUILD_TEXT, name_, guild_id=guild.id)
            self.channels[channel.id] = channel
            guild.channel_ids.append(channel.id)
        self._dispatch("GUILD_CREATE", self._guild_json(guild))
        return guild

    def add_channel(self, guild: int, name: str) -> Channel:
        """Add a text channel to a guild."""
        g = self._guild(guild)
        channel = Channel(self._snowflake(), GUILD_TEXT, name, guild_id=g.id)
        self.channels[channel.id] = channel
        g.channel_ids.append(channel.id)
        self._dispatch("CHANNEL_CREATE", channel.to_json(self))
        return channel

    def add_member(self, guild: int, user: int) -> None:
        """Make a user a member of a guild."""
        g = self._guild(guild)
        self._user(user)
        if user not in g.member_ids:
            g.member_ids.append(user)
            self._dispatch("GUILD_MEMBER_ADD", {**self._member_json(user), "guild_id": str(g.id)})

    def open_dm(self, user: int) -> Channel:
        """The DM channel between the bot and ``user`` (created on first use)."""
        self._user(user)
        for channel in self.channels.values():
            if channel.type == DM and channel.recipient_ids == [user]:
                return channel
        channel = Channel(self._snowflake(), DM, None, recipient_ids=[user])
        self.channels[channel.id] = channel
        self._notify()
        return channel

    def _guild(self, guild_id: int) -> Guild:
        try:
            return self.guilds[int(guild_id)]
        except (KeyError, ValueError):
            raise FakeDiscordError(f"no guild {guild_id!r}") from None

    def _user(self, user_id: int) -> User:
        try:
            return self.users[int(user_id)]
        except (KeyError, ValueError):
            raise FakeDiscordError(f"no user {user_id!r}") from None

    def _channel(self, channel_id: int) -> Channel:
        try:
            return self.channels[int(channel_id)]
        except (KeyError, ValueError):
            raise FakeDiscordError(f"no channel {channel_id!r}") from None

    def _message(self, message_id: int, channel_id: int | None = None) -> Message:
        msg = self.messages.get(int(message_id))
        if msg is None or msg.deleted or (channel_id is not None and msg.channel_id != int(channel_id)):
            raise FakeDiscordError(f"no message {message_id!r}")
        return msg

    def _messages_in(self, channel_id: int) -> list[Message]:
        return [m for m in self.messages.values() if m.channel_id == channel_id and not m.deleted]

    # -- people (the test side) ------------------------------------------------------------------

    def post(
        self,
        channel: int,
        author: int,
        content: str,
        *,
        attachments: Sequence[tuple[str, bytes]] = (),
        mentions: Sequence[int] = (),
        reply_to: int | None = None,
    ) -> Message:
        """Post ``content`` in ``channel`` as user ``author``; dispatches MESSAGE_CREATE."""
        ch = self._channel(channel)
        self._user(author)
        for user in mentions:
            self._user(user)
        if reply_to is not None:
            self._message(reply_to, ch.id)
        msg = Message(
            self._snowflake(),
            ch.id,
            int(author),
            content,
            mention_ids=[int(u) for u in mentions],
            reply_to=reply_to,
        )
        for filename, data in attachments:
            msg.attachments.append(self._attachment(filename, data, with_bytes=False))
        self.messages[msg.id] = msg
        self._dispatch("MESSAGE_CREATE", self._message_json(msg, gateway=True), msg=msg)
        return msg

    def edit(self, message: int, content: str) -> Message:
        """Edit a message as its author; dispatches MESSAGE_UPDATE."""
        msg = self._message(message)
        self._apply_edit(msg, content=content)
        return msg

    def delete(self, message: int) -> None:
        """Delete a message; dispatches MESSAGE_DELETE."""
        msg = self._message(message)
        self._apply_delete(msg)

    def start_typing(self, channel: int, user: int) -> None:
        """Show ``user`` typing in ``channel``; dispatches TYPING_START."""
        ch = self._channel(channel)
        self._user(user)
        data: dict[str, Any] = {
            "channel_id": str(ch.id),
            "user_id": str(user),
            "timestamp": int(time.time()),
        }
        if ch.guild_id is not None:
            data["guild_id"] = str(ch.guild_id)
            data["member"] = self._member_json(int(user))
        self._dispatch("TYPING_START", data, typing_in=ch)

    def bot_messages(self, channel: int | None = None) -> list[Message]:
        """Messages the bot created (deleted ones too), oldest first."""
        return [
            m
            for m in self.messages.values()
            if m.author_id == self.bot.id and (channel is None or m.channel_id == int(channel))
        ]

    def _attachment(self, filename: str, data: bytes, *, with_bytes: bool) -> dict[str, Any]:
        att_id = self._snowflake()
        self._files[att_id] = data
        att: dict[str, Any] = {
            "id": str(att_id),
            "filename": filename,
            "content_type": mimetypes.guess_type(filename)[0] or "application/octet-stream",
            "size": len(data),
            "url": f"{self.url}/_fake/attachments/{att_id}/{filename}",
            "proxy_url": f"{self.url}/_fake/attachments/{att_id}/{filename}",
        }
        if with_bytes:
            att["data"] = data.decode("latin-1")
        return att

    def _apply_edit(
        self, msg: Message, *, content: str | None, embeds: list[dict[str, Any]] | None = None
    ) -> None:
        msg.edits.append({"content": msg.content, "embeds": msg.embeds})
        if content is not None:
            msg.content = content
        if embeds is not None:
            msg.embeds = embeds
        msg.edited_ms = int(time.time() * 1000)
        self._dispatch("MESSAGE_UPDATE", self._message_json(msg, gateway=True), msg=msg)

    def _apply_delete(self, msg: Message) -> None:
        msg.deleted = True
        data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        ch = self.channels[msg.channel_id]
        if ch.guild_id is not None:
            data["guild_id"] = str(ch.guild_id)
        self._dispatch("MESSAGE_DELETE", data, msg=msg)

    # -- faults ----------------------------------------------------------------------------------

    def rate_limit(
        self, route: str, count: int = 1, *, retry_after: float = 0.01, is_global: bool = False
    ) -> None:
        """Answer the next ``count`` calls of ``route`` with 429.

        ``route`` is a method and a path template: ``"POST /channels/{channel_id}/messages"``.
        """
        self._faults.append(RateLimitFault(route, count, retry_after, is_global))

    async def drop_gateway(self, code: int | None = 4000) -> int:
        """Close every live gateway socket with ``code`` (``None``: abort the TCP connection).

        Returns how many were dropped. The sessions stay resumable.
        """
        dropped = [s for s in self.sessions.values() if s.ws is not None]
        for session in dropped:
            await self._disconnect(session, code)
        return len(dropped)

    async def send_reconnect(self) -> None:
        """Send op 7 RECONNECT on every live socket (the client resumes)."""
        for session in list(self.sessions.values()):
            if session.ws is not None:
                self._send(session.ws, {"op": OP_RECONNECT, "d": None})

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """Send op 9 INVALID_SESSION; unless ``resumable``, forget the sessions (a new IDENTIFY follows)."""
        for session in list(self.sessions.values()):
            if session.ws is not None:
                self._send(session.ws, {"op": OP_INVALID_SESSION, "d": resumable})
            if not resumable:
                del self.sessions[session.id]
        self._notify()

    def close_on_identify(self, code: int | None) -> None:
        """Close the next IDENTIFY with ``code`` (e.g. 4014 disallowed intents); ``None`` clears it."""
        self._identify_close = code

    def revoke_token(self) -> None:
        """Accept no token from now on: REST answers 401, IDENTIFY/RESUME close with 4004."""
        self.token = "revoked-" + secrets.token_hex(8)

    def hold_gateway(self) -> None:
        """Park new gateway connections before HELLO until :meth:`release_gateway`."""
        self._gateway_open.clear()

    def release_gateway(self) -> None:
        """Let parked gateway connections proceed."""
        self._gateway_open.set()

    def connected_sessions(self) -> list[Session]:
        """Sessions with a live socket that finished IDENTIFY or RESUME."""
        return [s for s in self.sessions.values() if s.ws is not None]

    async def _disconnect(self, session: Session, code: int | None) -> None:
        ws, request = session.ws, session.request
        session.ws = session.request = None
        self._notify()
        if ws is None:
            return
        if code is None:
            if request is not None and request.transport is not None:
                request.transport.abort()
        else:
            await ws.close(code=code)

    # -- JSON shapes -----------------------------------------------------------------------------

    def _member_json(self, user_id: int) -> dict[str, Any]:
        return {
            "user": self.users[user_id].to_json(),
            "nick": None,
            "avatar": None,
            "roles": [],
            "joined_at": _iso(_snowflake_ms(user_id)),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }

    def _guild_json(self, guild: Guild) -> dict[str, Any]:
        everyone = {
            "id": str(guild.id),
            "name": "@everyone",
            "color": 0,
            "hoist": False,
            "position": 0,
            "permissions": str((1 << 41) - 1),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        channels = [self.channels[c] for c in guild.channel_ids]
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "owner_id": str(guild.owner_id),
            "roles": [everyone],
            "emojis": [],
            "stickers": [],
            "features": [],
            "member_count": len(guild.member_ids),
            "members": [self._member_json(u) for u in guild.member_ids],
            "channels": [c.to_json(self) for c in channels if c.type != PUBLIC_THREAD],
            "threads": [c.to_json(self) for c in channels if c.type == PUBLIC_THREAD],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "large": False,
            "unavailable": False,
            "joined_at": _iso(_snowflake_ms(guild.id)),
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "premium_tier": 0,
            "preferred_locale": "en-US",
            "system_channel_id": None,
            "afk_channel_id": None,
            "afk_timeout": 300,
        }

    def _message_json(self, msg: Message, *, gateway: bool) -> dict[str, Any]:
        ch = self.channels[msg.channel_id]
        data: dict[str, Any] = {
            "id": str(msg.id),
            "channel_id": str(msg.channel_id),
            "author": self.users[msg.author_id].to_json(),
            "content": msg.content,
            "timestamp": _iso(_snowflake_ms(msg.id)),
            "edited_timestamp": _iso(msg.edited_ms) if msg.edited_ms else None,
            "tts": False,
            "mention_everyone": msg.mention_everyone,
            "mentions": [self.users[u].to_json() for u in msg.mention_ids],
            "mention_roles": [],
            "attachments": [{k: v for k, v in a.items() if k != "data"} for a in msg.attachments],
            "embeds": msg.embeds,
            "pinned": False,
            "type": 19 if msg.reply_to else 0,
            "flags": 0,
            "components": [],
        }
        if msg.nonce is not None:
            data["nonce"] = msg.nonce
        if msg.reactions:
            counts = Counter(e for e, _ in msg.reactions)
            data["reactions"] = [
                {
                    "emoji": {"id": None, "name": emoji},
                    "count": n,
                    "me": (emoji, self.bot.id) in msg.reactions,
                    "count_details": {"burst": 0, "normal": n},
                    "burst_colors": [],
                    "me_burst": False,
                    "burst_me": False,
                }
                for emoji, n in counts.items()
            ]
        if msg.reply_to is not None:
            ref = self.messages.get(msg.reply_to)
            data["message_reference"] = {
                "type": 0,
                "message_id": str(msg.reply_to),
                "channel_id": str(msg.channel_id),
            }
            data["referenced_message"] = (
                self._message_json(ref, gateway=False) if ref and not ref.deleted else None
            )
        if ch.guild_id is not None:
            data["guild_id"] = str(ch.guild_id)
            if gateway:
                member = self._member_json(msg.author_id)
                del member["user"]
                data["member"] = member
        if ch.type == PUBLIC_THREAD and ch.starter_message_id == msg.id:
            data["thread"] = ch.to_json(self)
        return data

    # -- dispatching -----------------------------------------------------------------------------

    def _redact(self, session: Session, data: dict[str, Any], msg: Message | None) -> dict[str, Any]:
        """Blank content for a session without the MESSAGE_CONTENT intent, as Discord does."""
        if msg is None or session.intents & INTENT_MESSAGE_CONTENT or "content" not in data:
            return data
        dm = self.channels[msg.channel_id].type == DM
        if dm or msg.author_id == self.bot.id or self.bot.id in msg.mention_ids:
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    def _dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        msg: Message | None = None,
        typing_in: Channel | None = None,
    ) -> None:
        """Send ``event`` to every session whose intents allow it (buffered for resume), then wake waiters."""
        channel = self.channels[msg.channel_id] if msg is not None else typing_in
        for session in self.sessions.values():
            if channel is not None and not session.intents & _intent_for(event, channel):
                continue
            session.seq += 1
            payload = {"op": OP_DISPATCH, "t": event, "s": session.seq, "d": self._redact(session, data, msg)}
            session.sent.append((session.seq, payload))
            if session.ws is not None:
                self._send(session.ws, payload)
        self._notify()

    def _send(self, ws: web.WebSocketResponse, payload: dict[str, Any]) -> None:
        """Queue one frame. Every gateway write goes through here, so frames leave in call order.

        Each send is a task whose first step writes the frame (the socket is uncompressed, so the
        write is synchronous and only the drain awaits); tasks run in creation order. A failed
        send means the socket is going away: a session resumes from its buffer.
        """
        task = asyncio.get_running_loop().create_task(ws.send_str(json.dumps(payload)))
        self._sends.add(task)
        task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sends.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("gateway send failed: %r", task.exception())

    # -- gateway ---------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        # No permessage-deflate: writes stay synchronous, which keeps frames in order (see _send).
        ws = web.WebSocketResponse(autoping=True, compress=False)
        await ws.prepare(request)
        await self._gateway_open.wait()
        self._send(ws, {"op": OP_HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}})
        session: Session | None = None
        async for frame in ws:
            if frame.type is not WSMsgType.TEXT:
                continue
            try:
                payload = json.loads(frame.data)
                op, data = payload["op"], payload.get("d")
            except (ValueError, KeyError, TypeError):
                await ws.close(code=4002)  # decode error
                break
            if op == OP_HEARTBEAT:
                self.heartbeats += 1
                self._send(ws, {"op": OP_HEARTBEAT_ACK, "d": None})
                self._notify()
            elif op == OP_IDENTIFY:
                if session is not None:
                    await ws.close(code=4005)  # already authenticated
                    break
                session = await self._identify(ws, request, data)
                if ws.closed:
                    break
            elif op == OP_RESUME:
                if session is not None:
                    await ws.close(code=4005)
                    break
                session = await self._resume(ws, request, data)
                if ws.closed:
                    break
            elif op == OP_REQUEST_MEMBERS and session is not None:
                await self._members_chunk(ws, session, data)
            elif session is None and op != OP_HEARTBEAT:
                await ws.close(code=4003)  # not authenticated
                break
        if session is not None and session.ws is ws:
            session.ws = session.request = None
            self._notify()
        return ws

    async def _identify(self, ws: web.WebSocketResponse, request: web.Request, data: Any) -> Session | None:
        if not isinstance(data, dict) or data.get("token") != self.token:
            await ws.close(code=4004)
            return None
        if self._identify_close is not None:
            code, self._identify_close = self._identify_close, None
            await ws.close(code=code)
            return None
        self.identifies += 1
        session = Session(secrets.token_hex(16), int(data.get("intents", 0)), ws=ws, request=request)
        self.sessions[session.id] = session
        session.seq += 1
        ready = {
            "v": 10,
            "user": self.bot.to_json(),
            "guilds": [{"id": str(g), "unavailable": True} for g in self.guilds],
            "session_id": session.id,
            "resume_gateway_url": self.gateway_url,
            "session_type": "normal",
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "user_settings": {},
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "shard": [0, 1],
        }
        first = {"op": OP_DISPATCH, "t": "READY", "s": session.seq, "d": ready}
        session.sent.append((session.seq, first))
        self._send(ws, first)
        for guild in self.guilds.values():
            session.seq += 1
            payload = {"op": OP_DISPATCH, "t": "GUILD_CREATE", "s": session.seq, "d": self._guild_json(guild)}
            session.sent.append((session.seq, payload))
            self._send(ws, payload)
        self._notify()
        return session

    async def _resume(self, ws: web.WebSocketResponse, request: web.Request, data: Any) -> Session | None:
        if not isinstance(data, dict) or data.get("token") != self.token:
            await ws.close(code=4004)
            return None
        session = self.sessions.get(str(data.get("session_id")))
        if session is None:
            # Discord keeps the socket open; the client closes it and identifies anew.
            self._send(ws, {"op": OP_INVALID_SESSION, "d": False})
            return None
        if session.ws is not None:
            await self._disconnect(session, 4000)
        seq = int(data.get("seq") or 0)
        self.resumes += 1
        for s, payload in session.sent:
            if s > seq:
                self._send(ws, payload)
        session.seq += 1
        resumed = {"op": OP_DISPATCH, "t": "RESUMED", "s": session.seq, "d": {}}
        session.sent.append((session.seq, resumed))
        session.ws, session.request = ws, request
        self._send(ws, resumed)
        self._notify()
        return session

    async def _members_chunk(self, ws: web.WebSocketResponse, session: Session, data: Any) -> None:
        guild = self.guilds.get(int(data.get("guild_id", 0)))
        members = [self._member_json(u) for u in guild.member_ids] if guild else []
        chunk = {
            "guild_id": data.get("guild_id"),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "nonce": data.get("nonce"),
        }
        session.seq += 1
        payload = {"op": OP_DISPATCH, "t": "GUILD_MEMBERS_CHUNK", "s": session.seq, "d": chunk}
        session.sent.append((session.seq, payload))
        self._send(ws, payload)

    # -- REST ------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            try:
                return await handler(request)
            except FakeDiscordError as exc:
                return _json({"error": str(exc)}, status=404)
            except (ValueError, KeyError, TypeError) as exc:
                return _json({"error": f"bad request: {exc!r}"}, status=400)
        resource = request.match_info.route.resource
        template = resource.canonical if resource is not None else request.path
        route = f"{request.method} {template.removeprefix(API_PREFIX)}"
        self.rest_calls[route] += 1
        self._notify()
        for fault in self._faults:
            if fault.route == route and fault.remaining > 0:
                fault.remaining -= 1
                self.rate_limited[route] += 1
                return self._too_many(fault)
        if request.headers.get("Authorization") != f"Bot {self.token}":
            return _json({"message": "401: Unauthorized", "code": 0}, status=401)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _json({"message": "404: Not Found", "code": 0}, status=404)
        except FakeDiscordError as exc:
            return _json({"message": f"Unknown: {exc}", "code": 10003}, status=404)
        except (ValueError, KeyError, TypeError) as exc:
            return _json({"message": f"Invalid Form Body: {exc!r}", "code": 50035}, status=400)

    def _too_many(self, fault: RateLimitFault) -> web.Response:
        headers = {
            "Via": "1.1 google",
            "Retry-After": str(max(1, round(fault.retry_after))),
            "X-RateLimit-Limit": "5",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset-After": str(fault.retry_after),
            "X-RateLimit-Reset": str(time.time() + fault.retry_after),
            "X-RateLimit-Bucket": "fake-" + fault.route.replace(" ", "-"),
            "X-RateLimit-Scope": "global" if fault.is_global else "user",
        }
        if fault.is_global:
            headers["X-RateLimit-Global"] = "true"
        body = {
            "message": "You are being rate limited.",
            "retry_after": fault.retry_after,
            "global": fault.is_global,
        }
        return _json(body, status=429, headers=headers)

    def _add_rest_routes(self, app: web.Application) -> None:
        a = API_PREFIX
        r = app.router
        r.add_get(a + "/gateway", self._get_gateway)
        r.add_get(a + "/gateway/bot", self._get_gateway_bot)
        r.add_get(a + "/users/@me", self._get_me)
        r.add_get(a + "/oauth2/applications/@me", self._get_application)
        r.add_get(a + "/applications/@me", self._get_application)
        r.add_get(a + "/users/{user_id}", self._get_user)
        r.add_post(a + "/users/@me/channels", self._create_dm)
        r.add_get(a + "/guilds/{guild_id}", self._get_guild)
        r.add_get(a + "/guilds/{guild_id}/channels", self._get_guild_channels)
        r.add_get(a + "/guilds/{guild_id}/members/{user_id}", self._get_member)
        r.add_get(a + "/channels/{channel_id}", self._get_channel)
        r.add_get(a + "/channels/{channel_id}/messages", self._get_messages)
        r.add_post(a + "/channels/{channel_id}/messages", self._create_message)
        r.add_get(a + "/channels/{channel_id}/messages/{message_id}", self._get_message)
        r.add_patch(a + "/channels/{channel_id}/messages/{message_id}", self._edit_message)
        r.add_delete(a + "/channels/{channel_id}/messages/{message_id}", self._delete_message)
        reaction = a + "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me"
        r.add_put(reaction, self._add_reaction)
        r.add_delete(reaction, self._remove_reaction)
        r.add_post(a + "/channels/{channel_id}/typing", self._typing)
        r.add_post(a + "/channels/{channel_id}/messages/{message_id}/threads", self._start_thread)

    async def _get_me(self, request: web.Request) -> web.Response:
        return _ok(self.bot.to_json())

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _ok({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}
        return _ok({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_application(self, request: web.Request) -> web.Response:
        return _ok(
            {
                "id": str(self.application_id),
                "name": self.bot.username,
                "icon": None,
                "description": "",
                "bot_public": False,
                "bot_require_code_grant": False,
                "owner": self.bot.to_json(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "summary": "",
                "bot": self.bot.to_json(),
                "interactions_endpoint_url": None,
                "redirect_uris": [],
            }
        )

    async def _get_user(self, request: web.Request) -> web.Response:
        return _ok(self._user(int(request.match_info["user_id"])).to_json())

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = await request.json()
        return _ok(self.open_dm(int(body["recipient_id"])).to_json(self))

    async def _get_guild(self, request: web.Request) -> web.Response:
        data = self._guild_json(self._guild(int(request.match_info["guild_id"])))
        for key in ("members", "channels", "threads", "presences", "voice_states"):
            data.pop(key)
        return _ok(data)

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._guild(int(request.match_info["guild_id"]))
        return _ok([self.channels[c].to_json(self) for c in guild.channel_ids])

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self._guild(int(request.match_info["guild_id"]))
        user = int(request.match_info["user_id"])
        if user not in guild.member_ids:
            raise FakeDiscordError(f"no member {user!r} in guild {guild.id!r}")
        return _ok(self._member_json(user))

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _ok(self._channel(int(request.match_info["channel_id"])).to_json(self))

    async def _get_messages(self, request: web.Request) -> web.Response:
        ch = self._channel(int(request.match_info["channel_id"]))
        q = request.query
        limit = max(1, min(100, int(q.get("limit", "50"))))
        msgs = self._messages_in(ch.id)
        if "before" in q:
            msgs = [m for m in msgs if m.id < int(q["before"])]
        if "after" in q:
            msgs = [m for m in msgs if m.id > int(q["after"])][:limit]
        if "around" in q:
            around = int(q["around"])
            older = [m for m in msgs if m.id <= around][-(limit // 2 + 1) :]
            newer = [m for m in msgs if m.id > around][: limit - len(older)]
            msgs = older + newer
        newest_first = sorted(msgs, key=lambda m: m.id, reverse=True)[:limit]
        return _ok([self._message_json(m, gateway=False) for m in newest_first])

    async def _get_message(self, request: web.Request) -> web.Response:
        msg = self._message(int(request.match_info["message_id"]), int(request.match_info["channel_id"]))
        return _ok(self._message_json(msg, gateway=False))

    async def _create_message(self, request: web.Request) -> web.Response:
        ch = self._channel(int(request.match_info["channel_id"]))
        files: list[tuple[str, bytes]] = []
        if request.content_type.startswith("multipart/"):
            body: dict[str, Any] = {}
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, BodyPartReader):
                    continue
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                elif part.name and part.name.startswith("files["):
                    files.append((part.filename or "file", bytes(await part.read())))
        else:
            body = await request.json()
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            now = time.monotonic()
            for old in self.messages.values():
                if (
                    old.nonce == nonce
                    and old.author_id == self.bot.id
                    and now - old.created_at < NONCE_WINDOW_S
                ):
                    return _ok(self._message_json(old, gateway=False))
        content = str(body.get("content") or "")
        embeds = list(body.get("embeds") or [])
        if not content and not embeds and not files and not body.get("sticker_ids"):
            return _json({"message": "Cannot send an empty message", "code": 50006}, status=400)
        reply_to = None
        if ref := body.get("message_reference"):
            reply_to = self._message(int(ref["message_id"])).id
        msg = Message(
            self._snowflake(), ch.id, self.bot.id, content, embeds=embeds, nonce=nonce, reply_to=reply_to
        )
        self._mentions(msg, body.get("allowed_mentions"), content)
        for filename, data in files:
            msg.attachments.append(self._attachment(filename, data, with_bytes=True))
        self.messages[msg.id] = msg
        self._dispatch("MESSAGE_CREATE", self._message_json(msg, gateway=True), msg=msg)
        return _ok(self._message_json(msg, gateway=False))

    async def _edit_message(self, request: web.Request) -> web.Response:
        msg = self._message(int(request.match_info["message_id"]), int(request.match_info["channel_id"]))
        if msg.author_id != self.bot.id:
            return _json({"message": "Cannot edit a message authored by another user", "code": 50005}, 403)
        body = await request.json()
        if body.get("content") is not None:  # mentions as of the new text, before the update
            self._mentions(msg, body.get("allowed_mentions"), str(body["content"]))
        self._apply_edit(msg, content=body.get("content"), embeds=body.get("embeds"))
        return _ok(self._message_json(msg, gateway=False))

    def _mentions(self, msg: Message, allowed: dict[str, Any] | None, content: str) -> None:
        """Who the bot's ``msg`` mentions, as Discord decides it: the ``<@id>`` in ``content``, and
        ``@everyone``/``@here``, as far as ``allowed_mentions`` lets them through."""
        msg.allowed_mentions = allowed
        named = [u for u in self.users if f"<@{u}>" in content or f"<@!{u}>" in content]
        parse = None if allowed is None else list(allowed.get("parse") or [])
        if parse is None or "users" in parse:
            msg.mention_ids = named
        else:
            listed = {int(u) for u in (allowed or {}).get("users") or []}
            msg.mention_ids = [u for u in named if u in listed]
        mass = "@everyone" in content or "@here" in content
        msg.mention_everyone = mass and (parse is None or "everyone" in parse)

    async def _delete_message(self, request: web.Request) -> web.Response:
        msg = self._message(int(request.match_info["message_id"]), int(request.match_info["channel_id"]))
        self._apply_delete(msg)
        return web.Response(status=204)

    async def _add_reaction(self, request: web.Request) -> web.Response:
        msg = self._message(int(request.match_info["message_id"]), int(request.match_info["channel_id"]))
        emoji = request.match_info["emoji"]
        if (emoji, self.bot.id) not in msg.reactions:
            msg.reactions.append((emoji, self.bot.id))
            data: dict[str, Any] = {
                "user_id": str(self.bot.id),
                "channel_id": str(msg.channel_id),
                "message_id": str(msg.id),
                "emoji": {"id": None, "name": emoji},
                "burst": False,
                "type": 0,
            }
            if (guild_id := self.channels[msg.channel_id].guild_id) is not None:
                data["guild_id"] = str(guild_id)
            self._dispatch("MESSAGE_REACTION_ADD", data)
        return web.Response(status=204)

    async def _remove_reaction(self, request: web.Request) -> web.Response:
        msg = self._message(int(request.match_info["message_id"]), int(request.match_info["channel_id"]))
        pair = (request.match_info["emoji"], self.bot.id)
        if pair in msg.reactions:
            msg.reactions.remove(pair)
            self._notify()
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        ch = self._channel(int(request.match_info["channel_id"]))
        self.typing[ch.id] += 1
        self._notify()
        return web.Response(status=204)

    async def _start_thread(self, request: web.Request) -> web.Response:
        msg = self._message(int(request.match_info["message_id"]), int(request.match_info["channel_id"]))
        parent = self.channels[msg.channel_id]
        if parent.type != GUILD_TEXT or parent.guild_id is None:
            return _json({"message": "Cannot start a thread here", "code": 50024}, status=400)
        if msg.id in self.channels:
            return _json(
                {"message": "A thread has already been created for this message", "code": 160004}, 400
            )
        body = await request.json()
        # A thread started from a message shares the message's id.
        thread = Channel(
            msg.id,
            PUBLIC_THREAD,
            str(body["name"]),
            guild_id=parent.guild_id,
            parent_id=parent.id,
            owner_id=self.bot.id,
            starter_message_id=msg.id,
        )
        self.channels[thread.id] = thread
        self.guilds[parent.guild_id].channel_ids.append(thread.id)
        self.threads_created.append(thread.id)
        self._dispatch("THREAD_CREATE", {**thread.to_json(self), "newly_created": True})
        return _ok(thread.to_json(self))

    # -- the test API over HTTP ------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the fake knows, as JSON (``GET /_fake/state``)."""
        return {
            "bot": self.bot.to_json(),
            "users": [u.to_json() for u in self.users.values()],
            "guilds": [
                {"id": g.id, "name": g.name, "channel_ids": g.channel_ids, "member_ids": g.member_ids}
                for g in self.guilds.values()
            ],
            "channels": [
                {
                    "id": c.id,
                    "type": c.type,
                    "name": c.name,
                    "guild_id": c.guild_id,
                    "parent_id": c.parent_id,
                    "recipient_ids": c.recipient_ids,
                }
                for c in self.channels.values()
            ],
            "messages": [m.record() for m in self.messages.values()],
            "typing": {str(k): v for k, v in self.typing.items()},
            "threads_created": self.threads_created,
            "rest_calls": dict(self.rest_calls),
            "rate_limited": dict(self.rate_limited),
            "identifies": self.identifies,
            "heartbeats": self.heartbeats,
            "resumes": self.resumes,
            "connected": len(self.connected_sessions()),
        }

    def _add_test_routes(self, app: web.Application) -> None:
        r = app.router

        async def body(request: web.Request) -> dict[str, Any]:
            return await request.json() if request.can_read_body else {}

        def route(path: str, fn: Callable[[dict[str, Any]], Any]) -> None:
            async def handler(request: web.Request) -> web.Response:
                result = fn(await body(request))
                if asyncio.iscoroutine(result):
                    result = await result
                if isinstance(result, Message):
                    result = result.record()
                elif isinstance(result, (User, Channel, Guild)):
                    result = {"id": result.id}
                return _json(result if result is not None else {"ok": True})

            r.add_post("/_fake/" + path, handler)

        async def state(_: web.Request) -> web.Response:
            return _ok(self.state())

        async def attachment(request: web.Request) -> web.Response:
            data = self._files.get(int(request.match_info["att_id"]))
            if data is None:
                raise FakeDiscordError(f"no attachment {request.match_info['att_id']!r}")
            return web.Response(body=data, content_type="application/octet-stream")

        r.add_get("/_fake/state", state)
        r.add_get("/_fake/attachments/{att_id}/{filename}", attachment)
        route("guilds", lambda b: self.add_guild(b["name"], channels=tuple(b.get("channels", ["general"]))))
        route("channels", lambda b: self.add_channel(b["guild_id"], b["name"]))
        route("users", lambda b: self.add_user(b["username"], guild=b.get("guild_id")))
        route("dms", lambda b: self.open_dm(b["user_id"]))
        route(
            "post",
            lambda b: self.post(
                b["channel_id"],
                b["author_id"],
                b["content"],
                attachments=[
                    (a["filename"], a.get("data", "").encode("latin-1")) for a in b.get("attachments", [])
                ],
                mentions=b.get("mentions", []),
                reply_to=b.get("reply_to"),
            ),
        )
        route("edit", lambda b: self.edit(b["message_id"], b["content"]))
        route("delete", lambda b: self.delete(b["message_id"]))
        route("typing", lambda b: self.start_typing(b["channel_id"], b["user_id"]))
        route(
            "faults/rate-limit",
            lambda b: self.rate_limit(
                b["route"],
                int(b.get("count", 1)),
                retry_after=float(b.get("retry_after", 0.01)),
                is_global=bool(b.get("global", False)),
            ),
        )
        route(
            "faults/drop", lambda b: self.drop_gateway(None if b.get("abrupt") else int(b.get("code", 4000)))
        )
        route("faults/reconnect", lambda b: self.send_reconnect())
        route("faults/invalidate", lambda b: self.invalidate_session(resumable=bool(b.get("resumable"))))
        route("faults/close-on-identify", lambda b: self.close_on_identify(b.get("code")))
        route("faults/revoke-token", lambda b: self.revoke_token())


def _intent_for(event: str, channel: Channel) -> int:
    """The intent a session needs to receive ``event`` about ``channel``."""
    dm = channel.type == DM
    if event == "TYPING_START":
        return INTENT_DIRECT_MESSAGE_TYPING if dm else INTENT_GUILD_MESSAGE_TYPING
    return INTENT_DIRECT_MESSAGES if dm else INTENT_GUILD_MESSAGES


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly "application/json"
    # (aiohttp's json_response would add "; charset=utf-8").
    return web.Response(
        body=json.dumps(data).encode(),
        status=status,
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def _ok(data: Any) -> web.Response:
    return _json(data)


# -- ``spacebot fake-discord`` -------------------------------------------------------------------


def fake_discord_handler(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; prints one JSON line with the URLs and the seeded ids."""

    async def serve() -> None:
        fake = FakeDiscord(token=args.token, port=args.port, heartbeat_interval_ms=args.heartbeat_ms)
        await fake.start()
        guild = fake.add_guild(args.guild)
        person = fake.add_user(args.person, guild=guild.id)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        info = {
            "url": fake.url,
            "api_url": fake.api_url,
            "gateway_url": fake.gateway_url,
            "token": fake.token,
            "bot_id": fake.bot.id,
            "guild_id": guild.id,
            "channel_id": guild.channel_ids[0],
            "person_id": person.id,
        }
        print(json.dumps(info), flush=True)
        try:
            await stop.wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0
