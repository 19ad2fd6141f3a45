"""Discord end to end: the real discord.py in ``gateway:discord:main`` against the loopback fake,
a real supervisor, memory and conversation processes, and a scripted fake model."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from spacebot.config import ConfigProblems, PlatformInstance, load
from spacebot.ipc.messages import Event, KillRequest, Kind, Notice, ProcState
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.discord_adapter import DiscordAdapter
from spacebot.messaging.fakes.discord import FakeDiscord
from spacebot.testing import ChatSystem
from tests.channel.test_delegation import GatedLLM

WAIT = 90.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
GW = "gateway:discord:main"


def _reply(content: str) -> list[FakeToolCall]:
    return [FakeToolCall("reply", {"content": content})]


def _sections(fake: FakeDiscord, **instance: Any) -> dict[str, Any]:
    inst = {
        "name": "main",
        "token": "env:TEST_DISCORD_TOKEN",
        "api_base": fake.api_url,
        "gateway_url": fake.gateway_url,
        "stream_edit_interval": 0.2,
        # The fake sends every GUILD_CREATE right after READY: no need to wait for more.
        "guild_ready_timeout": 0.1,
        **instance,
    }
    return {
        "messaging": {"discord": [inst]},
        "bindings": [
            {"agent": "main", "platform": "discord", "dms": True},
            {"agent": "main", "platform": "discord"},
        ],
    }


def _system(root: Path, llm: FakeLLM, discord: FakeDiscord, **instance: Any) -> ChatSystem:
    # Connecting to a platform is slower than the other test processes' start-up (the test budget
    # of 5 s would kill it on a busy machine).
    system = ChatSystem(
        root, llm, sections_extra=_sections(discord, **instance), gateway={"ready_timeout": 60.0}
    )
    system.sup.env["TEST_DISCORD_TOKEN"] = discord.token
    return system


def _shown(discord: FakeDiscord, channel: int) -> list[str]:
    """What the bot shows in ``channel`` now (its messages that were not deleted)."""
    return [m.content for m in discord.bot_messages(channel) if not m.deleted]


async def test_a_mention_gets_one_reply_and_other_messages_are_dropped(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="deploy", tool_calls=_reply("Deploying now."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord) as system:
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            assert system.sup.ctl is not None
            dropped = await system.sup.ctl.events(f"gateway.{GW}.dropped")
            try:
                discord.post(general, ana.id, "deploy without a mention: not for the bot")
                # Dropped before the mention is written, so it is older than the mention (a backfill
                # takes only what came strictly before the message that started the conversation).
                await dropped.wait_for(lambda e: isinstance(e.body, Notice), timeout=WAIT)
            finally:
                dropped.close()
            discord.post(general, ana.id, f"<@{discord.bot.id}> please deploy", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: _shown(discord, general) == ["Deploying now."] or None, timeout=WAIT
            )
            # The model was asked about the mentioned message; the other one is only context (the
            # new conversation's history, backfilled from the platform), never a question to answer.
            asked = llm.requests[-1].conversation.last_user
            assert "(new) ana: @spacebot please deploy" in asked
            assert "ana: deploy without a mention" in asked and "(new) ana: deploy without" not in asked
            assert len(llm.requests) == 1


async def test_a_rejected_token_fails_with_the_reason_and_is_not_restarted(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord() as discord:
        discord.guilds or discord.add_guild("community")
        system = _system(short_tmp, llm, discord)
        system.sup.env["TEST_DISCORD_TOKEN"] = "not-the-token"
        async with system:
            row = await system.sup.wait_state(GW, ProcState.FAILED, timeout=WAIT)
            assert row.task.startswith("failed: discord token rejected"), row.task
            assert row.restarts == 0


async def test_a_gateway_killed_mid_stream_leaves_exactly_one_final_reply(short_tmp: Path) -> None:
    long = " ".join(f"word{i}" for i in range(120))
    async with FakeLLM(token_latency=0.02) as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="essay", tool_calls=_reply(long))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        async with _system(short_tmp, llm, discord) as system:
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            discord.post(general, ana.id, f"<@{discord.bot.id}> write an essay", mentions=[discord.bot.id])
            # The reply is being streamed: the bot's message shows part of it.
            await discord.wait_for(lambda: discord.bot_messages(general) or None, timeout=WAIT)
            row = await system.sup.info(GW)
            os.kill(row.pid, signal.SIGKILL)
            await discord.wait_for(lambda: _shown(discord, general) == [long] or None, timeout=WAIT)
            # One message, edited from the streamed text to the final one: nothing posted twice.
            assert len(discord.bot_messages(general)) == 1


async def test_messages_written_while_the_gateway_was_down_are_answered_once(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="first", tool_calls=_reply("First answer."))
        llm.add(user="second", tool_calls=_reply("Second answer."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord) as system:
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            discord.post(general, ana.id, f"{mention} first question", mentions=[discord.bot.id])
            await discord.wait_for(
                lambda: _shown(discord, general) == ["First answer."] or None, timeout=WAIT
            )
            # The gateway dies; the platform keeps new connections waiting while a person writes.
            discord.hold_gateway()
            row = await system.sup.info(GW)
            os.kill(row.pid, signal.SIGKILL)
            await discord.wait_for(lambda: not discord.connected_sessions() or None, timeout=WAIT)
            discord.post(general, ana.id, f"{mention} second question", mentions=[discord.bot.id])
            discord.release_gateway()
            # A new session gets no replay of what it missed: the restarted gateway reads it back.
            await discord.wait_for(
                lambda: _shown(discord, general) == ["First answer.", "Second answer."] or None, timeout=WAIT
            )
            # Each question was asked of the model once (the catch-up also read the first one back).
            assert len(llm.requests) == 2
            assert "(new) ana: @spacebot second question" in llm.requests[-1].conversation.last_user
            # The restarted gateway did not backfill the channel again (the bot's own answer would
            # come back as a person's line).
            assert "spacebot: First answer" not in llm.requests[-1].conversation.last_user


async def test_replies_stored_while_the_gateway_was_down_keep_their_card_and_thread(short_tmp: Path) -> None:
    card = {"title": "Build 42", "text": "All green.", "fields": [{"name": "Tests", "value": "120 passed"}]}
    async with GatedLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(
            name="card",
            user="report",
            tool_calls=[FakeToolCall("reply", {"content": "Report", "card": card})],
        )
        llm.add(
            name="thread",
            user="deploy",
            tool_calls=[FakeToolCall("reply", {"content": "On it.", "thread_name": "Deploy"})],
        )
        gates = [llm.gate("card"), llm.gate("thread")]
        guild = discord.add_guild("community", channels=("general", "ops"))
        general, ops = guild.channel_ids
        ana = discord.add_user("ana", guild=guild.id)
        mention = f"<@{discord.bot.id}>"
        async with _system(short_tmp, llm, discord) as system:
            assert system.sup.ctl is not None
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            turns = await system.sup.ctl.events("channel.")
            try:
                discord.post(general, ana.id, f"{mention} report", mentions=[discord.bot.id])
                asked = discord.post(ops, ana.id, f"{mention} please deploy", mentions=[discord.bot.id])
                await llm.reached("card")
                await llm.reached("thread")
                # The gateway stops while both are being answered: the replies are stored, and the
                # ``OutMessage`` carrying their card and thread has nowhere to go.
                await system.sup.ctl.call(KillRequest(GW, restart=False), timeout=WAIT)
                await system.sup.wait_state(GW, ProcState.EXITED, timeout=WAIT)
                for gate in gates:
                    gate.set()
                ended: set[str] = set()

                def turned(event: Event) -> bool:
                    if isinstance(event.body, Notice) and event.body.text == "turn":
                        ended.add(event.src)
                    return len(ended) == 2

                await turns.wait_for(turned, timeout=WAIT)
            finally:
                turns.close()
            assert discord.bot_messages(general) == [] and discord.threads_created == []
            await system.sup.spawn(
                "spacebot.messaging.gateway_core:run",
                kind=Kind.GATEWAY,
                id=GW,
                args={"platform": "discord", "instance": "main"},
                timeout=WAIT,
            )
            # Posted by the restarted gateway as they were meant: the card as an embed, the other
            # reply in the thread it opens on the message it answers.
            await discord.wait_for(
                lambda: (_shown(discord, asked.id) == ["On it."] and discord.bot_messages(general)) or None,
                timeout=WAIT,
            )
            [report] = discord.bot_messages(general)
            assert report.content == "Report"
            [embed] = report.embeds
            assert (embed["title"], embed["description"]) == ("Build 42", "All green.")
            assert [(f["name"], f["value"]) for f in embed["fields"]] == [("Tests", "120 passed")]
            assert discord.threads_created == [asked.id]
            assert (discord.channels[asked.id].name, discord.channels[asked.id].parent_id) == ("Deploy", ops)
            assert _shown(discord, ops) == []
            assert len(llm.requests) == 2


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000100e221bc330000000049454e44ae426082"
)
"""A 1×1 PNG."""


async def test_attachments_reach_the_model_and_are_saved(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeDiscord(heartbeat_interval_ms=1000) as discord:
        llm.add(user="look", tool_calls=_reply("Seen."))
        guild = discord.add_guild("community")
        general = guild.channel_ids[0]
        ana = discord.add_user("ana", guild=guild.id)
        system = ChatSystem(
            short_tmp,
            llm,
            sections_extra=_sections(discord),
            channel={"save_attachments": True},
            gateway={"ready_timeout": 60.0},
        )
        system.sup.env["TEST_DISCORD_TOKEN"] = discord.token
        async with system:
            await discord.wait_for(lambda: discord.connected_sessions() or None, timeout=WAIT)
            discord.post(
                general,
                ana.id,
                f"<@{discord.bot.id}> look at these",
                mentions=[discord.bot.id],
                attachments=[
                    ("my photo (1).png", PNG),
                    ("notes.txt", b"line one\nline two"),
                    ("a.bin", b"\0\1"),
                ],
            )
            await discord.wait_for(lambda: _shown(discord, general) == ["Seen."] or None, timeout=WAIT)
        asked = llm.requests[-1]
        # The text file is inlined, the binary one named, the image shown as an image part.
        assert (
            "[file notes.txt]" in asked.conversation.last_user and "line two" in asked.conversation.last_user
        )
        assert "a.bin" in asked.conversation.last_user
        user_parts = [m["content"] for m in asked.body["messages"] if m["role"] == "user"][-1]
        assert isinstance(user_parts, list) and any(p.get("type") == "image_url" for p in user_parts)
        # Saved for workers, under names reduced to safe file names.
        saved = sorted(
            p.name for p in (system.sup.home / "agents/main/workspace/saved").rglob("*") if p.is_file()
        )
        assert saved == ["a.bin", "my_photo_1_.png", "notes.txt"]


async def test_guild_ready_timeout_reaches_discord_py_and_a_negative_one_is_refused(tmp_path: Path) -> None:
    default = DiscordAdapter(PlatformInstance(token="t"), "t")
    short = DiscordAdapter(PlatformInstance(token="t", guild_ready_timeout=0.25), "t")
    try:
        assert default.client._connection.guild_ready_timeout == 2.0  # discord.py's own default
        assert short.client._connection.guild_ready_timeout == 0.25
    finally:
        await default.close()
        await short.close()
    path = tmp_path / "config.toml"
    path.write_text('agents = ["main"]\n[[messaging.discord]]\ntoken = "env:T"\nguild_ready_timeout = -1\n')
    with pytest.raises(ConfigProblems) as caught:
        load(path, {})
    found = {p.key: p.message for p in caught.value.problems}
    assert found == {"messaging.discord[0].guild_ready_timeout": "must be >= 0"}
