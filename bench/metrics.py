"""Cost of ``GET /metrics``: render time of the page after a busy service's worth of events.

Drives :class:`spacebot.metrics.Aggregator` in-process (the page is rendered on the metrics
process's event loop, so its render time is what a scrape holds that loop for). Fed first: 1,000
conversations over 3 agents and 4 platforms (spawn, states, turns with 2 model calls each, a
compaction, hibernation, exit) and 50 branches and workers that stay alive, with 3 models, some
fallbacks, hangs and kills. Then the page is rendered ``--scrapes`` times.
Run: ``python bench/metrics.py [--json] [--scrapes 300]``.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, parser, percentile

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
from spacebot.metrics import Aggregator

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


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--scrapes", type=int, default=300)
    args = p.parse_args()
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
    result = {
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
    emit(result, rows, args.json)


if __name__ == "__main__":
    main()
