"""Six front doors at once: Discord, Slack, the web chat, Telegram, Twitch and a webhook → one
Spacebot → fake model.

One system (supervisor, memory, ``gateway:discord:main``, ``gateway:slack:main``,
``gateway:webchat``, ``gateway:telegram:main``, ``gateway:twitch:main``, ``gateway:webhook:main``,
conversation processes) with the loopback Discord, Slack, Telegram and Twitch running in this
script's event loop and the fake model in its own process (``L`` ms to its first event, then a
short ``reply`` tool call). Per platform, N conversations (Discord, Slack: one channel each;
Telegram: one group each; Twitch: one channel each; web chat and webhook: one conversation each)
take turns: a person's question addressed to the bot (a mention; on Twitch the ``!ask`` trigger
prefix; a webhook ``POST /send``), wait for the final reply, pause (``--think`` s on average),
``M / N`` times. Every question carries a token that the model echoes, so a reply is matched to its
question:

    overhead = (first visible reply) − (send) − L

First visible: the fake platform's receive time of the bot's first post in that channel after the
question (on Discord ``Message.created_at``, on Slack the post's ``ts``, on Telegram the message's
``date``, on Twitch the ``PRIVMSG``'s arrival — Twitch has no edits, so it is the final reply); on
the web chat, the first ``delta`` or ``message`` frame for the conversation; on the webhook, when a
long-poll ``GET /poll`` returns the reply. A conversation's first question starts its process
(reported apart as ``cold``). Lost = no final reply within ``--deadline``; doubled = more than one
final reply shown for a question (counted after the run settles). Mid-run (once half of all
questions are sent) one platform gateway is SIGKILLed (``--kill``); the supervisor restarts it and
the run goes on. ``--platforms`` picks a subset (comma list).

    python bench/platforms.py [--conversations 20] [--messages 120] [--latency-ms 200]
                              [--platforms discord,slack,webchat,telegram,twitch,webhook]
                              [--kill gateway:discord:main] [--json]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp
from _common import BENCH_LIMITS, emit, machine, parser, percentile

from spacebot.messaging.fakes.discord import FakeDiscord
from spacebot.messaging.fakes.slack import FakeSlack
from spacebot.messaging.fakes.telegram import FakeTelegram
from spacebot.messaging.fakes.twitch import FakeTwitch
from spacebot.messaging.ports import listening_port
from spacebot.messaging.telegram_adapter import session_path
from spacebot.testing import ChatSystem, FakeLLMProcess, short_tempdir

PLATFORMS = ("discord", "slack", "webchat", "telegram", "twitch", "webhook")
LETTER = {"discord": "d", "slack": "s", "webchat": "w", "telegram": "t", "twitch": "h", "webhook": "k"}
"""The letter of a platform in its questions' tokens (``Qd3n1``: Discord, conversation 3, round 1)."""
TOKEN_RE = r"\(new\)[^\n]*?\b(Q[dswthk]\d+n\d+)\b"
"""The token of the question the model is asked to answer (its ``(new)`` line)."""


def _final(token: str) -> str:
    return f"answer {token}."


@dataclass
class Question:
    """One question and what became of it (times in ``time.monotonic()`` seconds)."""

    platform: str
    conv: int
    round: int
    token: str
    sent: float = 0.0
    first: float | None = None
    final: float | None = None
    finals: int = 0
    """Final replies shown for it, counted after the run settles."""


@dataclass
class Pending:
    """What a platform watcher resolves for the question a channel is waiting on."""

    question: Question
    after: int
    """Index in the channel's bot messages from which replies may belong to it."""
    first: asyncio.Future[None]
    final: asyncio.Future[None]


@dataclass
class Watch:
    """Bot messages per channel, seen through the fake's change notifications (one scan per change
    of only what is new, instead of every waiter scanning the whole fake)."""

    bot: dict[Any, list[Any]] = field(default_factory=dict)
    pending: dict[Any, Pending] = field(default_factory=dict)
    stop: bool = False

    def resolve(self, text_of: Callable[[Any], str], at: Callable[[Any], float]) -> None:
        for channel, p in list(self.pending.items()):
            mine = self.bot.get(channel, [])[p.after :]
            if not mine:
                continue
            if not p.first.done():
                p.question.first = at(mine[0])
                p.first.set_result(None)
            want = _final(p.question.token)
            if any(text_of(m) == want and not getattr(m, "deleted", False) for m in mine):
                p.question.final = time.monotonic()
                p.final.set_result(None)
                del self.pending[channel]


class _Model:
    """The fake model server in its own process (its work must not share our event loop)."""

    def __init__(self, latency: float, root: Path) -> None:
        reply = {"name": "reply", "arguments": {"content": "answer {user_group}."}}
        script = {
            "rules": [{"name": "bench", "user": TOKEN_RE, "tool_calls": [reply]}],
            "default": {
                "name": "unmatched",
                "tool_calls": [{"name": "reply", "arguments": {"content": "?"}}],
            },
        }
        self.path = root / "platforms_bench_script.json"
        self.path.write_text(json.dumps(script))
        self.server = FakeLLMProcess(self.path, latency)


class Bench:
    """The platforms' people, the kill, and the bookkeeping."""

    def __init__(self, args: Any) -> None:
        self.n = args.conversations
        self.m = args.messages
        self.lat = args.latency_ms / 1000
        self.think = args.think
        self.deadline = args.deadline
        self.kill_target = args.kill
        self.verbose = args.verbose
        self.platforms: tuple[str, ...] = args.platforms
        self.started = 0.0
        self.rng = random.Random(11)
        self.questions: dict[str, list[Question]] = {p: [] for p in self.platforms}
        self.discord = FakeDiscord(heartbeat_interval_ms=5000)
        self.slack = FakeSlack()
        self.telegram = FakeTelegram()
        self.twitch = FakeTwitch()
        self.dwatch = Watch()
        self.swatch = Watch()
        self.gwatch = Watch()
        self.hwatch = Watch()
        self.sent = {p: 0 for p in self.platforms}
        self.half = asyncio.Event()
        self.kill: dict[str, Any] = {}
        self.system: ChatSystem | None = None
        self.webhook_url = ""

    # -- watchers --------------------------------------------------------------------------------

    async def _watch_discord(self) -> None:
        d, w, seen = self.discord, self.dwatch, 0

        def scan() -> bool:
            nonlocal seen
            msgs = list(d.messages.values())
            for msg in msgs[seen:]:
                if msg.author_id == d.bot.id:
                    w.bot.setdefault(msg.channel_id, []).append(msg)
            seen = len(msgs)
            w.resolve(lambda m: m.content, lambda m: m.created_at)
            return w.stop

        await d.wait_for(scan, timeout=24 * 3600)

    async def _watch_slack(self) -> None:
        s, w = self.slack, self.swatch
        # Slack's ``ts`` is wall-clock: map it to monotonic through one fixed offset.
        offset = time.monotonic() - time.time()

        def scan() -> bool:
            for channel, msgs in s.messages.items():
                w.bot[channel] = [m for m in msgs if m.user == s.bot_user]
            w.resolve(lambda m: m.text, lambda m: float(m.ts) + offset)
            return w.stop

        await s.wait_for(scan, timeout=24 * 3600)

    async def _watch_telegram(self) -> None:
        tg, w = self.telegram, self.gwatch
        # A Telegram message's ``date`` is wall-clock, as Slack's ``ts``.
        offset = time.monotonic() - time.time()

        def scan() -> bool:
            for chat, msgs in tg.messages.items():
                w.bot[chat] = [m for m in msgs if m.by_bot]
            w.resolve(lambda m: m.text, lambda m: m.date + offset)
            return w.stop

        await tg.wait_for(scan, timeout=24 * 3600)

    async def _watch_twitch(self) -> None:
        tw, w = self.twitch, self.hwatch

        def scan() -> bool:
            shown: dict[str, list[Any]] = {}
            for s in tw.sent:
                if not s.refused:
                    shown.setdefault(s.channel, []).append(s)
            w.bot.update(shown)
            w.resolve(lambda s: s.text, lambda s: s.at)  # ``at``: monotonic, this process's clock
            return w.stop

        await tw.wait_for(scan, timeout=24 * 3600)

    # -- people ----------------------------------------------------------------------------------

    async def _ask_fake(self, q: Question, watch: Watch, channel: Any, post: Callable[[], Any]) -> None:
        loop = asyncio.get_running_loop()
        p = Pending(q, len(watch.bot.get(channel, [])), loop.create_future(), loop.create_future())
        watch.pending[channel] = p
        q.sent = time.monotonic()
        post()
        self._count(q.platform)
        try:
            await asyncio.wait_for(asyncio.shield(p.final), self.deadline)
        except TimeoutError:
            watch.pending.pop(channel, None)

    async def _ask_web(self, q: Question, chat: Any, conv: str) -> None:
        mark = len(chat.frames)
        q.sent = time.monotonic()
        ack = await chat.send(conv, f"question {q.token}")
        self._count(q.platform)
        if ack["type"] != "ack":
            return
        want = _final(q.token)
        try:
            async with asyncio.timeout(self.deadline):
                await chat.wait_for(
                    lambda f: (
                        f.get("conversation") == conv
                        and (
                            f["type"] == "delta"
                            or (f["type"] == "message" and f["message"]["role"] == "assistant")
                        )
                    ),
                    since=mark,
                )
                q.first = time.monotonic()
                await chat.wait_for(
                    lambda f: (
                        f["type"] == "message"
                        and f["conversation"] == conv
                        and f["message"]["role"] == "assistant"
                        and f["message"]["text"] == want
                    ),
                    since=mark,
                )
                q.final = time.monotonic()
        except TimeoutError:
            pass

    async def _ask_webhook(self, q: Question, http: aiohttp.ClientSession, cursors: list[int]) -> None:
        """``POST /send``, then long-poll ``GET /poll`` from the conversation's cursor until the
        final reply comes; first visible is the first poll that returns any reply."""
        body = {
            "conversation_id": f"c{q.conv}",
            "sender_id": "bench",
            "sender_name": "Bench",
            "message": f"question {q.token}",
            "idempotency_key": q.token,
        }
        want = _final(q.token)
        q.sent = time.monotonic()
        try:
            async with asyncio.timeout(self.deadline):
                try:
                    await self._webhook("POST", "/send", http, json=body)
                finally:
                    self._count(q.platform)
                while q.final is None:
                    params = {"after": str(cursors[q.conv]), "timeout": "30"}
                    page = await self._webhook("GET", f"/poll/c{q.conv}", http, params=params)
                    if not page["messages"]:
                        continue
                    q.first = q.first or time.monotonic()
                    cursors[q.conv] = page["cursor"]
                    if any(m["text"] == want for m in page["messages"]):
                        q.final = time.monotonic()
        except TimeoutError:
            pass

    async def _webhook(self, method: str, path: str, http: aiohttp.ClientSession, **kw: Any) -> Any:
        """One webhook request, sent again (same body: the idempotency key keeps it one message)
        while the gateway is down or restarting (its new process listens on another port)."""
        while True:
            try:
                if not self.webhook_url:
                    self.webhook_url = await self._webhook_where()
                async with http.request(method, f"{self.webhook_url}{path}", **kw) as resp:
                    answer = await resp.json()
                    if resp.status in (200, 202):
                        return answer
                    if resp.status != 503:
                        raise RuntimeError(f"webhook {method} {path}: {resp.status} {answer}")
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, aiohttp.ContentTypeError):
                self.webhook_url = ""
            await asyncio.sleep(0.1)

    async def _webhook_where(self) -> str:
        """The webhook gateway's URL now ("" while it is not listening)."""
        assert self.system is not None
        row = await self.system.sup.info("gateway:webhook:main")
        port = await asyncio.to_thread(listening_port, row.pid) if row.pid else 0
        return f"http://127.0.0.1:{port}" if port else ""

    def _count(self, platform: str) -> None:
        self.sent[platform] += 1
        if sum(self.sent.values()) >= len(self.platforms) * self.m // 2:
            self.half.set()

    async def _conversation(self, platform: str, i: int, ask: Callable[[Question], Any]) -> None:
        rounds = len(range(i, self.m, self.n))
        await asyncio.sleep(self.rng.uniform(0, self.think))
        for r in range(rounds):
            if r:
                await asyncio.sleep(self.rng.uniform(0.5 * self.think, 1.5 * self.think))
            q = Question(platform, i, r, f"Q{LETTER[platform]}{i}n{r}")
            self.questions[platform].append(q)
            await ask(q)

    # -- the run ---------------------------------------------------------------------------------

    def _sections(self) -> dict[str, Any]:
        messaging: dict[str, list[dict[str, Any]]] = {}
        if "discord" in self.platforms:
            messaging["discord"] = [
                {
                    "name": "main",
                    "token": "env:BENCH_DISCORD_TOKEN",
                    "api_base": self.discord.api_url,
                    "gateway_url": self.discord.gateway_url,
                }
            ]
        if "slack" in self.platforms:
            messaging["slack"] = [
                {
                    "name": "main",
                    "app_token": self.slack.app_token,
                    "bot_token": self.slack.bot_token,
                    "api_base": self.slack.api_url,
                }
            ]
        if "telegram" in self.platforms:
            messaging["telegram"] = [
                {
                    "name": "main",
                    "token": "env:BENCH_TELEGRAM_TOKEN",
                    "api_id": 12345,
                    "api_hash": "fake-api-hash",
                    "gateway_url": f"tcp://127.0.0.1:{self.telegram.port}",
                }
            ]
        if "twitch" in self.platforms:
            messaging["twitch"] = [
                {
                    "name": "main",
                    "token": "env:BENCH_TWITCH_TOKEN",
                    "bot_name": self.twitch.bot_name,
                    "channels": [f"c{i}" for i in range(self.n)],
                    "trigger_prefix": "!ask",
                    "gateway_url": self.twitch.gateway_url,
                    "api_base": self.twitch.api_url,
                }
            ]
        if "webhook" in self.platforms:
            messaging["webhook"] = [{"name": "main", "port": 0}]
        return {
            "messaging": messaging,
            "bindings": [{"agent": "main", "platform": p} for p in messaging],
        }

    async def _killer(self, system: ChatSystem) -> None:
        await self.half.wait()
        row = await system.sup.info(self.kill_target)
        os.kill(row.pid, signal.SIGKILL)
        self.kill = {"target": self.kill_target, "pid": row.pid, "at": time.monotonic()}

    async def run(self) -> dict[str, Any]:
        root = short_tempdir("sb-plat-")
        model = _Model(self.lat, root)
        await model.server.start()
        tasks: list[asyncio.Task[Any]] = []
        on = self.platforms
        try:
            async with contextlib.AsyncExitStack() as stack:
                for name, fake in (
                    ("discord", self.discord),
                    ("slack", self.slack),
                    ("telegram", self.telegram),
                    ("twitch", self.twitch),
                ):
                    if name in on:
                        await stack.enter_async_context(fake)
                guild = self.discord.add_guild("bench", channels=tuple(f"c{i}" for i in range(self.n)))
                ana = self.discord.add_user("ana", guild=guild.id)
                self.slack.add_user("ada", id="U0ADA")
                s_chans = [self.slack.add_channel(f"c{i}").id for i in range(self.n)]
                gana = self.telegram.add_user("Ana", username="ana")
                g_chats = [self.telegram.add_group(f"c{i}").id for i in range(self.n)]
                h_chans = [f"c{i}" for i in range(self.n)]
                system = self.system = ChatSystem(
                    root,
                    model.server,
                    channel={"idle_timeout": 0},
                    webchat=dict[str, object](BENCH_LIMITS),
                    sections_extra=self._sections(),
                    gateway={"ready_timeout": 60.0},
                    fast=False,  # production heartbeats and supervision, not the tests' short ones
                )
                system.sup.env["BENCH_DISCORD_TOKEN"] = self.discord.token
                system.sup.env["BENCH_TELEGRAM_TOKEN"] = self.telegram.bot_token
                system.sup.env["BENCH_TWITCH_TOKEN"] = self.twitch.token
                if "telegram" in on:
                    session = session_path(root / "home", "main")
                    session.parent.mkdir(parents=True, exist_ok=True)
                    self.telegram.write_session(str(session))  # as a first login would have left
                async with system, aiohttp.ClientSession() as http:
                    if "discord" in on:
                        await self.discord.wait_for(
                            lambda: self.discord.connected_sessions() or None, timeout=120
                        )
                        tasks.append(asyncio.create_task(self._watch_discord()))
                    if "slack" in on:
                        await self.slack.wait_for(lambda: self.slack.connections >= 1, timeout=120)
                        tasks.append(asyncio.create_task(self._watch_slack()))
                    if "telegram" in on:
                        await self.telegram.wait_for(lambda: self.telegram.connected >= 1, timeout=120)
                        tasks.append(asyncio.create_task(self._watch_telegram()))
                    if "twitch" in on:
                        await self.twitch.wait_for(
                            lambda: all(self.twitch.joined(c) for c in h_chans), timeout=120
                        )
                        tasks.append(asyncio.create_task(self._watch_twitch()))
                    owner = await system.client("Owner")
                    convs: list[str] = []
                    chats: list[Any] = []
                    if "webchat" in on:
                        convs = [await owner.create(f"bench {i}") for i in range(self.n)]
                        chats = [await system.client(f"P{i}") for i in range(self.n)]
                        for chat, conv in zip(chats, convs, strict=True):
                            await chat.open(conv)
                    cursors = [0] * self.n
                    bot = self.discord.bot.id

                    def d_ask(i: int) -> Callable[[Question], Any]:
                        ch = guild.channel_ids[i]
                        return lambda q: self._ask_fake(
                            q,
                            self.dwatch,
                            ch,
                            lambda: self.discord.post(
                                ch, ana.id, f"<@{bot}> {q.token} please", mentions=[bot]
                            ),
                        )

                    def s_ask(i: int) -> Callable[[Question], Any]:
                        ch = s_chans[i]
                        return lambda q: self._ask_fake(
                            q,
                            self.swatch,
                            ch,
                            lambda: self.slack.post(
                                ch, "U0ADA", f"<@{self.slack.bot_user}> {q.token} please"
                            ),
                        )

                    def w_ask(i: int) -> Callable[[Question], Any]:
                        return lambda q: self._ask_web(q, chats[i], convs[i])

                    def g_ask(i: int) -> Callable[[Question], Any]:
                        ch = g_chats[i]
                        handle = f"@{self.telegram.bot.username}"
                        return lambda q: self._ask_fake(
                            q,
                            self.gwatch,
                            ch,
                            lambda: self.telegram.post(ch, gana.id, f"{handle} {q.token} please"),
                        )

                    def h_ask(i: int) -> Callable[[Question], Any]:
                        ch = h_chans[i]
                        return lambda q: self._ask_fake(
                            q,
                            self.hwatch,
                            ch,
                            lambda: self.twitch.post(ch, "ana", f"!ask {q.token} please"),
                        )

                    def k_ask(i: int) -> Callable[[Question], Any]:
                        return lambda q: self._ask_webhook(q, http, cursors)

                    askers = {
                        "discord": d_ask,
                        "slack": s_ask,
                        "webchat": w_ask,
                        "telegram": g_ask,
                        "twitch": h_ask,
                        "webhook": k_ask,
                    }
                    killer = asyncio.create_task(self._killer(system)) if self.kill_target else None
                    started = self.started = time.monotonic()
                    await asyncio.gather(
                        *(self._conversation(p, i, askers[p](i)) for p in on for i in range(self.n))
                    )
                    elapsed = time.monotonic() - started
                    if killer is not None:
                        await killer
                        self.kill["restarts"] = (await system.sup.info(self.kill_target)).restarts
                    # Settle: late duplicates would show up now (Slack redelivers unacked events).
                    if "slack" in on:
                        await self.slack.wait_for(lambda: not self.slack.unacked, timeout=30)
                    await asyncio.sleep(3.0)
                    self._count_finals(guild.channel_ids, s_chans, g_chats, h_chans)
                    if "webchat" in on:
                        await self._count_web_finals(owner, convs)
                    if "webhook" in on:
                        await self._count_webhook_finals(http)
                    if self.verbose:
                        self._explain(guild.channel_ids, s_chans, g_chats, h_chans)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await model.server.stop()
        return self._result(elapsed)

    def _count_finals(
        self, d_chans: list[int], s_chans: list[str], g_chats: list[int], h_chans: list[str]
    ) -> None:
        for q in self.questions.get("discord", []):
            shown = self.discord.bot_messages(d_chans[q.conv])
            q.finals = sum(1 for m in shown if not m.deleted and m.content == _final(q.token))
        for q in self.questions.get("slack", []):
            posted = self.slack.bot_messages(s_chans[q.conv])
            q.finals = sum(1 for sm in posted if not sm.deleted and sm.text == _final(q.token))
        for q in self.questions.get("telegram", []):
            tg = self.telegram.bot_messages(g_chats[q.conv])
            q.finals = sum(1 for gm in tg if gm.text == _final(q.token))
        for q in self.questions.get("twitch", []):
            tw = self.twitch.bot_messages(h_chans[q.conv])
            q.finals = sum(1 for hm in tw if hm.text == _final(q.token))

    async def _count_web_finals(self, owner: Any, convs: list[str]) -> None:
        for i, conv in enumerate(convs):
            history = await owner.open(conv)
            if history["type"] != "history":
                raise RuntimeError(f"opening {conv} to count its replies failed: {history}")
            texts = [m["text"] for m in history["messages"] if m["role"] == "assistant"]
            for q in self.questions["webchat"]:
                if q.conv == i:
                    q.finals = texts.count(_final(q.token))

    async def _count_webhook_finals(self, http: aiohttp.ClientSession) -> None:
        for i in range(self.n):
            texts: list[str] = []
            after = 0
            while True:
                params = {"after": str(after), "timeout": "0"}
                page = await self._webhook("GET", f"/poll/c{i}", http, params=params)
                if not page["messages"]:
                    break
                texts += [m["text"] for m in page["messages"]]
                after = page["cursor"]
            for q in self.questions["webhook"]:
                if q.conv == i:
                    q.finals = texts.count(_final(q.token))

    def _explain(
        self, d_chans: list[int], s_chans: list[str], g_chats: list[int], h_chans: list[str]
    ) -> None:
        """``--verbose``: every lost or doubled question with what the bot shows in its channel
        (times relative to the kill, or to the start of the run)."""
        zero = self.kill.get("at", self.started)
        wall = time.time() - time.monotonic()  # wall-clock = monotonic + wall
        for p in self.platforms:
            for q in self.questions[p]:
                if q.final is not None and q.finals == 1:
                    continue
                first = f"{q.first - zero:+.2f}" if q.first is not None else "-"
                print(
                    f"{p} {q.token}: sent {q.sent - zero:+.2f} s, first {first}, finals {q.finals}",
                    file=sys.stderr,
                )
                if p == "discord":
                    for m in self.discord.bot_messages(d_chans[q.conv]):
                        print(
                            f"    {m.created_at - zero:+.2f} {m.content!r} deleted={m.deleted}",
                            file=sys.stderr,
                        )
                elif p == "slack":
                    for sm in self.slack.bot_messages(s_chans[q.conv]):
                        print(f"    {sm.ts} {sm.text!r} deleted={sm.deleted}", file=sys.stderr)
                elif p == "telegram":
                    for gm in self.telegram.bot_messages(g_chats[q.conv], deleted=True):
                        at = gm.date - wall - zero
                        print(f"    {at:+.2f} {gm.text!r} deleted={gm.deleted}", file=sys.stderr)
                elif p == "twitch":
                    for hm in self.twitch.sent:
                        if hm.channel == h_chans[q.conv]:
                            print(
                                f"    {hm.at - zero:+.2f} {hm.text!r} refused={hm.refused!r}", file=sys.stderr
                            )

    def _result(self, elapsed: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in self.platforms:
            qs = self.questions[p]
            warm = [(q.first - q.sent - self.lat) * 1000 for q in qs if q.round and q.first is not None]
            cold = [(q.first - q.sent - self.lat) * 1000 for q in qs if not q.round and q.first is not None]
            out[p] = {
                "p50_ms": round(percentile(warm, 50), 2),
                "p99_ms": round(percentile(warm, 99), 2),
                "cold_p50_ms": round(percentile(cold, 50), 2),
                "cold_p99_ms": round(percentile(cold, 99), 2),
                "lost": sum(1 for q in qs if q.final is None and q.finals == 0),
                "late": sum(1 for q in qs if q.final is None and q.finals > 0),
                "doubled": sum(1 for q in qs if q.finals > 1),
                "sent": len(qs),
            }
        if self.kill:
            at = self.kill["at"]
            kp = self.kill_target.split(":")[1] if self.kill_target.count(":") >= 1 else ""
            waiting = [q for q in self.questions.get(kp, []) if q.sent <= at and (q.final or 1e18) > at]
            after = [q.first for q in self.questions.get(kp, []) if q.first is not None and q.first > at]
            self.kill.update(
                questions_waiting=len(waiting),
                next_reply_s=round(min(after) - at, 2) if after else None,
            )
            del self.kill["at"]
        out.update(
            L_ms=self.lat * 1000,
            conversations=self.n,
            messages=self.m,
            think_s=self.think,
            platforms=list(self.platforms),
            run_s=round(elapsed, 1),
            kill=self.kill or None,
            machine=machine(),
        )
        return out


def _platforms(text: str) -> tuple[str, ...]:
    """``--platforms``: a comma list of :data:`PLATFORMS`, kept in that order."""
    asked = {p.strip() for p in text.split(",") if p.strip()}
    unknown = sorted(asked - set(PLATFORMS))
    if unknown or not asked:
        raise ValueError(
            f"--platforms {text!r}: {', '.join(unknown) or 'none'} not in {', '.join(PLATFORMS)}"
        )
    return tuple(p for p in PLATFORMS if p in asked)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--conversations", type=int, default=20, help="conversations per platform")
    p.add_argument("--messages", type=int, default=120, help="questions per platform, spread over them")
    p.add_argument("--latency-ms", type=float, default=200.0, help="fake model time to first event")
    p.add_argument("--think", type=float, default=1.0, help="mean seconds between a conversation's questions")
    p.add_argument("--verbose", action="store_true", help="print every lost or doubled question")
    p.add_argument("--deadline", type=float, default=90.0, help="seconds after which a question is lost")
    p.add_argument("--kill", default="gateway:discord:main", help="process to SIGKILL mid-run ('' for none)")
    p.add_argument(
        "--platforms",
        default=",".join(PLATFORMS),
        help=f"comma list of {', '.join(PLATFORMS)} (default: all)",
    )
    args = p.parse_args()
    try:
        args.platforms = _platforms(args.platforms)
    except ValueError as exc:
        p.error(str(exc))
    killed = args.kill.split(":")[1] if args.kill.count(":") >= 1 else ""
    if args.kill and killed not in args.platforms:
        p.error(f"--kill {args.kill}: {killed or args.kill!r} is not among --platforms; pass --kill ''")
    r = asyncio.run(Bench(args).run())
    rows: list[tuple[str, ...]] = [
        ("platform", "sent", "p50 ms", "p99 ms", "cold p50 / p99 ms", "lost", "doubled", "late")
    ]
    for name in args.platforms:
        x = r[name]
        rows.append(
            (
                name,
                str(x["sent"]),
                f"{x['p50_ms']:.1f}",
                f"{x['p99_ms']:.1f}",
                f"{x['cold_p50_ms']:.0f} / {x['cold_p99_ms']:.0f}",
                str(x["lost"]),
                str(x["doubled"]),
                str(x["late"]),
            )
        )
    emit(r, rows, False)
    print(
        f"L = {r['L_ms']:.0f} ms, {r['conversations']} conversations x {len(args.platforms)} platforms, "
        f"{r['messages']} questions per platform, run {r['run_s']} s; kill: {r['kill']}",
        flush=True,
    )
    if args.json:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
