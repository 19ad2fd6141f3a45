"""The Telegram adapter against the fake Telegram, in the test's loop: real telethon over MTProto."""

from __future__ import annotations

import asyncio
import shutil
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spacebot.config import ConfigProblems, PlatformInstance, load
from spacebot.messaging.fakes.telegram import FakeTelegram
from spacebot.messaging.platform import AuthRejected, OutFile, PlatformEdit, PlatformMessage
from spacebot.messaging.telegram_adapter import TelegramAdapter, open_session, session_path

WAIT = 10.0
"""Deadline of every wait (a failure, not a timing goal)."""


class Recorder:
    """A sink that records what it is given."""

    def __init__(self) -> None:
        self.messages: list[PlatformMessage] = []
        self.edits: list[PlatformEdit] = []
        self.changed = asyncio.Event()

    async def message(self, msg: PlatformMessage) -> None:
        self.messages.append(msg)
        self._notify()

    async def edit(self, edit: PlatformEdit) -> None:
        self.edits.append(edit)
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, predicate: object) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():  # type: ignore[operator]
                await self.changed.wait()


class Running:
    """An adapter running against the fake, and its sink."""

    def __init__(self, adapter: TelegramAdapter, sink: Recorder, task: asyncio.Task[None]) -> None:
        self.adapter, self.sink, self.task = adapter, sink, task


async def start(fake: FakeTelegram, home: Path, *, token: str = "") -> Running:
    inst = PlatformInstance(
        name="main", api_id=1, api_hash="fake", gateway_url=f"tcp://127.0.0.1:{fake.port}"
    )
    path = session_path(home, "main")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fake.write_session(str(path))  # as a first login would have left it
    adapter = TelegramAdapter(
        inst, token or fake.bot_token, "fake", open_session(path, ("127.0.0.1", fake.port))
    )
    sink = Recorder()
    up = asyncio.Event()
    task = asyncio.get_running_loop().create_task(adapter.run(sink, up.set))
    async with asyncio.timeout(WAIT):
        done, _ = await asyncio.wait([task, asyncio.ensure_future(up.wait())], return_when="FIRST_COMPLETED")
    if task in done:
        await adapter.close()
        task.result()  # raises what run() raised
    return Running(adapter, sink, task)


async def stop(run: Running) -> None:
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    await run.adapter.close()


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as fake:
        yield fake


@pytest.fixture
async def bot(tg: FakeTelegram, tmp_path: Path) -> AsyncIterator[Running]:
    run = await start(tg, tmp_path)
    yield run
    await stop(run)


async def test_a_group_mention_is_one_message_with_ids_and_scope(tg: FakeTelegram, bot: Running) -> None:
    group = tg.add_group("Team")
    ana = tg.add_user("Ana", username="ana")
    posted = tg.post(group.id, ana.id, "hi @spacebot_bot, how are you?")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    [msg] = bot.sink.messages
    assert msg.conversation == f"telegram:{group.id}" and msg.message_id == str(posted.id)
    assert (msg.text, msg.author_name, msg.conversation_name) == (
        "hi @spacebot_bot, how are you?",
        "Ana",
        "Team",
    )
    s = msg.scope
    assert (s.platform, s.instance, s.channel, s.parent_channel, s.is_dm) == (
        "telegram",
        "main",
        str(group.id),
        "",
        False,
    )
    assert (s.author_id, s.author_is_bot, s.mentions_bot) == (str(ana.id), False, True)


async def test_a_reply_to_the_bot_counts_as_addressed_and_quotes(tg: FakeTelegram, bot: Running) -> None:
    tg.privacy = False
    group = tg.add_group("Team")
    ana = tg.add_user("Ana")
    tg.post(group.id, ana.id, "plain chatter")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    assert bot.sink.messages[0].scope.mentions_bot is False
    sent = await bot.adapter.post(f"telegram:{group.id}", "I am here")
    tg.post(group.id, ana.id, "good to know", reply_to=int(sent))
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 2)
    reply = bot.sink.messages[1]
    assert reply.scope.mentions_bot and reply.reply_to_text == "Spacebot: I am here"


async def test_a_direct_message(tg: FakeTelegram, bot: Running) -> None:
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "hello")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    [msg] = bot.sink.messages
    assert msg.conversation == f"telegram:{ana.id}" and msg.scope.is_dm
    assert msg.conversation_name == "DM with Ana"
    sent = await bot.adapter.post(msg.conversation, "hi Ana")
    assert [(m.id, m.text) for m in tg.bot_messages(ana.id)] == [(int(sent), "hi Ana")]


async def test_forum_topics_files_typing_reactions(tg: FakeTelegram, bot: Running, tmp_path: Path) -> None:
    forum = tg.add_supergroup("Forum", forum=True)
    topic = tg.add_topic(forum.id, "Ideas")
    ana = tg.add_user("Ana")
    posted = tg.post(
        forum.id, ana.id, "@spacebot_bot read this", topic=topic, file=("n.txt", b"notes", "text/plain")
    )
    await bot.sink.wait_for(lambda: bot.sink.messages)
    [msg] = bot.sink.messages
    conv = f"telegram:{forum.id}:{topic}"
    assert msg.conversation == conv
    assert (msg.scope.channel, msg.scope.parent_channel) == (f"{forum.id}:{topic}", str(forum.id))
    [att] = msg.attachments
    assert (att.name, att.mime, att.size) == ("n.txt", "text/plain", 5)
    assert att.fetch is not None and await att.fetch() == b"notes"
    await bot.adapter.typing(conv)
    await bot.adapter.react(conv, str(posted.id), "👍")
    sent = await bot.adapter.post(conv, "noted")
    report = tmp_path / "report.txt"
    report.write_bytes(b"the report")
    await bot.adapter.send_files(conv, [OutFile("summary.txt", report)], "here it is")
    assert tg.typing == [{"chat": forum.id, "action": "SendMessageTypingAction", "topic": topic}]
    assert tg.message(forum.id, posted.id).reactions == ["👍"]
    replies = tg.bot_messages(forum.id)
    assert [(m.text, m.topic) for m in replies] == [("noted", topic), ("here it is", topic)]
    assert replies[0].id == int(sent)
    [upload] = tg.uploads
    assert (upload.name, upload.data) == ("summary.txt", b"the report")


async def test_streaming_edits_and_delete(tg: FakeTelegram, bot: Running) -> None:
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "hi")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    conv = bot.sink.messages[0].conversation
    mid = await bot.adapter.post(conv, "Hel")
    await bot.adapter.edit(conv, mid, "Hello")
    await bot.adapter.edit(conv, mid, "Hello")  # unchanged: Telegram refuses, the adapter shrugs
    await bot.adapter.edit(conv, mid, "Hello there")
    [msg] = tg.bot_messages(ana.id)
    assert (msg.text, msg.edits) == ("Hello there", ["Hel", "Hello"])
    await bot.adapter.delete(conv, mid)
    assert tg.bot_messages(ana.id) == []


async def test_a_flood_wait_is_waited_out_and_the_text_sent_once(tg: FakeTelegram, bot: Running) -> None:
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "hi")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    tg.flood_wait("messages.sendMessage", seconds=1, times=2)
    await bot.adapter.post(f"telegram:{ana.id}", "final answer")
    assert tg.errors["FLOOD_WAIT_1"] == 2
    assert [m.text for m in tg.bot_messages(ana.id)] == ["final answer"]


async def test_edits_and_deletes_by_people_reach_the_sink(tg: FakeTelegram, bot: Running) -> None:
    group = tg.add_group("Team")
    ana = tg.add_user("Ana")
    posted = tg.post(group.id, ana.id, "@spacebot_bot tpyo")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    tg.edit(group.id, posted.id, "@spacebot_bot typo")
    tg.delete(group.id, posted.id)
    await bot.sink.wait_for(lambda: len(bot.sink.edits) == 2)
    conv = f"telegram:{group.id}"
    assert bot.sink.edits == [
        PlatformEdit(conv, str(posted.id), "@spacebot_bot typo"),
        PlatformEdit(conv, str(posted.id), None),
    ]


async def test_catch_up_after_a_restart_with_the_same_session(tg: FakeTelegram, tmp_path: Path) -> None:
    ana = tg.add_user("Ana")
    first = await start(tg, tmp_path)
    tg.post(ana.id, ana.id, "one")
    await first.sink.wait_for(lambda: first.sink.messages)
    await stop(first)
    path = session_path(tmp_path, "main")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tg.post(ana.id, ana.id, "two")  # nobody connected
    second = await start(tg, tmp_path)
    try:
        await second.sink.wait_for(lambda: second.sink.messages)
        tg.post(ana.id, ana.id, "three")
        await second.sink.wait_for(lambda: len(second.sink.messages) == 2)
        assert [m.text for m in second.sink.messages] == ["two", "three"]
    finally:
        await stop(second)


async def test_a_bad_bot_token_is_auth_rejected(tg: FakeTelegram, tmp_path: Path) -> None:
    with pytest.raises(AuthRejected, match="login refused"):
        await start(tg, tmp_path, token=f"{tg.bot.id}:wrong")


def test_config_names_missing_telegram_credentials(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'agents = ["main"]\n'
        "[[messaging.telegram]]\n"  # line 2
        'token = "123:secret-bot-token"\n'
        'gateway_url = "http://127.0.0.1:1"\n'
    )
    with pytest.raises(ConfigProblems) as caught:
        load(path, {})
    found = {p.key: p.message for p in caught.value.problems}
    assert "secret-bot-token" not in str(caught.value)
    assert "needs api_id" in found["messaging.telegram[0].api_id"]
    assert "needs api_hash" in found["messaging.telegram[0].api_hash"]
    assert "tcp://host:port" in found["messaging.telegram[0].gateway_url"]
    assert len(found) == 3
    path.write_text(
        'agents = ["main"]\n[[messaging.telegram]]\ntoken = "env:T"\napi_id = 1\napi_hash = "secret:H"\n'
    )
    assert [(p, i.api_hash) for p, i in load(path, {}).messaging.instances()] == [("telegram", "secret:H")]


async def test_a_crashed_gateway_catches_up_from_its_last_stored_message(
    tg: FakeTelegram, tmp_path: Path
) -> None:
    ana = tg.add_user("Ana")
    first = await start(tg, tmp_path / "a")
    tg.post(ana.id, ana.id, "one")
    await first.sink.wait_for(lambda: first.sink.messages)
    # The session file as a crash right now would leave it (no clean disconnect writing the state).
    crashed = session_path(tmp_path / "b", "main")
    crashed.parent.mkdir(parents=True)
    shutil.copyfile(session_path(tmp_path / "a", "main"), crashed)
    await stop(first)
    tg.post(ana.id, ana.id, "two")
    second = await start(tg, tmp_path / "b")
    try:
        await second.sink.wait_for(lambda: second.sink.messages)
        tg.post(ana.id, ana.id, "three")
        await second.sink.wait_for(lambda: len(second.sink.messages) == 2)
        assert [m.text for m in second.sink.messages] == ["two", "three"]
        assert await second.adapter.post(f"telegram:{ana.id}", "still reachable")  # her access hash was kept
    finally:
        await stop(second)


async def test_a_dropped_connection_loses_nothing(tg: FakeTelegram, bot: Running) -> None:
    ana = tg.add_user("Ana")
    tg.post(ana.id, ana.id, "before")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    connections = tg.connections
    assert tg.drop() == 1
    tg.post(ana.id, ana.id, "during")
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 2)
    tg.post(ana.id, ana.id, "after")
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 3)
    assert [m.text for m in bot.sink.messages] == ["before", "during", "after"]
    assert tg.connections > connections
    assert await bot.adapter.post(f"telegram:{ana.id}", "back")
    assert bot.task.done() is False
