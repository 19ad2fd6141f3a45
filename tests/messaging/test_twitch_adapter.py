"""The Twitch adapter against the fake Twitch chat, in the test's loop: real IRC on loopback."""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spacebot.config import ConfigProblems, PlatformInstance, from_dict
from spacebot.messaging.deliveries import Deliveries
from spacebot.messaging.fakes.twitch import FakeTwitch
from spacebot.messaging.outbox import ChatOutbox
from spacebot.messaging.platform import AuthRejected, OutFile, PlatformEdit
from spacebot.messaging.twitch_adapter import (
    INVISIBLE,
    LIMIT,
    RATE_MOD,
    RATE_USER,
    WINDOW,
    ChatLine,
    Renewal,
    SendWindow,
    TwitchAdapter,
    TwitchError,
    escape_tag,
    format_line,
    parse_line,
)
from tests.messaging.harness import Running, start, stop

WAIT = 10.0
"""Deadline of every wait (a failure, not a timing goal)."""
CONFIGURED_REFRESH = FakeTwitch().refresh_token
"""The refresh token the fake accepts first (a renewal rotates it, the configuration keeps it)."""


def adapter_for(
    fake: FakeTwitch,
    token_file: Path,
    *,
    token: str | None = None,
    renew: bool = True,
    refresh_token: str | None = None,
    **instance: Any,
) -> TwitchAdapter:
    inst = PlatformInstance(
        name="main",
        token="configured",
        bot_name="spacebot",
        channels=["general", "random"],
        trigger_prefix="!ask",
        gateway_url=fake.gateway_url,
        api_base=fake.api_url,
        **instance,
    )
    renewal = (
        Renewal(refresh_token or CONFIGURED_REFRESH, fake.client_id, fake.client_secret) if renew else None
    )
    adapter = TwitchAdapter(inst, token or fake.token, renewal=renewal, token_file=token_file)
    adapter.ratelimit_wait = 0.01
    return adapter


@pytest.fixture
async def twitch() -> AsyncIterator[FakeTwitch]:
    async with FakeTwitch() as fake:
        yield fake


@pytest.fixture
async def bot(twitch: FakeTwitch, tmp_path: Path) -> AsyncIterator[Running]:
    run = await start(adapter_for(twitch, tmp_path / "twitch-main.token.json"))
    await twitch.wait_for(lambda: twitch.joined("general") and twitch.joined("random"))
    yield run
    await stop(run)


# -- the wire ----------------------------------------------------------------------------------


def test_a_tagged_privmsg_is_parsed_with_escaped_tag_values() -> None:
    raw = (
        "@badge-info=subscriber/8;badges=moderator/1,subscriber/6;display-name=Ana\\sB;id=m-1;mod=1;"
        "room-id=1234;user-id=42;tmi-sent-ts=1700000000500;reply-parent-msg-id=p-9;"
        "reply-parent-user-login=spacebot;reply-parent-msg-body=semi\\:colon\\sand\\\\slash;flag "
        ":ana!ana@ana.tmi.twitch.tv PRIVMSG #General :hello :) there\r\n"
    )
    line = parse_line(raw)
    assert (line.command, line.params, line.nick, line.channel) == (
        "PRIVMSG",
        ("#General", "hello :) there"),
        "ana",
        "general",
    )
    assert line.tags["flag"] == "" and line.tags["reply-parent-msg-body"] == "semi;colon and\\slash"
    chat = ChatLine.of(line)
    assert (chat.id, chat.display_name, chat.user_id, chat.room_id) == ("m-1", "Ana B", "42", "1234")
    assert chat.mod is True and chat.badges == {"moderator": "1", "subscriber": "6"}
    assert (chat.reply_parent_msg_id, chat.reply_parent_login) == ("p-9", "spacebot")
    assert chat.timestamp == 1700000000.5 and chat.text == "hello :) there"


def test_tags_escape_and_round_trip_through_a_line() -> None:
    value = "a b;c\\d"
    assert escape_tag(value) == "a\\sb\\:c\\\\d"
    line = format_line("PRIVMSG", "#general", "hi :)", tags={"reply-parent-msg-id": value})
    assert line == "@reply-parent-msg-id=a\\sb\\:c\\\\d PRIVMSG #general :hi :)\r\n"
    assert parse_line(line).tags == {"reply-parent-msg-id": value}
    with pytest.raises(ValueError, match="line break"):
        format_line("PRIVMSG", "#general", "two\nlines")


def test_the_send_window_allows_20_in_30_seconds_and_100_as_moderator() -> None:
    window = SendWindow()
    for n in range(RATE_USER):
        assert window.wait(float(n)) == 0.0
        window.record(float(n))
    assert window.wait(20.0) == pytest.approx(WINDOW - 20.0)  # the first send leaves the window at 30 s
    assert window.wait(WINDOW) == 0.0
    window.cap = RATE_MOD
    assert window.wait(20.0) == 0.0


# -- in ----------------------------------------------------------------------------------------


async def test_a_persons_message_becomes_one_platform_message(twitch: FakeTwitch, bot: Running) -> None:
    posted = twitch.post("general", "ana", "!ask what is the plan?", display_name="Ana")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    [msg] = bot.sink.messages
    assert (msg.conversation, msg.message_id, msg.author_name) == ("twitch:general", posted.id, "Ana")
    assert msg.text == "what is the plan?"  # the trigger prefix is not part of the question
    assert msg.conversation_name == "#general" and msg.reply_to_text == ""
    assert msg.timestamp == int(posted.tags["tmi-sent-ts"]) / 1000
    s = msg.scope
    assert (s.platform, s.instance, s.guild, s.channel, s.is_dm) == ("twitch", "main", "", "general", False)
    assert (s.author_id, s.author_is_bot, s.mentions_bot) == (posted.tags["user-id"], False, True)


async def test_only_the_prefix_a_mention_or_a_reply_to_the_bot_address_it(
    twitch: FakeTwitch, bot: Running
) -> None:
    twitch.post("general", "ana", "hello everyone")
    twitch.post("general", "ana", "hey @SpaceBot, you there?")
    twitch.post("random", "bob", "!ASK  loud question")
    twitch.post("general", "bob", "an email like me@spacebot.tv is no mention")
    twitch.post("general", "bob", "!asking is another command")
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 5)
    got = [(m.conversation, m.text, m.scope.mentions_bot) for m in bot.sink.messages]
    # In order within a channel (channels are stored side by side, so not across them).
    assert [g for g in got if g[0] == "twitch:general"] == [
        ("twitch:general", "hello everyone", False),
        ("twitch:general", "hey @SpaceBot, you there?", True),
        ("twitch:general", "an email like me@spacebot.tv is no mention", False),
        ("twitch:general", "!asking is another command", False),
    ]
    assert [g for g in got if g[0] == "twitch:random"] == [("twitch:random", "loud question", True)]
    answer = await bot.adapter.post("twitch:general", "I am here")
    twitch.post("general", "ana", "@spacebot thanks", reply_to=answer)
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 6)
    last = bot.sink.messages[-1]
    assert last.scope.mentions_bot and last.reply_to_text == "spacebot: I am here"


async def test_a_moderator_deleting_a_message_is_a_delete(twitch: FakeTwitch, bot: Running) -> None:
    posted = twitch.post("general", "ana", "oops")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    for client in twitch._clients:  # Twitch's CLEARMSG, as a moderator's delete sends it
        twitch._send(client, f"@login=ana;target-msg-id={posted.id} :tmi.twitch.tv CLEARMSG #general :oops")
    await bot.sink.wait_for(lambda: bot.sink.edits)
    assert bot.sink.edits == [PlatformEdit("twitch:general", posted.id, None)]


# -- out ---------------------------------------------------------------------------------------


async def test_a_reply_answers_the_message_that_addressed_the_bot(twitch: FakeTwitch, bot: Running) -> None:
    question = twitch.post("general", "ana", "!ask ping?")
    twitch.post("general", "bob", "unrelated chatter")
    await bot.sink.wait_for(lambda: len(bot.sink.messages) == 2)
    sent_id = await bot.adapter.post("twitch:general", "pong\n\nand more")
    [shown] = twitch.bot_messages("general")
    assert shown.id == sent_id  # the id Twitch gave it (USERSTATE), not a made-up one
    assert shown.text == "pong and more"  # one line
    assert shown.tags == {"reply-parent-msg-id": question.id}
    await bot.adapter.post("twitch:random", "nobody asked here")
    assert "reply-parent-msg-id" not in twitch.bot_messages("random")[0].tags


async def test_a_rate_limit_notice_is_waited_out_and_the_message_sent_once(
    twitch: FakeTwitch, bot: Running
) -> None:
    twitch.rate_limit(times=2)
    sent_id = await bot.adapter.post("twitch:general", "eventually")
    assert [(s.text, s.refused) for s in twitch.sent] == [
        ("eventually", "msg_ratelimit"),
        ("eventually", "msg_ratelimit"),
        ("eventually", ""),
    ]
    assert [s.id for s in twitch.bot_messages()] == [sent_id]
    assert bot.adapter.notices["msg_ratelimit"] == 2


async def test_the_same_text_twice_is_varied_instead_of_refused(twitch: FakeTwitch, bot: Running) -> None:
    await bot.adapter.post("twitch:general", "hello")
    await bot.adapter.post("twitch:general", "hello")
    await bot.adapter.post("twitch:general", "hello")
    assert [s.text for s in twitch.bot_messages("general")] == ["hello", f"hello {INVISIBLE}", "hello"]
    assert all(not s.refused for s in twitch.sent)


async def test_a_ban_notice_fails_the_send_with_the_reason(twitch: FakeTwitch, bot: Running) -> None:
    twitch.refuse("msg_banned")
    with pytest.raises(TwitchError, match="msg_banned"):
        await bot.adapter.post("twitch:general", "let me speak")
    assert twitch.bot_messages() == [] and bot.adapter.notices["msg_banned"] == 1


async def test_a_long_reply_is_split_at_500_characters(
    twitch: FakeTwitch, bot: Running, tmp_path: Path
) -> None:
    text = " ".join(f"word{i:04d}" for i in range(130))  # 1169 characters
    deliveries = Deliveries(tmp_path / "deliveries.sqlite")
    box = ChatOutbox(bot.adapter, "twitch:general", deliveries, edit_interval=0.05, counters={})
    try:
        box.delta("r1", text[:600])  # streamed text is not shown: Twitch messages cannot be edited
        box.final("r1", 7, "main", text)
        assert box._task is not None
        async with asyncio.timeout(WAIT):
            await box._task  # the queue's task ends once nothing is left to do
        assert deliveries.delivered("main", 7)
    finally:
        await box.close()
        deliveries.close()
    parts = [s.text for s in twitch.bot_messages()]
    assert len(parts) == 3 and all(len(p) <= LIMIT for p in parts)
    assert " ".join(parts) == text


async def test_calls_twitch_lacks_are_no_ops_or_clear_errors(bot: Running, tmp_path: Path) -> None:
    assert await bot.adapter.history("twitch:general", 50) == []
    await bot.adapter.typing("twitch:general")
    await bot.adapter.react("twitch:general", "m-1", "👍")
    await bot.adapter.delete("twitch:general", "m-1")
    with pytest.raises(TwitchError, match="cannot be edited"):
        await bot.adapter.edit("twitch:general", "m-1", "new")
    with pytest.raises(TwitchError, match=r"not sent: a\.png"):
        await bot.adapter.send_files("twitch:general", [OutFile("a.png", tmp_path / "a.png")])
    with pytest.raises(ValueError, match="not a Twitch conversation id"):
        await bot.adapter.post("discord:1:2", "hi")


async def test_a_reply_that_looks_like_a_chat_command_is_sent_as_text(
    twitch: FakeTwitch, bot: Running
) -> None:
    await bot.adapter.post("twitch:general", "/ban ana")
    await bot.adapter.post("twitch:general", ".timeout bob 600")
    assert [s.text for s in twitch.bot_messages()] == ["\u200b/ban ana", "\u200b.timeout bob 600"]


# -- the connection ----------------------------------------------------------------------------


async def test_ping_is_answered(twitch: FakeTwitch, bot: Running) -> None:
    twitch.ping()
    await twitch.wait_for(lambda: twitch.pongs == 1)


async def test_reconnect_rejoins_and_keeps_receiving(twitch: FakeTwitch, bot: Running) -> None:
    twitch.reconnect()
    await twitch.wait_for(lambda: twitch.joins.count("general") == 2 and twitch.joined("general"))
    assert twitch.connections == 2 and twitch.logins == 2
    twitch.post("general", "ana", "!ask still there?")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    assert bot.sink.messages[0].text == "still there?"
    await bot.adapter.post("twitch:general", "yes")
    assert [s.text for s in twitch.bot_messages()] == ["yes"]


# -- the token ---------------------------------------------------------------------------------


async def test_a_refused_token_is_renewed_saved_0600_and_used_by_the_next_start(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    token_file = tmp_path / "gateways" / "twitch-main.token.json"
    run = await start(adapter_for(twitch, token_file, token="expired-token"))
    await twitch.wait_for(lambda: twitch.joined("general"))
    assert (twitch.login_failures, twitch.refreshes, twitch.logins) == (1, 1, 1)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    saved = json.loads(token_file.read_text())
    assert saved["access_token"] in twitch.valid_tokens and saved["refresh_token"] == twitch.refresh_token
    await stop(run)
    # A restart with the same configuration logs in with the saved token, without renewing.
    again = await start(adapter_for(twitch, token_file, token="expired-token"))
    await twitch.wait_for(lambda: twitch.logins == 2)
    assert (twitch.login_failures, twitch.refreshes) == (1, 1)
    # The refresh token was rotated by the renewal: the saved one is what a renewal now needs.
    twitch.expire_tokens()
    twitch.reconnect()
    await twitch.wait_for(lambda: twitch.logins == 3)
    assert (twitch.login_failures, twitch.refreshes) == (2, 2)
    await stop(again)


async def test_a_token_close_to_expiry_is_renewed_before_connecting(
    twitch: FakeTwitch, tmp_path: Path
) -> None:
    token_file = tmp_path / "twitch-main.token.json"
    twitch.expires_in = 60  # less than the renewal margin
    run = await start(adapter_for(twitch, token_file, token="expired-token"))
    await stop(run)
    assert twitch.refreshes == 1
    again = await start(adapter_for(twitch, token_file, token="expired-token"))
    await twitch.wait_for(lambda: twitch.logins == 2)
    assert twitch.refreshes == 2 and twitch.login_failures == 1
    await stop(again)


async def test_a_refused_renewal_is_auth_rejected_with_the_reason(twitch: FakeTwitch, tmp_path: Path) -> None:
    adapter = adapter_for(twitch, tmp_path / "t.json", token="expired-token", refresh_token="revoked")
    with pytest.raises(AuthRejected, match="Invalid refresh token"):
        await start(adapter)
    assert twitch.refresh_failures == 1 and not (tmp_path / "t.json").exists()


async def test_a_refused_token_without_renewal_is_auth_rejected(twitch: FakeTwitch, tmp_path: Path) -> None:
    adapter = adapter_for(twitch, tmp_path / "t.json", token="wrong", renew=False)
    with pytest.raises(AuthRejected, match="Login authentication failed"):
        await start(adapter)
    assert twitch.refreshes == 0 and twitch.logins == 0


# -- the configuration -------------------------------------------------------------------------


def test_the_config_check_names_what_a_twitch_instance_lacks() -> None:
    good = {"token": "env:T", "bot_name": "spacebot", "channels": ["general"], "trigger_prefix": "!ask"}
    config = from_dict({"messaging": {"twitch": [good]}}, {})
    assert [(p, i.channels) for p, i in config.messaging.instances()] == [("twitch", ["general"])]
    bad = {
        "bot_name": "Space Bot",
        "channels": ["#general"],
        "refresh_token": "env:R",
        "gateway_url": "irc://irc.chat.twitch.tv:6667",
    }
    with pytest.raises(ConfigProblems) as caught:
        from_dict({"messaging": {"twitch": [bad]}}, {})
    found = {(p.key, p.message) for p in caught.value.problems}
    text = "\n".join(f"{k} {m}" for k, m in found)
    assert "messaging.twitch[0].token" in text
    assert "'Space Bot' is not a Twitch login" in text
    assert "'#general' is not a channel login" in text
    assert "needs all of refresh_token, client_id and client_secret" in text
    assert "plain irc:// sends the token unencrypted: only to loopback" in text
    assert len(found) == 5


async def test_a_dropped_connection_is_restored_and_joined_again(twitch: FakeTwitch, bot: Running) -> None:
    twitch.drop()
    await twitch.wait_for(lambda: twitch.joins.count("general") == 2 and twitch.joined("general"))
    twitch.post("general", "ana", "!ask back?")
    await bot.sink.wait_for(lambda: bot.sink.messages)
    assert [m.text for m in bot.sink.messages] == ["back?"] and twitch.reconnects == 0
