"""Discord through discord.py: the protocol half of ``gateway:discord:<instance>``.

discord.py keeps the gateway connection (heartbeats, RESUME with replay, re-IDENTIFY, reconnects)
and the REST rate limits (it waits out a 429 itself). This module only maps: a ``Message`` to a
:class:`~spacebot.messaging.platform.PlatformMessage` and a conversation id back to a channel.

Conversation ids: ``discord:<guild>:<channel>`` (a thread is a channel of its own, whose parent is
its channel in the permission rule), ``discord:dm:<user>``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

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

with warnings.catch_warnings():  # discord.py imports the stdlib ``audioop`` (voice), deprecated
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord

log = logging.getLogger("spacebot.gateway.discord")


class _NoVoiceNotes(logging.Filter):
    """discord.py warns at every start that voice needs PyNaCl; Spacebot has no voice."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


logging.getLogger("discord.client").addFilter(_NoVoiceNotes())

LIMIT = 2000
"""Discord's message length limit, in characters."""
THREAD_EXISTS = 160004
"""JSON error code: "A thread has already been created for this message"."""
ALLOWED_MENTIONS = discord.AllowedMentions(everyone=False, users=True, roles=False, replied_user=False)
"""Sent with every message and edit: a reply notifies the people it mentions, never everyone, a
role, or (by replying) the author of a message."""
_MASS = re.compile(r"@(everyone|here)\b")


def _quiet(text: str) -> str:
    """``@everyone`` and ``@here`` shown as text (a zero-width space after the ``@``), whatever
    ``allowed_mentions`` would let through."""
    return _MASS.sub("@\u200b\\1", text)


CLOSE_REASONS = {
    4004: "4004: authentication failed",
    4013: "4013: invalid intents",
    4014: "4014: the Message Content intent is not enabled for this bot in the developer portal",
}


def point_at(api_base: str, gateway_url: str) -> None:
    """Use another REST base and gateway (tests, proxies). Both are discord.py class attributes:
    process-wide, which is right here — a gateway process runs one Discord account."""
    import discord.gateway
    import discord.http
    import yarl

    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


class DiscordAdapter:
    """One Discord bot account."""

    platform: ClassVar[str] = "discord"
    limit = LIMIT
    supports_edit = True
    renders_cards = True
    """``post`` and ``edit`` take ``card=`` (see :mod:`spacebot.messaging.cards`)."""

    def __init__(self, instance: PlatformInstance, token: str) -> None:
        self.instance = instance
        self.token = token
        intents = discord.Intents.default()
        intents.message_content = True
        self.client = discord.Client(
            intents=intents,
            max_messages=1000,
            allowed_mentions=ALLOWED_MENTIONS,
            guild_ready_timeout=instance.guild_ready_timeout,
        )
        self.dm_channels: dict[str, int] = {}
        """User id → their DM channel id (a ``discord:dm:<user>`` conversation's channel)."""
        self.threads: set[int] = set()
        """Ids of the threads seen or opened (no thread is opened inside one)."""

    @property
    def own_id(self) -> str:
        """The bot's user id once logged in."""
        user = self.client.user
        return str(user.id) if user is not None else ""

    @classmethod
    async def create(cls, ctx: ChildContext, instance: PlatformInstance) -> DiscordAdapter:
        key = f"messaging.discord[{instance.name}].token"
        if not instance.token:
            raise ConfigError(f"{key} is empty: set it to the bot token (env:NAME or secret:NAME)")
        token = await credentials.resolve(ctx, instance.token, key)
        point_at(instance.api_base, instance.gateway_url)
        return cls(instance, token)

    # -- events --------------------------------------------------------------------------------

    async def run(self, sink: Sink, connected: Callable[[], None]) -> None:
        client = self.client
        said_connected = False

        @client.event
        async def on_ready() -> None:
            nonlocal said_connected
            if not said_connected:
                said_connected = True
                connected()

        @client.event
        async def on_message(message: discord.Message) -> None:
            if client.user is not None and message.author.id == client.user.id:
                return
            await sink.message(self._message(message))

        @client.event
        async def on_raw_message_edit(payload: discord.RawMessageUpdateEvent) -> None:
            data: dict[str, Any] = dict(payload.data)
            content = data.get("content")
            author: dict[str, Any] = data.get("author") or {}
            if content is None or author.get("id") == str(getattr(client.user, "id", "")):
                return
            conv = self._conversation_of(payload.channel_id, payload.guild_id, author)
            await sink.edit(PlatformEdit(conv, str(payload.message_id), str(content)))

        @client.event
        async def on_raw_message_delete(payload: discord.RawMessageDeleteEvent) -> None:
            conv = self._conversation_of(payload.channel_id, payload.guild_id, None)
            await sink.edit(PlatformEdit(conv, str(payload.message_id), None))

        try:
            await client.start(self.token)
        except discord.LoginFailure as exc:
            raise AuthRejected(f"login refused: {exc}") from None
        except discord.PrivilegedIntentsRequired:
            raise AuthRejected(CLOSE_REASONS[4014]) from None
        except discord.ConnectionClosed as exc:
            if exc.code in CLOSE_REASONS:
                raise AuthRejected(CLOSE_REASONS[exc.code]) from None
            raise

    def _conversation_of(self, channel_id: int, guild_id: int | None, author: dict[str, Any] | None) -> str:
        if guild_id is not None:
            return f"discord:{guild_id}:{channel_id}"
        for user, dm in self.dm_channels.items():
            if dm == channel_id:
                return f"discord:dm:{user}"
        return f"discord:dm:{(author or {}).get('id', channel_id)}"

    def _message(self, message: discord.Message) -> PlatformMessage:
        me = self.client.user
        channel = message.channel
        guild = message.guild
        if guild is None:
            user = str(message.author.id)
            self.dm_channels[user] = channel.id
            conversation = f"discord:dm:{user}"
            name = f"DM with {message.author.display_name}"
        else:
            conversation = f"discord:{guild.id}:{channel.id}"
            name = f"#{getattr(channel, 'name', channel.id)}"
        parent = getattr(channel, "parent_id", None) if isinstance(channel, discord.Thread) else None
        if parent is not None:
            self.threads.add(channel.id)
        replied = message.reference.resolved if message.reference else None
        reply_to_bot = isinstance(replied, discord.Message) and me is not None and replied.author.id == me.id
        mentioned = me is not None and any(u.id == me.id for u in message.mentions)
        # A thread the bot opened (``reply(thread_name=…)``) is a conversation with it.
        own_thread = me is not None and isinstance(channel, discord.Thread) and channel.owner_id == me.id
        scope = Scope(
            platform="discord",
            instance=self.instance.name,
            guild=str(guild.id) if guild else "",
            channel=str(channel.id),
            parent_channel=str(parent or ""),
            is_dm=guild is None,
            author_id=str(message.author.id),
            author_is_bot=message.author.bot,
            mentions_bot=mentioned or reply_to_bot or own_thread,
        )
        quoted = ""
        if isinstance(replied, discord.Message):
            quoted = f"{replied.author.display_name}: {replied.clean_content[:300]}"
        return PlatformMessage(
            conversation=conversation,
            scope=scope,
            message_id=str(message.id),
            author_name=message.author.display_name,
            text=message.clean_content,
            timestamp=message.created_at.timestamp(),
            conversation_name=name,
            reply_to_text=quoted,
            attachments=tuple(
                Attachment(a.filename, a.url, a.content_type or "application/octet-stream", a.size, a.read)
                for a in message.attachments
            ),
        )

    # -- calls ---------------------------------------------------------------------------------

    async def _channel(self, conversation: str) -> discord.PartialMessageable:
        parts = conversation.split(":")
        if len(parts) != 3 or parts[0] != "discord":
            raise ValueError(f"not a Discord conversation id: {conversation!r}")
        if parts[1] == "dm":
            channel_id = self.dm_channels.get(parts[2])
            if channel_id is None:
                user = await self.client.fetch_user(int(parts[2]))
                dm = await user.create_dm()
                channel_id = self.dm_channels[parts[2]] = dm.id
            return self.client.get_partial_messageable(channel_id, type=discord.ChannelType.private)
        return self.client.get_partial_messageable(int(parts[2]), guild_id=int(parts[1]))

    def mention(self, user_id: str) -> str:
        """A user mention (``@Name`` in a reply, for someone who wrote in the conversation)."""
        return f"<@{user_id}>"

    async def post(self, conversation: str, text: str, *, nonce: str = "", card: Card | None = None) -> str:
        channel = await self._channel(conversation)
        kw: dict[str, Any] = {"allowed_mentions": ALLOWED_MENTIONS}
        if nonce:
            # discord.py sends ``enforce_nonce`` with it: a retried post returns the first message.
            kw["nonce"] = nonce[:25]
        if card is not None:
            kw["embed"] = discord.Embed.from_dict(cards.discord_embed(card))
        sent = await channel.send(_quiet(text) or (None if card is not None else "…"), **kw)
        return str(sent.id)

    async def open_thread(self, conversation: str, message_id: str, name: str) -> str | None:
        """A public thread on the message (``Message.create_thread``; one that exists already is
        found: Discord gives a message's thread the message's id). ``None`` in a DM, a thread or
        a channel that has no threads."""
        parts = conversation.split(":")
        if len(parts) != 3 or parts[0] != "discord" or parts[1] == "dm":
            return None
        guild_id, channel_id = int(parts[1]), int(parts[2])
        channel: Any = self.client.get_channel(channel_id)
        if channel_id in self.threads or isinstance(channel, discord.Thread):
            return None
        if not isinstance(channel, discord.TextChannel):
            channel = await self.client.fetch_channel(channel_id)
            if not isinstance(channel, discord.TextChannel):
                return None
        try:
            thread = await channel.get_partial_message(int(message_id)).create_thread(name=name[:100])
            thread_id = thread.id
        except discord.HTTPException as exc:
            if exc.code != THREAD_EXISTS:
                raise
            thread_id = int(message_id)
        self.threads.add(thread_id)
        return f"discord:{guild_id}:{thread_id}"

    async def edit(self, conversation: str, message_id: str, text: str, *, card: Card | None = None) -> None:
        channel = await self._channel(conversation)
        kw: dict[str, Any] = {"allowed_mentions": ALLOWED_MENTIONS}
        if card is not None:
            kw["embed"] = discord.Embed.from_dict(cards.discord_embed(card))
        content = _quiet(text) or (None if card is not None else "…")
        await channel.get_partial_message(int(message_id)).edit(content=content, **kw)

    async def delete(self, conversation: str, message_id: str) -> None:
        channel = await self._channel(conversation)
        with contextlib.suppress(discord.NotFound):
            await channel.get_partial_message(int(message_id)).delete()

    async def react(self, conversation: str, message_id: str, emoji: str) -> None:
        channel = await self._channel(conversation)
        await channel.get_partial_message(int(message_id)).add_reaction(emoji)

    async def typing(self, conversation: str) -> None:
        channel = await self._channel(conversation)
        await channel._state.http.send_typing(channel.id)

    async def send_files(self, conversation: str, files: list[OutFile], text: str = "") -> str:
        channel = await self._channel(conversation)
        sent = await channel.send(
            _quiet(text) or None,
            files=[discord.File(str(f.path), filename=f.name) for f in files[:10]],
            allowed_mentions=ALLOWED_MENTIONS,
        )
        return str(sent.id)

    async def history(self, conversation: str, limit: int) -> list[PlatformMessage]:
        channel = await self._channel(conversation)
        out = [self._message(m) async for m in channel.history(limit=limit)]
        return list(reversed(out))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.close()
