"""A loopback Telegram for tests and smoke runs: :class:`FakeTelegram` (MTProto, for telethon)."""

from __future__ import annotations

from spacebot.messaging.fakes.telegram.mtproto import new_auth_key
from spacebot.messaging.fakes.telegram.server import FakeTelegram
from spacebot.messaging.fakes.telegram.world import Chat, File, Message, Person

__all__ = ["Chat", "FakeTelegram", "File", "Message", "Person", "new_auth_key"]
