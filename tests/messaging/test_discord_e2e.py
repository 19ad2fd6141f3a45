"""Discord end to end, the harder cases: direct messages, other bots, replies, bursts, a RESUME,
long replies, rate limits while streaming, a conversation process killed mid-reply, and people
editing or deleting what they wrote. The real discord.py in ``gateway:discord:main`` talks to the
loopback fake; a real supervisor, memory and conversation processes answer from a scripted model."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from spacebot.ipc import ids
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import Event, Notice, ProcState, StateChanged
from spacebot.llm.fake import FakeLLM
from spacebot.messaging.fakes.discord import FakeDiscord
from spacebot.testing import ChatSystem
from tests.messaging.test_discord_gateway import GW, WAIT, _reply, _shown, _system

EDIT_ROUTE = "PATCH /channels/{channel_id}/messages/{message_id}"
POST_ROUTE = "POST /channels/{channel_id}/messages"
EDIT_INTERVAL = 0.2
"""``stream_edit_interval`` of the instance under test (``_sections``)."""


@contextlib.asynccontextmanager
async def _events(system: ChatSystem, *topics: str) -> AsyncIterator[EventStream]:
    assert system.sup.ctl is not None
    stream = await system.sup.ctl.events(*topics)
    try:
        yield stream
    finally:
        stream.close()


def _notice(text: str, **fields: Any) -> Callable[[Event], bool]:
    """An event predicate: a :class:`Notice` called ``text`` whose fields include ``fields``."""

    def match(event: Event) -> bool:
        body = event.body
        return (
            isinstance(body, Notice)
            and body.text == text
            and all(body.fields.get(k) == v for k, v in fields.items())
        )

    return match


async def _connected(discord: FakeDiscord) -> None:
    await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)


def _channel_proc(guild: int, channel: int) -> str:
    return ids.channel("main", f"discord:{guild}:{channel}")


def _words(text: str) -> list[str]:
    return text.split()


async def test_direct_messages_are_answered_only_from_allowed_users(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="hello from ana", tool_calls=_reply("Hello Ana."))
        llm.add(user="again from ana", tool_calls=_reply("Again, Ana."))
        ana = discord.add_user("ana")
        bob = discord.add_user("bob")
        ana_dm, bob_dm = discord.open_dm(ana.id), discord.open_dm(bob.id)
        async with _system(short_tmp, llm, discord, dm_allowed_users=[str(ana.id)]) as system:
            await _connected(discord)
            async with _events(system, f"gateway.{GW}.dropped") as dropped:
                discord.post(bob_dm.id, bob.id, "bob's secret plan, hello from bob")
                await dropped.wait_for(_notice("dropped", reason="dm_not_allowed"), timeout=WAIT)
            discord.post(ana_dm.id, ana.id, "hello from ana")
            await discord.wait_for(lambda: _shown(discord, ana_dm.id) == ["Hello Ana."] or None, timeout=WAIT)
            discord.post(ana_dm.id, ana.id, "again from ana")
            await discord.wait_for(
                lambda: _shown(discord, ana_dm.id) == ["Hello Ana.", "Again, Ana."] or None, timeout=WAIT
            )
            assert _shown(discord, bob_dm.id) == []
            assert len(llm.requests) == 2
            assert not any("secret plan" in json.dumps(r.body) for r in llm.requests)
            assert "again from ana" in llm.requests[-1].conversation.last_user
            running = {p.id for p in (await system.sup.status()).processes}
            assert ids.channel("main", f"discord:dm:{ana.id}") in running
            assert ids.channel("main", f"discord:dm:{bob.id}") not in running


@pytest.mark.parametrize("allow_bots", [False, True])
async def test_another_bots_message_is_dropped_unless_bots_are_allowed(
    short_tmp: Path, allow_bots: bool
) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        # Only a message taken as a question is marked ``(new)``; context is not.
        llm.add(user=r"\(new\) relaybot", tool_calls=_reply("Answering the relay."))
        llm.add(user=r"\(new\) ana: .*status", tool_calls=_reply("Status is green."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        relay = discord.add_user("relaybot", bot=True, guild=guild.id)
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord, allow_bots=allow_bots) as system:
            await _connected(discord)
            if allow_bots:
                discord.post(general, relay.id, f"{mention} relay: build finished", mentions=[discord.bot.id])
                await discord.wait_for(
                    lambda: _shown(discord, general) == ["Answering the relay."] or None, timeout=WAIT
                )
                assert (
                    "(new) relaybot: @spacebot relay: build finished"
                    in llm.requests[-1].conversation.last_user
                )
                return
            async with _events(system, f"gateway.{GW}.dropped") as dropped:
                discord.post(general, relay.id, f"{mention} relay: build finished", mentions=[discord.bot.id])
                await dropped.wait_for(_notice("dropped", reason="bot"), timeout=WAIT)
            discord.post(general, ana.id, f"{mention} status?", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: _shown(discord, general) == ["Status is green."] or None, timeout=WAIT
            )
            [request] = llm.requests
            assert "(new) ana: @spacebot status?" in request.conversation.last_user
            # The bot's message may be context (read back from the channel), never a question.
            assert "(new) relaybot" not in request.conversation.last_user


async def test_a_reply_to_the_bot_needs_no_mention(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="deploy", tool_calls=_reply("Deploying now."))
        llm.add(user="docs too", tool_calls=_reply("Docs as well."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord) as system:
            await _connected(discord)
            discord.post(general, ana.id, f"<@{discord.bot.id}> deploy", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: _shown(discord, general) == ["Deploying now."] or None, timeout=WAIT
            )
            answer = discord.bot_messages(general)[0]
            async with _events(system, f"gateway.{GW}.dropped") as dropped:
                # Mention required: a plain message is not for the bot...
                discord.post(general, ana.id, "the docs too, plain")
                await dropped.wait_for(_notice("dropped", reason="needs_mention"), timeout=WAIT)
            # ...a reply to the bot's message is.
            discord.post(general, ana.id, "and the docs too?", reply_to=answer.id)
            await discord.wait_for(
                lambda: _shown(discord, general) == ["Deploying now.", "Docs as well."] or None, timeout=WAIT
            )
            assert len(llm.requests) == 2
            asked = llm.requests[-1].conversation.last_user
            assert "(new) ana: (replying to spacebot: Deploying now.)" in asked, asked


async def test_a_burst_of_three_people_is_answered_in_one_turn(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="burst", tool_calls=_reply("One answer for everyone."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        people = [discord.add_user(name, guild=guild.id) for name in ("ana", "ben", "cy")]
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord) as system:
            await _connected(discord)
            proc = _channel_proc(guild.id, general)
            async with _events(system, f"channel.{proc}.turn") as turns:
                for person in people:
                    discord.post(
                        general,
                        person.id,
                        f"{mention} burst from {person.username}",
                        mentions=[discord.bot.id],
                    )
                answered = 0
                done: list[Event] = []
                while answered < len(people):
                    event = await turns.wait_for(_notice("turn"), timeout=WAIT)
                    assert isinstance(event.body, Notice)
                    answered += int(event.body.fields["messages"])
                    done.append(event)
            # A message that finds nothing unanswered is answered at once; the others of the burst
            # wait for it and come together: one turn, or two at most.
            assert answered == len(people)
            assert 1 <= len(done) <= 2, [e.body for e in done]
            await discord.wait_for(
                lambda: _shown(discord, general) == ["One answer for everyone."] * len(done) or None,
                timeout=WAIT,
            )
            assert len(llm.requests) == len(done)
            for person in people:
                asked = [
                    r
                    for r in llm.requests
                    if f"(new) {person.username}: @spacebot burst" in r.conversation.last_user
                ]
                assert len(asked) == 1, (person.username, [r.conversation.last_user for r in llm.requests])


async def test_a_message_replayed_on_resume_is_answered_once(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="during the gap", tool_calls=_reply("Got it after the gap."))
        llm.add(user="settle", tool_calls=_reply("Settled."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord) as system:
            await _connected(discord)
            proc = _channel_proc(guild.id, general)
            async with _events(system, f"channel.{proc}.turn") as turns:
                assert await discord.drop_gateway(4000) == 1
                # Nobody is connected: the message waits in the session's buffer for the RESUME.
                discord.post(
                    general, ana.id, f"<@{discord.bot.id}> during the gap", mentions=[discord.bot.id]
                )
                await discord.wait_for(lambda: discord.resumes >= 1 or None, timeout=WAIT)
                await turns.wait_for(_notice("turn"), timeout=WAIT)
            await discord.wait_for(
                lambda: _shown(discord, general) == ["Got it after the gap."] or None, timeout=WAIT
            )
            assert discord.identifies == 1  # resumed, not a new session
            # A later question is answered after anything a second copy could have started.
            discord.post(general, ana.id, f"<@{discord.bot.id}> settle", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: _shown(discord, general) == ["Got it after the gap.", "Settled."] or None,
                timeout=WAIT,
            )
            assert len(llm.requests) == 2
            assert len(discord.bot_messages(general)) == 2


async def test_a_long_reply_is_split_into_messages_within_the_limit(short_tmp: Path) -> None:
    code = "```python\n" + "\n".join(f"print('line {i}')" for i in range(20)) + "\n```"
    paragraphs = [" ".join(f"p{n}w{i}" for i in range(120)) for n in range(6)]
    long = "\n\n".join([*paragraphs[:3], code, *paragraphs[3:]])
    assert len(long) > 4000 and len(code) < 2000
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="long", tool_calls=_reply(long))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord):
            await _connected(discord)
            discord.post(general, ana.id, f"<@{discord.bot.id}> a long one", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: _words(" ".join(_shown(discord, general))) == _words(long) or None, timeout=WAIT
            )
            parts = _shown(discord, general)
            assert len(parts) >= 3
            assert all(len(p) <= 2000 for p in parts), [len(p) for p in parts]
            assert sum(code in p for p in parts) == 1  # the code block whole, in one message
            assert len(llm.requests) == 1


async def test_rate_limits_while_streaming_delay_edits_but_the_final_text_arrives_once(
    short_tmp: Path,
) -> None:
    long = " ".join(f"word{i}" for i in range(250))
    assert len(long) < 2000
    async with FakeLLM(token_latency=0.02) as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="essay", tool_calls=_reply(long))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord):
            await _connected(discord)
            discord.rate_limit(POST_ROUTE, 2, retry_after=0.3)
            # More 429s in a row than discord.py retries a call (5): one edit fails outright.
            discord.rate_limit(EDIT_ROUTE, 6, retry_after=0.3)
            started = time.monotonic()
            discord.post(general, ana.id, f"<@{discord.bot.id}> write an essay", mentions=[discord.bot.id])
            await discord.wait_for(lambda: _shown(discord, general) == [long] or None, timeout=WAIT)
            duration = time.monotonic() - started
            # The storm was met and sat out, and it did not multiply messages: one shows the
            # reply (a final edit that failed outright is posted anew, its old message removed).
            assert discord.rate_limited[POST_ROUTE] == 2
            assert discord.rate_limited[EDIT_ROUTE] >= 5
            assert len(discord.bot_messages(general)) <= 2
            edits = discord.rest_calls[EDIT_ROUTE]
            # At most one edit per interval (intermediate texts are coalesced, not queued), plus
            # the final one and the calls answered with 429.
            bound = duration / EDIT_INTERVAL + 1 + discord.rate_limited[EDIT_ROUTE] + 3
            assert edits <= bound, (edits, bound, duration)
            assert len(llm.requests) == 1


async def test_a_conversation_killed_mid_reply_leaves_exactly_one_final_reply(short_tmp: Path) -> None:
    long = " ".join(f"word{i}" for i in range(200))
    async with FakeLLM(token_latency=0.02) as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="essay", tool_calls=_reply(long))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord) as system:
            await _connected(discord)
            discord.post(general, ana.id, f"<@{discord.bot.id}> write an essay", mentions=[discord.bot.id])
            # The reply is being streamed: the bot's message shows part of it.
            await discord.wait_for(lambda: discord.bot_messages(general) or None, timeout=WAIT)
            assert _shown(discord, general) != [long]
            proc = _channel_proc(guild.id, general)
            row = await system.sup.info(proc)
            assert row.pid
            os.kill(row.pid, signal.SIGKILL)
            await discord.wait_for(lambda: _shown(discord, general) == [long] or None, timeout=WAIT)
            # Settle: the conversation's next turn shows nothing more (a question asked after the
            # kill is answered after everything the kill left behind).
            llm.add(user="after", tool_calls=_reply("After the kill."))
            discord.post(general, ana.id, f"<@{discord.bot.id}> after", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: _shown(discord, general)[-1:] == ["After the kill."] or None, timeout=WAIT
            )
            assert _shown(discord, general) == [long, "After the kill."]


async def _stop(system: ChatSystem, proc: str) -> None:
    """Stop a conversation process (SIGTERM: a clean exit, woken again by its next message)."""
    async with _events(system, f"proc.channel.{proc}.") as states:
        row = await system.sup.info(proc)
        assert row.pid, row
        os.kill(row.pid, signal.SIGTERM)
        await states.wait_for(
            lambda e: isinstance(e.body, StateChanged) and e.body.new is ProcState.EXITED, timeout=WAIT
        )


async def test_edits_and_deletes_reach_the_stored_transcript(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="colour", tool_calls=_reply("Noted."))
        llm.add(user="second question", tool_calls=_reply("Second."))
        llm.add(user="third question", tool_calls=_reply("Third."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord) as system:
            await _connected(discord)
            proc = _channel_proc(guild.id, general)
            first = discord.post(
                general, ana.id, f"{mention} my colour is crimson", mentions=[discord.bot.id]
            )
            await discord.wait_for(lambda: _shown(discord, general) == ["Noted."] or None, timeout=WAIT)
            # The next question is answered by a conversation process that reads the transcript
            # back from storage (the edit reaches storage before the question, which wakes it).
            await _stop(system, proc)
            discord.edit(first.id, f"{mention} my colour is turquoise")
            discord.post(general, ana.id, f"{mention} second question", mentions=[discord.bot.id])
            await discord.wait_for(lambda: _shown(discord, general)[-1:] == ["Second."] or None, timeout=WAIT)
            seen = json.dumps(llm.requests[-1].body)
            assert "turquoise" in seen and "crimson" not in seen, seen
            await _stop(system, proc)
            discord.delete(first.id)
            discord.post(general, ana.id, f"{mention} third question", mentions=[discord.bot.id])
            await discord.wait_for(lambda: _shown(discord, general)[-1:] == ["Third."] or None, timeout=WAIT)
            seen = json.dumps(llm.requests[-1].body)
            assert "[deleted]" in seen and "turquoise" not in seen, seen
            assert len(llm.requests) == 3


async def test_a_running_conversation_sees_an_edit(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="colour", tool_calls=_reply("Noted."))
        llm.add(user="second question", tool_calls=_reply("Second."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord):
            await _connected(discord)
            first = discord.post(
                general, ana.id, f"{mention} my colour is crimson", mentions=[discord.bot.id]
            )
            await discord.wait_for(lambda: _shown(discord, general) == ["Noted."] or None, timeout=WAIT)
            discord.edit(first.id, f"{mention} my colour is turquoise")
            discord.post(general, ana.id, f"{mention} second question", mentions=[discord.bot.id])
            await discord.wait_for(lambda: _shown(discord, general)[-1:] == ["Second."] or None, timeout=WAIT)
            seen = json.dumps(llm.requests[-1].body)
            assert "turquoise" in seen and "crimson" not in seen
