"""The real discord.py client against the loopback fake Discord (REST v10 + JSON gateway)."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import warnings
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest

from spacebot.messaging.fakes.discord import (
    FakeDiscord,
    Guild,
    User,
    point_discord_py_at,
    restore_discord_py,
)

with warnings.catch_warnings():
    # discord.py imports the stdlib ``audioop`` (for voice), deprecated since Python 3.11.
    warnings.simplefilter("ignore", DeprecationWarning)
    import discord

T = TypeVar("T")
CREATE = "POST /channels/{channel_id}/messages"
DEADLINE_S = 10.0


class Bot(discord.Client):
    """A discord.py client that records what it receives, for tests to wait on."""

    def __init__(self, *, message_content: bool = True) -> None:
        intents = discord.Intents.default()
        intents.message_content = message_content
        # discord.py waits this long after the last GUILD_CREATE before on_ready.
        super().__init__(intents=intents, guild_ready_timeout=0.05)
        self.received: list[discord.Message] = []
        self.edits: list[discord.Message] = []
        self.threads: list[discord.Thread] = []
        self.resumed = 0
        self.typing: list[tuple[int, int]] = []
        self._changed = asyncio.Event()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """No pause before a re-IDENTIFY (discord.py waits 5 s, Discord's identify limit)."""

    def _bump(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def on_message(self, message: discord.Message) -> None:
        self.received.append(message)
        self._bump()

    async def on_message_edit(self, before: discord.Message, after: discord.Message) -> None:
        self.edits.append(after)
        self._bump()

    async def on_thread_create(self, thread: discord.Thread) -> None:
        self.threads.append(thread)
        self._bump()

    async def on_typing(self, channel: Any, user: Any, when: Any) -> None:
        self.typing.append((channel.id, user.id))
        self._bump()

    async def on_resumed(self) -> None:
        self.resumed += 1
        self._bump()

    async def seen(self, predicate: Callable[[], T | None]) -> T:
        """Wait until ``predicate()`` is truthy after some event; return its value."""
        async with asyncio.timeout(DEADLINE_S):
            while True:
                changed = self._changed
                value = predicate()
                if value:
                    return value
                await changed.wait()

    async def message(self, content: str) -> discord.Message:
        """Wait for a received message with this content."""
        return await self.seen(lambda: next((m for m in self.received if m.content == content), None))


@dataclass
class World:
    fake: FakeDiscord
    guild: Guild
    general: int
    alice: User


@pytest.fixture
async def world() -> AsyncIterator[World]:
    async with FakeDiscord(heartbeat_interval_ms=200) as fake:
        guild = fake.add_guild("Test Guild")
        alice = fake.add_user("alice", guild=guild.id)
        point_discord_py_at(fake.api_url, fake.gateway_url)
        try:
            yield World(fake, guild, guild.channel_ids[0], alice)
        finally:
            restore_discord_py()


@pytest.fixture
async def bot(world: World) -> AsyncIterator[Bot]:
    client = Bot()
    await client.login(world.fake.token)
    task = asyncio.create_task(client.connect())
    try:
        async with asyncio.timeout(DEADLINE_S):
            await client.wait_until_ready()
        yield client
    finally:
        await client.close()
        await task


async def test_ready_with_guild_and_channels(world: World, bot: Bot) -> None:
    guild = bot.get_guild(world.guild.id)
    assert guild is not None and guild.name == "Test Guild"
    channel = guild.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel) and channel.name == "general"
    assert bot.user is not None and bot.user.id == world.fake.bot.id and bot.user.bot
    assert guild.me.id == world.fake.bot.id and guild.member_count == 2
    assert world.fake.identifies == 1
    assert world.fake.rest_calls["GET /users/@me"] == 1


async def test_heartbeats_are_acknowledged(world: World, bot: Bot) -> None:
    await world.fake.wait_for(lambda: world.fake.heartbeats >= 3)
    # An unacknowledged heartbeat makes discord.py drop the socket and resume.
    assert world.fake.resumes == 0 and len(world.fake.connected_sessions()) == 1


async def test_person_post_arrives_as_on_message(world: World, bot: Bot) -> None:
    posted = world.fake.post(
        world.general, world.alice.id, f"hello <@{world.fake.bot.id}>", mentions=[world.fake.bot.id]
    )
    msg = await bot.message(f"hello <@{world.fake.bot.id}>")
    assert msg.id == posted.id
    assert msg.guild is not None and msg.guild.id == world.guild.id
    assert isinstance(msg.channel, discord.TextChannel) and msg.channel.id == world.general
    assert isinstance(msg.author, discord.Member) and msg.author.name == "alice"
    assert [u.id for u in msg.mentions] == [world.fake.bot.id]


async def test_person_attachment_and_typing(world: World, bot: Bot) -> None:
    world.fake.start_typing(world.general, world.alice.id)
    await bot.seen(lambda: (world.general, world.alice.id) in bot.typing)
    world.fake.post(world.general, world.alice.id, "log attached", attachments=[("log.txt", b"boom")])
    msg = await bot.message("log attached")
    [att] = msg.attachments
    assert att.filename == "log.txt" and att.size == 4 and att.content_type == "text/plain"
    assert await att.read() == b"boom"


async def test_content_needs_the_message_content_intent(world: World) -> None:
    client = Bot(message_content=False)
    await client.login(world.fake.token)
    task = asyncio.create_task(client.connect())
    try:
        async with asyncio.timeout(DEADLINE_S):
            await client.wait_until_ready()
        world.fake.post(world.general, world.alice.id, "secret")
        mention = f"<@{world.fake.bot.id}> hi"
        world.fake.post(world.general, world.alice.id, mention, mentions=[world.fake.bot.id])
        await client.message(mention)  # mentioning the bot shows the content, as on Discord
        assert [m.content for m in client.received] == ["", mention]
    finally:
        await client.close()
        await task


async def test_reply_and_edit_by_person(world: World, bot: Bot) -> None:
    first = world.fake.post(world.general, world.alice.id, "question")
    world.fake.post(world.general, world.alice.id, "follow-up", reply_to=first.id)
    reply = await bot.message("follow-up")
    assert reply.reference is not None and reply.reference.message_id == first.id
    world.fake.edit(first.id, "question, edited")
    edited = await bot.seen(lambda: next((m for m in bot.edits if m.id == first.id), None))
    assert edited.content == "question, edited"


async def test_bot_send_is_recorded_and_echoed(world: World, bot: Bot) -> None:
    channel = bot.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("hi there", embed=discord.Embed(title="card"))
    [record] = world.fake.bot_messages(world.general)
    assert record.id == sent.id and record.content == "hi there"
    assert record.embeds[0]["title"] == "card"
    echo = await bot.message("hi there")
    assert echo.author.id == world.fake.bot.id and echo.id == sent.id


async def test_edit_reaction_typing_delete(world: World, bot: Bot) -> None:
    channel = bot.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel)
    async with channel.typing():
        sent = await channel.send("draft")
    assert world.fake.typing[world.general] >= 1
    await sent.edit(content="final")
    await sent.add_reaction("\N{THUMBS UP SIGN}")
    record = world.fake.messages[sent.id]
    assert record.content == "final"
    assert [e["content"] for e in record.edits] == ["draft"]
    assert record.reactions == [("\N{THUMBS UP SIGN}", world.fake.bot.id)]
    await sent.delete()
    assert world.fake.messages[sent.id].deleted
    assert world.fake.rest_calls["DELETE /channels/{channel_id}/messages/{message_id}"] == 1


async def test_thread_from_message(world: World, bot: Bot) -> None:
    world.fake.post(world.general, world.alice.id, "start a thread please")
    msg = await bot.message("start a thread please")
    thread = await msg.create_thread(name="discussion")
    assert world.fake.threads_created == [thread.id]
    assert thread.parent_id == world.general and thread.name == "discussion"
    created = await bot.seen(lambda: next((t for t in bot.threads if t.id == thread.id), None))
    assert created.parent_id == world.general
    await thread.send("in the thread")
    world.fake.post(thread.id, world.alice.id, "answer in thread")
    answer = await bot.message("answer in thread")
    assert isinstance(answer.channel, discord.Thread)
    assert answer.channel.parent is not None and answer.channel.parent.id == world.general
    assert [m.content for m in world.fake.bot_messages(thread.id)] == ["in the thread"]


async def test_file_upload(world: World, bot: Bot) -> None:
    channel = bot.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel)
    sent = await channel.send("report", file=discord.File(io.BytesIO(b"line 1\n"), filename="r.txt"))
    [att] = world.fake.messages[sent.id].attachments
    assert att["filename"] == "r.txt" and att["data"] == "line 1\n" and att["size"] == 7
    assert [a.filename for a in sent.attachments] == ["r.txt"]


async def test_dm_channel(world: World, bot: Bot) -> None:
    dm = world.fake.open_dm(world.alice.id)
    world.fake.post(dm.id, world.alice.id, "psst")
    msg = await bot.message("psst")
    assert msg.guild is None and isinstance(msg.channel, discord.DMChannel)
    await msg.channel.send("hello privately")
    user = await bot.fetch_user(world.alice.id)
    await user.send("second")
    assert [m.content for m in world.fake.bot_messages(dm.id)] == ["hello privately", "second"]
    assert world.fake.rest_calls["POST /users/@me/channels"] == 1


async def test_history_newest_first_with_before(world: World, bot: Bot) -> None:
    posted = [world.fake.post(world.general, world.alice.id, f"m{i}") for i in range(5)]
    channel = bot.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel)
    latest = [m.content async for m in channel.history(limit=2)]
    assert latest == ["m4", "m3"]
    older = [m.content async for m in channel.history(limit=10, before=discord.Object(posted[2].id))]
    assert older == ["m1", "m0"]


async def test_nonce_is_enforced(world: World, bot: Bot) -> None:
    channel = bot.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel)
    first = await channel.send("once", nonce=42)
    again = await channel.send("once", nonce=42)
    assert first.id == again.id
    assert len(world.fake.bot_messages(world.general)) == 1
    assert world.fake.rest_calls[CREATE] == 2


async def test_rate_limited_create_is_retried_once(world: World, bot: Bot) -> None:
    channel = bot.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel)
    world.fake.rate_limit(CREATE, 1, retry_after=0.01)
    await channel.send("after a 429")
    assert world.fake.rate_limited[CREATE] == 1
    assert world.fake.rest_calls[CREATE] == 2
    assert [m.content for m in world.fake.bot_messages()] == ["after a 429"]


async def test_global_rate_limit_is_retried(world: World, bot: Bot) -> None:
    channel = bot.get_channel(world.general)
    assert isinstance(channel, discord.TextChannel)
    world.fake.rate_limit(CREATE, 2, retry_after=0.01, is_global=True)
    await channel.send("global")
    assert world.fake.rate_limited[CREATE] == 2
    assert [m.content for m in world.fake.bot_messages()] == ["global"]


@pytest.mark.parametrize("code", [4000, None], ids=["close-4000", "abort"])
async def test_dropped_connection_resumes_and_replays_once(world: World, bot: Bot, code: int | None) -> None:
    fake = world.fake
    fake.hold_gateway()
    assert await fake.drop_gateway(code) == 1
    fake.post(world.general, world.alice.id, "while away")
    fake.release_gateway()
    await bot.message("while away")
    await bot.seen(lambda: bot.resumed == 1)
    fake.post(world.general, world.alice.id, "after")
    await bot.message("after")  # same socket, so any duplicate of the replay came before it
    assert [m.content for m in bot.received].count("while away") == 1
    assert fake.resumes == 1 and fake.identifies == 1


async def test_op7_reconnect_resumes(world: World, bot: Bot) -> None:
    await world.fake.send_reconnect()
    await bot.seen(lambda: bot.resumed == 1)
    world.fake.post(world.general, world.alice.id, "still here")
    await bot.message("still here")
    assert world.fake.identifies == 1


async def test_op9_invalid_session_identifies_anew(world: World, bot: Bot) -> None:
    await world.fake.invalidate_session(resumable=False)
    await world.fake.wait_for(lambda: world.fake.identifies == 2 and world.fake.connected_sessions())
    world.fake.post(world.general, world.alice.id, "new session")
    await bot.message("new session")
    assert world.fake.resumes == 0


async def test_wrong_token_fails_login(world: World) -> None:
    client = Bot()
    try:
        with pytest.raises(discord.LoginFailure):
            await client.start("not-the-token")
    finally:
        await client.close()
    assert world.fake.identifies == 0


async def test_revoked_token_closes_gateway_with_4004(world: World) -> None:
    client = Bot()
    try:
        await client.login(world.fake.token)
        world.fake.revoke_token()
        with pytest.raises(discord.ConnectionClosed) as info:
            await client.connect()
        assert info.value.code == 4004
    finally:
        await client.close()


async def test_disallowed_intents_4014(world: World) -> None:
    world.fake.close_on_identify(4014)
    client = Bot()
    try:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await client.start(world.fake.token)
    finally:
        await client.close()


async def test_http_test_api(world: World, bot: Bot) -> None:
    fake = world.fake
    async with aiohttp.ClientSession(fake.url) as http:

        async def call(path: str, body: dict[str, Any]) -> dict[str, Any]:
            async with http.post("/_fake/" + path, json=body) as resp:
                assert resp.status == 200, await resp.text()
                data: dict[str, Any] = await resp.json()
                return data

        bob = await call("users", {"username": "bob", "guild_id": world.guild.id})
        posted = await call(
            "post", {"channel_id": world.general, "author_id": bob["id"], "content": "via http"}
        )
        msg = await bot.message("via http")
        assert msg.author.name == "bob" and msg.id == posted["id"]
        await msg.channel.send("answer")
        await call("faults/rate-limit", {"route": CREATE, "count": 1})
        async with http.get("/_fake/state") as resp:
            state = await resp.json()
        assert [m["content"] for m in state["messages"] if m["author_id"] == fake.bot.id] == ["answer"]
        assert state["rest_calls"][CREATE] == 1 and state["connected"] == 1
        async with http.post("/_fake/post", json={"channel_id": 1, "author_id": 1, "content": "x"}) as resp:
            assert resp.status == 404 and "no channel 1" in (await resp.json())["error"]


async def test_cli_serves_until_sigterm(tmp_path: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spacebot.cli.main",
        "fake-discord",
        "--port",
        "0",
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            info = json.loads(await proc.stdout.readline())
        assert info["api_url"].endswith("/api/v10") and info["gateway_url"].startswith("ws://127.0.0.1:")
        async with aiohttp.ClientSession() as http, http.get(info["url"] + "/_fake/state") as resp:
            state = await resp.json()
        assert [g["id"] for g in state["guilds"]] == [info["guild_id"]]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
