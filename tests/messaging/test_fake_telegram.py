"""The fake Telegram, driven by the real telethon client over MTProto."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from telethon import TelegramClient, errors, events
from telethon.network import ConnectionTcpIntermediate
from telethon.sessions import StringSession

from spacebot.messaging.fakes.telegram import FakeTelegram

WAIT = 10.0
"""Deadline of every wait (a failure, not a timing goal)."""


class Bot:
    """A telethon client logged in to the fake, and every event it got, on queues."""

    def __init__(self, tg: FakeTelegram, session: Any = None) -> None:
        self.session = session if session is not None else tg.session()
        self.client = TelegramClient(
            self.session,
            api_id=1,
            api_hash="fake",
            connection=ConnectionTcpIntermediate,
            catch_up=True,
            retry_delay=0,
        )
        self.new: asyncio.Queue[events.NewMessage.Event] = asyncio.Queue()
        self.edited: asyncio.Queue[events.MessageEdited.Event] = asyncio.Queue()
        self.deleted: asyncio.Queue[events.MessageDeleted.Event] = asyncio.Queue()
        self.client.add_event_handler(self.new.put, events.NewMessage(incoming=True))
        self.client.add_event_handler(self.edited.put, events.MessageEdited(incoming=True))
        self.client.add_event_handler(self.deleted.put, events.MessageDeleted())

    async def start(self, token: str) -> Bot:
        await self.client.start(bot_token=token)
        return self

    async def next(self, queue: asyncio.Queue[Any]) -> Any:
        async with asyncio.timeout(WAIT):
            return await queue.get()


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram) -> AsyncIterator[Bot]:
    b = await Bot(tg).start(tg.bot_token)
    yield b
    await b.client.disconnect()


async def test_login_get_me_and_a_person_post(tg: FakeTelegram, bot: Bot) -> None:
    me = await bot.client.get_me()
    assert (me.id, me.username, me.bot) == (tg.bot.id, "spacebot_bot", True)
    ana = tg.add_user("Ana", username="ana")
    tg.post(ana.id, ana.id, "hello bot")
    event = await bot.next(bot.new)
    assert (event.chat_id, event.sender_id, event.raw_text, event.is_private) == (
        ana.id,
        ana.id,
        "hello bot",
        True,
    )


async def test_send_edit_delete_land_in_the_fake(tg: FakeTelegram, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "hi")
    await bot.next(bot.new)  # the bot knows Ana (her access hash) from the update
    sent = await bot.client.send_message(ana.id, "first")
    await bot.client.edit_message(ana.id, sent.id, "second")
    with pytest.raises(errors.MessageNotModifiedError):
        await bot.client.edit_message(ana.id, sent.id, "second")
    [msg] = tg.bot_messages(ana.id)
    assert (msg.id, msg.text, msg.edits) == (sent.id, "second", ["first"])
    await bot.client.delete_messages(ana.id, [sent.id])
    assert tg.bot_messages(ana.id) == [] and tg.counts()["bot_deleted"] == 1


async def test_reaction_typing_and_upload(tg: FakeTelegram, bot: Bot) -> None:
    from telethon.tl.functions.messages import SendReactionRequest
    from telethon.tl.types import ReactionEmoji

    group = tg.add_group("Team")
    ana = tg.add_user("Ana")
    post = tg.post(group.id, ana.id, "@spacebot_bot look")
    event = await bot.next(bot.new)
    assert event.message.mentioned and event.chat_id == group.id
    await bot.client(
        SendReactionRequest(await event.get_input_chat(), post.id, reaction=[ReactionEmoji("👍")])
    )
    async with bot.client.action(group.id, "typing"):
        await tg.wait_for(lambda: tg.typing)
    body = io.BytesIO(b"report body")
    body.name = "r.txt"
    await bot.client.send_file(group.id, body, caption="the report", force_document=True)
    assert tg.message(group.id, post.id).reactions == ["👍"]
    assert tg.typing[0]["chat"] == group.id
    [upload] = tg.uploads
    assert (upload.name, upload.data) == ("r.txt", b"report body")
    assert tg.bot_messages(group.id)[0].text == "the report"


async def test_privacy_mode_hides_group_chatter(tg: FakeTelegram, bot: Bot) -> None:
    group = tg.add_group("Team")
    ana = tg.add_user("Ana")
    tg.post(group.id, ana.id, "just chatting")
    tg.post(group.id, ana.id, "/help")
    event = await bot.next(bot.new)
    assert event.raw_text == "/help" and bot.new.empty()


async def test_a_message_posted_while_away_arrives_once(tg: FakeTelegram) -> None:
    session = StringSession(tg.session().save())  # update state lives in the session object
    first = await Bot(tg, session).start(tg.bot_token)
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "one")
    assert (await first.next(first.new)).raw_text == "one"
    await first.client.disconnect()
    tg.post(ana.id, ana.id, "two")  # nobody connected: only getDifference can bring it
    second = await Bot(tg, first.session).start(tg.bot_token)
    try:
        assert (await second.next(second.new)).raw_text == "two"
        tg.post(ana.id, ana.id, "three")
        assert (await second.next(second.new)).raw_text == "three"
        assert second.new.empty()
        assert tg.calls["updates.getDifference"] >= 1
    finally:
        await second.client.disconnect()


async def test_dropped_connection_reconnects_and_catches_up(tg: FakeTelegram, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "before")
    assert (await bot.next(bot.new)).raw_text == "before"
    before = tg.connections
    assert tg.drop() >= 1
    tg.post(ana.id, ana.id, "during")
    assert (await bot.next(bot.new)).raw_text == "during"
    assert tg.connections > before
    tg.post(ana.id, ana.id, "after")
    assert (await bot.next(bot.new)).raw_text == "after"
    assert bot.new.empty()


async def test_flood_wait_is_answered_and_the_retry_lands_once(tg: FakeTelegram, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "hi")
    await bot.next(bot.new)
    tg.flood_wait("messages.sendMessage", seconds=1)
    await bot.client.send_message(ana.id, "after the wait")  # telethon sleeps out short waits
    assert tg.errors["FLOOD_WAIT_1"] == 1
    assert [m.text for m in tg.bot_messages(ana.id)] == ["after the wait"]
    tg.flood_wait("messages.sendMessage", seconds=120)
    with pytest.raises(errors.FloodWaitError) as err:
        await bot.client.send_message(ana.id, "too soon")
    assert err.value.seconds == 120


async def test_a_bad_bot_token_is_refused(tg: FakeTelegram) -> None:
    b = Bot(tg)
    with pytest.raises(errors.AccessTokenInvalidError):
        await b.start("1:wrong")
    await b.client.disconnect()


async def test_edits_and_deletes_by_people(tg: FakeTelegram, bot: Bot) -> None:
    ana = tg.add_user("Ana")
    post = tg.post(ana.id, ana.id, "tpyo")
    await bot.next(bot.new)
    tg.edit(ana.id, post.id, "typo")
    edited = await bot.next(bot.edited)
    assert (edited.message.id, edited.raw_text) == (post.id, "typo")
    tg.delete(ana.id, post.id)
    deleted = await bot.next(bot.deleted)
    assert deleted.deleted_ids == [post.id]


async def test_forum_topics_files_and_channel_catch_up(tg: FakeTelegram) -> None:
    forum = tg.add_supergroup("Forum", forum=True)
    topic = tg.add_topic(forum.id, "Ideas")
    ana = tg.add_user("Ana")
    b = await Bot(tg).start(tg.bot_token)
    try:
        tg.post(forum.id, ana.id, "@spacebot_bot see", topic=topic, file=("a.txt", b"attached", "text/plain"))
        event = await b.next(b.new)
        reply = event.message.reply_to
        assert event.chat_id == forum.id and reply.forum_topic and reply.reply_to_msg_id == topic
        assert await b.client.download_media(event.message, file=bytes) == b"attached"
        await b.client.send_message(forum.id, "in the topic", reply_to=topic)
        [sent] = tg.bot_messages(forum.id)
        assert (sent.topic, sent.reply_to) == (topic, None)
        await b.client.disconnect()
        tg.post(forum.id, ana.id, "@spacebot_bot while away", topic=topic)
        b = await Bot(tg, b.session).start(tg.bot_token)
        event = await b.next(b.new)
        assert event.raw_text == "@spacebot_bot while away"
        assert tg.calls["updates.getChannelDifference"] >= 1
    finally:
        await b.client.disconnect()


async def test_cli_serves_the_test_api(tmp_path: Any) -> None:
    session = tmp_path / "telegram-main.session"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spacebot.cli.main",
        "fake-telegram",
        "--session",
        str(session),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT):
            line = (await proc.stdout.readline()).decode()
        assert "fake-telegram listening" in line, line
        api = line.rsplit("test API ", 1)[1].strip()
        async with aiohttp.ClientSession() as http:
            async with http.post(api + "users", json={"name": "Ana"}) as resp:
                ana = await resp.json()
            async with http.post(
                api + "post", json={"chat": ana["id"], "user": ana["id"], "text": "hi"}
            ) as resp:
                assert (await resp.json())["text"] == "hi"
            async with http.post(api + "nonsense", json={}) as resp:
                assert resp.status == 400
            async with http.get(api + "counts") as resp:
                assert json.loads(await resp.text())["pts"] == 2
        assert session.exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            assert await proc.wait() == 0
