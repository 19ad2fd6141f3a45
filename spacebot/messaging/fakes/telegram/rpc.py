"""The Telegram methods :class:`~spacebot.messaging.fakes.telegram.FakeTelegram` answers, one small
function each: ``(fake, connection, request) -> the serialized result``. What a bot account may not
call (``messages.getHistory``) is refused with Telegram's own error."""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from telethon.tl import functions, types
from telethon.tl.types import auth, contacts, messages, storage, updates, upload

from spacebot.messaging.fakes.telegram.mtproto import Connection, tl_true, tl_vector
from spacebot.messaging.fakes.telegram.world import CHANNEL_MARK, Chat, Message, when

if TYPE_CHECKING:
    from spacebot.messaging.fakes.telegram.server import FakeTelegram

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024


class RpcFailure(Exception):
    """An RPC error the fake answers (``FLOOD_WAIT_3``, ``MESSAGE_NOT_MODIFIED``...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code} {message}")
        self.code, self.message = code, message


def now() -> datetime.datetime:
    return when(time.time())


Handler = Callable[["FakeTelegram", Connection, Any], bytes]
HANDLERS: dict[type, Handler] = {}


def handles(*request_types: type) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        for t in request_types:
            HANDLERS[t] = fn
        return fn

    return register


# ---- peers ---------------------------------------------------------------------------------------


def chat_of(fake: FakeTelegram, peer: Any) -> Chat:
    """The chat an ``InputPeer*`` / ``InputChannel`` names (its access hash checked)."""
    if isinstance(peer, types.InputPeerUser | types.InputUser):
        person = fake.people.get(peer.user_id)
        if person is None or person.access_hash != peer.access_hash:
            raise RpcFailure(400, "PEER_ID_INVALID")
        return fake.dm(peer.user_id)
    if isinstance(peer, types.InputPeerChat):
        chat = fake.chats.get(-peer.chat_id)
        if chat is None:
            raise RpcFailure(400, "CHAT_ID_INVALID")
        return chat
    if isinstance(peer, types.InputPeerChannel | types.InputChannel):
        chat = fake.chats.get(-(CHANNEL_MARK + peer.channel_id))
        if chat is None or chat.access_hash != peer.access_hash:
            raise RpcFailure(400, "CHANNEL_INVALID")
        return chat
    raise RpcFailure(400, "PEER_ID_INVALID")


def everyone(fake: FakeTelegram) -> tuple[list[Any], list[Any]]:
    """Every user and chat (the world is small): the ``users``/``chats`` of an answer."""
    users = [p.tl(is_self=p is fake.bot) for p in fake.people.values()]
    chats = [t for c in fake.chats.values() if (t := c.tl()) is not None]
    return users, chats


def _text(text: str, limit: int) -> str:
    if len(text) > limit:
        raise RpcFailure(400, "MESSAGE_TOO_LONG")
    return text


def _topic(fake: FakeTelegram, chat: Chat, reply_to: Any) -> tuple[int | None, int | None]:
    """``(reply_to message id, topic)`` of a bot's post from its ``InputReplyToMessage``."""
    if not isinstance(reply_to, types.InputReplyToMessage):
        return None, None
    target, top = reply_to.reply_to_msg_id, reply_to.top_msg_id
    if chat.forum:
        if top is None:
            top = target if target in chat.topics else fake._find(chat.id, target).topic
        return (None if target == top else target), top
    return target, None


def _sent(fake: FakeTelegram, chat: Chat, msg: Message, random_id: int) -> bytes:
    fake.messages[chat.id].append(msg)
    update = fake._new_message(chat, msg, push=False)
    users, chats = fake._entities(msg)
    fake._notify()
    return bytes(types.Updates([types.UpdateMessageID(msg.id, random_id), update], users, chats, now(), 0))


# ---- session -------------------------------------------------------------------------------------


@handles(functions.help.GetConfigRequest)
def get_config(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    t = now()
    return bytes(
        types.Config(
            date=t,
            expires=when(time.time() + 3600),
            test_mode=False,
            this_dc=2,
            dc_options=[types.DcOption(2, fake.host, fake.port)],
            dc_txt_domain_name="",
            chat_size_max=200,
            megagroup_size_max=200000,
            forwarded_count_max=100,
            online_update_period_ms=210000,
            offline_blur_timeout_ms=5000,
            offline_idle_timeout_ms=30000,
            online_cloud_timeout_ms=300000,
            notify_cloud_delay_ms=30000,
            notify_default_delay_ms=1500,
            push_chat_period_ms=60000,
            push_chat_limit=2,
            edit_time_limit=172800,
            revoke_time_limit=172800,
            revoke_pm_time_limit=172800,
            rating_e_decay=2419200,
            stickers_recent_limit=200,
            channels_read_media_period=604800,
            call_receive_timeout_ms=20000,
            call_ring_timeout_ms=90000,
            call_connect_timeout_ms=30000,
            call_packet_timeout_ms=10000,
            me_url_prefix="https://t.me/",
            caption_length_max=CAPTION_LIMIT,
            message_length_max=MESSAGE_LIMIT,
            webfile_dc_id=2,
        )
    )


@handles(functions.auth.ImportBotAuthorizationRequest)
def import_bot_authorization(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    if fake.api_id and req.api_id != fake.api_id:
        raise RpcFailure(400, "API_ID_INVALID")
    if req.bot_auth_token != fake.bot_token:
        raise RpcFailure(400, "ACCESS_TOKEN_INVALID")
    fake.authorized.add(conn.key_id)
    return bytes(auth.Authorization(user=fake.bot.tl(is_self=True)))


@handles(functions.users.GetUsersRequest)
def get_users(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    out = []
    for u in req.id:
        if isinstance(u, types.InputUserSelf):
            out.append(fake.bot.tl(is_self=True))
        elif isinstance(u, types.InputUser) and u.user_id in fake.people:
            out.append(fake.people[u.user_id].tl(is_self=u.user_id == fake.bot.id))
    return tl_vector(out)


@handles(functions.contacts.ResolveUsernameRequest)
def resolve_username(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    person = next((p for p in fake.people.values() if p.username.lower() == req.username.lower()), None)
    if person is None:
        raise RpcFailure(400, "USERNAME_NOT_OCCUPIED")
    users, chats = everyone(fake)
    return bytes(contacts.ResolvedPeer(types.PeerUser(person.id), chats, users))


# ---- updates -------------------------------------------------------------------------------------


@handles(functions.updates.GetStateRequest)
def get_state(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    return bytes(updates.State(fake.pts, 0, now(), 0, 0))


@handles(functions.updates.GetDifferenceRequest)
def get_difference(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    since = fake._pts_clock.get(req.pts, 0)
    too_long = [
        types.UpdateChannelTooLong(c.raw_id, c.pts)
        for c in fake.chats.values()
        if c.kind == "supergroup" and c.clock > since
    ]
    if req.pts >= fake.pts and not too_long:
        return bytes(updates.DifferenceEmpty(now(), 0))
    entries = [e for e in fake.log if e.pts > req.pts]
    new = [fake._tl(e.message) for e in entries if e.message is not None and not e.message.deleted]
    other = [e.update for e in entries if e.message is None] + too_long
    users, chats = everyone(fake)
    state = updates.State(fake.pts, 0, now(), 0, 0)
    return bytes(updates.Difference(new, [], other, chats, users, state))


@handles(functions.updates.GetChannelDifferenceRequest)
def get_channel_difference(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chat = chat_of(fake, req.channel)
    entries = [e for e in fake.channel_logs[chat.raw_id] if e.pts > req.pts]
    if not entries:
        return bytes(updates.ChannelDifferenceEmpty(chat.pts, final=True))
    new = [fake._tl(e.message) for e in entries if e.message is not None and not e.message.deleted]
    other = [e.update for e in entries if e.message is None]
    users, chats = everyone(fake)
    return bytes(updates.ChannelDifference(chat.pts, new, other, chats, users, final=True))


# ---- messages ------------------------------------------------------------------------------------


@handles(functions.messages.SendMessageRequest)
def send_message(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chat = chat_of(fake, req.peer)
    if not req.message.strip():
        raise RpcFailure(400, "MESSAGE_EMPTY")
    reply_to, topic = _topic(fake, chat, req.reply_to)
    msg = Message(
        chat=chat.id,
        id=fake._next_msg_id(chat),
        sender=fake.bot.id,
        text=_text(req.message, MESSAGE_LIMIT),
        date=time.time(),
        reply_to=reply_to,
        topic=topic,
        by_bot=True,
    )
    return _sent(fake, chat, msg, req.random_id)


@handles(functions.messages.SendMediaRequest)
def send_media(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chat = chat_of(fake, req.peer)
    media = req.media
    if not isinstance(media, types.InputMediaUploadedDocument | types.InputMediaUploadedPhoto):
        raise RpcFailure(400, "MEDIA_INVALID")
    parts = fake._parts.pop(media.file.id, None)
    if parts is None or len(parts) != media.file.parts:
        raise RpcFailure(400, "FILE_PARTS_INVALID")
    name = media.file.name
    mime = "image/jpeg" if isinstance(media, types.InputMediaUploadedPhoto) else media.mime_type
    for attr in getattr(media, "attributes", None) or []:
        if isinstance(attr, types.DocumentAttributeFilename):
            name = attr.file_name
    f = fake._file(name, b"".join(parts[i] for i in sorted(parts)), mime)
    fake.uploads.append(f)
    reply_to, topic = _topic(fake, chat, req.reply_to)
    msg = Message(
        chat=chat.id,
        id=fake._next_msg_id(chat),
        sender=fake.bot.id,
        text=_text(req.message, CAPTION_LIMIT),
        date=time.time(),
        reply_to=reply_to,
        topic=topic,
        file=f,
        by_bot=True,
    )
    return _sent(fake, chat, msg, req.random_id)


@handles(functions.upload.SaveFilePartRequest, functions.upload.SaveBigFilePartRequest)
def save_file_part(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    fake._parts.setdefault(req.file_id, {})[req.file_part] = req.bytes
    return tl_true()


@handles(functions.upload.GetFileRequest)
def get_file(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    loc = req.location
    f = fake.files.get(getattr(loc, "id", 0)) if isinstance(loc, types.InputDocumentFileLocation) else None
    if f is None or f.access_hash != loc.access_hash:
        raise RpcFailure(400, "LOCATION_INVALID")
    return bytes(upload.File(storage.FileUnknown(), 0, f.data[req.offset : req.offset + req.limit]))


@handles(functions.messages.EditMessageRequest)
def edit_message(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chat = chat_of(fake, req.peer)
    try:
        msg = fake._find(chat.id, req.id)
    except KeyError:
        raise RpcFailure(400, "MESSAGE_ID_INVALID") from None
    if msg.deleted:
        raise RpcFailure(400, "MESSAGE_ID_INVALID")
    if not msg.by_bot:
        raise RpcFailure(403, "MESSAGE_AUTHOR_REQUIRED")
    if req.message is None or req.message == msg.text:
        raise RpcFailure(400, "MESSAGE_NOT_MODIFIED")
    text = _text(req.message, CAPTION_LIMIT if msg.file else MESSAGE_LIMIT)
    msg.edits.append(msg.text)
    msg.text, msg.edit_date = text, time.time()
    if chat.kind == "supergroup":
        update = fake._channel_update(
            chat, lambda pts: types.UpdateEditChannelMessage(fake._tl(msg), pts, 1), push=False
        )
    else:
        update = fake._account_update(lambda pts: types.UpdateEditMessage(fake._tl(msg), pts, 1), push=False)
    users, chats = fake._entities(msg)
    fake._notify()
    return bytes(types.Updates([update], users, chats, now(), 0))


@handles(functions.messages.DeleteMessagesRequest)
def delete_messages(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    found = [
        m
        for c, msgs in fake.messages.items()
        if fake.chats[c].kind != "supergroup"
        for m in msgs
        if m.id in req.id and not m.deleted
    ]
    if not found:
        return bytes(messages.AffectedMessages(fake.pts, 0))
    for m in found:
        m.deleted = True
    ids = [m.id for m in found]
    fake._account_update(
        lambda pts: types.UpdateDeleteMessages(ids, pts, len(ids)), count=len(ids), push=False
    )
    fake._notify()
    return bytes(messages.AffectedMessages(fake.pts, len(ids)))


@handles(functions.channels.DeleteMessagesRequest)
def delete_channel_messages(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chat = chat_of(fake, req.channel)
    found = [m for m in fake.messages[chat.id] if m.id in req.id and not m.deleted]
    if not found:
        return bytes(messages.AffectedMessages(chat.pts, 0))
    for m in found:
        m.deleted = True
    ids, raw = [m.id for m in found], chat.raw_id
    fake._channel_update(
        chat,
        lambda pts: types.UpdateDeleteChannelMessages(raw, ids, pts, len(ids)),
        count=len(ids),
        push=False,
    )
    fake._notify()
    return bytes(messages.AffectedMessages(chat.pts, len(ids)))


@handles(functions.messages.SendReactionRequest)
def send_reaction(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chat = chat_of(fake, req.peer)
    try:
        msg = fake._find(chat.id, req.msg_id)
    except KeyError:
        raise RpcFailure(400, "MESSAGE_ID_INVALID") from None
    emoji = [r.emoticon for r in req.reaction or [] if isinstance(r, types.ReactionEmoji)]
    if req.reaction and not emoji:
        raise RpcFailure(400, "REACTION_INVALID")
    msg.reactions = emoji if emoji else []
    results = [types.ReactionCount(types.ReactionEmoji(e), 1) for e in emoji]
    update = types.UpdateMessageReactions(chat.peer, msg.id, types.MessageReactions(results))
    users, chats = fake._entities(msg)
    fake._notify()
    return bytes(types.Updates([update], users, chats, now(), 0))


@handles(functions.messages.SetTypingRequest)
def set_typing(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chat = chat_of(fake, req.peer)
    fake.typing.append({"chat": chat.id, "action": type(req.action).__name__, "topic": req.top_msg_id})
    fake._notify()
    return tl_true()


@handles(functions.messages.GetHistoryRequest)
def get_history(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    raise RpcFailure(400, "BOT_METHOD_INVALID")  # as on Telegram: bots cannot read history


def _messages_by_ref(fake: FakeTelegram, chats: list[Chat], refs: list[Any]) -> bytes:
    out: list[Any] = []
    pool = {m.id: m for c in chats for m in fake.messages[c.id]}
    for ref in refs:
        msg = pool.get(getattr(ref, "id", 0))
        if msg is not None and isinstance(ref, types.InputMessageReplyTo):
            msg = pool.get(msg.reply_to or 0)
        out.append(
            fake._tl(msg)
            if msg is not None and not msg.deleted
            else types.MessageEmpty(getattr(ref, "id", 0))
        )
    users, tl_chats = everyone(fake)
    return bytes(messages.Messages(out, [], tl_chats, users))


@handles(functions.messages.GetMessagesRequest)
def get_messages(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    chats = [c for c in fake.chats.values() if c.kind != "supergroup"]
    return _messages_by_ref(fake, chats, req.id)


@handles(functions.channels.GetMessagesRequest)
def get_channel_messages(fake: FakeTelegram, conn: Connection, req: Any) -> bytes:
    return _messages_by_ref(fake, [chat_of(fake, req.channel)], req.id)
