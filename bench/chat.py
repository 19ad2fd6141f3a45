"""End-to-end chat latency: real WebSocket clients → web chat → channel processes → fake model.

M conversations, N clients spread over them (all clients of a conversation have it open, so every
frame fans out to all of them). Each conversation runs on its own: its people take turns sending a
message, waiting for the answer, pausing (``--think`` seconds on average), for ``--rounds`` messages.
The fake model (its own process) waits ``L`` ms before its first event and then streams without delay, so

    overhead = (first streamed reply characters seen by the sender) − (send) − L

is what Spacebot adds: gateway, persistence, bus, channel, prompt, SDK and back. A conversation's
first message starts its process (reported separately as ``cold``). Lost = messages never
answered; doubled = messages answered more than once (counted in the stored transcripts).

    python bench/chat.py [--conversations 50] [--clients 150] [--rounds 6] [--latency-ms 200] [--json]
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

import contextlib

from _common import BENCH_LIMITS, emit, machine, parser, percentile

from spacebot.testing import ChatSystem, FakeLLMProcess, short_tempdir


class _Fake:
    """The fake model server in its own process (so its work does not share our event loop)."""

    def __init__(self, latency: float, root: Path, rules: list[dict[str, Any]] | None = None) -> None:
        self.latency = latency
        self.script = root / "chat_bench_script.json"
        self.rules = rules or []
        self._server: FakeLLMProcess | None = None
        self.openai_url = ""

    async def start(self) -> None:
        reply = {"name": "reply", "arguments": {"content": "answer: {last_user}"}}
        script = {"rules": self.rules, "default": {"name": "bench", "tool_calls": [reply]}}
        self.script.write_text(json.dumps(script))
        self._server = FakeLLMProcess(self.script, self.latency)
        await self._server.start()
        self.openai_url = self._server.openai_url

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()


async def _ask(chat: Any, conv: str, marker: str) -> float | None:
    """Send one message; seconds until the first streamed characters of the answer (None = lost)."""
    mark = len(chat.frames)
    sent = time.perf_counter()
    ack = await chat.send(conv, f"question {marker}")
    if ack["type"] != "ack":
        return None
    try:
        await chat.wait_for(
            lambda f: f["type"] == "delta" and f["conversation"] == conv, since=mark, timeout=60
        )
        first_at = time.perf_counter()
        await chat.wait_for(
            lambda f: (
                f["type"] == "message"
                and f["conversation"] == conv
                and f["message"]["role"] == "assistant"
                and marker in f["message"]["text"]
            ),
            since=mark,
            timeout=60,
        )
    except TimeoutError:
        return None
    return first_at - sent


async def _conversation(
    i: int, chats: list[Any], conv: str, rounds: int, think: float, rng: random.Random, prefix: str = ""
) -> tuple[float | None, list[float | None]]:
    """One conversation's people taking turns: the first message (cold start), then ``rounds - 1`` more,
    each after a random pause, so conversations run independently of each other."""
    await asyncio.sleep(rng.uniform(0, think))
    cold = await _ask(chats[0], conv, f"{prefix}r0c{i}.")
    warm = []
    for rnd in range(1, rounds):
        await asyncio.sleep(rng.uniform(0.5 * think, 1.5 * think))
        warm.append(await _ask(chats[rnd % len(chats)], conv, f"{prefix}r{rnd}c{i}."))
    return cold, warm


def _uss_mb(pids: list[int]) -> float:
    values = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            values.append(psutil.Process(pid).memory_full_info().uss / 2**20)
    return sum(values) / len(values) if values else float("nan")


async def run(
    conversations: int, clients: int, rounds: int, latency_ms: float, think: float
) -> dict[str, Any]:
    root = short_tempdir("sb-chat-")
    fake = _Fake(latency_ms / 1000, root)
    await fake.start()
    per_conv = max(1, clients // conversations)
    try:
        async with ChatSystem(root, fake, channel={"idle_timeout": 0}, webchat=BENCH_LIMITS) as system:
            owner = await system.client("Owner")
            convs = [await owner.create(f"bench {i}") for i in range(conversations)]
            chats = [await system.client(f"P{i}") for i in range(conversations * per_conv)]
            for i, chat in enumerate(chats):
                await chat.open(convs[i // per_conv])
            rng = random.Random(7)
            results = await asyncio.gather(
                *(
                    _conversation(i, chats[i * per_conv : (i + 1) * per_conv], conv, rounds, think, rng)
                    for i, conv in enumerate(convs)
                )
            )
            cold = [c for c, _ in results]
            warm = [w for _, ws in results for w in ws]
            status = await system.sup.status()
            pids = [p.pid for p in status.processes if p.kind == "channel" and p.pid]
            uss = _uss_mb(pids)
            doubled = 0
            for conv in convs:
                history = await owner.open(conv)
                for rnd in range(rounds):
                    for i in range(conversations):
                        marker = f"r{rnd}c{i}."
                        hits = sum(
                            1
                            for m in history["messages"]
                            if m["role"] == "assistant" and f"question {marker}" in m["text"]
                        )
                        doubled += max(0, hits - 1)
    finally:
        await fake.stop()
    lat = latency_ms / 1000
    got = [x - lat for x in warm if x is not None]
    cold_got = [x - lat for x in cold if x is not None]
    lost = sum(1 for x in [*cold, *warm] if x is None)
    return {
        "conversations": conversations,
        "clients": conversations * per_conv,
        "llm_latency_ms": latency_ms,
        "messages": len(cold) + len(warm),
        "think_s": think,
        "overhead_p50_ms": round(percentile(got, 50) * 1000, 2),
        "overhead_p99_ms": round(percentile(got, 99) * 1000, 2),
        "cold_overhead_p50_ms": round(percentile(cold_got, 50) * 1000, 2),
        "cold_overhead_p99_ms": round(percentile(cold_got, 99) * 1000, 2),
        "lost": lost,
        "doubled": doubled,
        "channel_uss_mb": round(uss, 2),
        "channel_processes": len(pids),
        "machine": machine(),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--conversations", type=int, default=50)
    p.add_argument("--clients", type=int, default=150)
    p.add_argument(
        "--rounds", type=int, default=6, help="rounds of one message per conversation (first = cold)"
    )
    p.add_argument("--latency-ms", type=float, default=200.0, help="fake model time to first event")
    p.add_argument("--think", type=float, default=1.0, help="mean seconds between a conversation's messages")
    args = p.parse_args()
    r = asyncio.run(run(args.conversations, args.clients, args.rounds, args.latency_ms, args.think))
    rows = [
        ("metric", "value"),
        ("conversations / clients", f"{r['conversations']} / {r['clients']}"),
        ("messages (lost / doubled)", f"{r['messages']} ({r['lost']} / {r['doubled']})"),
        ("fake model latency L", f"{r['llm_latency_ms']:.0f} ms"),
        ("overhead p50 / p99 (warm)", f"{r['overhead_p50_ms']:.1f} / {r['overhead_p99_ms']:.1f} ms"),
        (
            "overhead p50 / p99 (cold: process start)",
            f"{r['cold_overhead_p50_ms']:.1f} / {r['cold_overhead_p99_ms']:.1f} ms",
        ),
        ("channel process USS (mean)", f"{r['channel_uss_mb']:.1f} MiB x {r['channel_processes']}"),
    ]
    emit(r, rows, args.json)


if __name__ == "__main__":
    main()
