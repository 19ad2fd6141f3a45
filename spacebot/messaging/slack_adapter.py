"""Slack through slack_sdk: the protocol half of ``gateway:slack:<instance>``.

Events come over Socket Mode (an app-level ``xapp-`` token; no public URL) and calls go to the Web
API with the bot token (``xoxb-``). slack_sdk keeps the socket (pings, ``disconnect`` messages,
reconnects); its rate-limit retry handler sleeps through a 429. Every ``events_api`` envelope is
acknowledged only after the sink returned, so a message is stored before Slack stops redelivering
it; a redelivery (``retry_attempt > 0``) is handed on like the first delivery and deduplicated by
the gateway on the message's ``ts``.

Conversation ids: ``slack:<team>:<channel>`` (a channel, private group or direct message) and
``slack:<team>:<channel>:<thread_ts>`` (a thread is a conversation of its own; in the permission
rule its channel is ``<channel>:<thread_ts>`` and its parent is the channel, so a binding by channel
id takes the channel's threads too).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import re
from collections.abc import Callable
from typing import Any, ClassVar

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from spacebot.config import PlatformInstance
from spacebot.errors import ConfigError
from spacebot.ipc.messages import Card
from spacebot.messaging import cards, credentials
from spacebot.messaging.bindings import Scope
from spacebot.messaging.platform import (
    Attachment,
    AuthRejected,
    OutFile,
    PlatformEdit,
    PlatformMessage,
    Sink,
)
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.gateway.slack")

LIMIT = 4000
"""Characters of ``text`` per message (Slack truncates longer texts; 4000 is its advice)."""
DEFAULT_API = "https://slack.com/api/"
AUTH_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "not_allowed_token_type",
    }
)
"""Web API errors that mean the token is wrong: a configuration problem, not a restart's."""
MESSAGE_SUBTYPES = frozenset({None, "file_share", "thread_broadcast", "bot_message", "me_message"})
"""``message`` event subtypes that are something said (joins, topic changes … are not)."""
EMOJI_NAMES = {
    "👍": "+1",
    "👎": "-1",
    "❤️": "heart",
    "❤": "heart",
    "🎉": "tada",
    "😂": "joy",
    "😄": "smile",
    "🙂": "slightly_smiling_face",
    "😊": "blush",
    "👀": "eyes",
    "✅": "white_check_mark",
    "❌": "x",
    "🙏": "pray",
    "🔥": "fire",
    "🤔": "thinking_face",
    "👋": "wave",
    "💯": "100",
    "🚀": "rocket",
    "⚠️": "warning",
    "👌": "ok_hand",
    "✨": "sparkles",
    "😢": "cry",
}
"""Unicode emoji the agent may react with → Slack's names for them."""

_MARKUP = re.compile(r"<([^<>]*)>")
_NAME = re.compile(r"^:?([a-z0-9_+\-']+):?$")
_USER_MENTION = re.compile(r"<@[UW][A-Z0-9]{2,}>")


def web_client(token: str, api_base: str) -> AsyncWebClient:
    """A Web API client that waits out a 429 (``Retry-After``) and sends again, once per call."""
    base = api_base or DEFAULT_API
    client = AsyncWebClient(token=token, base_url=base if base.endswith("/") else base + "/")
    client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=2))
    return client


def parse(conversation: str) -> tuple[str, str, str | None]:
    """``slack:<team>:<channel>[:<thread_ts>]`` → ``(team, channel, thread_ts or None)``."""
    parts = conversation.split(":")
    if len(parts) not in (3, 4) or parts[0] != "slack":
        raise ValueError(f"not a Slack conversation id: {conversation!r}")
    return parts[1], parts[2], parts[3] if len(parts) == 4 else None


def escape(text: str) -> str:
    """Outgoing text as Slack wants it: ``&``, ``<`` and ``>`` escaped, so the agent's text never
    turns into ``<!channel>``, ``<!here>``, a group or a link markup; a user mention ``<@U…>`` (what
    ``@Name`` becomes, :meth:`SlackAdapter.mention`) is the one markup kept."""
    out: list[str] = []
    last = 0
    for m in _USER_MENTION.finditer(text):
        out += [_escape_all(text[last : m.start()]), m.group(0)]
        last = m.end()
    out.append(_escape_all(text[last:]))
    return "".join(out)


def _escape_all(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackAdapter:
    """One Slack app (its bot user) in one workspace."""

    platform: ClassVar[str] = "slack"
    limit = LIMIT
    supports_edit = True
    renders_cards = True
    """``post`` and ``edit`` take ``card=`` (see :mod:`spacebot.messaging.cards`)."""

    def __init__(self, instance: PlatformInstance, bot_token: str, app_token: str) -> None:
        self.instance = instance
        self.bot_token = bot_token
        self.web = web_client(bot_token, instance.api_base)
        # Built inside the running loop: it starts its message-processing task on construction.
        self.socket = SocketModeClient(app_token=app_token, web_client=self.web, logger=log)
        self.team = ""
        self.bot_user = ""
        self.bot_id = ""
        self.users: dict[str, str] = {}
        """User id → display name (``users.info``, cached)."""
        self.channel_names: dict[str, str] = {}
        """Channel id → name (``conversations.info``, cached)."""
        self.bot_threads: set[tuple[str, str]] = set()
        """``(channel, thread_ts)`` of threads the bot posted in (a reply there addresses it)."""
        self.typing_refused = False
        """``assistant.threads.setStatus`` was refused once: typing is a no-op from then on."""
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def own_id(self) -> str:
        """The bot's user id (from ``auth.test``)."""
        return self.bot_user

    @classmethod
    async def create(cls, ctx: ChildContext, instance: PlatformInstance) -> SlackAdapter:
        where = f"messaging.slack[{instance.name}]"
        for key, hint in (
            ("bot_token", "the bot token (xoxb-)"),
            ("app_token", "the app-level token (xapp-)"),
        ):
            if not getattr(instance, key):
                raise ConfigError(f"{where}.{key} is empty: set it to {hint}, as env:NAME or secret:NAME")
        bot = await credentials.resolve(ctx, instance.bot_token, f"{where}.bot_token")
        app = await credentials.resolve(ctx, instance.app_token, f"{where}.app_token")
        return cls(instance, bot, app)

    # -- events --------------------------------------------------------------------------------

    async def run(self, sink: Sink, connected: Callable[[], None]) -> None:
        try:
            auth = await self.web.auth_test()
        except SlackApiError as exc:
            raise self._rejected(exc, "auth.test with the bot token") from None
        self.team, self.bot_user = str(auth["team_id"]), str(auth["user_id"])
        self.bot_id = str(auth.get("bot_id") or "")

        async def on_request(client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
            if req.type != "events_api":  # interactivity, slash commands: not used; acknowledged
                await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
                return
            event = req.payload.get("event") or {}
            # slack_sdk runs each envelope's listener as a task of its own; the lock (FIFO) keeps a
            # channel's events in the order they arrived while they wait for users.info or the sink.
            lock = self._locks.setdefault(str(event.get("channel") or ""), asyncio.Lock())
            try:
                async with lock:
                    await self._event(sink, event)
            except Exception:
                # Not acknowledged: Slack delivers it again, and the gateway stores it once.
                log.exception("event not handled envelope=%s; left for redelivery", req.envelope_id)
                return
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

        self.socket.socket_mode_request_listeners.append(on_request)
        # The first URL is asked for here, not inside connect(), which would retry a refused
        # app token forever.
        try:
            self.socket.wss_uri = await self.socket.issue_new_wss_url()
        except SlackApiError as exc:
            raise self._rejected(exc, "apps.connections.open with the app token") from None
        await self.socket.connect()
        connected()
        await asyncio.Event().wait()  # slack_sdk's tasks do the rest, until cancelled

    def _rejected(self, exc: SlackApiError, what: str) -> Exception:
        error = str(exc.response.get("error", ""))
        if error in AUTH_ERRORS:
            return AuthRejected(error)
        return RuntimeError(f"{what} failed: {error or exc}")

    async def _event(self, sink: Sink, event: dict[str, Any]) -> None:
        if event.get("type") != "message":
            return  # app_mention repeats a message event: the message event alone is used
        subtype = event.get("subtype")
        if subtype == "message_changed":
            new, old = event.get("message") or {}, event.get("previous_message") or {}
            if self._mine(new) or new.get("text") == old.get("text"):
                return  # the bot's own edit, or a thread's reply count changed
            conv = self._conversation(event, new)
            await sink.edit(PlatformEdit(conv, str(new.get("ts")), await self.render(new.get("text") or "")))
        elif subtype == "message_deleted":
            old = event.get("previous_message") or {}
            if self._mine(old):
                return
            await sink.edit(PlatformEdit(self._conversation(event, old), str(event.get("deleted_ts")), None))
        elif subtype in MESSAGE_SUBTYPES:
            if self._mine(event):
                thread = event.get("thread_ts")
                if thread:
                    self.bot_threads.add((str(event.get("channel")), str(thread)))
                return
            await sink.message(await self._message(event, str(event.get("channel")), _thread_of(event)))

    def _mine(self, msg: dict[str, Any]) -> bool:
        return bool(msg.get("user") == self.bot_user or (self.bot_id and msg.get("bot_id") == self.bot_id))

    def _conversation(self, event: dict[str, Any], msg: dict[str, Any]) -> str:
        channel = str(event.get("channel") or msg.get("channel"))
        thread = _thread_of(msg)
        return f"slack:{self.team}:{channel}" + (f":{thread}" if thread else "")

    async def _message(self, msg: dict[str, Any], channel: str, thread: str | None) -> PlatformMessage:
        """A message event (or a history item) of ``channel`` or of its thread ``thread``."""
        is_dm = msg.get("channel_type") == "im" or channel.startswith("D")
        author = str(msg.get("user") or msg.get("bot_id") or "")
        if msg.get("user"):
            author_name = await self.user_name(str(msg["user"]))
        else:
            author_name = str(msg.get("username") or (msg.get("bot_profile") or {}).get("name") or author)
        text = str(msg.get("text") or "")
        mentioned = f"<@{self.bot_user}>" in text or f"<@{self.bot_user}|" in text
        in_bot_thread = thread is not None and (
            msg.get("parent_user_id") == self.bot_user or (channel, thread) in self.bot_threads
        )
        if is_dm:
            name = f"DM with {author_name}"
        else:
            name = f"#{await self.channel_name(channel)}" + (" (thread)" if thread else "")
        scope = Scope(
            platform="slack",
            instance=self.instance.name,
            guild="" if is_dm else self.team,
            channel=f"{channel}:{thread}" if thread else channel,
            parent_channel=channel if thread else "",
            is_dm=is_dm,
            author_id=author,
            author_is_bot=bool(msg.get("bot_id")),
            mentions_bot=mentioned or in_bot_thread,
        )
        return PlatformMessage(
            conversation=f"slack:{self.team}:{channel}" + (f":{thread}" if thread else ""),
            scope=scope,
            message_id=str(msg.get("ts")),
            author_name=author_name,
            text=await self.render(text),
            timestamp=float(msg.get("ts") or 0.0),
            conversation_name=name,
            attachments=tuple(self._attachment(f) for f in msg.get("files") or ()),
        )

    def _attachment(self, f: dict[str, Any]) -> Attachment:
        url = str(f.get("url_private") or "")

        async def fetch() -> bytes:
            headers = {"Authorization": f"Bearer {self.bot_token}"}
            async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
                resp.raise_for_status()
                return await resp.read()

        return Attachment(
            str(f.get("name") or f.get("title") or f.get("id") or "file"),
            url,
            str(f.get("mimetype") or "application/octet-stream"),
            int(f.get("size") or 0),
            fetch if url else None,
        )

    async def render(self, text: str) -> str:
        """Slack's markup as people read it: ``<@U1>`` → ``@ana``, ``<#C1|general>`` →
        ``#general``, ``<https://x|label>`` → ``label (https://x)``, ``<!here>`` → ``@here``."""
        out: list[str] = []
        last = 0
        for m in _MARKUP.finditer(text):
            out.append(text[last : m.start()])
            last = m.end()
            target, _, label = m.group(1).partition("|")
            if target.startswith("@"):
                out.append("@" + (label or await self.user_name(target[1:])))
            elif target.startswith("#"):
                out.append("#" + (label or await self.channel_name(target[1:])))
            elif target.startswith("!"):
                word = target[1:].split("^")[0]
                out.append(label if label else f"@{word}")
            else:
                out.append(f"{label} ({target})" if label and label != target else target)
        out.append(text[last:])
        return html.unescape("".join(out))

    async def user_name(self, user: str) -> str:
        name = self.users.get(user)
        if name is None:
            try:
                info = (await self.web.users_info(user=user))["user"]
                profile = info.get("profile") or {}
                name = profile.get("display_name") or profile.get("real_name") or info.get("name") or user
            except SlackApiError as exc:
                log.info("users.info %s failed: %s", user, exc.response.get("error"))
                name = user
            self.users[user] = name
        return name

    async def channel_name(self, channel: str) -> str:
        name = self.channel_names.get(channel)
        if name is None:
            try:
                name = str(
                    (await self.web.conversations_info(channel=channel))["channel"].get("name") or channel
                )
            except SlackApiError as exc:
                log.info("conversations.info %s failed: %s", channel, exc.response.get("error"))
                name = channel
            self.channel_names[channel] = name
        return name

    # -- calls ---------------------------------------------------------------------------------

    def mention(self, user_id: str) -> str:
        """A user mention (``@Name`` in a reply, for someone who wrote in the conversation)."""
        return f"<@{user_id}>"

    async def post(self, conversation: str, text: str, *, nonce: str = "", card: Card | None = None) -> str:
        # Slack has no idempotency key for chat.postMessage; the outbox posts each part once.
        _, channel, thread = parse(conversation)
        kw: dict[str, Any] = {"thread_ts": thread} if thread else {}
        sent = await self.web.chat_postMessage(channel=channel, **_content(text, card), **kw)
        if thread:
            self.bot_threads.add((channel, thread))
        return str(sent["ts"])

    async def open_thread(self, conversation: str, message_id: str, name: str) -> str | None:
        """A thread is a reply in thread (``thread_ts`` = the message's ``ts``; Slack threads have
        no name). ``None`` inside a thread: the reply goes on in it."""
        team, channel, thread = parse(conversation)
        if thread is not None:
            return None
        return f"slack:{team}:{channel}:{message_id}"

    async def edit(self, conversation: str, message_id: str, text: str, *, card: Card | None = None) -> None:
        _, channel, _ = parse(conversation)
        await self.web.chat_update(channel=channel, ts=message_id, **_content(text, card))

    async def delete(self, conversation: str, message_id: str) -> None:
        _, channel, _ = parse(conversation)
        try:
            await self.web.chat_delete(channel=channel, ts=message_id)
        except SlackApiError as exc:
            if exc.response.get("error") != "message_not_found":
                raise

    async def react(self, conversation: str, message_id: str, emoji: str) -> None:
        _, channel, _ = parse(conversation)
        name = EMOJI_NAMES.get(emoji)
        if name is None:
            named = _NAME.match(emoji.strip())
            if named is None:
                log.info("reaction %r skipped: no Slack name known for it", emoji)
                return
            name = named.group(1)
        try:
            await self.web.reactions_add(channel=channel, timestamp=message_id, name=name)
        except SlackApiError as exc:
            if exc.response.get("error") != "already_reacted":
                raise

    async def typing(self, conversation: str) -> None:
        """A thread shows the assistant status ("is typing…", ``assistant.threads.setStatus``,
        cleared by Slack when the reply is posted); a channel or direct message has no typing
        indicator for bots, so this is a no-op there — and everywhere once Slack refused the call
        (the app lacks the ``assistant:write`` scope or the assistant feature)."""
        _, channel, thread = parse(conversation)
        if thread is None or self.typing_refused:
            return
        try:
            await self.web.assistant_threads_setStatus(
                channel_id=channel, thread_ts=thread, status="is typing…"
            )
        except SlackApiError as exc:
            self.typing_refused = True
            log.info("typing status refused (%s): typing is off", exc.response.get("error"))

    async def send_files(self, conversation: str, files: list[OutFile], text: str = "") -> str:
        _, channel, thread = parse(conversation)
        uploads = []
        for f in files:
            content = await asyncio.to_thread(f.path.read_bytes)
            uploads.append({"content": content, "filename": f.name, "title": f.name})
        kw: dict[str, Any] = {"thread_ts": thread} if thread else {}
        if text:
            kw["initial_comment"] = escape(text)
        done = await self.web.files_upload_v2(file_uploads=uploads, channel=channel, **kw)
        shared = done.get("files") or [done.get("file") or {}]
        return ",".join(str(f.get("id", "")) for f in shared)

    async def history(self, conversation: str, limit: int) -> list[PlatformMessage]:
        _, channel, thread = parse(conversation)
        if thread is None:
            page = await self.web.conversations_history(channel=channel, limit=limit)
            items = list(reversed(page.get("messages") or []))
        else:
            items = []
            cursor = ""
            while True:  # replies come oldest first: the last ``limit`` are on the last page
                page = await self.web.conversations_replies(
                    channel=channel, ts=thread, cursor=cursor, limit=200
                )
                items.extend(page.get("messages") or [])
                cursor = (page.get("response_metadata") or {}).get("next_cursor") or ""
                if not cursor:
                    break
            items = items[-limit:]
        out = []
        for item in items:
            if item.get("subtype") not in MESSAGE_SUBTYPES:
                continue
            out.append(await self._message(item, channel, thread))
        return out

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.socket.close()  # its aiohttp session too


def _content(text: str, card: Card | None) -> dict[str, Any]:
    """``text`` (and ``blocks`` with a card: the text as a section, then the card's blocks; the
    text with the card's plain form stays the notification's and old clients' fallback)."""
    if card is None:
        return {"text": escape(text)}
    own = escape(text) if text.strip() else ""
    step = cards.SLACK_SECTION_MAX
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": own[i : i + step]}}
        for i in range(0, len(own), step)
    ]
    blocks += cards.slack_blocks(card, escape)
    return {"text": escape(cards.with_card(text, card)), "blocks": blocks}


def _thread_of(msg: dict[str, Any]) -> str | None:
    """The thread a message is in (``None``: the channel itself; a thread's parent is in the
    channel, its ``thread_ts`` is its own ``ts``)."""
    thread = msg.get("thread_ts")
    if not thread or thread == msg.get("ts"):
        return None
    return str(thread)
