"""Twitch chat over IRC: the protocol half of ``gateway:twitch:<instance>``.

Twitch chat is IRC with IRCv3 tags, spoken here directly on asyncio streams: TLS to
``irc.chat.twitch.tv:6697`` (``gateway_url = "ircs://host:port"`` points elsewhere; plain
``irc://`` is accepted to loopback only, which is how tests reach the fake), ``CAP REQ`` for tags
and commands, ``PASS oauth:<token>`` / ``NICK <bot_name>``, ``JOIN`` of the configured channels.

* **In**: a tagged ``PRIVMSG`` becomes a :class:`~spacebot.messaging.platform.PlatformMessage`.
  A message addressed to the bot — starting with ``trigger_prefix`` (stripped from the text),
  mentioning ``@bot_name`` or replying to the bot — has ``mentions_bot`` in its scope; Twitch IRC
  has no direct messages. ``CLEARMSG`` (a moderator deleted a message) becomes a delete.
* **Out**: one line of at most 500 characters, sent as a reply (``reply-parent-msg-id``) to the
  latest message addressed to the bot in that channel. Twitch's limits are kept here so ``post``
  waits instead of being dropped: per channel at most 20 messages in any 30 s (100 where the bot is
  a moderator, known from ``USERSTATE mod=1``), and the same text twice within 30 s gets an
  invisible character appended. Each send waits for Twitch's answer: ``USERSTATE`` with the
  message's id, or a ``NOTICE``: rate limits are waited out and the message sent again, a
  duplicate is varied and sent again, a ban or restriction is logged and raised.
* **Connection**: ``PING`` is answered; a silent connection is probed with our own ``PING``;
  ``RECONNECT`` or a lost connection reconnects and joins again. Messages said while disconnected
  are not seen: Twitch keeps no history (:meth:`TwitchAdapter.history` is empty).
* **Token**: ``NOTICE * :Login authentication failed`` raises
  :class:`~spacebot.messaging.platform.AuthRejected`, unless ``refresh_token``, ``client_id`` and
  ``client_secret`` are set: then the token is renewed (``grant_type=refresh_token`` at
  ``<api_base or https://id.twitch.tv>/oauth2/token``, also ahead of a known expiry) and the fresh
  pair saved to ``$SPACEBOT_HOME/gateways/twitch-<instance>.token.json`` (mode 0600), which later
  starts use for as long as the configured tokens stay the same. A refused renewal is
  ``AuthRejected`` with Twitch's reason.

Conversation ids: ``twitch:<channel>`` (the broadcaster's login).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import secrets
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import aiohttp

from spacebot.config import PlatformInstance
from spacebot.errors import ConfigError, SpacebotError
from spacebot.messaging import credentials
from spacebot.messaging.bindings import Scope
from spacebot.messaging.lanes import Lanes
from spacebot.messaging.platform import AuthRejected, OutFile, PlatformEdit, PlatformMessage, Sink
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.gateway.twitch")

DEFAULT_URL = "ircs://irc.chat.twitch.tv:6697"
TOKEN_BASE = "https://id.twitch.tv"
LIMIT = 500
"""Twitch's message length limit, in characters."""
WINDOW = 30.0
"""Seconds over which Twitch counts a channel's messages (and compares duplicates)."""
RATE_USER = 20
"""Messages per :data:`WINDOW` in a channel where the bot is not a moderator."""
RATE_MOD = 100
"""Messages per :data:`WINDOW` where it is (or is the broadcaster)."""
INVISIBLE = "\U000e0000"
"""Appended (after a space) to a text sent again within :data:`WINDOW`: Twitch then takes it as a
different message, people see the same one."""
RENEW_AHEAD = 600.0
"""A token known to expire within this many seconds is renewed before connecting."""
SEND_ATTEMPTS = 5
"""Sends of one message Twitch may answer with a rate-limit or duplicate notice before it fails."""
RETRY_NOTICES = frozenset({"msg_ratelimit", "msg_slowmode"})
"""Sent too fast: wait and send again."""
DUPLICATE_NOTICES = frozenset({"msg_duplicate", "msg_r9k"})
"""The same text again: vary it and send again."""
REFUSED_NOTICES = frozenset(
    {
        "msg_banned",
        "msg_timedout",
        "msg_channel_suspended",
        "msg_channel_blocked",
        "msg_suspended",
        "msg_followersonly",
        "msg_followersonly_followed",
        "msg_followersonly_zero",
        "msg_subsonly",
        "msg_emoteonly",
        "msg_requires_verified_phone_number",
        "msg_verified_email",
        "msg_rejected",
        "msg_rejected_mandatory",
        "msg_bad_characters",
    }
)
"""The bot may not speak there (a ban, a timeout, a room mode): logged, the send fails."""
AUTH_FAILURES = ("Login authentication failed", "Improperly formatted auth", "Login unsuccessful")


class TwitchError(SpacebotError):
    """Twitch refused a send, or the call has no Twitch counterpart."""


class _LoginFailed(Exception):
    """Twitch refused the token at login (``reason`` is its NOTICE)."""


class _RenewalUnavailable(ConnectionError):
    """The token endpoint could not be reached: retried like a lost connection."""


# -- the IRC wire -------------------------------------------------------------------------------

_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}


def unescape_tag(value: str) -> str:
    """An IRCv3 tag value as written on the wire (``\\s`` for a space…) → its text."""
    if "\\" not in value:
        return value
    out: list[str] = []
    i = 0
    while i < len(value):
        char = value[i]
        if char == "\\":
            if i + 1 < len(value):
                out.append(_UNESCAPE.get(value[i + 1], value[i + 1]))
            i += 2  # a lone trailing backslash is dropped
            continue
        out.append(char)
        i += 1
    return "".join(out)


def escape_tag(value: str) -> str:
    """Text → an IRCv3 tag value for the wire."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\:")
        .replace(" ", "\\s")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )


@dataclass(frozen=True, slots=True)
class IrcLine:
    """One IRC line: ``@tags :prefix COMMAND params… :trailing``."""

    command: str
    params: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    prefix: str = ""

    @property
    def nick(self) -> str:
        """The sender's nick (``nick!user@host``), lowercase."""
        return self.prefix.split("!", 1)[0].lower()

    @property
    def text(self) -> str:
        """The last parameter (a message's text)."""
        return self.params[-1] if self.params else ""

    @property
    def channel(self) -> str:
        """The channel the line is about, without ``#`` (empty when it names none)."""
        first = self.params[0] if self.params else ""
        return first[1:].lower() if first.startswith("#") else ""


def parse_line(raw: str) -> IrcLine:
    """One line as received (without or with its ``\\r\\n``)."""
    rest = raw.rstrip("\r\n")
    tags: dict[str, str] = {}
    if rest.startswith("@"):
        block, _, rest = rest[1:].partition(" ")
        for item in block.split(";"):
            if item:
                key, _, value = item.partition("=")
                tags[key] = unescape_tag(value)
        rest = rest.lstrip(" ")
    prefix = ""
    if rest.startswith(":"):
        prefix, _, rest = rest[1:].partition(" ")
        rest = rest.lstrip(" ")
    trailing: str | None = None
    if rest.startswith(":"):
        rest, trailing = "", rest[1:]
    elif " :" in rest:
        rest, _, trailing = rest.partition(" :")
    words = rest.split()
    params = words[1:] + ([trailing] if trailing is not None else [])
    return IrcLine((words[0] if words else "").upper(), tuple(params), tags, prefix)


def format_line(command: str, *params: str, tags: dict[str, str] | None = None) -> str:
    """An IRC line to send (with ``\\r\\n``); the last parameter is sent as trailing."""
    head = ""
    if tags:
        head = "@" + ";".join(f"{k}={escape_tag(v)}" for k, v in tags.items()) + " "
    middle = "".join(f" {p}" for p in params[:-1])
    last = f" :{params[-1]}" if params else ""
    line = f"{head}{command}{middle}{last}"
    if "\r" in line or "\n" in line:
        raise ValueError(f"an IRC line cannot contain a line break: {command} …")
    return line + "\r\n"


@dataclass(frozen=True, slots=True)
class ChatLine:
    """A ``PRIVMSG`` in a channel, with the tags Spacebot uses."""

    channel: str
    login: str
    text: str
    id: str
    display_name: str
    user_id: str
    mod: bool
    badges: dict[str, str]
    room_id: str
    timestamp: float
    reply_parent_msg_id: str = ""
    reply_parent_login: str = ""
    reply_parent_display_name: str = ""
    reply_parent_body: str = ""

    @classmethod
    def of(cls, line: IrcLine) -> ChatLine:
        tags = line.tags
        text = line.text
        if text.startswith("\x01ACTION ") and text.endswith("\x01"):  # /me
            text = text[len("\x01ACTION ") : -1]
        badges: dict[str, str] = {}
        for badge in filter(None, tags.get("badges", "").split(",")):
            name, _, version = badge.partition("/")
            badges[name] = version
        sent_ms = tags.get("tmi-sent-ts", "")
        return cls(
            channel=line.channel,
            login=line.nick,
            text=text,
            id=tags.get("id") or f"{line.channel}-{sent_ms}-{line.nick}",
            display_name=tags.get("display-name") or line.nick,
            user_id=tags.get("user-id", ""),
            mod=tags.get("mod") == "1" or "broadcaster" in badges,
            badges=badges,
            room_id=tags.get("room-id", ""),
            timestamp=int(sent_ms) / 1000.0 if sent_ms.isdigit() else time.time(),
            reply_parent_msg_id=tags.get("reply-parent-msg-id", ""),
            reply_parent_login=tags.get("reply-parent-user-login", "").lower(),
            reply_parent_display_name=tags.get("reply-parent-display-name", ""),
            reply_parent_body=tags.get("reply-parent-msg-body", ""),
        )


class SendWindow:
    """Twitch's send limit in one channel: at most ``cap`` messages in any :data:`WINDOW` seconds."""

    def __init__(self) -> None:
        self.cap = RATE_USER
        self.sent: collections.deque[float] = collections.deque()

    def wait(self, now: float) -> float:
        """Seconds until one more message may be sent (0: now)."""
        while self.sent and now - self.sent[0] >= WINDOW:
            self.sent.popleft()
        if len(self.sent) < self.cap:
            return 0.0
        return self.sent[len(self.sent) - self.cap] + WINDOW - now

    def record(self, now: float) -> None:
        self.sent.append(now)


@dataclass(slots=True)
class Renewal:
    """What renewing the access token takes."""

    refresh_token: str
    client_id: str
    client_secret: str


def _one_line(text: str) -> str:
    """Twitch chat is one line: line breaks become spaces."""
    return re.sub(r"[ \t]*[\r\n]+[ \t]*", " ", text).strip() or "…"


# -- the adapter --------------------------------------------------------------------------------


class TwitchAdapter:
    """One Twitch bot account in its channels."""

    platform: ClassVar[str] = "twitch"
    limit = LIMIT
    supports_edit = False

    def __init__(
        self,
        instance: PlatformInstance,
        token: str,
        *,
        renewal: Renewal | None = None,
        token_file: Path | None = None,
    ) -> None:
        self.instance = instance
        self.bot_name = instance.bot_name.lower()
        self.channels = [c.lower().lstrip("#") for c in instance.channels]
        self.token = token.removeprefix("oauth:")
        self.renewal = renewal
        self.token_file = token_file
        self.token_base = (instance.api_base or TOKEN_BASE).rstrip("/")
        self.expires_at = 0.0
        """When the access token expires (wall clock); 0: unknown."""
        url = urlsplit(instance.gateway_url or DEFAULT_URL)
        if url.scheme not in ("irc", "ircs") or not url.hostname:
            raise ConfigError(f"messaging.twitch[{instance.name}].gateway_url: not ircs://host:port: {url!r}")
        self.host = url.hostname
        self.tls = url.scheme == "ircs"
        self.port = url.port or (6697 if self.tls else 6667)
        self.ratelimit_wait = 5.0
        """Seconds to wait after a rate-limit notice before sending again."""
        self.lanes = Lanes()
        """Storing a message waits on memory: one lane per channel keeps each channel's order
        without holding up the others (or the reading of the connection)."""
        self.keepalive = 360.0
        """Seconds of silence before the connection is probed with a ``PING`` (Twitch pings every
        ~5 minutes)."""
        self.notices: collections.Counter[str] = collections.Counter()
        """Notices received, by ``msg-id``."""
        self.connections = 0
        self._writer: asyncio.StreamWriter | None = None
        self._online = asyncio.Event()
        self._pending: dict[str, asyncio.Future[IrcLine]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._windows: dict[str, SendWindow] = {}
        self._last_sent: dict[str, tuple[str, float]] = {}
        self._reply_to: dict[str, str] = {}
        """Channel → the latest message addressed to the bot (what a reply answers)."""
        self._config_digest = hashlib.sha256(
            f"{self.token}\0{renewal.refresh_token if renewal else ''}".encode()
        ).hexdigest()[:32]

    @classmethod
    async def create(cls, ctx: ChildContext, instance: PlatformInstance) -> TwitchAdapter:
        key = f"messaging.twitch[{instance.name}]"
        if not instance.token:
            raise ConfigError(
                f"{key}.token is empty: set it to the bot's OAuth token (env:NAME or secret:NAME)"
            )
        if not instance.bot_name or not instance.channels:
            raise ConfigError(f"{key} needs bot_name (the bot's login) and channels (to join)")
        token = await credentials.resolve(ctx, instance.token, f"{key}.token")
        renewal = None
        if instance.refresh_token:
            renewal = Renewal(
                await credentials.resolve(ctx, instance.refresh_token, f"{key}.refresh_token"),
                await credentials.resolve(ctx, instance.client_id, f"{key}.client_id"),
                await credentials.resolve(ctx, instance.client_secret, f"{key}.client_secret"),
            )
        token_file = Path(ctx.config.home) / "gateways" / f"twitch-{instance.name}.token.json"
        return cls(instance, token, renewal=renewal, token_file=token_file)

    # -- connection ----------------------------------------------------------------------------

    async def run(self, sink: Sink, connected: Callable[[], None]) -> None:
        await asyncio.to_thread(self._load_saved)
        said_connected = False
        renewed = False  # the token was renewed after the last refusal: a second one is final
        backoff = 1.0
        while True:
            delay = 0.0
            writer: asyncio.StreamWriter | None = None
            try:
                expiring = self.expires_at and self.expires_at - time.time() < RENEW_AHEAD
                if self.renewal and expiring and not renewed:
                    try:
                        await self._renew()
                    except _RenewalUnavailable as exc:  # the token may still be good: try it
                        log.warning("could not renew the token ahead of its expiry: %s", exc)
                reader, conn = await asyncio.wait_for(self._open(), timeout=30.0)
                writer = conn
                try:
                    await self._login(reader, conn)
                except _LoginFailed as exc:
                    if self.renewal is None:
                        raise AuthRejected(
                            f"login refused: {exc} (no refresh_token to renew the token)"
                        ) from None
                    if renewed:
                        raise AuthRejected(
                            f"login refused with a freshly renewed token: {exc} "
                            f"(is bot_name {self.bot_name!r} the token's account?)"
                        ) from None
                    log.info("login refused (%s): renewing the token", exc)
                    await self._renew()
                    renewed = True
                    continue
                renewed, backoff = False, 1.0
                self.connections += 1
                self._writer = conn
                for start in range(0, len(self.channels), 10):
                    chunk = ",".join(f"#{c}" for c in self.channels[start : start + 10])
                    conn.write(format_line("JOIN", chunk).encode())
                await conn.drain()
                self._online.set()
                if not said_connected:
                    said_connected = True
                    connected()
                reason = await self._read(reader, conn, sink)
                log.info("reconnecting: %s", reason)
            except (OSError, EOFError, TimeoutError) as exc:
                delay, backoff = backoff, min(backoff * 2, 60.0)
                log.warning(
                    "connection to %s:%d lost (%s); again in %.0f s", self.host, self.port, exc, delay
                )
            finally:
                self._online.clear()
                self._writer = None
                for fut in self._pending.values():
                    if not fut.done():
                        fut.set_exception(ConnectionError("the connection to Twitch was lost"))
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(Exception):
                        async with asyncio.timeout(5.0):
                            await writer.wait_closed()
            if delay:
                await asyncio.sleep(delay)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        context = ssl.create_default_context() if self.tls else None
        return await asyncio.open_connection(
            self.host, self.port, ssl=context, server_hostname=self.host if self.tls else None
        )

    async def _login(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(format_line("CAP", "REQ", "twitch.tv/tags twitch.tv/commands").encode())
        writer.write(f"PASS oauth:{self.token}\r\nNICK {self.bot_name}\r\n".encode())
        await writer.drain()
        async with asyncio.timeout(30.0):
            while True:
                line = await _readline(reader)
                if line.command == "001":
                    return
                if line.command == "NOTICE" and any(f in line.text for f in AUTH_FAILURES):
                    raise _LoginFailed(line.text)
                if line.command == "CAP" and len(line.params) > 1 and line.params[1] == "NAK":
                    log.warning("Twitch refused the capabilities %r: no tags, no replies", line.text)
                elif line.command == "PING":
                    writer.write(format_line("PONG", line.text or "tmi.twitch.tv").encode())

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sink: Sink) -> str:
        """Handle lines until Twitch asks to reconnect (returns why); raises when the connection
        is lost."""
        probing = False
        while True:
            try:
                async with asyncio.timeout(self.keepalive):
                    line = await _readline(reader)
            except TimeoutError:
                if probing:
                    raise ConnectionError("no answer to PING") from None
                probing = True
                writer.write(format_line("PING", "spacebot").encode())
                continue
            probing = False
            match line.command:
                case "PING":
                    writer.write(format_line("PONG", line.text or "tmi.twitch.tv").encode())
                case "RECONNECT":
                    return "Twitch asked to reconnect (RECONNECT)"
                case "PRIVMSG" if line.channel:
                    msg = self._message(ChatLine.of(line))
                    if msg is not None:
                        # Twitch never delivers a message again: a failure is logged, reading goes on.
                        self.lanes.add(
                            line.channel, functools.partial(sink.message, msg), f"storing {msg.message_id}"
                        )
                case "USERSTATE" if line.channel:
                    self._userstate(line)
                case "NOTICE":
                    self._notice(line)
                case "CLEARMSG" if line.channel and line.tags.get("target-msg-id"):
                    edit = PlatformEdit(f"twitch:{line.channel}", line.tags["target-msg-id"], None)
                    self.lanes.add(line.channel, functools.partial(sink.edit, edit), "a deletion")
                case _:
                    pass

    def _message(self, chat: ChatLine) -> PlatformMessage | None:
        if chat.login == self.bot_name:
            return None  # the bot's own line (another connection of the same account)
        text = chat.text
        prefix = self.instance.trigger_prefix
        addressed = False
        rest = text[len(prefix) :]
        # ``!ask`` takes "!ask why" but not "!asking"; a prefix like ``!`` takes "!why".
        word_goes_on = prefix[-1:].isalnum() and rest[:1].isalnum()
        if prefix and text.casefold().startswith(prefix.casefold()) and not word_goes_on:
            text = rest.lstrip() or text
            addressed = True
        if re.search(rf"(?<!\w)@{re.escape(self.bot_name)}\b", text, re.IGNORECASE):
            addressed = True
        if chat.reply_parent_login == self.bot_name:
            addressed = True
        if addressed or not self.instance.require_mention:
            self._reply_to[chat.channel] = chat.id
        scope = Scope(
            platform="twitch",
            instance=self.instance.name,
            guild="",
            channel=chat.channel,
            author_id=chat.user_id or chat.login,
            mentions_bot=addressed,
        )
        quoted = ""
        if chat.reply_parent_msg_id:
            quoted = (
                f"{chat.reply_parent_display_name or chat.reply_parent_login}: {chat.reply_parent_body[:300]}"
            )
        return PlatformMessage(
            conversation=f"twitch:{chat.channel}",
            scope=scope,
            message_id=chat.id,
            author_name=chat.display_name,
            text=text,
            timestamp=chat.timestamp,
            conversation_name=f"#{chat.channel}",
            reply_to_text=quoted,
        )

    def _userstate(self, line: IrcLine) -> None:
        channel = line.channel
        is_mod = line.tags.get("mod") == "1" or "broadcaster/" in line.tags.get("badges", "")
        self._window(channel).cap = RATE_MOD if is_mod else RATE_USER
        pending = self._pending.get(channel)
        if line.tags.get("id") and pending is not None and not pending.done():
            pending.set_result(line)  # the answer to our PRIVMSG: it was sent, with this id

    def _notice(self, line: IrcLine) -> None:
        kind = line.tags.get("msg-id", "")
        channel = line.channel
        self.notices[kind or "notice"] += 1
        place = f"#{channel}" if channel else "Twitch"
        if kind in RETRY_NOTICES or kind in DUPLICATE_NOTICES:
            log.warning("%s: %s (%s)", place, line.text, kind)
        elif kind in REFUSED_NOTICES:
            log.error("%s refuses the bot's messages: %s (%s)", place, line.text, kind)
        else:
            log.info("%s notice: %s (%s)", place, line.text, kind or "-")
        pending = self._pending.get(channel)
        known = RETRY_NOTICES | DUPLICATE_NOTICES | REFUSED_NOTICES
        if kind in known and pending is not None and not pending.done():
            pending.set_result(line)

    # -- the token -----------------------------------------------------------------------------

    def _load_saved(self) -> None:
        """Use the tokens a previous renewal saved, while the configured ones are unchanged."""
        if self.token_file is None or not self.token_file.exists():
            return
        try:
            saved = json.loads(self.token_file.read_text())
        except (OSError, ValueError) as exc:
            log.warning("ignoring %s: %s", self.token_file, exc)
            return
        if saved.get("configured") != self._config_digest or not saved.get("access_token"):
            log.info("ignoring %s: the configured token changed since it was saved", self.token_file)
            return
        self.token = str(saved["access_token"])
        self.expires_at = float(saved.get("expires_at") or 0.0)
        if self.renewal is not None and saved.get("refresh_token"):
            self.renewal.refresh_token = str(saved["refresh_token"])

    def _save(self) -> None:
        if self.token_file is None or self.renewal is None:
            return
        self.token_file.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "configured": self._config_digest,
            "access_token": self.token,
            "refresh_token": self.renewal.refresh_token,
            "expires_at": self.expires_at,
            "renewed_at": time.time(),
        }
        tmp = self.token_file.with_name(self.token_file.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(data, f)
        os.replace(tmp, self.token_file)

    async def _renew(self) -> None:
        """A fresh access token from the refresh token; saved for the next start."""
        assert self.renewal is not None
        url = f"{self.token_base}/oauth2/token"
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self.renewal.refresh_token,
            "client_id": self.renewal.client_id,
            "client_secret": self.renewal.client_secret,
        }
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30.0)) as http,
                http.post(url, data=form) as resp,
            ):
                status, raw = resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _RenewalUnavailable(f"token endpoint {url}: {exc}") from None
        try:
            body: dict[str, Any] = json.loads(raw)
        except ValueError:
            body = {}
        if status >= 500 or (status == 200 and not body):
            raise _RenewalUnavailable(f"token endpoint {url} answered HTTP {status}")
        if status != 200 or not body.get("access_token"):
            reason = body.get("message") or body.get("error") or f"HTTP {status}"
            raise AuthRejected(f"token renewal refused by {url}: {reason}")
        self.token = str(body["access_token"]).removeprefix("oauth:")
        self.renewal.refresh_token = str(body.get("refresh_token") or self.renewal.refresh_token)
        expires_in = float(body.get("expires_in") or 0)
        self.expires_at = time.time() + expires_in if expires_in > 0 else 0.0
        await asyncio.to_thread(self._save)
        log.info("renewed the Twitch token (expires in %.0f s); saved to %s", expires_in, self.token_file)

    # -- calls ---------------------------------------------------------------------------------

    def _channel_of(self, conversation: str) -> str:
        platform, _, channel = conversation.partition(":")
        if platform != "twitch" or not channel or ":" in channel:
            raise ValueError(f"not a Twitch conversation id: {conversation!r}")
        return channel

    def _window(self, channel: str) -> SendWindow:
        return self._windows.setdefault(channel, SendWindow())

    async def post(self, conversation: str, text: str, *, nonce: str = "") -> str:
        """Send one message (a reply to the latest message addressed to the bot there); waits out
        Twitch's limits. ``nonce`` is unused: IRC has nothing to make a send idempotent."""
        channel = self._channel_of(conversation)
        text = _one_line(text)
        if text[0] in "/.":
            text = "\u200b" + text  # a chat command is the agent's text, never a command
        text = text[:LIMIT]
        lock = self._locks.setdefault(channel, asyncio.Lock())
        async with lock:
            return await self._send(channel, text)

    async def _send(self, channel: str, text: str) -> str:
        loop = asyncio.get_running_loop()
        for _ in range(SEND_ATTEMPTS):
            async with asyncio.timeout(120.0):
                await self._online.wait()
            window = self._window(channel)
            while (wait := window.wait(time.monotonic())) > 0:
                log.info("#%s: %d messages in %.0f s, waiting %.1f s", channel, window.cap, WINDOW, wait)
                await asyncio.sleep(wait)
            wire = await self._vary(channel, text)
            writer = self._writer
            if writer is None:
                continue  # the connection went in the meantime
            parent = self._reply_to.get(channel)
            tags = {"reply-parent-msg-id": parent} if parent else None
            answer_to = self._pending[channel] = loop.create_future()
            try:
                writer.write(format_line("PRIVMSG", f"#{channel}", wire, tags=tags).encode())
                now = time.monotonic()
                window.record(now)
                try:
                    async with asyncio.timeout(10.0):
                        answer = await answer_to
                except TimeoutError:
                    self._last_sent[channel] = (wire, now)
                    return f"unconfirmed-{secrets.token_hex(8)}"  # sent; Twitch named no id
            finally:
                if self._pending.get(channel) is answer_to:
                    del self._pending[channel]
            kind = answer.tags.get("msg-id", "")
            if answer.command == "USERSTATE" or kind in DUPLICATE_NOTICES:
                self._last_sent[channel] = (wire, now)  # what the duplicate rule compares with
            if answer.command == "USERSTATE":
                return answer.tags["id"]
            if kind in RETRY_NOTICES:
                await asyncio.sleep(self.ratelimit_wait)
            elif kind not in DUPLICATE_NOTICES:  # the next round varies a duplicate
                raise TwitchError(f"Twitch refused the message in #{channel}: {answer.text} ({kind})")
        raise TwitchError(f"Twitch refused the message in #{channel} {SEND_ATTEMPTS} times (rate limits)")

    async def _vary(self, channel: str, text: str) -> str:
        """``text``, changed invisibly when it is the channel's last message within 30 s."""
        last = self._last_sent.get(channel)
        if last is None or last[0] != text:
            return text
        if len(text) + 2 <= LIMIT:
            return f"{text} {INVISIBLE}"
        await asyncio.sleep(max(0.0, last[1] + WINDOW - time.monotonic()))
        return text

    async def edit(self, conversation: str, message_id: str, text: str) -> None:
        raise TwitchError("Twitch chat messages cannot be edited")

    async def delete(self, conversation: str, message_id: str) -> None:
        log.debug("not deleting %s in %s: IRC cannot delete messages", message_id, conversation)

    async def react(self, conversation: str, message_id: str, emoji: str) -> None:
        log.debug("not reacting in %s: Twitch chat has no reactions", conversation)

    async def typing(self, conversation: str) -> None:
        return None  # Twitch chat shows no typing indicator

    async def send_files(self, conversation: str, files: list[OutFile], text: str = "") -> str:
        names = ", ".join(f.name for f in files)
        raise TwitchError(f"Twitch chat cannot carry files; not sent: {names}")

    async def history(self, conversation: str, limit: int) -> list[PlatformMessage]:
        return []  # Twitch keeps no chat history a bot can read

    async def close(self) -> None:
        self.lanes.cancel()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()


async def _readline(reader: asyncio.StreamReader) -> IrcLine:
    """The next non-empty line; raises :class:`EOFError` when the server closed the connection."""
    while True:
        raw = await reader.readline()
        if not raw:
            raise EOFError("Twitch closed the connection")
        if raw.strip():
            return parse_line(raw.decode("utf-8", "replace"))
