"""The server side of MTProto 2.0 over TCP (intermediate transport), for :class:`FakeTelegram`.

The client and the fake share an authorization key made up front (:func:`new_auth_key`), so no
Diffie-Hellman exchange happens: a telethon session that already holds an ``auth_key`` goes
straight to encrypted messages. Everything else is telethon's own code run the other way round:
its TL types (read with ``BinaryReader.tgread_object``, written with ``bytes(obj)``), its AES-IGE
and its key derivation (``MTProtoState._calc_key``), with the server's ``x = 8`` offsets.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import os
import struct
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from telethon.crypto import AES, AuthKey
from telethon.extensions import BinaryReader
from telethon.network.mtprotostate import MTProtoState
from telethon.tl.core import GzipPacked, MessageContainer
from telethon.tl.tlobject import TLObject

log = logging.getLogger(__name__)

INTERMEDIATE_TAG = b"\xee\xee\xee\xee"
RPC_RESULT = 0xF35C6D01
RPC_ERROR = 0x2144CA19
VECTOR = 0x1CB5C415
BOOL_TRUE = 0x997275B5
AUTH_KEY_NOT_FOUND = -404
"""The transport error a server answers to a message under an authorization key it does not know."""


def new_auth_key() -> bytes:
    """A fresh 256-byte authorization key for a client and the fake to share."""
    return os.urandom(256)


def tl_vector(items: list[Any]) -> bytes:
    """A TL ``Vector`` of boxed objects."""
    return struct.pack("<Ii", VECTOR, len(items)) + b"".join(bytes(x) for x in items)


def tl_true() -> bytes:
    """A TL ``boolTrue``."""
    return struct.pack("<I", BOOL_TRUE)


def method_name(request: TLObject) -> str:
    """Telegram's name of a request: ``SendMessageRequest`` in ``functions.messages`` →
    ``messages.sendMessage``."""
    name = type(request).__name__.removesuffix("Request")
    module = type(request).__module__.rsplit(".", 1)[-1]
    name = name[:1].lower() + name[1:]
    return name if module == "functions" else f"{module}.{name}"


@dataclass
class Incoming:
    """One message a client sent (a container is opened into several)."""

    msg_id: int
    seq_no: int
    obj: Any


class Connection:
    """One TCP connection from a client: decrypts what it sends and encrypts what it is sent."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, keys: dict[int, AuthKey]
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.keys = keys
        self.key: AuthKey | None = None
        self.session_id = 0
        self.salt = 0
        self._last_msg_id = 0
        self._seq = 0
        self._lock = asyncio.Lock()
        self.closed = False

    @property
    def key_id(self) -> int:
        return self.key.key_id if self.key is not None else 0

    async def handshake(self) -> None:
        """The transport tag: only the intermediate transport is spoken."""
        tag = await self.reader.readexactly(4)
        if tag != INTERMEDIATE_TAG:
            raise ConnectionError(
                f"transport tag {tag.hex()} is not intermediate's: "
                "create the client with connection=ConnectionTcpIntermediate"
            )

    async def receive(self) -> list[Incoming]:
        """The next packet, decrypted; a container comes back as its messages, gzip unpacked."""
        (length,) = struct.unpack("<i", await self.reader.readexactly(4))
        body = await self.reader.readexactly(length)
        if len(body) < 24:
            raise ConnectionError(f"packet of {len(body)} bytes is too short for MTProto")
        (key_id,) = struct.unpack("<Q", body[:8])
        key = self.keys.get(key_id)
        if key is None:
            await self._send_raw(struct.pack("<i", AUTH_KEY_NOT_FOUND))
            raise ConnectionError(f"unknown auth key id {key_id}")
        self.key = key
        msg_key = body[8:24]
        aes_key, aes_iv = MTProtoState._calc_key(key.key, msg_key, True)
        plain = AES.decrypt_ige(body[24:], aes_key, aes_iv)
        if sha256(key.key[88 : 88 + 32] + plain).digest()[8:24] != msg_key:
            raise ConnectionError("msg_key does not match the message")
        reader = BinaryReader(plain)
        self.salt = reader.read_long()
        self.session_id = reader.read_long()
        msg_id = reader.read_long()
        seq_no = reader.read_int()
        size = reader.read_int()
        obj = BinaryReader(reader.read(size)).tgread_object()
        return list(self._open(Incoming(msg_id, seq_no, obj)))

    def _open(self, message: Incoming) -> list[Incoming]:
        obj = message.obj
        if isinstance(obj, MessageContainer):
            out: list[Incoming] = []
            for inner in obj.messages:
                out.extend(self._open(Incoming(inner.msg_id, inner.seq_no, inner.obj)))
            return out
        if isinstance(obj, GzipPacked):
            unpacked = BinaryReader(obj.data).tgread_object()
            return self._open(Incoming(message.msg_id, message.seq_no, unpacked))
        return [message]

    def _msg_id(self, update: bool) -> int:
        now = time.time()
        msg_id = (int(now) << 32) | (int((now % 1) * 1e9) << 2)
        msg_id = max(msg_id, self._last_msg_id + 4) & ~3
        self._last_msg_id = msg_id
        return msg_id | (3 if update else 1)

    async def send(self, body: bytes, *, update: bool = False, content_related: bool = True) -> None:
        """Encrypt and send one message (an ``rpc_result``, an ``Updates``, a ``pong``...)."""
        if self.key is None or self.closed:
            return
        async with self._lock:
            if len(body) > 512:
                body = bytes(GzipPacked(gzip.compress(body)))
            seq = self._seq * 2 + 1 if content_related else self._seq * 2
            if content_related:
                self._seq += 1
            data = (
                struct.pack("<qqqii", self.salt, self.session_id, self._msg_id(update), seq, len(body)) + body
            )
            padding = os.urandom(-(len(data) + 12) % 16 + 12)
            key = self.key.key
            msg_key = sha256(key[96 : 96 + 32] + data + padding).digest()[8:24]
            aes_key, aes_iv = MTProtoState._calc_key(key, msg_key, False)
            packet = (
                struct.pack("<Q", self.key.key_id)
                + msg_key
                + AES.encrypt_ige(data + padding, aes_key, aes_iv)
            )
            await self._send_raw(packet)

    async def _send_raw(self, packet: bytes) -> None:
        try:
            self.writer.write(struct.pack("<i", len(packet)) + packet)
            await self.writer.drain()
        except (ConnectionError, RuntimeError):
            self.closed = True

    async def result(self, req_msg_id: int, body: bytes) -> None:
        """An ``rpc_result`` carrying ``body`` (a serialized object)."""
        await self.send(struct.pack("<Iq", RPC_RESULT, req_msg_id) + body)

    async def error(self, req_msg_id: int, code: int, message: str) -> None:
        """An ``rpc_result`` carrying an ``rpc_error``."""
        err = struct.pack("<Ii", RPC_ERROR, code) + TLObject.serialize_bytes(message)
        await self.result(req_msg_id, err)

    def abort(self) -> None:
        """Drop the connection without a goodbye (a network failure, as the client sees it)."""
        self.closed = True
        transport = self.writer.transport
        if transport is not None:
            transport.abort()
