"""The Slack adapter against the fake Slack, in the test's loop: real slack_sdk, real Socket Mode."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from spacebot.config import PlatformInstance
from spacebot.messaging.fakes.slack import FakeSlack
from spacebot.messaging.platform import AuthRejected, OutFile, PlatformEdit
from spacebot.messaging.slack_adapter import SlackAdapter
from tests.messaging import harness
from tests.messaging.harness import Recorder, Running, stop

WAIT = 10.0
"""Deadline of every wait (a failure, not a timing goal)."""


async def start(fake: FakeSlack, *, bot_token: str = "", app_token: str = "") -> Running:
    inst = PlatformInstance(name="main", api_base=fake.api_url)
    return await harness.start(SlackAdapter(inst, bot_token or fake.bot_token, app_token or fake.app_token))


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    # A long ack timeout: no redelivery unless a test holds the sink on purpose.
    async with FakeSlack(ack_timeout=WAIT, disconnect_grace=WAIT) as fake:
        fake.add_user("ada", id="U0ADA")
        fake.add_channel("general", id="C0GEN")
        yield fake


@pytest.fixture
async def bot(slack: FakeSlack) -> AsyncIterator[Running]:
    run = await start(slack)
    yield run
    await stop(run)


async def test_a_persons_post_is_one_message_with_rendered_text(slack: FakeSlack, bot: Running) -> None:
    text = "hi <@U0BOT> and <@U0ADA>, see <#C0GEN|general> and <https://x.org|the site> &amp; <!here>"
    posted = slack.post("C0GEN", "U0ADA", text)
    await bot.sink.wait_for(lambda: bot.sink.messages)
    await slack.wait_for(lambda: not slack.unacked)
    [msg] = bot.sink.messages
    assert msg.conversation == "slack:T0FAKE:C0GEN" and msg.message_id == posted.ts
    assert msg.text == "hi @spacebot and @ada, see #general and the site (https://x.org) & @here"
    assert (msg.author_name, msg.conversation_name, msg.timestamp) == ("ada", "#general", float(posted.ts))
    s = msg.scope
    assert (s.platform, s.instance, s.guild, s.channel, s.parent_channel) == (
        "slack",
        "main",
        "T0FAKE",
        "C0GEN",
        "",
    )
    assert (s.is_dm, s.author_id, s.author_is_bot, s.mentions_bot) == (False, "U0ADA", False, True)
    slack.post("C0GEN", "U0ADA", "no mention here")
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 2)
    assert bot.sink.messages[1].scope.mentions_bot is False


async def test_the_ack_comes_after_the_sink_returned(slack: FakeSlack, bot: Running) -> None:
    bot.sink.gate = asyncio.Event()
    slack.post("C0GEN", "U0ADA", "store me first")
    async with asyncio.timeout(WAIT):
        await bot.sink.entered.wait()
    assert slack.acks == [] and len(slack.unacked) == 1
    bot.sink.gate.set()
    await slack.wait_for(lambda: not slack.unacked)
    assert len(slack.acks) == 1 and slack.redeliveries == 0


async def test_a_redelivery_is_passed_again_with_the_same_message_id() -> None:
    async with FakeSlack(ack_timeout=0.2, disconnect_grace=WAIT) as slack:
        slack.add_user("ada", id="U0ADA")
        slack.add_channel("general", id="C0GEN")
        run = await start(slack)
        try:
            run.sink.gate = asyncio.Event()
            posted = slack.post("C0GEN", "U0ADA", "slow to store")
            await slack.wait_for(lambda: slack.redeliveries >= 1)  # no ack while the sink holds it
            assert slack.acks == []
            run.sink.gate.set()
            # Every delivery reaches the sink (the redelivery after the first, in order) and is acked.
            await slack.wait_for(lambda: not slack.unacked and len(slack.acks) == 1 + slack.redeliveries)
            assert len(run.sink.messages) == 1 + slack.redeliveries >= 2
            assert {m.message_id for m in run.sink.messages} == {posted.ts}
        finally:
            await stop(run)


async def test_threads_are_conversations_of_their_own(slack: FakeSlack, bot: Running) -> None:
    parent = slack.post("C0GEN", "U0ADA", "<@U0BOT> a question")
    reply = slack.post("C0GEN", "U0ADA", "more detail", thread_ts=parent.ts)
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 2)
    first, second = bot.sink.messages
    assert first.conversation == "slack:T0FAKE:C0GEN"
    assert second.conversation == f"slack:T0FAKE:C0GEN:{parent.ts}" and second.message_id == reply.ts
    assert (second.scope.channel, second.scope.parent_channel) == (f"C0GEN:{parent.ts}", "C0GEN")
    assert second.scope.mentions_bot is False  # a person's thread, no mention
    # A reply in a thread the bot started addresses the bot without a mention.
    mine = await bot.adapter.post("slack:T0FAKE:C0GEN", "I start a thread")
    slack.post("C0GEN", "U0ADA", "answering you", thread_ts=mine)
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 3)
    third = bot.sink.messages[2]
    assert third.conversation == f"slack:T0FAKE:C0GEN:{mine}" and third.scope.mentions_bot is True
    assert all(m.scope.author_id != slack.bot_user for m in bot.sink.messages)  # own echo ignored


async def test_a_direct_message_has_dm_scope(slack: FakeSlack, bot: Running) -> None:
    dm = slack.add_channel("U0ADA", kind="im", user="U0ADA")
    slack.post(dm.id, "U0ADA", "psst")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    [msg] = bot.sink.messages
    assert msg.conversation == f"slack:T0FAKE:{dm.id}" and msg.conversation_name == "DM with ada"
    assert (msg.scope.is_dm, msg.scope.guild, msg.scope.channel) == (True, "", dm.id)


async def test_another_bot_is_passed_on_as_a_bot_and_our_own_echo_is_not(
    slack: FakeSlack, bot: Running
) -> None:
    slack.add_user("helper", id="U0HELP", is_bot=True)
    sink = Recorder()
    for event in [
        {
            "type": "message",
            "channel": "C0GEN",
            "user": "U0HELP",
            "bot_id": "B0HELP",
            "text": "beep",
            "ts": "1.1",
        },
        {
            "type": "message",
            "channel": "C0GEN",
            "user": "U0BOT",
            "bot_id": "B0BOT",
            "text": "me",
            "ts": "1.2",
        },
        {"type": "message", "subtype": "channel_join", "channel": "C0GEN", "user": "U0ADA", "ts": "1.3"},
    ]:
        await bot.adapter._event(sink, event)
    [msg] = sink.messages
    assert (msg.scope.author_is_bot, msg.scope.author_id, msg.author_name) == (True, "U0HELP", "helper")


async def test_edits_and_deletes_become_platform_edits(slack: FakeSlack, bot: Running) -> None:
    msg = slack.post("C0GEN", "U0ADA", "tpyo <@U0ADA>")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    slack.edit("C0GEN", msg.ts, "typo <@U0ADA>")
    await bot.sink.wait_for(lambda: bot.sink.edits)
    slack.delete("C0GEN", msg.ts)
    await bot.sink.wait_for(lambda: len(bot.sink.edits) == 2)
    assert bot.sink.edits == [
        PlatformEdit("slack:T0FAKE:C0GEN", msg.ts, "typo @ada"),
        PlatformEdit("slack:T0FAKE:C0GEN", msg.ts, None),
    ]
    # The bot's own edits and deletes are not reported back.
    mine = await bot.adapter.post("slack:T0FAKE:C0GEN", "draft")
    await bot.adapter.edit("slack:T0FAKE:C0GEN", mine, "final")
    await bot.adapter.delete("slack:T0FAKE:C0GEN", mine)
    await slack.wait_for(lambda: not slack.unacked and len(slack.events) == 6)
    assert len(bot.sink.edits) == 2


async def test_post_edit_react_delete_and_upload_land_in_the_fake(
    slack: FakeSlack, bot: Running, tmp_path: Path
) -> None:
    conv = "slack:T0FAKE:C0GEN"
    person = slack.post("C0GEN", "U0ADA", "hello")
    ts = await bot.adapter.post(conv, "a < b & c")
    await bot.adapter.edit(conv, ts, "a <!channel>")
    [mine] = slack.bot_messages()
    assert mine.ts == ts and mine.text == "a &lt;!channel&gt;"  # escaped: never a ping
    assert [h["text"] for h in mine.history] == ["a &lt; b &amp; c"]
    await bot.adapter.react(conv, person.ts, "🎉")
    await bot.adapter.react(conv, person.ts, ":eyes:")
    await bot.adapter.react(conv, person.ts, "🦜")  # no name known: skipped
    await bot.adapter.react(conv, person.ts, "🎉")  # already there: fine
    assert person.reactions == {"tada": [slack.bot_user], "eyes": [slack.bot_user]}
    assert slack.calls["reactions.add"] == 3
    in_thread = await bot.adapter.post(f"{conv}:{person.ts}", "in the thread")
    assert [m.thread_ts for m in slack.bot_messages() if m.ts == in_thread] == [person.ts]
    await bot.adapter.delete(conv, ts)
    assert mine.deleted is True
    report = tmp_path / "r.csv"
    report.write_bytes(b"a,b\n1,2\n")
    await bot.adapter.send_files(f"{conv}:{person.ts}", [OutFile("report.csv", report)], "here it is")
    [upload] = slack.uploads()
    assert (upload.name, upload.content, upload.complete, upload.thread_ts) == (
        "report.csv",
        b"a,b\n1,2\n",
        True,
        person.ts,
    )
    shared = slack.bot_messages()[-1]
    assert shared.files == [upload.id] and shared.text == "here it is"


async def test_typing_is_a_thread_status_and_a_no_op_in_a_channel(slack: FakeSlack, bot: Running) -> None:
    parent = slack.post("C0GEN", "U0ADA", "q")
    await bot.adapter.typing("slack:T0FAKE:C0GEN")
    assert slack.calls["assistant.threads.setStatus"] == 0
    await bot.adapter.typing(f"slack:T0FAKE:C0GEN:{parent.ts}")
    assert slack.statuses == [{"channel_id": "C0GEN", "thread_ts": parent.ts, "status": "is typing…"}]


async def test_a_429_on_post_message_is_waited_out_and_posts_once(slack: FakeSlack, bot: Running) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    await bot.adapter.post("slack:T0FAKE:C0GEN", "once")
    assert [m.text for m in slack.bot_messages()] == ["once"]
    assert (slack.ratelimited["chat.postMessage"], slack.calls["chat.postMessage"]) == (1, 2)


async def test_history_is_oldest_first_for_channels_and_threads(slack: FakeSlack, bot: Running) -> None:
    first = slack.post("C0GEN", "U0ADA", "one")
    slack.post("C0GEN", "U0ADA", "two <@U0BOT>")
    slack.post("C0GEN", "U0ADA", "in thread", thread_ts=first.ts)
    channel = await bot.adapter.history("slack:T0FAKE:C0GEN", 10)
    assert [m.text for m in channel] == ["one", "two @spacebot"]
    thread = await bot.adapter.history(f"slack:T0FAKE:C0GEN:{first.ts}", 10)
    assert [(m.text, m.conversation) for m in thread] == [
        ("one", f"slack:T0FAKE:C0GEN:{first.ts}"),
        ("in thread", f"slack:T0FAKE:C0GEN:{first.ts}"),
    ]
    assert [m.text for m in await bot.adapter.history(f"slack:T0FAKE:C0GEN:{first.ts}", 1)] == ["in thread"]


async def test_a_persons_file_is_an_attachment_fetched_with_the_bot_token(
    slack: FakeSlack, bot: Running
) -> None:
    slack.post("C0GEN", "U0ADA", "<@U0BOT> see", files=[{"name": "n.txt", "content": "notes"}])
    await bot.sink.wait_for(lambda: bot.sink.messages)
    [att] = bot.sink.messages[0].attachments
    assert (att.name, att.mime, att.size) == ("n.txt", "text/plain", 5)
    assert att.fetch is not None and await att.fetch() == b"notes"


async def test_a_refused_bot_token_is_auth_rejected(slack: FakeSlack) -> None:
    with pytest.raises(AuthRejected, match="invalid_auth"):
        await start(slack, bot_token="xoxb-wrong")
    assert slack.connections == 0


async def test_a_refused_app_token_is_auth_rejected(slack: FakeSlack) -> None:
    with pytest.raises(AuthRejected, match="invalid_auth"):
        await start(slack, app_token="xapp-wrong")
    assert slack.calls["apps.connections.open"] == 1 and slack.connections == 0
