"""Length-prefixed msgpack frames over the supervisor ⇄ zygote socketpair."""

from __future__ import annotations

import socket
import struct

import msgspec

from spacebot.ipc.codec import encode
from spacebot.ipc.messages import FromZygote, ToZygote

_HEADER = struct.Struct("!I")
MAX_FRAME = 64 * 1024 * 1024

to_zygote_decoder = msgspec.msgpack.Decoder(ToZygote)
from_zygote_decoder = msgspec.msgpack.Decoder(FromZygote)


def pack(msg: msgspec.Struct) -> bytes:
    """One frame: 4-byte big-endian length, then the msgpack body."""
    body = encode(msg)
    return _HEADER.pack(len(body)) + body


def recv_frame(sock: socket.socket) -> bytes | None:
    """Read one frame with blocking calls (zygote side); ``None`` at end of stream."""
    header = _recv_exactly(sock, _HEADER.size)
    if header is None:
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"zygote frame of {size} bytes exceeds {MAX_FRAME}")
    return _recv_exactly(sock, size)


def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def header_size() -> int:
    """Bytes in a frame header."""
    return _HEADER.size


def body_size(header: bytes) -> int:
    """Body length announced by ``header``."""
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME:
        raise ValueError(f"zygote frame of {size} bytes exceeds {MAX_FRAME}")
    return int(size)
