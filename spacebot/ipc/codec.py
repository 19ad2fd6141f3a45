"""Encoding, decoding and frame checks shared by the broker and every bus endpoint.

Nothing here raises into a receive loop: :meth:`FrameGuard.envelope` and friends return ``None``
for a bad frame after counting it and logging who sent it. A well-framed envelope whose body is
refused (a type the receiver does not know, a field out of its set of values) is also handed to
the caller's ``on_refused``, so a request gets an ``Err`` naming the field instead of no answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from spacebot.ipc.messages import ControlFrame, ControlReply, Counters, Envelope, Event

log = logging.getLogger("spacebot.ipc")

DEFAULT_MAX_FRAME = 4 * 1024 * 1024
"""Default cap on one payload frame, in bytes."""

_encoder = msgspec.msgpack.Encoder()
encode = _encoder.encode
"""Encode any wire struct to msgpack bytes."""

envelope_decoder = msgspec.msgpack.Decoder(Envelope)
event_decoder = msgspec.msgpack.Decoder(Event)
control_decoder = msgspec.msgpack.Decoder(ControlFrame)
control_reply_decoder = msgspec.msgpack.Decoder(ControlReply)


class EnvelopeHead(msgspec.Struct, frozen=True, array_like=True):
    """An :class:`Envelope` with its body left undecoded: who to answer when the body is refused."""

    src: str
    dst: str
    id: int
    reply_to: int
    body: msgspec.Raw


_head_decoder = msgspec.msgpack.Decoder(EnvelopeHead)

Refusal = Literal["unknown", "malformed"]
"""Why a body was refused: a message type the receiver does not know, or a bad field."""

OnRefused = Callable[[EnvelopeHead, Refusal, str], None]
"""Called with the head of a refused envelope, why, and msgspec's explanation."""


class ControlHead(msgspec.Struct, frozen=True, array_like=True):
    """A :class:`ControlFrame` with its request left undecoded: the id to answer a refusal with."""

    id: int
    request: msgspec.Raw


_control_head_decoder = msgspec.msgpack.Decoder(ControlHead)


def control_id(payload: bytes) -> int:
    """The request id of an encoded control frame whose request did not decode (0 if unreadable)."""
    try:
        return _control_head_decoder.decode(payload).id
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return 0


def head(payload: bytes) -> EnvelopeHead | None:
    """The routing fields of an encoded envelope, whatever its body; ``None`` if even they are bad."""
    try:
        return _head_decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError):
        return None


class FrameGuard:
    """Counts and logs bad frames for one endpoint; log lines are throttled to one per second."""

    __slots__ = (
        "_last_log",
        "last_reason",
        "malformed",
        "max_frame",
        "oversized",
        "owner",
        "shed",
        "unknown",
    )

    def __init__(self, owner: str, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.owner = owner
        self.max_frame = max_frame
        self.malformed = 0
        self.oversized = 0
        self.unknown = 0
        self.shed = 0
        self.last_reason = ""
        self._last_log = 0.0

    @property
    def errors(self) -> int:
        """Bad frames seen (malformed + oversized + unknown)."""
        return self.malformed + self.oversized + self.unknown

    def snapshot(self) -> Counters:
        """The counters as a wire struct."""
        return Counters(
            malformed=self.malformed, oversized=self.oversized, unknown=self.unknown, shed=self.shed
        )

    def count(self, what: str, reason: str) -> None:
        """Record one bad or shed frame; ``what`` is one of the counter names."""
        setattr(self, what, getattr(self, what) + 1)
        self.last_reason = reason
        now = time.monotonic()
        if now - self._last_log >= 1.0:
            self._last_log = now
            log.warning(
                "frame dropped owner=%s what=%s reason=%r total=%d",
                self.owner,
                what,
                reason,
                self.errors + self.shed,
            )

    def envelope(
        self, frames: Sequence[bytes], src: str, on_refused: OnRefused | None = None
    ) -> Envelope | None:
        """Decode the payload of a ``[src, payload]`` pair, or count why it is bad.

        ``on_refused`` hears of an envelope from ``src`` whose body did not decode.
        """
        if len(frames) != 2:
            self.count("malformed", f"{len(frames)} frames from {src!r}, expected 2")
            return None
        payload = frames[1]
        if len(payload) > self.max_frame:
            self.count("oversized", f"{len(payload)} bytes from {src!r} over cap {self.max_frame}")
            return None
        try:
            env = envelope_decoder.decode(payload)
        except msgspec.ValidationError as exc:
            # An unrecognised tag reads "Invalid value 'x' - at `$[4].type`": a message type we don't know.
            kind: Refusal = "unknown" if str(exc).endswith("[4].type`") else "malformed"
            self.count(kind, f"invalid message from {src!r}: {exc}")
            if on_refused is not None:
                refused = head(payload)
                if refused is not None and refused.src == src:
                    on_refused(refused, kind, str(exc).replace("`$[4]", "`body"))
            return None
        except (msgspec.DecodeError, ValueError) as exc:  # ValueError: e.g. invalid UTF-8 in a str
            self.count("malformed", f"undecodable frame from {src!r}: {exc}")
            return None
        if env.src != src:
            self.count("malformed", f"envelope claims src {env.src!r} but came from {src!r}")
            return None
        return env


def decode_source(raw: bytes) -> str | None:
    """A routing identity or destination frame as text, or ``None`` if it is not UTF-8."""
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None
