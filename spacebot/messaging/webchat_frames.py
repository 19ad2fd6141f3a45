"""The web chat's WebSocket frames (docs/webchat.md): parsing what clients send, shaping what they get.

Client frames are decoded into tagged structs, so a missing field or a wrong type becomes one
clear ``bad_frame`` error naming the field, and unknown fields are ignored.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec

from spacebot.ipc.messages import ConversationInfo, StoredMessage

PERSON_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MessageId = Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
"""A stored message id: ids beyond a signed 64-bit integer are refused as ``bad_frame``."""


class Hello(msgspec.Struct, tag="hello", frozen=True):
    name: str
    person: str
    token: str = ""
    ref: str | None = None


class ListConversations(msgspec.Struct, tag="list", frozen=True):
    ref: str | None = None


class Create(msgspec.Struct, tag="create", frozen=True):
    title: str = ""
    ref: str | None = None


class Open(msgspec.Struct, tag="open", frozen=True):
    conversation: str
    before: MessageId | None = None
    ref: str | None = None


class Close(msgspec.Struct, tag="close", frozen=True):
    conversation: str
    ref: str | None = None


class Send(msgspec.Struct, tag="send", frozen=True):
    conversation: str
    text: str
    client_id: str
    ref: str | None = None


class Cancel(msgspec.Struct, tag="cancel", frozen=True):
    conversation: str
    id: str
    """A running branch or worker of the conversation (from a ``typing`` frame's ``work``)."""
    ref: str | None = None


ClientFrame = Hello | ListConversations | Create | Open | Close | Send | Cancel

_decoder = msgspec.json.Decoder(ClientFrame)
_TYPES = "hello, list, create, open, close, send, cancel"


class FrameError(ValueError):
    """A client frame that cannot be used; ``code`` is a docs/webchat.md error code."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.ref = ref


def parse(raw: str | bytes) -> ClientFrame:
    """Decode and check one client frame; raises :class:`FrameError` (``bad_frame``)."""
    try:
        frame = _decoder.decode(raw)
    except msgspec.ValidationError as exc:
        message = str(exc)
        if "Invalid value" in message and "$.type" in message:
            message = f"unknown frame type (expected one of: {_TYPES})"
        elif "missing required field `type`" in message:
            message = f"frame has no 'type' (expected one of: {_TYPES})"
        raise FrameError("bad_frame", message, _ref_of(raw)) from None
    except msgspec.DecodeError as exc:
        raise FrameError("bad_frame", f"not a JSON object: {exc}") from None
    _check(frame)
    return frame


def _ref_of(raw: str | bytes) -> str | None:
    try:
        data = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) else None


def _check(frame: ClientFrame) -> None:
    if isinstance(frame, Hello):
        if not 1 <= len(frame.name.strip()) <= 64:
            raise FrameError("bad_frame", "hello.name must be 1-64 characters", frame.ref)
        if not PERSON_RE.fullmatch(frame.person):
            raise FrameError("bad_frame", "hello.person must be 1-64 of A-Z a-z 0-9 _ -", frame.ref)
    elif isinstance(frame, Create) and len(frame.title) > 120:
        raise FrameError("bad_frame", "create.title must be at most 120 characters", frame.ref)
    elif isinstance(frame, Send) and not 1 <= len(frame.client_id) <= 64:
        raise FrameError("bad_frame", "send.client_id must be 1-64 characters", frame.ref)
    elif isinstance(frame, Cancel) and not 1 <= len(frame.id) <= 128:
        raise FrameError("bad_frame", "cancel.id must be 1-128 characters", frame.ref)


def conversation(channel: ConversationInfo) -> dict[str, Any]:
    """A conversation list item."""
    return {"id": channel.id, "title": channel.display_name, "last_activity_at": channel.last_activity_at}


def message(m: StoredMessage, reply_id: str = "") -> dict[str, Any]:
    """A message object as clients see it."""
    return {
        "id": m.id,
        "conversation": m.channel_id,
        "author_id": m.author_id,
        "author_name": m.author_name,
        "role": m.role,
        "text": m.text,
        "created_at": m.created_at,
        "reply_id": reply_id,
        "reactions": list(m.reactions),
        "attachments": [
            {
                "name": str(a.get("name", "file")),
                "size": a.get("size"),
                "mime": a.get("mime", "application/octet-stream"),
                "url": f"attachments/{m.channel_id}/{m.id}/{i}",
            }
            for i, a in enumerate(m.attachments)
            if isinstance(a, dict) and "data" in a
        ],
    }


def error(
    code: str,
    text: str,
    *,
    ref: str | None = None,
    conversation: str | None = None,
    client_id: str | None = None,
) -> dict[str, Any]:
    """An ``error`` frame."""
    frame: dict[str, Any] = {"type": "error", "code": code, "message": text, "ref": ref}
    if conversation is not None:
        frame["conversation"] = conversation
    if client_id is not None:
        frame["client_id"] = client_id
    return frame
