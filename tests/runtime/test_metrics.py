"""``GET /metrics``: a whole service answering from a fake model, scraped by a real HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from spacebot import config as config_mod
from spacebot.errors import ConfigError
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    Event,
    KilledProc,
    KillReport,
    Notice,
    ProcessInfo,
    ProcessKilled,
    ProcState,
    StateChanged,
    Usage,
    UsageReport,
)
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.ports import listening_port
from spacebot.metrics import Aggregator
from spacebot.testing import ChatSystem, ctl_in_thread

WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Sample name and sorted labels → value."""


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


async def scrape(url: str) -> Samples:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(await resp.text())


async def scrape_until(url: str, ok: Callable[[Samples], bool], what: str) -> Samples:
    """Scrape until ``ok`` holds: the events travel asynchronously, so the numbers move shortly
    after the thing they count (bounded by :data:`WAIT`; a failure shows the last page)."""
    samples: Samples = {}
    try:
        async with asyncio.timeout(WAIT):
            while not ok(samples := await scrape(url)):  # noqa: ASYNC110 - another process's page
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{what} never showed up in /metrics: {sorted(samples.items())}") from None
    return samples


def test_non_loopback_metrics_needs_allow_remote() -> None:
    with pytest.raises(ConfigError, match=r"metrics.host.*requires metrics.allow_remote"):
        config_mod.from_dict({"metrics": {"enabled": True, "host": "0.0.0.0"}}, {})
    cfg = config_mod.from_dict({"metrics": {"enabled": True, "host": "0.0.0.0", "allow_remote": True}}, {})
    assert cfg.metrics.allow_remote and cfg.metrics.port == 9464
    with pytest.raises(ConfigError, match=r"metrics\.port"):
        config_mod.from_dict({"metrics": {"port": 70000}}, {})


def test_aggregator_labels_stay_bounded_and_processes_gauge_follows_states() -> None:
    agg = Aggregator(["main"])
    usage = UsageReport("m/x", "channel", None, Usage(10, 5, 2), 0.5, 1500.0, ["m/down"])
    for n in range(200):  # many conversations, many workers: no label may carry their ids
        channel = ids.channel("main", f"web:{n:04x}")
        worker = f"worker:{n:04x}"
        agg.feed(
            Event(f"proc.worker.{worker}.spawn", "supervisor", 0.0, Notice("spawn", {"parent": channel}))
        )
        agg.feed(Event(f"llm.usage.{worker}", worker, 0.0, usage))
        agg.feed(Event(f"llm.usage.{channel}", channel, 0.0, usage))
        agg.feed(Event(f"channel.{channel}.turn", channel, 0.0, Notice("turn", {"messages": 2})))
        state = StateChanged(worker, "worker", 1, ProcState.STARTING, ProcState.READY)
        agg.feed(Event(f"proc.worker.{worker}.state", "supervisor", 0.0, state))
    for n in range(100):  # half of the workers exit
        worker = f"worker:{n:04x}"
        state = StateChanged(worker, "worker", 1, ProcState.READY, ProcState.EXITED)
        agg.feed(Event(f"proc.worker.{worker}.state", "supervisor", 0.0, state))
    report = KillReport("worker:00c7", [KilledProc(1, "worker:00c7", "sigkill")], [])
    agg.feed(Event("proc.worker.worker:00c7.killed", "supervisor", 0.0, ProcessKilled(report)))
    for n in range(80):  # a misbehaving publisher inventing model names
        agg.feed(
            Event("llm.usage.channel:x", "worker:x", 0.0, UsageReport(f"m/{n}", "w", None, Usage(), 0.0, 1.0))
        )
    samples = parse(generate_latest(agg.registry).decode())
    assert total(samples, "spacebot_model_requests_total", agent="main", kind="worker") == 200
    assert total(samples, "spacebot_model_requests_total", agent="main", kind="channel") == 200
    assert total(samples, "spacebot_model_tokens_total", type="cached") == 400 * 2
    assert total(samples, "spacebot_model_cost_usd_total") == pytest.approx(200.0)
    assert total(samples, "spacebot_model_request_seconds_count", agent="main", kind="worker") == 200
    assert total(samples, "spacebot_model_fallbacks_total", model="m/down") == 400
    assert total(samples, "spacebot_turn_messages_total", platform="web") == 400
    assert total(samples, "spacebot_processes", kind="worker", state="ready") == 100
    assert total(samples, "spacebot_kills_total", kind="worker") == 1
    models = {dict(lab).get("model") for (n, lab) in samples if n == "spacebot_model_requests_total"}
    assert "other" in models and len(models) <= 50 + 1
    values = {v for (_, lab) in samples for _, v in lab}
    assert not [v for v in values if ":" in v], values  # no process or conversation id


def test_the_process_gauge_starts_from_the_supervisors_table() -> None:
    """States that changed before the metrics process subscribed come from the status table; a state
    it already saw as an event is not overwritten by the (older) table."""
    agg = Aggregator(["main"])
    busy = StateChanged("gateway:web", "gateway", 1, ProcState.READY, ProcState.BUSY)
    agg.feed(Event("proc.gateway.gateway:web.state", "supervisor", 0.0, busy))

    def row(ident: str, kind: str, state: ProcState) -> ProcessInfo:
        return ProcessInfo(ident, kind, 1, state, 1.0, 0.0, 0.0, 0.0, None, None, "", "", 0, None, 0)

    agg.seed(
        [
            row("memory:main", "memory", ProcState.READY),
            row("gateway:web", "gateway", ProcState.READY),
            row("zygote", "zygote", ProcState.READY),
            row("channel:main:web:1", "channel", ProcState.EXITED),
        ]
    )
    samples = parse(generate_latest(agg.registry).decode())
    assert total(samples, "spacebot_processes", kind="memory", state="ready") == 1
    assert total(samples, "spacebot_processes", kind="gateway", state="busy") == 1
    assert total(samples, "spacebot_processes", kind="gateway", state="ready") == 0
    assert total(samples, "spacebot_processes", kind="channel") == 0


async def test_metrics_move_with_turns_model_calls_and_kills(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=[FakeToolCall("reply", {"content": "counted"})])
        metrics = {"enabled": True, "port": 0}
        async with ChatSystem(short_tmp, fake, sections_extra={"metrics": metrics}) as system:
            row = await system.sup.info(ids.gateway("metrics"))
            assert row.state in (ProcState.READY, ProcState.IDLE, ProcState.BUSY), row
            port = await asyncio.to_thread(listening_port, row.pid)
            assert port, f"gateway:metrics (pid {row.pid}) listens on no TCP port"
            url = f"http://127.0.0.1:{port}/metrics"
            before = await scrape(url)
            assert total(before, "spacebot_model_requests_total") == 0
            assert total(before, "spacebot_turns_total") == 0

            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "please count this")
            await ana.wait_for(lambda f: f["type"] == "message" and f["message"]["role"] == "assistant")
            after = await scrape_until(
                url,
                lambda s: (
                    total(s, "spacebot_turns_total", platform="web") >= 1
                    and total(s, "spacebot_model_requests_total", kind="channel") >= 1
                ),
                "a turn and its model call",
            )
            assert total(after, "spacebot_model_requests_total", agent="main", model="fake/main") >= 1
            assert total(after, "spacebot_model_tokens_total", type="input") > 0
            assert total(after, "spacebot_model_tokens_total", type="output") > 0
            assert total(after, "spacebot_model_request_seconds_count", kind="channel") >= 1
            assert total(after, "spacebot_turn_messages_total", agent="main", platform="web") >= 1
            assert total(after, "spacebot_spawns_total", kind="channel") >= 1
            assert total(after, "spacebot_processes", kind="memory") == 1
            assert total(after, "spacebot_processes", kind="gateway") == 2  # web chat and metrics
            assert total(after, "spacebot_events_total", topic_class="proc") > 0

            channel = ids.channel("main", conv)
            code, out, err = await ctl_in_thread(
                "--runtime-dir", str(system.sup.endpoints.dir), "kill", channel
            )
            assert code == 0, (out, err)
            # The kill report and the exit are two events; either may reach the gateway first.
            killed = await scrape_until(
                url,
                lambda s: (
                    total(s, "spacebot_kills_total", kind="channel") >= 1
                    and total(s, "spacebot_exits_total", kind="channel") >= 1
                ),
                "the kill and the exit",
            )
            assert total(killed, "spacebot_killed_processes_total", kind="channel") >= 1
            assert total(killed, "spacebot_exits_total", kind="channel") >= 1

            values = {v for (_, labels) in killed for _, v in labels}
            assert conv not in values and channel not in values
            # Conversation and process ids all contain ':'; no label value may look like one.
            assert not [v for v in values if ":" in v or ids.is_conversation(v)], values


def test_dropped_platform_messages_are_counted_by_platform_and_reason() -> None:
    agg = Aggregator(["main"])
    gw = "gateway:discord:main"
    for reason in ("needs_mention", "needs_mention", "no_binding", "made-up reason"):
        agg.feed(
            Event(
                f"gateway.{gw}.dropped", gw, 0.0, Notice("dropped", {"reason": reason, "platform": "discord"})
            )
        )
    samples = parse(generate_latest(agg.registry).decode())
    assert total(samples, "spacebot_messages_dropped_total", platform="discord", reason="needs_mention") == 2
    assert total(samples, "spacebot_messages_dropped_total", platform="discord", reason="no_binding") == 1
    assert total(samples, "spacebot_messages_dropped_total", platform="discord", reason="other") == 1
