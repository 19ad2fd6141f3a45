"""``FakeTelegram``: a loopback Telegram (MTProto over TCP) that the real telethon client talks to.

A test makes an authorization key with the fake (``fake.auth_key``) and gives it to the client in
its session (:meth:`FakeTelegram.session` or :meth:`FakeTelegram.write_session`), with the fake's
address as the data center; the client then skips the key exchange, exactly as it does with a
session saved after a real login. The bot logs in with ``auth.importBotAuthorization`` (the bot
token must be the fake's) and from then on the fake pushes updates to it and answers its calls.

Like Telegram, the fake keeps update sequences: the account's ``pts`` (private chats and small
groups) and one per supergroup. Updates are pushed while the client is connected; a client that
was away asks ``updates.getDifference`` (and ``updates.getChannelDifference``) for what it missed.
In groups the bot sees, as with BotFather's default privacy mode, only messages that mention it,
reply to it or are commands (``privacy=False`` shows it everything).

Faults on demand: :meth:`FakeTelegram.flood_wait` (``FLOOD_WAIT_X`` errors for a method) and
:meth:`FakeTelegram.drop` (every connection cut, as by a network failure).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Any

from telethon.crypto import AuthKey
from telethon.tl import functions, types
from telethon.tl.tlobject import TLRequest

from spacebot.messaging.fakes.telegram import rpc
from spacebot.messaging.fakes.telegram.mtproto import Connection, Incoming, method_name, new_auth_key
from spacebot.messaging.fakes.telegram.rpc import RpcFailure
from spacebot.messaging.fakes.telegram.world import (
    CHANNEL_MARK,
    Chat,
    File,
    LogEntry,
    Message,
    Person,
)

log = logging.getLogger(__name__)

DC_ID = 2
BOT_ID = 7000001


class FakeTelegram:
    """Telegram on loopback. ``async with FakeTelegram() as tg:`` or ``await tg.start()``.

    Args:
        bot_token: The token ``auth.importBotAuthorization`` accepts (``<bot id>:<secret>``).
        bot_username: The bot's @username (how people mention it).
        privacy: Groups show the bot only messages addressed to it (BotFather's default).
        api_id: The api_id the fake accepts (0: any).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bot_token: str = f"{BOT_ID}:fake-telegram-bot-token",
        bot_username: str = "spacebot_bot",
        privacy: bool = True,
        api_id: int = 0,
    ) -> None:
        self.host, self.port = host, port
        self.bot_token = bot_token
        self.api_id = api_id
        self.privacy = privacy
        bot_id = int(bot_token.split(":", 1)[0]) if bot_token.split(":", 1)[0].isdigit() else BOT_ID
        self.bot = Person(bot_id, "Spacebot", bot_username, bot=True)
        self.people: dict[int, Person] = {self.bot.id: self.bot}
        self.chats: dict[int, Chat] = {}
        self.messages: dict[int, list[Message]] = {}
        """Chat (marked id) → its messages, in order."""
        self.files: dict[int, File] = {}
        self.auth_key = new_auth_key()
        """The key a client's session must hold (see :meth:`session`)."""
        self.keys: dict[int, AuthKey] = {}
        self.authorized: set[int] = set()
        """Key ids logged in as the bot."""
        self.add_key(self.auth_key)
        self.pts = 1
        """The account's update sequence (never 0 on Telegram: 0 means "unknown" to clients)."""
        self.log: list[LogEntry] = []
        self.channel_logs: dict[int, list[LogEntry]] = {}
        self.clock = 0
        self._pts_clock: dict[int, int] = {1: 0}
        self.typing: list[dict[str, Any]] = []
        """``messages.setTyping`` calls: ``{"chat", "action", "topic"}``."""
        self.uploads: list[File] = []
        """Files the bot sent."""
        self.calls: Counter[str] = Counter()
        """RPC calls by Telegram method name (``messages.sendMessage``), errors included."""
        self.errors: Counter[str] = Counter()
        """RPC errors answered, by error message."""
        self.connections = 0
        """TCP connections accepted."""
        self.unknown: list[str] = []
        """Methods the fake does not implement that a client called."""
        self._floods: dict[str, list[int]] = {}
        self._parts: dict[int, dict[int, bytes]] = {}
        self._conns: set[Connection] = set()
        self._live: set[Connection] = set()  # authorized and past their first call: get updates
        self._resend_from: dict[int, int] = {}  # key id -> clock when its connection was cut
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._ids = itertools.count(100)
        self._account_msg_id = 0

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> int:
        """Start listening; returns the bound port (``port=0`` picks a free one)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- sessions ------------------------------------------------------------------------------
    def add_key(self, key: bytes, *, authorized: bool = False) -> None:
        """Accept another authorization key (``authorized``: already logged in as the bot)."""
        auth = AuthKey(key)
        self.keys[auth.key_id] = auth
        if authorized:
            self.authorized.add(auth.key_id)

    def session(self) -> Any:
        """A telethon ``StringSession`` holding the fake's key and address."""
        from telethon.sessions import StringSession

        s = StringSession()
        s.set_dc(DC_ID, self.host, self.port)
        s.auth_key = AuthKey(self.auth_key)
        return s

    def write_session(self, path: str) -> None:
        """Write a telethon SQLite session file (``path`` ending in ``.session``) that holds the
        fake's key and address, as one saved after a real login would."""
        from telethon.sessions import SQLiteSession

        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        s = SQLiteSession(path.removesuffix(".session"))
        s.set_dc(DC_ID, self.host, self.port)
        s.auth_key = AuthKey(self.auth_key)
        s.save()
        s.close()

    # ---- waiting -------------------------------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Wait until ``predicate()`` is truthy (checked after every change); return its value.

        Raises:
            TimeoutError: It stayed false for ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while not (value := predicate()):
                await self._changed.wait()
            return value

    # ---- test API: the world -------------------------------------------------------------------
    def add_user(self, name: str, *, username: str = "", id: int | None = None, bot: bool = False) -> Person:
        person = Person(id if id is not None else next(self._ids) + 1_000_000, name, username, bot=bot)
        self.people[person.id] = person
        return person

    def dm(self, user: int) -> Chat:
        """The private chat between ``user`` and the bot (its id is the user's)."""
        chat = self.chats.get(user)
        if chat is None:
            person = self._person(user)
            chat = self.chats[user] = Chat(user, "private", person.name, user)
            self.messages[user] = []
        return chat

    def add_group(self, title: str) -> Chat:
        """A small group (``-<id>``), bot included."""
        raw = next(self._ids) + 2_000_000
        chat = self.chats[-raw] = Chat(-raw, "group", title, raw)
        self.messages[chat.id] = []
        return chat

    def add_supergroup(self, title: str, *, forum: bool = False) -> Chat:
        """A supergroup (``-100<id>``), a forum when ``forum`` (topics: :meth:`add_topic`)."""
        raw = next(self._ids) + 3_000_000
        chat = self.chats[-(CHANNEL_MARK + raw)] = Chat(
            -(CHANNEL_MARK + raw), "supergroup", title, raw, forum=forum
        )
        self.messages[chat.id] = []
        self.channel_logs[raw] = []
        return chat

    def add_topic(self, chat: int, title: str) -> int:
        """A forum topic; returns its id (the id of the message that opened it)."""
        c = self._chat(chat)
        if not c.forum:
            raise ValueError(f"chat {chat} is not a forum")
        topic = self._next_msg_id(c)
        c.topics[topic] = title
        return topic

    def post(
        self,
        chat: int,
        user: int,
        text: str,
        *,
        reply_to: int | None = None,
        topic: int | None = None,
        file: tuple[str, bytes, str] | None = None,
    ) -> Message:
        """``user`` says ``text`` in ``chat`` (a private chat: the user's id); the bot sees it now
        when connected, else through ``getDifference``. ``file`` is ``(name, data, mime)``."""
        c = self.dm(user) if chat == user else self._chat(chat)
        if topic is None and reply_to is not None and c.forum:
            topic = self._find(chat, reply_to).topic
        if topic is not None and topic not in c.topics:
            raise ValueError(f"chat {chat} has no topic {topic}")
        mention = bool(self.bot.username) and f"@{self.bot.username}".lower() in text.lower()
        replied = self._find(chat, reply_to) if reply_to is not None else None
        f = self._file(*file) if file else None
        msg = Message(
            chat=c.id,
            id=self._next_msg_id(c),
            sender=user,
            text=text,
            date=time.time(),
            reply_to=reply_to,
            topic=topic,
            file=f,
            mentions_bot=mention or bool(replied and replied.by_bot),
        )
        self.messages[c.id].append(msg)
        visible = c.kind == "private" or not self.privacy or msg.mentions_bot or text.startswith("/")
        if visible:
            self._new_message(c, msg)
        self._notify()
        return msg

    def edit(self, chat: int, message_id: int, text: str) -> Message:
        """A person edits their message."""
        msg = self._find(chat, message_id)
        msg.edits.append(msg.text)
        msg.text, msg.edit_date = text, time.time()
        c = self._chat(chat)
        if c.kind == "supergroup":
            self._channel_update(c, lambda pts: types.UpdateEditChannelMessage(self._tl(msg), pts, 1))
        else:
            self._account_update(lambda pts: types.UpdateEditMessage(self._tl(msg), pts, 1))
        self._notify()
        return msg

    def delete(self, chat: int, message_id: int) -> Message:
        """A person deletes a message."""
        msg = self._find(chat, message_id)
        self._remove(msg)
        self._notify()
        return msg

    def bot_messages(self, chat: int | None = None, *, deleted: bool = False) -> list[Message]:
        """What the bot sent (to ``chat``), oldest first; deleted ones only with ``deleted``."""
        return [
            m
            for cid, msgs in self.messages.items()
            if chat is None or cid == chat
            for m in msgs
            if m.by_bot and (deleted or not m.deleted)
        ]

    def message(self, chat: int, message_id: int) -> Message:
        return self._find(chat, message_id)

    def flood_wait(self, method: str, seconds: int, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` (``messages.sendMessage``) with
        ``FLOOD_WAIT_<seconds>``."""
        self._floods[method] = [times, seconds]

    def drop(self) -> int:
        """Cut every connection, as a network failure would; returns how many were cut. As
        Telegram does for a session that comes back soon, what happened in between is pushed to
        each key's next connection (telethon does not ask ``getDifference`` after reconnecting)."""
        conns = list(self._conns)
        for conn in conns:
            if conn in self._live:
                self._resend_from.setdefault(conn.key_id, self.clock)
            conn.abort()
        self._notify()
        return len(conns)

    @property
    def connected(self) -> int:
        """Connections receiving updates now."""
        return len(self._live)

    def counts(self) -> dict[str, int]:
        """Counters for tests and ``/_fake/counts``."""
        sent = self.bot_messages(deleted=True)
        return {
            "connections": self.connections,
            "live": len(self._live),
            "bot_messages": sum(1 for m in sent if not m.deleted),
            "bot_deleted": sum(1 for m in sent if m.deleted),
            "edits": sum(len(m.edits) for m in sent),
            "reactions": sum(len(m.reactions) for msgs in self.messages.values() for m in msgs),
            "typing": len(self.typing),
            "uploads": len(self.uploads),
            "flood_waits": sum(n for e, n in self.errors.items() if e.startswith("FLOOD_WAIT_")),
            "pts": self.pts,
            **{f"calls.{k}": v for k, v in self.calls.items()},
        }

    def state(self) -> dict[str, Any]:
        return {
            "bot": self.bot.info(),
            "people": [p.info() for p in self.people.values()],
            "chats": [c.info() for c in self.chats.values()],
            "messages": {str(k): [m.info() for m in v] for k, v in self.messages.items()},
            "typing": self.typing,
            "counts": self.counts(),
        }

    # ---- the world's insides -------------------------------------------------------------------
    def _person(self, user: int) -> Person:
        person = self.people.get(user)
        if person is None:
            raise KeyError(f"no user {user}")
        return person

    def _chat(self, chat: int) -> Chat:
        c = self.chats.get(chat)
        if c is None:
            if chat in self.people:
                return self.dm(chat)
            raise KeyError(f"no chat {chat}")
        return c

    def _find(self, chat: int, message_id: int) -> Message:
        for m in self.messages.get(chat, []):
            if m.id == message_id:
                return m
        raise KeyError(f"no message {message_id} in chat {chat}")

    def _next_msg_id(self, chat: Chat) -> int:
        if chat.kind == "supergroup":
            chat.next_id += 1
            return chat.next_id
        self._account_msg_id += 1
        return self._account_msg_id

    def _file(self, name: str, data: bytes, mime: str) -> File:
        f = File(secrets.randbits(62), name, data, mime)
        self.files[f.id] = f
        return f

    def _tl(self, msg: Message) -> types.Message:
        return msg.tl(self.chats[msg.chat], self.bot, DC_ID)

    def _entities(self, msg: Message) -> tuple[list[Any], list[Any]]:
        chat = self.chats[msg.chat]
        users = {msg.sender: self.people[msg.sender], self.bot.id: self.bot}
        if chat.kind == "private":
            users[chat.raw_id] = self.people[chat.raw_id]
        return [p.tl(is_self=p is self.bot) for p in users.values()], [
            t for t in [chat.tl()] if t is not None
        ]

    def _new_message(self, chat: Chat, msg: Message, *, push: bool = True) -> Any:
        """Record a new message in its update sequence and push it (not the bot's own: those go
        back as the answer to its call); returns the update."""
        if chat.kind == "supergroup":
            return self._channel_update(
                chat, lambda pts: types.UpdateNewChannelMessage(self._tl(msg), pts, 1), msg, push=push
            )
        return self._account_update(lambda pts: types.UpdateNewMessage(self._tl(msg), pts, 1), msg, push=push)

    def _account_update(
        self, make: Callable[[int], Any], msg: Message | None = None, count: int = 1, *, push: bool = True
    ) -> Any:
        self.clock += 1
        self.pts += count
        self._pts_clock[self.pts] = self.clock
        update = make(self.pts)
        self.log.append(LogEntry(self.pts, self.clock, update, msg))
        if push:
            self._push(update, msg)
        return update

    def _channel_update(
        self,
        chat: Chat,
        make: Callable[[int], Any],
        msg: Message | None = None,
        count: int = 1,
        *,
        push: bool = True,
    ) -> Any:
        self.clock += 1
        chat.pts += count
        chat.clock = self.clock
        update = make(chat.pts)
        self.channel_logs[chat.raw_id].append(LogEntry(chat.pts, self.clock, update, msg))
        if push:
            self._push(update, msg, chat)
        return update

    def _updates(self, update: Any, msg: Message | None, chat: Chat | None) -> bytes:
        if msg is not None:
            users, chats = self._entities(msg)
        else:
            users, chats = [self.bot.tl(is_self=True)], [t for t in [chat.tl() if chat else None] if t]
        return bytes(types.Updates([update], users, chats, rpc.now(), 0))

    def _push(self, update: Any, msg: Message | None, chat: Chat | None = None) -> None:
        body = self._updates(update, msg, chat)
        for conn in list(self._live):
            self._spawn(conn.send(body, update=True))

    def _resend(self, conn: Connection, since: int) -> None:
        entries: list[tuple[LogEntry, Chat | None]] = [(e, None) for e in self.log if e.clock > since]
        for raw, log in self.channel_logs.items():
            channel = self.chats[-(CHANNEL_MARK + raw)]
            entries.extend((e, channel) for e in log if e.clock > since)
        for entry, where in sorted(entries, key=lambda pair: pair[0].clock):
            self._spawn(conn.send(self._updates(entry.update, entry.message, where), update=True))

    def _remove(self, msg: Message) -> None:
        msg.deleted = True
        c = self.chats[msg.chat]
        if c.kind == "supergroup":
            raw = c.raw_id
            self._channel_update(c, lambda pts: types.UpdateDeleteChannelMessages(raw, [msg.id], pts, 1))
        else:
            self._account_update(lambda pts: types.UpdateDeleteMessages([msg.id], pts, 1))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- the wire ------------------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, self.keys)
        self._conns.add(conn)
        self.connections += 1
        self._notify()
        try:
            await conn.handshake()
            while True:
                for message in await conn.receive():
                    await self._on_message(conn, message)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.debug("connection closed: %s", exc)
        finally:
            conn.closed = True
            self._conns.discard(conn)
            self._live.discard(conn)
            writer.close()
            self._notify()

    async def _on_message(self, conn: Connection, message: Incoming) -> None:
        obj = message.obj
        if isinstance(obj, types.MsgsAck):
            return
        if isinstance(obj, functions.PingRequest | functions.PingDelayDisconnectRequest):
            await conn.send(bytes(types.Pong(message.msg_id, obj.ping_id)))
            return
        if not isinstance(obj, TLRequest):
            log.debug("ignoring %s", type(obj).__name__)
            return
        query: Any = obj
        while isinstance(
            query,
            functions.InvokeWithLayerRequest
            | functions.InitConnectionRequest
            | functions.InvokeWithoutUpdatesRequest
            | functions.InvokeAfterMsgRequest,
        ):
            if (
                isinstance(query, functions.InitConnectionRequest)
                and self.api_id
                and query.api_id != self.api_id
            ):
                await conn.error(message.msg_id, 400, "API_ID_INVALID")
                return
            query = query.query
        name = method_name(query)
        self.calls[name] += 1
        try:
            body = self._call(conn, name, query)
        except RpcFailure as exc:
            self.errors[exc.message] += 1
            await conn.error(message.msg_id, exc.code, exc.message)
        except Exception:  # a bug of the fake's: the client sees a server error, the log the cause
            log.exception("fake telegram failed on %s", name)
            self.errors["INTERNAL"] += 1
            await conn.error(message.msg_id, 500, "INTERNAL")
        else:
            await conn.result(message.msg_id, body)
        self._notify()

    def _call(self, conn: Connection, name: str, query: Any) -> bytes:
        flood = self._floods.get(name)
        if flood and flood[0] > 0:
            flood[0] -= 1
            raise RpcFailure(420, f"FLOOD_WAIT_{flood[1]}")
        handler = rpc.HANDLERS.get(type(query))
        if handler is None:
            self.unknown.append(name)
            raise RpcFailure(400, f"METHOD_NOT_IMPLEMENTED_IN_FAKE_{name.upper().replace('.', '_')}")
        open_methods = (functions.help.GetConfigRequest, functions.auth.ImportBotAuthorizationRequest)
        if not isinstance(query, open_methods):
            if conn.key_id not in self.authorized:
                raise RpcFailure(401, "AUTH_KEY_UNREGISTERED")
            if conn not in self._live:
                self._live.add(conn)
                since = self._resend_from.pop(conn.key_id, None)
                if since is not None:
                    self._resend(conn, since)
        return handler(self, conn, query)
