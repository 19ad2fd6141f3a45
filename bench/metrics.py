"""Cost of metrics: on the reply hot path, and of rendering ``GET /metrics``.

Hot path: two whole services run side by side, one with ``[metrics] enabled`` (``gateway:metrics``
subscribed to every event) and one without, both answering from the same fake model process (as
``bench/chat.py``, whose client and measurement this reuses). One conversation each; messages
alternate between them (the order within each pair drawn at random), never two at once, so a
loaded machine weighs on both alike. overhead = reply overhead with metrics − without, at p50 and
p99 (each side's reply overhead as ``chat.py`` measures it: first streamed characters − send − L).
At the end the enabled side's ``/metrics`` is scraped to check it counted the turns.

Scrape: drives :class:`spacebot.metrics.Aggregator` in-process (the page is rendered on the metrics
process's event loop, so its render time is what a scrape holds that loop for). Fed first: 1,000
conversations over 3 agents and 4 platforms (spawn, states, turns with 2 model calls each, a
compaction, hibernation, exit) and 50 branches and workers that stay alive, with 3 models, some
fallbacks, hangs and kills. Then the page is rendered ``--scrapes`` times.
Run: ``python bench/metrics.py [--json] [--scrapes 300] [--pairs 200] [--latency-ms 100]``
(``--pairs 0`` skips the hot path).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from _common import BENCH_LIMITS, emit, machine, parser, percentile
from chat import _ask, _Fake

from spacebot.ipc import ids
from spacebot.ipc.messages import (
    Event,
    KilledProc,
    KillReport,
    Notice,
    ProcessExited,
    ProcessHung,
    ProcessKilled,
    ProcState,
    StateChanged,
    Usage,
    UsageReport,
)
from spacebot.messaging.ports import listening_port
from spacebot.metrics import Aggregator
from spacebot.testing import ChatSystem, short_tempdir

PEOPLE = 4
"""Web chat sockets per service in the hot-path run, sending in turn."""
AGENTS = ("main", "ops", "support")
MODELS = ("anthropic/claude-sonnet", "anthropic/claude-haiku", "openai/gpt-4o-mini")
PLATFORMS = {
    "web": lambda n: ("c" + format(n, "x"),),
    "discord": lambda n: ("g1", str(1000 + n)),
    "slack": lambda n: ("T1", f"C{n}"),
    "telegram": lambda n: (str(-1000 - n),),
}
S = ProcState


def _state(ident: str, kind: str, old: ProcState, new: ProcState) -> Event:
    return Event(f"proc.{kind}.{ident}.state", "supervisor", 0.0, StateChanged(ident, kind, 1, old, new))


def _usage(ident: str, rng: random.Random) -> Event:
    fallbacks = [MODELS[0]] if rng.random() < 0.05 else []
    usage = Usage(rng.randint(500, 8000), rng.randint(20, 800), rng.randint(0, 4000))
    kind = ident.partition(":")[0]
    report = UsageReport(rng.choice(MODELS), kind, None, usage, 0.004, rng.uniform(300, 9000), fallbacks)
    return Event(f"llm.usage.{ident}", ident, 0.0, report)


def conversation_events(n: int, rng: random.Random) -> list[Event]:
    platform = list(PLATFORMS)[n % len(PLATFORMS)]
    conv = ids.conversation(platform, *PLATFORMS[platform](n))
    ident = ids.channel(AGENTS[n % len(AGENTS)], conv)
    out = [
        Event(f"proc.channel.{ident}.spawn", "supervisor", 0.0, Notice("spawn", {"parent": "gateway:x"})),
        _state(ident, "channel", S.STARTING, S.READY),
        _state(ident, "channel", S.READY, S.IDLE),
    ]
    for turn in range(rng.randint(1, 8)):
        out += [_state(ident, "channel", S.IDLE, S.BUSY), _usage(ident, rng), _usage(ident, rng)]
        notice = Notice("turn", {"turn": turn + 1, "messages": rng.randint(1, 3), "retry": False})
        out += [Event(f"channel.{ident}.turn", ident, 0.0, notice), _state(ident, "channel", S.BUSY, S.IDLE)]
    if n % 10 == 0:
        for what in ("started", "done"):
            out.append(
                Event(f"channel.{ident}.compaction", ident, 0.0, Notice(what, {"level": "background"}))
            )
    if n % 25 == 0:
        out.append(Event(f"channel.{ident}.retry", ident, 0.0, Notice("retry", {"messages": 1})))
    out += [
        Event(f"channel.{ident}.hibernate", ident, 0.0, Notice("hibernate", {"idle_timeout": 600})),
        _state(ident, "channel", S.IDLE, S.STOPPING),
        Event(f"proc.channel.{ident}.exit", "supervisor", 0.0, ProcessExited(ident, 1, 0, None)),
        _state(ident, "channel", S.STOPPING, S.EXITED),
    ]
    return out


def delegate_events(n: int, rng: random.Random) -> list[Event]:
    kind = "worker" if n % 2 else "branch"
    ident = f"{kind}:{n:08x}"
    parent = ids.channel(AGENTS[n % len(AGENTS)], ids.conversation("web", f"d{n}"))
    out = [
        Event(f"proc.{kind}.{ident}.spawn", "supervisor", 0.0, Notice("spawn", {"parent": parent})),
        _state(ident, kind, S.STARTING, S.READY),
        _state(ident, kind, S.READY, S.BUSY),
    ]
    out += [_usage(ident, rng) for _ in range(rng.randint(1, 20))]
    if n % 10 == 0:  # a stuck one, killed
        out.append(
            Event(f"proc.{kind}.{ident}.hung", "supervisor", 0.0, ProcessHung(ident, "progress", 900.0))
        )
        report = KillReport(ident, [KilledProc(1, ident, "signal"), KilledProc(2, "bash", "sigkill")], [])
        out.append(Event(f"proc.{kind}.{ident}.killed", "supervisor", 0.0, ProcessKilled(report)))
    return out


async def _scrape_turns(system: ChatSystem) -> float:
    """``spacebot_turns_total`` summed, from the service's own ``/metrics``."""
    row = await system.sup.info(ids.gateway("metrics"))
    port = await asyncio.to_thread(listening_port, row.pid) if row.pid else 0
    if not port:
        raise RuntimeError(f"gateway:metrics is not listening ({row.state.value})")
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as resp:
        text = await resp.text()
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "spacebot_turns_total"
    )


async def hot_path(pairs: int, latency_ms: float) -> dict[str, Any]:
    """Reply overhead with and without ``gateway:metrics``, interleaved (see the module doc)."""
    root = short_tempdir("sb-metrics-")
    fake = _Fake(latency_ms / 1000, root)
    await fake.start()
    lat = latency_ms / 1000
    samples: dict[str, list[float]] = {"on": [], "off": []}
    lost = 0
    try:
        common: dict[str, Any] = {"channel": {"idle_timeout": 0}, "webchat": BENCH_LIMITS}
        async with (
            ChatSystem(
                root / "on", fake, sections_extra={"metrics": {"enabled": True, "port": 0}}, **common
            ) as on,
            ChatSystem(root / "off", fake, sections_extra={"metrics": {"enabled": False}}, **common) as off,
        ):
            sides = {}
            for name, system in (("on", on), ("off", off)):
                # People take turns: one socket may send only 20 messages in 10 s (webchat.RATE_MAX).
                chats = [await system.client(f"{name}{n}") for n in range(PEOPLE)]
                conv = await chats[0].create(f"metrics {name}")
                for chat in chats:
                    await chat.open(conv)
                for warm in range(3):  # the process start and first calls are not what is measured
                    await _ask(chats[warm % PEOPLE], conv, f"warm{warm}.")
                sides[name] = (chats, conv)
            rng = random.Random(7)
            for i in range(pairs):
                order = ["on", "off"]
                rng.shuffle(order)
                for name in order:
                    chats, conv = sides[name]
                    took = await _ask(chats[i % PEOPLE], conv, f"{name}{i}.")
                    if took is None:
                        lost += 1
                    else:
                        samples[name].append(took - lat)
            turns = await _scrape_turns(on)
    finally:
        await fake.stop()
    if lost or turns < pairs:
        raise RuntimeError(
            f"{lost} messages lost; the metrics side counted {turns:.0f} turns for {pairs} messages"
        )
    p = {name: (percentile(v, 50) * 1000, percentile(v, 99) * 1000) for name, v in samples.items()}
    return {
        "pairs": pairs,
        "llm_latency_ms": latency_ms,
        "on_p50_ms": round(p["on"][0], 2),
        "on_p99_ms": round(p["on"][1], 2),
        "off_p50_ms": round(p["off"][0], 2),
        "off_p99_ms": round(p["off"][1], 2),
        "overhead_p50_ms": round(p["on"][0] - p["off"][0], 2),
        "overhead_p99_ms": round(p["on"][1] - p["off"][1], 2),
        "lost": lost,
        "turns_counted": turns,
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--scrapes", type=int, default=300)
    p.add_argument("--pairs", type=int, default=200, help="messages to each service (0: skip the hot path)")
    p.add_argument("--latency-ms", type=float, default=100.0, help="fake model time to first event")
    args = p.parse_args()
    hot = asyncio.run(hot_path(args.pairs, args.latency_ms)) if args.pairs else None
    rng = random.Random(7)
    events = [e for n in range(1000) for e in conversation_events(n, rng)]
    events += [e for n in range(50) for e in delegate_events(n, rng)]
    agg = Aggregator(AGENTS)
    started = time.perf_counter()
    agg.feed_all(events)
    feed_s = time.perf_counter() - started
    page = generate_latest(agg.registry)
    series = sum(len(f.samples) for f in text_string_to_metric_families(page.decode()))
    times = []
    for _ in range(args.scrapes):
        t0 = time.perf_counter()
        generate_latest(agg.registry)
        times.append((time.perf_counter() - t0) * 1000)
    live = sum(1 for _ in agg.states)
    result: dict[str, Any] = {
        "scrape_ms": round(percentile(times, 50), 3),
        "scrape_p99_ms": round(percentile(times, 99), 3),
        "page_bytes": len(page),
        "series": series,
        "events": len(events),
        "feed_events_per_s": round(len(events) / feed_s),
        "live_processes": live,
        "machine": machine(),
    }
    rows = [
        ("measure", "value"),
        ("events fed (1,000 conversations, 50 delegates)", f"{len(events):,}"),
        ("feed rate, events/s", f"{result['feed_events_per_s']:,}"),
        ("live processes in the gauge", str(live)),
        ("series on the page", str(series)),
        ("page size, bytes", f"{len(page):,}"),
        (f"render p50 ms ({args.scrapes} scrapes)", f"{result['scrape_ms']:.3f}"),
        ("render p99 ms", f"{result['scrape_p99_ms']:.3f}"),
    ]
    if hot is not None:
        result["hot_path"] = hot
        rows += [
            (
                f"reply overhead p50 / p99 ms, metrics on ({hot['pairs']} messages)",
                f"{hot['on_p50_ms']:.2f} / {hot['on_p99_ms']:.2f}",
            ),
            (
                "reply overhead p50 / p99 ms, metrics off",
                f"{hot['off_p50_ms']:.2f} / {hot['off_p99_ms']:.2f}",
            ),
            ("added by metrics p50 / p99 ms", f"{hot['overhead_p50_ms']:.2f} / {hot['overhead_p99_ms']:.2f}"),
            ("lost messages", str(hot["lost"])),
        ]
    emit(result, rows, args.json)
    if args.json:  # the last line: the three headline numbers
        last = {"overhead_p50_ms": None, "overhead_p99_ms": None, "scrape_ms": result["scrape_ms"]}
        if hot is not None:
            last.update(overhead_p50_ms=hot["overhead_p50_ms"], overhead_p99_ms=hot["overhead_p99_ms"])
        print(json.dumps(last), flush=True)


if __name__ == "__main__":
    main()
