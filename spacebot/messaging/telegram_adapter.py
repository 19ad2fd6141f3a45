"""Telegram through telethon (MTProto, a bot account): the protocol half of
``gateway:telegram:<instance>``.

telethon keeps the connection (reconnects, pings) and the update state: the session file
``$SPACEBOT_HOME/gateways/telegram-<instance>.session`` (mode 0600; it holds the authorization key)
stores ``pts``/``qts``/``date`` and the peers' access hashes, so a restarted gateway asks Telegram
for what it missed (``catch_up``) and the gateway layer's dedupe drops what it had already stored.
Flood waits are waited out here, not in telethon, so one place logs them; the chat's outbox waits
with the call and the text arrives once.

Bots cannot read a chat's history on Telegram (``messages.getHistory`` is refused to them), so
:meth:`TelegramAdapter.history` returns nothing; in groups a bot sees only messages addressed to it
unless its privacy mode is off in BotFather.

Conversation ids: ``telegram:<chat>`` with telethon's marked chat id (a person's id for a private
chat, ``-<id>`` for a group, ``-100<id>`` for a supergroup) and ``telegram:<chat>:<topic>`` for a
topic of a forum supergroup (in the permission rule its channel is ``<chat>:<topic>`` and its
parent the chat, so a binding by chat id takes its topics).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from telethon import TelegramClient, errors, events
from telethon.network import ConnectionTcpIntermediate
from telethon.sessions import SQLiteSession
from telethon.tl import functions, types

from spacebot.config import PlatformInstance
from spacebot.errors import ConfigError
from spacebot.ipc import ids
from spacebot.messaging import credentials
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

log = logging.getLogger("spacebot.gateway.telegram")

T = TypeVar("T")

LIMIT = 4096
"""Telegram's message length limit, in characters."""
DC_ID = 2
"""The data center a ``gateway_url`` server stands for."""
REMEMBERED = 10_000
"""Message ids whose conversation is remembered (a deletion in a private chat or group names only
the message ids)."""
REFUSALS = (
    errors.AccessTokenInvalidError,
    errors.AccessTokenExpiredError,
    errors.ApiIdInvalidError,
    errors.UnauthorizedError,
)


def session_path(home: str | Path, instance: str) -> Path:
    """Where an instance's telethon session lives."""
    return Path(home) / "gateways" / f"telegram-{instance}.session"


def parse_gateway_url(url: str) -> tuple[str, int]:
    """``tcp://127.0.0.1:4711`` → ``("127.0.0.1", 4711)``."""
    rest = url.removeprefix("tcp://").rstrip("/")
    host, _, port = rest.rpartition(":")
    if not url.startswith("tcp://") or not host or not port.isdigit():
        raise ConfigError(f"gateway_url {url!r} must be tcp://host:port")
    return host, int(port)


def open_session(path: Path, address: tuple[str, int] | None) -> SQLiteSession:
    """The instance's session file, created private (0600) before SQLite writes the key into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)
    session = SQLiteSession(str(path.with_suffix("")))
    if address is not None and (session.server_address, session.port) != address:
        session.set_dc(DC_ID, *address)
        session.save()
    return session


class TelegramAdapter:
    """One Telegram bot account."""

    platform: ClassVar[str] = "telegram"
    limit = LIMIT
    supports_edit = True

    def __init__(
        self,
        instance: PlatformInstance,
        token: str,
        api_hash: str,
        session: SQLiteSession,
    ) -> None:
        self.instance = instance
        self.token = token
        self.session = session
        self.client = TelegramClient(
            session,
            instance.api_id,
            api_hash,
            connection=ConnectionTcpIntermediate,
            catch_up=True,
            sequential_updates=True,
            flood_sleep_threshold=0,
            receive_updates=True,
        )
        self.me: types.User | None = None
        self._logged_in = asyncio.Event()
        self.where: collections.OrderedDict[int, str] = collections.OrderedDict()
        """Recent message id → its conversation (for deletions that name only ids)."""

    @classmethod
    async def create(cls, ctx: ChildContext, instance: PlatformInstance) -> TelegramAdapter:
        key = f"messaging.telegram[{instance.name}]"
        if not instance.token:
            raise ConfigError(f"{key}.token is empty: set it to the bot token from BotFather")
        if not instance.api_id or not instance.api_hash:
            raise ConfigError(f"{key} needs api_id and api_hash (from my.telegram.org)")
        token = await credentials.resolve(ctx, instance.token, f"{key}.token")
        api_hash = await credentials.resolve(ctx, instance.api_hash, f"{key}.api_hash")
        address = parse_gateway_url(instance.gateway_url) if instance.gateway_url else None
        path = session_path(ctx.config.home, instance.name)
        session = open_session(path, address)
        if address is not None and session.auth_key is None:
            session.close()
            raise ConfigError(
                f"{key}.gateway_url points at a test server but {path} holds no key for it "
                f"(spacebot fake-telegram --session {path} writes one)"
            )
        return cls(instance, token, api_hash, session)

    # -- events --------------------------------------------------------------------------------

    async def run(self, sink: Sink, connected: Callable[[], None]) -> None:
        client = self.client

        async def on_new(event: events.NewMessage.Event) -> None:
            await self._logged_in.wait()  # catch-up dispatches while ``start`` is still running
            msg = await self._message(event.message)
            if msg is not None:
                await sink.message(msg)
            self._checkpoint(event.original_update)

        async def on_edit(event: events.MessageEdited.Event) -> None:
            await self._logged_in.wait()
            conv = self._conversation(event.message)
            await sink.edit(PlatformEdit(conv, str(event.message.id), event.message.message or ""))

        async def on_delete(event: events.MessageDeleted.Event) -> None:
            for mid in event.deleted_ids:
                conv = self.where.get(mid) or (f"telegram:{event.chat_id}" if event.chat_id else "")
                if conv:
                    await sink.edit(PlatformEdit(conv, str(mid), None))

        client.add_event_handler(on_new, events.NewMessage(incoming=True))
        client.add_event_handler(on_edit, events.MessageEdited(incoming=True))
        client.add_event_handler(on_delete, events.MessageDeleted())
        try:
            await client.start(bot_token=self.token)
            me = await client.get_me()
        except REFUSALS as exc:
            raise AuthRejected(f"login refused: {exc}") from None
        if not isinstance(me, types.User):
            raise AuthRejected("login refused: the session is not logged in")
        bot_id = self.token.split(":", 1)[0]
        if bot_id.isdigit() and int(bot_id) != me.id:
            raise AuthRejected(
                f"the session file holds bot {me.id}, the token is bot {bot_id}'s: "
                f"delete {self.session.filename} to log in with the new token"
            )
        self.me = me
        if self.session.get_update_state(0) is None:  # first login: a crash must not lose what follows
            self.session.set_update_state(0, await client(functions.updates.GetStateRequest()))
            self.session.save()
        self._logged_in.set()
        connected()
        await client.run_until_disconnected()
        raise ConnectionError("the Telegram connection was lost and telethon gave up reconnecting")

    def _checkpoint(self, update: Any) -> None:
        """Write to the session that the updates up to ``update`` are stored, so a gateway that
        crashes (telethon writes the state only when it disconnects cleanly) catches up from
        there, not from its last clean stop. Messages a catch-up brought carry no ``pts``; the next
        live one moves the mark past them."""
        pts = getattr(update, "pts", 0)
        message = getattr(update, "message", None)
        if not pts or message is None:
            return
        if isinstance(update, types.UpdateNewChannelMessage):
            entity = message.peer_id.channel_id
        elif isinstance(update, types.UpdateNewMessage):
            entity = 0
        else:
            return
        known = self.session.get_update_state(entity)
        if known is not None and known.pts >= pts:
            return
        qts, seq = (known.qts, known.seq) if known is not None else (0, 0)
        self.session.set_update_state(entity, types.updates.State(pts, qts, message.date, seq, 0))
        self.session.save()

    def _conversation(self, message: Any) -> str:
        topic = _topic(message)
        chat = message.chat_id
        conv = f"telegram:{chat}:{topic}" if topic is not None else f"telegram:{chat}"
        self.where[message.id] = conv
        self.where.move_to_end(message.id)
        while len(self.where) > REMEMBERED:
            self.where.popitem(last=False)
        return conv

    async def _message(self, message: Any) -> PlatformMessage | None:
        me = self.me
        sender = await message.get_sender()
        chat = await message.get_chat()
        if me is None or sender is None:
            return None
        conversation = self._conversation(message)
        topic = _topic(message)
        chat_id = message.chat_id
        author = _name(sender)
        replied = await self._replied(message)
        mentioned = bool(message.mentioned) or self._mentions(message)
        reply_to_bot = replied is not None and replied.sender_id == me.id
        scope = Scope(
            platform="telegram",
            instance=self.instance.name,
            guild="",
            channel=f"{chat_id}:{topic}" if topic is not None else str(chat_id),
            parent_channel=str(chat_id) if topic is not None else "",
            is_dm=bool(message.is_private),
            author_id=str(sender.id),
            author_is_bot=bool(getattr(sender, "bot", False)),
            mentions_bot=mentioned or reply_to_bot,
        )
        quoted = ""
        if replied is not None:
            who = _name(await replied.get_sender()) if replied.sender_id else ""
            quoted = f"{who}: {(replied.message or '')[:300]}"
        name = f"DM with {author}" if message.is_private else getattr(chat, "title", "") or str(chat_id)
        return PlatformMessage(
            conversation=conversation,
            scope=scope,
            message_id=str(message.id),
            author_name=author,
            text=message.message or "",
            timestamp=message.date.timestamp(),
            conversation_name=name,
            reply_to_text=quoted,
            attachments=self._attachments(message),
        )

    def _mentions(self, message: Any) -> bool:
        me = self.me
        assert me is not None
        handle = f"@{me.username}".lower() if me.username else None
        for entity, text in message.get_entities_text():
            if isinstance(entity, types.MessageEntityMentionName) and entity.user_id == me.id:
                return True
            if isinstance(entity, types.MessageEntityMention) and handle and text.lower() == handle:
                return True
        return False

    async def _replied(self, message: Any) -> Any:
        """The message this one answers (not a forum topic's opening, which every post in the
        topic points at)."""
        header = message.reply_to
        if header is None or header.reply_to_msg_id is None:
            return None
        if header.forum_topic and not header.reply_to_top_id:
            return None
        try:
            return await self.client.get_messages(message.chat_id, ids=header.reply_to_msg_id)
        except errors.RPCError as exc:
            log.info("replied-to message %s not fetched: %s", header.reply_to_msg_id, exc)
            return None

    def _attachments(self, message: Any) -> tuple[Attachment, ...]:
        file = message.file
        if file is None:
            return ()
        client = self.client

        async def fetch() -> bytes:
            data = await client.download_media(message, file=bytes)
            return bytes(data) if data else b""

        name = file.name or f"{message.id}{file.ext or ''}"
        url = f"tg://message/{message.chat_id}/{message.id}"
        return (Attachment(name, url, file.mime_type or "application/octet-stream", file.size or 0, fetch),)

    # -- calls ---------------------------------------------------------------------------------

    def _target(self, conversation: str) -> tuple[int, int | None]:
        try:
            parsed = ids.parse_conversation(conversation)
        except ids.IdError as exc:
            raise ValueError(f"not a Telegram conversation id: {conversation!r} ({exc})") from None
        chat, topic = parsed.part("chat"), parsed.part("topic")
        if parsed.platform != "telegram" or chat is None or not chat.lstrip("-").isdigit():
            raise ValueError(f"not a Telegram conversation id: {conversation!r}")
        return int(chat), int(topic) if topic and topic.isdigit() else None

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again after each flood wait Telegram imposes (the chat's outbox waits too)."""
        while True:
            try:
                return await call()
            except errors.FloodWaitError as exc:
                log.warning("flood wait: Telegram asks to wait %d s before the next call", exc.seconds)
                await asyncio.sleep(exc.seconds)

    async def post(self, conversation: str, text: str, *, nonce: str = "") -> str:
        chat, topic = self._target(conversation)
        sent = await self._retrying(
            lambda: self.client.send_message(chat, text, reply_to=topic, link_preview=False)
        )
        self.where[sent.id] = conversation
        return str(sent.id)

    async def edit(self, conversation: str, message_id: str, text: str) -> None:
        chat, _ = self._target(conversation)
        with contextlib.suppress(errors.MessageNotModifiedError):
            await self._retrying(
                lambda: self.client.edit_message(chat, int(message_id), text, link_preview=False)
            )

    async def delete(self, conversation: str, message_id: str) -> None:
        chat, _ = self._target(conversation)
        await self._retrying(lambda: self.client.delete_messages(chat, [int(message_id)]))

    async def react(self, conversation: str, message_id: str, emoji: str) -> None:
        chat, _ = self._target(conversation)
        peer = await self.client.get_input_entity(chat)
        request = functions.messages.SendReactionRequest(
            peer, int(message_id), reaction=[types.ReactionEmoji(emoji)]
        )
        await self._retrying(lambda: self.client(request))

    async def typing(self, conversation: str) -> None:
        chat, topic = self._target(conversation)
        peer = await self.client.get_input_entity(chat)
        request = functions.messages.SetTypingRequest(peer, types.SendMessageTypingAction(), top_msg_id=topic)
        await self._retrying(lambda: self.client(request))

    async def send_files(self, conversation: str, files: list[OutFile], text: str = "") -> str:
        chat, topic = self._target(conversation)
        last = ""
        for n, f in enumerate(files):
            caption = text if n == 0 else ""

            async def send(f: OutFile = f, caption: str = caption) -> Any:
                return await self.client.send_file(
                    chat,
                    str(f.path),
                    caption=caption,
                    reply_to=topic,
                    force_document=True,
                    attributes=[types.DocumentAttributeFilename(f.name)],
                )

            sent = await self._retrying(send)
            last = str(sent.id)
        return last

    async def history(self, conversation: str, limit: int) -> list[PlatformMessage]:
        return []  # Telegram refuses messages.getHistory to bot accounts

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.disconnect()  # saves the update state
        with contextlib.suppress(Exception):
            self.session.close()


def _topic(message: Any) -> int | None:
    """The forum topic a message belongs to (``None``: not in a forum topic)."""
    header = message.reply_to
    if header is None or not getattr(header, "forum_topic", False):
        return None
    return header.reply_to_top_id or header.reply_to_msg_id


def _name(entity: Any) -> str:
    if entity is None:
        return ""
    if isinstance(entity, types.User):
        full = " ".join(p for p in (entity.first_name, entity.last_name) if p)
        return full or entity.username or str(entity.id)
    return getattr(entity, "title", "") or str(getattr(entity, "id", ""))
