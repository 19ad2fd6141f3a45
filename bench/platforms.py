"""Three front doors at once: Discord, Slack and the web chat → one Spacebot → fake model.

One system (supervisor, memory, ``gateway:discord:main``, ``gateway:slack:main``,
``gateway:webchat``, conversation processes) with the loopback Discord and Slack running in this
script's event loop and the fake model in its own process (``L`` ms to its first event, then a
short ``reply`` tool call). Per platform, N conversations (Discord and Slack: one channel each;
web chat: one conversation each) take turns: a person's question that mentions the bot, wait for
the final reply, pause (``--think`` s on average), ``M / N`` times. Every question carries a token
that the model echoes, so a reply is matched to its question:

    overhead = (first visible reply) − (send) − L

First visible: the fake platform's receive time of the bot's first post in that channel after the
question (on Discord ``Message.created_at``, on Slack the post's ``ts``); on the web chat, the
first ``delta`` or ``message`` frame for the conversation. A conversation's first question starts
its process (reported apart as ``cold``). Lost = no final reply within ``--deadline``; doubled =
more than one final reply shown for a question (counted after the run settles). Mid-run (once
half of all questions are sent) one platform gateway is SIGKILLed (``--kill``); the
supervisor restarts it and the run goes on.

    python bench/platforms.py [--conversations 20] [--messages 120] [--latency-ms 200]
                              [--kill gateway:discord:main] [--json]
"""

from __future__ import annotations

import asyncio
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

from _common import BENCH_LIMITS, emit, machine, parser, percentile

from spacebot.messaging.fakes.discord import FakeDiscord
from spacebot.messaging.fakes.slack import FakeSlack
from spacebot.testing import ChatSystem, FakeLLMProcess, short_tempdir

PLATFORMS = ("discord", "slack", "webchat")
TOKEN_RE = r"\(new\)[^\n]*?\b(Q[dsw]\d+n\d+)\b"
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
    """The three platforms' people, the kill, and the bookkeeping."""

    def __init__(self, args: Any) -> None:
        self.n = args.conversations
        self.m = args.messages
        self.lat = args.latency_ms / 1000
        self.think = args.think
        self.deadline = args.deadline
        self.kill_target = args.kill
        self.verbose = args.verbose
        self.started = 0.0
        self.rng = random.Random(11)
        self.questions: dict[str, list[Question]] = {p: [] for p in PLATFORMS}
        self.discord = FakeDiscord(heartbeat_interval_ms=5000)
        self.slack = FakeSlack()
        self.dwatch = Watch()
        self.swatch = Watch()
        self.sent = {p: 0 for p in PLATFORMS}
        self.half = asyncio.Event()
        self.kill: dict[str, Any] = {}

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

    def _count(self, platform: str) -> None:
        self.sent[platform] += 1
        if sum(self.sent.values()) >= len(PLATFORMS) * self.m // 2:
            self.half.set()

    async def _conversation(self, platform: str, i: int, ask: Callable[[Question], Any]) -> None:
        rounds = len(range(i, self.m, self.n))
        await asyncio.sleep(self.rng.uniform(0, self.think))
        for r in range(rounds):
            if r:
                await asyncio.sleep(self.rng.uniform(0.5 * self.think, 1.5 * self.think))
            q = Question(platform, i, r, f"Q{platform[0]}{i}n{r}")
            self.questions[platform].append(q)
            await ask(q)

    # -- the run ---------------------------------------------------------------------------------

    def _sections(self) -> dict[str, Any]:
        return {
            "messaging": {
                "discord": [
                    {
                        "name": "main",
                        "token": "env:BENCH_DISCORD_TOKEN",
                        "api_base": self.discord.api_url,
                        "gateway_url": self.discord.gateway_url,
                    }
                ],
                "slack": [
                    {
                        "name": "main",
                        "app_token": self.slack.app_token,
                        "bot_token": self.slack.bot_token,
                        "api_base": self.slack.api_url,
                    }
                ],
            },
            "bindings": [
                {"agent": "main", "platform": "discord"},
                {"agent": "main", "platform": "slack"},
            ],
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
        try:
            async with self.discord, self.slack:
                guild = self.discord.add_guild("bench", channels=tuple(f"c{i}" for i in range(self.n)))
                ana = self.discord.add_user("ana", guild=guild.id)
                self.slack.add_user("ada", id="U0ADA")
                s_chans = [self.slack.add_channel(f"c{i}").id for i in range(self.n)]
                system = ChatSystem(
                    root,
                    model.server,
                    channel={"idle_timeout": 0},
                    webchat=dict[str, object](BENCH_LIMITS),
                    sections_extra=self._sections(),
                    gateway={"ready_timeout": 60.0},
                )
                system.sup.env["BENCH_DISCORD_TOKEN"] = self.discord.token
                async with system:
                    await self.discord.wait_for(
                        lambda: self.discord.connected_sessions() or None, timeout=120
                    )
                    await self.slack.wait_for(lambda: self.slack.connections >= 1, timeout=120)
                    tasks = [
                        asyncio.create_task(self._watch_discord()),
                        asyncio.create_task(self._watch_slack()),
                    ]
                    owner = await system.client("Owner")
                    convs = [await owner.create(f"bench {i}") for i in range(self.n)]
                    chats = [await system.client(f"P{i}") for i in range(self.n)]
                    for chat, conv in zip(chats, convs, strict=True):
                        await chat.open(conv)
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

                    killer = asyncio.create_task(self._killer(system)) if self.kill_target else None
                    started = self.started = time.monotonic()
                    await asyncio.gather(
                        *(self._conversation("discord", i, d_ask(i)) for i in range(self.n)),
                        *(self._conversation("slack", i, s_ask(i)) for i in range(self.n)),
                        *(self._conversation("webchat", i, w_ask(i)) for i in range(self.n)),
                    )
                    elapsed = time.monotonic() - started
                    if killer is not None:
                        await killer
                        self.kill["restarts"] = (await system.sup.info(self.kill_target)).restarts
                    # Settle: late duplicates would show up now (Slack redelivers unacked events).
                    await self.slack.wait_for(lambda: not self.slack.unacked, timeout=30)
                    await asyncio.sleep(3.0)
                    self._count_finals(guild.channel_ids, s_chans)
                    await self._count_web_finals(owner, convs)
                    if self.verbose:
                        self._explain(guild.channel_ids, s_chans)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await model.server.stop()
        return self._result(elapsed)

    def _count_finals(self, d_chans: list[int], s_chans: list[str]) -> None:
        for q in self.questions["discord"]:
            shown = self.discord.bot_messages(d_chans[q.conv])
            q.finals = sum(1 for m in shown if not m.deleted and m.content == _final(q.token))
        for q in self.questions["slack"]:
            posted = self.slack.bot_messages(s_chans[q.conv])
            q.finals = sum(1 for sm in posted if not sm.deleted and sm.text == _final(q.token))

    async def _count_web_finals(self, owner: Any, convs: list[str]) -> None:
        for i, conv in enumerate(convs):
            history = await owner.open(conv)
            if history["type"] != "history":
                raise RuntimeError(f"opening {conv} to count its replies failed: {history}")
            texts = [m["text"] for m in history["messages"] if m["role"] == "assistant"]
            for q in self.questions["webchat"]:
                if q.conv == i:
                    q.finals = texts.count(_final(q.token))

    def _explain(self, d_chans: list[int], s_chans: list[str]) -> None:
        """``--verbose``: every lost or doubled question with what the bot shows in its channel
        (times relative to the kill, or to the start of the run)."""
        zero = self.kill.get("at", self.started)
        for p in PLATFORMS:
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

    def _result(self, elapsed: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in PLATFORMS:
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
            run_s=round(elapsed, 1),
            kill=self.kill or None,
            machine=machine(),
        )
        return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--conversations", type=int, default=20, help="conversations per platform")
    p.add_argument("--messages", type=int, default=120, help="questions per platform, spread over them")
    p.add_argument("--latency-ms", type=float, default=200.0, help="fake model time to first event")
    p.add_argument("--think", type=float, default=1.0, help="mean seconds between a conversation's questions")
    p.add_argument("--verbose", action="store_true", help="print every lost or doubled question")
    p.add_argument("--deadline", type=float, default=90.0, help="seconds after which a question is lost")
    p.add_argument("--kill", default="gateway:discord:main", help="process to SIGKILL mid-run ('' for none)")
    args = p.parse_args()
    r = asyncio.run(Bench(args).run())
    rows: list[tuple[str, ...]] = [
        ("platform", "sent", "p50 ms", "p99 ms", "cold p50 / p99 ms", "lost", "doubled", "late")
    ]
    for name in PLATFORMS:
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
        f"L = {r['L_ms']:.0f} ms, {r['conversations']} conversations x 3 platforms, "
        f"{r['messages']} questions per platform, run {r['run_s']} s; kill: {r['kill']}",
        flush=True,
    )
    if args.json:
        print(json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
