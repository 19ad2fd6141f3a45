"""What :class:`~spacebot.messaging.fakes.telegram.FakeTelegram` knows: people, chats, messages,
files, and how each looks as a telethon TL object from the bot's side.

Chats are named by the ids the Bot API and telethon's ``get_peer_id`` use: a private chat by the
person's user id, a small group by ``-<chat id>``, a supergroup by ``-100<channel id>``.
"""

from __future__ import annotations

import datetime
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from telethon.tl import types

ChatKind = Literal["private", "group", "supergroup"]

CHANNEL_MARK = 1_000_000_000_000
"""``-100<channel id>``: a supergroup's marked id is ``-(CHANNEL_MARK + id)``."""


def when(ts: float) -> datetime.datetime:
    """A Unix time as the aware datetime TL objects hold."""
    return datetime.datetime.fromtimestamp(int(ts), tz=datetime.UTC)


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units (how Telegram measures entity offsets)."""
    return len(text.encode("utf-16-le")) // 2


@dataclass
class Person:
    """A Telegram account: a person, or the bot itself."""

    id: int
    name: str
    username: str = ""
    bot: bool = False
    access_hash: int = field(default_factory=lambda: secrets.randbits(63))

    def tl(self, *, is_self: bool = False) -> types.User:
        return types.User(
            id=self.id,
            is_self=is_self or None,
            bot=self.bot or None,
            access_hash=self.access_hash,
            first_name=self.name,
            username=self.username or None,
            bot_info_version=1 if self.bot else None,
        )

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "username": self.username, "bot": self.bot}


@dataclass
class Chat:
    """A private chat with a person, a small group, or a supergroup (forum or not)."""

    id: int
    """The marked id (user id, ``-chat``, ``-100channel``)."""
    kind: ChatKind
    title: str
    raw_id: int
    """The id inside its peer type (user, chat or channel id)."""
    forum: bool = False
    access_hash: int = field(default_factory=lambda: secrets.randbits(63))
    pts: int = 1
    """A supergroup's own update sequence."""
    next_id: int = 0
    """A supergroup's last message id (private chats and groups share the account's)."""
    topics: dict[int, str] = field(default_factory=dict)
    """Forum topics: topic id (its first message's id) → title."""
    clock: int = 0
    """The world's clock at the last change here (for ``updateChannelTooLong``)."""

    @property
    def peer(self) -> types.TypePeer:
        if self.kind == "private":
            return types.PeerUser(self.raw_id)
        if self.kind == "group":
            return types.PeerChat(self.raw_id)
        return types.PeerChannel(self.raw_id)

    def tl(self) -> types.TypeChat | None:
        now = when(0)
        if self.kind == "group":
            return types.Chat(
                id=self.raw_id,
                title=self.title,
                photo=types.ChatPhotoEmpty(),
                participants_count=2,
                date=now,
                version=1,
            )
        if self.kind == "supergroup":
            return types.Channel(
                id=self.raw_id,
                title=self.title,
                photo=types.ChatPhotoEmpty(),
                date=now,
                megagroup=True,
                forum=self.forum or None,
                access_hash=self.access_hash,
            )
        return None

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "title": self.title,
            "forum": self.forum,
            "topics": {str(k): v for k, v in self.topics.items()},
        }


@dataclass
class File:
    """A file: one a person attached, or one the bot uploaded."""

    id: int
    name: str
    data: bytes
    mime: str = "application/octet-stream"
    access_hash: int = field(default_factory=lambda: secrets.randbits(63))

    def media(self, dc_id: int) -> types.MessageMediaDocument:
        return types.MessageMediaDocument(
            document=types.Document(
                id=self.id,
                access_hash=self.access_hash,
                file_reference=b"",
                date=when(0),
                mime_type=self.mime,
                size=len(self.data),
                dc_id=dc_id,
                attributes=[types.DocumentAttributeFilename(self.name)],
            )
        )

    def info(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "mime": self.mime, "size": len(self.data)}


@dataclass
class Message:
    """One message, with what happened to it since."""

    chat: int
    """The chat's marked id."""
    id: int
    sender: int
    text: str
    date: float
    reply_to: int | None = None
    topic: int | None = None
    """The forum topic it was said in."""
    file: File | None = None
    edits: list[str] = field(default_factory=list)
    """Earlier texts, oldest first (the current one is ``text``)."""
    deleted: bool = False
    reactions: list[str] = field(default_factory=list)
    """Emoji the bot reacted with, in order."""
    by_bot: bool = False
    mentions_bot: bool = False
    edit_date: float | None = None

    def info(self) -> dict[str, Any]:
        return {
            "chat": self.chat,
            "id": self.id,
            "sender": self.sender,
            "text": self.text,
            "date": self.date,
            "reply_to": self.reply_to,
            "topic": self.topic,
            "file": self.file.info() if self.file else None,
            "edits": list(self.edits),
            "deleted": self.deleted,
            "reactions": list(self.reactions),
            "by_bot": self.by_bot,
        }

    def tl(self, chat: Chat, bot: Person, dc_id: int) -> types.Message:
        """The message as the bot's account sees it."""
        reply: types.MessageReplyHeader | None = None
        if self.topic is not None:
            target = self.reply_to or self.topic
            reply = types.MessageReplyHeader(
                forum_topic=True,
                reply_to_msg_id=target,
                reply_to_top_id=self.topic if target != self.topic else None,
            )
        elif self.reply_to is not None:
            reply = types.MessageReplyHeader(reply_to_msg_id=self.reply_to)
        entities: list[types.TypeMessageEntity] = []
        handle = f"@{bot.username}"
        at = self.text.find(handle) if bot.username else -1
        if at >= 0:
            entities.append(types.MessageEntityMention(utf16_len(self.text[:at]), utf16_len(handle)))
        return types.Message(
            id=self.id,
            peer_id=chat.peer,
            date=when(self.date),
            message=self.text,
            out=self.by_bot or None,
            mentioned=self.mentions_bot or None,
            from_id=types.PeerUser(self.sender) if chat.kind != "private" or self.by_bot else None,
            reply_to=reply,
            media=self.file.media(dc_id) if self.file else None,
            entities=entities or None,
            edit_date=when(self.edit_date) if self.edit_date else None,
        )


@dataclass
class LogEntry:
    """One change in an update sequence (the account's or a supergroup's)."""

    pts: int
    clock: int
    update: Any
    message: Message | None = None
    """For a new message: the message (``getDifference`` lists it in ``new_messages``)."""
