"""Discord end to end, what the reply tool can ask for beyond text: a thread, mentions, a card. The
real discord.py in ``gateway:discord:main`` talks to the loopback fake; a real supervisor, memory
and conversation processes answer from a scripted model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.fakes.discord import FakeDiscord
from tests.messaging.test_discord_gateway import WAIT, _reply, _shown, _system


def _call(**args: Any) -> list[FakeToolCall]:
    return [FakeToolCall("reply", args)]


async def test_a_reply_with_a_thread_name_opens_a_thread_that_is_its_own_conversation(
    short_tmp: Path,
) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(
            user=r"\(new\) ana: @spacebot please deploy",
            tool_calls=_call(content="On it.", thread_name="Deploy"),
        )
        llm.add(user=r"\(new\) ana: .*docs", tool_calls=_reply("The docs as well."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord):
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            asked = discord.post(general, ana.id, f"{mention} please deploy", mentions=[discord.bot.id])
            # The thread is opened on the message answered (sharing its id) and the reply is in it;
            # nothing is left in the channel (what was streamed there is taken back).
            await discord.wait_for(
                lambda: (_shown(discord, asked.id) == ["On it."] and _shown(discord, general) == []) or None,
                timeout=WAIT,
            )
            assert discord.threads_created == [asked.id]
            thread = discord.channels[asked.id]
            assert (thread.name, thread.parent_id) == ("Deploy", general)
            # A message in the thread is a conversation of its own, whose history starts with the
            # message the thread was opened on and the reply.
            # (No mention needed: the thread is the bot's.)
            discord.post(thread.id, ana.id, "and the docs?")
            await discord.wait_for(
                lambda: _shown(discord, thread.id) == ["On it.", "The docs as well."] or None, timeout=WAIT
            )
            assert _shown(discord, general) == []
            assert len(llm.requests) == 2
            seen = json.dumps(llm.requests[-1].body)
            assert "please deploy" in seen and "On it." in seen, seen
            assert "(new) ana: @spacebot please deploy" not in llm.requests[-1].conversation.last_user


async def test_a_thread_name_in_a_direct_message_is_ignored(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="hello", tool_calls=_call(content="Hello Ana.", thread_name="Greetings"))
        ana = discord.add_user("ana")
        dm = discord.open_dm(ana.id)
        async with _system(short_tmp, llm, discord, dm_allowed_users=[str(ana.id)]):
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            discord.post(dm.id, ana.id, "hello")
            await discord.wait_for(lambda: _shown(discord, dm.id) == ["Hello Ana."] or None, timeout=WAIT)
            assert discord.threads_created == []


async def test_at_names_become_user_mentions_and_nobody_is_mass_mentioned(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        text = "Hi @ben and @Ana Maria, not @Ana! @everyone @here @nobody"
        llm.add(user=r"\(new\) Ana Maria: .*greet", tool_calls=_reply(text))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("Ana", guild=guild.id)
        ana_maria = discord.add_user("Ana Maria", guild=guild.id)
        ben = discord.add_user("ben", guild=guild.id)
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord) as system:
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            assert system.sup.ctl is not None
            dropped = await system.sup.ctl.events("gateway.gateway:discord:main.dropped")
            try:
                # Not for the bot (no mention), but ben and Ana have written here: they can be named.
                discord.post(general, ben.id, "lunch, anyone?")
                discord.post(general, ana.id, "me!")
                for _ in range(2):
                    await dropped.wait_for(lambda e: True, timeout=WAIT)
            finally:
                dropped.close()
            discord.post(general, ana_maria.id, f"{mention} greet everyone", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: (len(_shown(discord, general)) == 1 and "<@" in _shown(discord, general)[0]) or None,
                timeout=WAIT,
            )
            [reply] = [m for m in discord.bot_messages(general) if not m.deleted]
            assert reply.content == (
                f"Hi <@{ben.id}> and <@{ana_maria.id}>, not <@{ana.id}>! @\u200beveryone @\u200bhere @nobody"
            )
            # Sent with the message: only users may be notified (not everyone, not a role).
            assert reply.allowed_mentions is not None and reply.allowed_mentions["parse"] == ["users"]
            assert sorted(reply.mention_ids) == sorted([ben.id, ana_maria.id, ana.id])
            assert reply.mention_everyone is False


CARD = {
    "title": "Build 42",
    "text": "All green.",
    "fields": [{"name": "Tests", "value": "120 passed"}, {"name": "Time", "value": "3 min"}],
    "url": "https://ci.example/42",
    "color": "#22AA55",
}


async def test_a_card_is_an_embed_and_a_bad_one_is_an_error_the_model_can_fix(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(tool_result_content="'color' must be", tool_calls=_call(content="Build report", card=CARD))
        llm.add(user="report", tool_calls=_call(content="Build report", card={**CARD, "color": "green"}))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord):
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            discord.post(general, ana.id, f"<@{discord.bot.id}> report", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: (
                    [m.embeds for m in discord.bot_messages(general) if not m.deleted and m.embeds] or None
                ),
                timeout=WAIT,
            )
            [reply] = [m for m in discord.bot_messages(general) if not m.deleted]
            assert reply.content == "Build report"
            [embed] = reply.embeds
            assert (embed["title"], embed["description"], embed["url"], embed["color"]) == (
                "Build 42",
                "All green.",
                "https://ci.example/42",
                0x22AA55,
            )
            assert [(f["name"], f["value"]) for f in embed["fields"]] == [
                ("Tests", "120 passed"),
                ("Time", "3 min"),
            ]
            # The first call was refused with a reason the model could act on.
            assert len(llm.requests) == 2
            assert "'color' must be '#RRGGBB'" in json.dumps(llm.requests[-1].body)
