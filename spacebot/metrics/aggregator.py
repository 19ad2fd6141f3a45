"""Turn the bus's events into Prometheus metric families, in one process's own registry.

Every process already publishes what happened to it (state changes, exits, kills, model usage,
finished turns) on the supervisor's events socket. :class:`Aggregator` reads that stream and keeps
counters, gauges and a histogram in a private :class:`~prometheus_client.CollectorRegistry`;
``GET /metrics`` (``spacebot.procs.metrics``) renders it.

The client library's multiprocess mode is deliberately not used: Spacebot's processes are forked
and die all the time (conversations hibernate, workers finish), and that mode keeps one set of
mmap files per pid ever started, which grow without bound and need cleanup hooks in every
process, and it would put a file write on every hot path. The events exist anyway and carry what
is needed, so one subscriber aggregates them and the other processes pay nothing.

Label values are bounded: a kind, agent, platform, model, tier-like level or reason, each checked
against a known set or capped at :data:`MAX_VALUES` distinct values (the rest become ``other``).
A conversation, process or user id is never a label.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spacebot.ipc import ids
from spacebot.ipc.messages import (
    Event,
    Kind,
    Notice,
    ProcessExited,
    ProcessHung,
    ProcessInfo,
    ProcessKilled,
    ProcState,
    StateChanged,
    UsageReport,
)

# Each series would otherwise carry a ``*_created`` twin, doubling the page for nothing a
# dashboard uses; this process has no other registry the setting could surprise.
disable_created_metrics()

MAX_VALUES = 50
"""Distinct values one open-ended label (model, compaction level, refusal domain) may take."""
MAX_PARENTS = 10_000
"""Process → parent entries remembered to find the agent of a worker or branch (oldest dropped)."""
OTHER = "other"
UNKNOWN = "unknown"

TOPIC_CLASSES = frozenset({"proc", "llm", "channel", "memory", "sec", "sys", "gateway", "testkit", "echo"})
"""First topic segments counted by name in ``spacebot_events_total``; any other is ``other``."""
KINDS = frozenset(k.value for k in Kind)
PLATFORMS = frozenset({"discord", "slack", "telegram", "twitch", "webhook"})
DROP_REASONS = frozenset({"bot", "dm_not_allowed", "no_binding", "needs_mention"})
LIVE_STATES = (ProcState.STARTING, ProcState.READY, ProcState.BUSY, ProcState.IDLE, ProcState.STOPPING)
"""States a process is counted in by ``spacebot_processes``; ``exited``/``failed`` leave the gauge
(they are counted by ``spacebot_exits_total`` and ``spacebot_failed_total``)."""
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
"""Seconds: a cached short answer to a long tool-using generation."""


class _Bounded:
    """Pass through the first :data:`MAX_VALUES` distinct values, then answer ``other``."""

    def __init__(self, limit: int = MAX_VALUES) -> None:
        self.limit = limit
        self.seen: set[str] = set()

    def __call__(self, value: object) -> str:
        text = str(value)[:100] or UNKNOWN
        if text in self.seen:
            return text
        if len(self.seen) < self.limit:
            self.seen.add(text)
            return text
        return OTHER


def _num(fields: dict[str, Any], key: str) -> float:
    """A numeric field of a notice (0 when absent or not a number)."""
    value = fields.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _exit_how(code: int | None) -> str:
    if code is None:
        return UNKNOWN
    return "clean" if code == 0 else "error" if code > 0 else "signal"


class _Snapshot(Collector):
    """Families computed at scrape time from the aggregator's state rather than incremented."""

    def __init__(self, owner: Aggregator) -> None:
        self.owner = owner

    def collect(self) -> Iterable[Metric]:
        counts = Tally(self.owner.states.values())
        gauge = GaugeMetricFamily(
            "spacebot_processes", "Managed processes by kind and lifecycle state.", labels=["kind", "state"]
        )
        for kind in sorted(KINDS):
            for state in LIVE_STATES:
                gauge.add_metric([kind, state.value], counts[(kind, state.value)])
        yield gauge
        refused = CounterMetricFamily(
            "spacebot_refused_connections",
            "Connections the bus refused since the supervisor started (as the supervisor counts them).",
        )
        refused.add_metric([], self.owner.refused_connections)
        yield refused


class Aggregator:
    """Metric families fed one :class:`Event` at a time; :attr:`registry` is what is served."""

    def __init__(self, agents: Iterable[str] = ()) -> None:
        self.agents = frozenset(agents)
        self.registry = CollectorRegistry(auto_describe=True)
        self.states: dict[str, tuple[str, str]] = {}
        """Live process id → (kind, state): recounted into ``spacebot_processes`` at each scrape."""
        self.parents: dict[str, str] = {}
        """Process id → the id that started it (bounded by :data:`MAX_PARENTS`)."""
        self.refused_connections = 0.0
        self._model = _Bounded()
        self._level = _Bounded()
        self._domain = _Bounded()
        reg = self.registry

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=reg)

        self.events = counter(
            "spacebot_events", "Events seen on the bus, by first topic segment.", ("topic_class",)
        )
        model = ("agent", "kind", "model")
        self.model_requests = counter("spacebot_model_requests", "Finished model calls.", model)
        self.model_tokens = counter(
            "spacebot_model_tokens", "Tokens of finished model calls.", (*model, "type")
        )
        self.model_cost = counter("spacebot_model_cost_usd", "Estimated cost of model calls, USD.", model)
        self.model_fallbacks = counter(
            "spacebot_model_fallbacks", "Models abandoned for a fallback before a call succeeded.", ("model",)
        )
        self.model_seconds = Histogram(
            "spacebot_model_request_seconds",
            "Wall time of the successful attempt of a model call.",
            model,
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.dropped = counter(
            "spacebot_messages_dropped",
            "Platform messages the permission rule dropped (no binding, DM not allowed, no mention, bot).",
            ("platform", "reason"),
        )
        self.spawns = counter("spacebot_spawns", "Processes started (first starts).", ("kind",))
        self.restarts = counter("spacebot_restarts", "Processes restarted by the supervisor.", ("kind",))
        self.exits = counter("spacebot_exits", "Process exits by how they ended.", ("kind", "how"))
        self.failed = counter("spacebot_failed", "Processes that ended in the failed state.", ("kind",))
        self.hung = counter(
            "spacebot_hung", "Processes found stuck past a liveness budget.", ("kind", "budget")
        )
        self.down = counter("spacebot_down", "Times a process the agent needs was down.", ("kind",))
        self.kills = counter("spacebot_kills", "Kill escalations finished.", ("kind",))
        self.killed = counter("spacebot_killed_processes", "OS processes killed (whole trees).", ("kind",))
        self.survivors = counter("spacebot_kill_survivors", "Pids still alive after a kill.", ("kind",))
        conv = ("agent", "platform")
        self.turns = counter("spacebot_turns", "Conversation turns finished.", conv)
        self.turn_messages = counter("spacebot_turn_messages", "People's messages handled by turns.", conv)
        self.turn_retries = counter(
            "spacebot_turn_retries", "Turns that failed and will be tried again.", conv
        )
        self.hibernations = counter("spacebot_hibernations", "Conversations that went idle and exited.", conv)
        self.delegations = counter(
            "spacebot_delegations", "Branches and workers started by conversations.", ("agent", "kind")
        )
        self.compactions = counter(
            "spacebot_compactions", "Context compaction steps by level and event.", ("level", "event")
        )
        self.ingest_chunks = counter("spacebot_ingest_chunks", "Chunks of ingested files stored.", ("agent",))
        self.ingest_files = counter(
            "spacebot_ingest_files", "Ingested files by outcome (done, retry, failed).", ("agent", "outcome")
        )
        self.refused = counter("spacebot_refused", "Refusal events by bus domain (throttled).", ("what",))
        reg.register(_Snapshot(self))

    # -- labels ----------------------------------------------------------------------------------

    def _agent(self, name: str) -> str:
        return name if name in self.agents else (UNKNOWN if not name else OTHER)

    def agent_of(self, ident: str) -> str:
        """The agent a process works for: from its id, or up its chain of parents."""
        for _ in range(8):  # a worker of a branch of a channel is three steps; a cycle ends here
            kind, _, rest = ident.partition(":")
            if kind == "channel":
                return self._agent(rest.partition(":")[0])
            if kind in ("memory", "cortex"):
                return self._agent(rest)
            parent = self.parents.get(ident)
            if parent is None:
                return UNKNOWN
            ident = parent
        return UNKNOWN

    @staticmethod
    def kind_of(ident: str) -> str:
        kind = ident.partition(":")[0]
        return kind if kind in KINDS else OTHER

    def _conversation(self, ident: str) -> tuple[str, str]:
        """``(agent, platform)`` of a channel process id."""
        try:
            agent, conv = ids.parse_channel(ident)
        except ids.IdError:
            return OTHER, OTHER
        return self._agent(agent), conv.platform

    # -- feeding ---------------------------------------------------------------------------------

    def feed(self, event: Event) -> None:
        """Account for one event (unknown topics only count in ``spacebot_events_total``)."""
        head, _, rest = event.topic.partition(".")
        self.events.labels(head if head in TOPIC_CLASSES else OTHER).inc()
        subject, _, what = rest.rpartition(".")
        body = event.body
        match head:
            case "llm" if isinstance(body, UsageReport):
                self._usage(event.src, body)
            case "proc":
                kind, _, ident = subject.partition(".")
                self._process(kind if kind in KINDS else OTHER, ident, what, body)
            case "channel" if isinstance(body, Notice):
                self._channel(subject, what, body)
            case "memory" if what == "ingest" and isinstance(body, Notice):
                self._ingest(self._agent(subject), body)
            case "gateway" if what == "dropped" and isinstance(body, Notice):
                platform = str(body.fields.get("platform", ""))
                reason = str(body.fields.get("reason", ""))
                self.dropped.labels(
                    platform if platform in PLATFORMS else OTHER, reason if reason in DROP_REASONS else OTHER
                ).inc()
            case "sec" if subject == "refused" and isinstance(body, Notice):
                self.refused.labels(self._domain(what)).inc()
                self.refused_connections = max(self.refused_connections, _num(body.fields, "count"))
            case _:
                pass

    def _usage(self, src: str, report: UsageReport) -> None:
        labels = (self.agent_of(src), self.kind_of(src), self._model(report.model))
        self.model_requests.labels(*labels).inc()
        usage = report.usage
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached", usage.cached_tokens),
        ):
            if count > 0:
                self.model_tokens.labels(*labels, kind).inc(count)
        if report.cost_usd > 0:
            self.model_cost.labels(*labels).inc(report.cost_usd)
        self.model_seconds.labels(*labels).observe(max(report.latency_ms, 0.0) / 1000.0)
        for abandoned in report.fallbacks:
            self.model_fallbacks.labels(self._model(abandoned)).inc()

    def seed(self, processes: Iterable[ProcessInfo]) -> None:
        """Start the process gauge from the supervisor's table: state changes that happened before
        this process subscribed (it may start after the others, or restart) are not events it saw.
        Events already counted are newer than nothing: rows it knows are left alone."""
        for row in processes:
            if row.kind in KINDS and row.state in LIVE_STATES and row.id not in self.states:
                self.states[row.id] = (row.kind, row.state.value)

    def _process(self, kind: str, ident: str, what: str, body: object) -> None:
        match what, body:
            case "state", StateChanged(new=new):
                if new in LIVE_STATES:
                    self.states[ident] = (kind, new.value)
                else:
                    self.states.pop(ident, None)
                if new is ProcState.FAILED:
                    self.failed.labels(kind).inc()
            case "spawn", Notice(fields=fields):
                self.spawns.labels(kind).inc()
                if isinstance(parent := fields.get("parent"), str):
                    self.parents.pop(ident, None)
                    self.parents[ident] = parent
                    while len(self.parents) > MAX_PARENTS:
                        del self.parents[next(iter(self.parents))]
            case "restart", Notice():
                self.restarts.labels(kind).inc()
            case "exit", ProcessExited(exit_code=code):
                self.exits.labels(kind, _exit_how(code)).inc()
            case "hung", ProcessHung(budget=budget):
                self.hung.labels(kind, budget).inc()
            case "down", Notice():
                self.down.labels(kind).inc()
            case "killed", ProcessKilled(report=report):
                self.kills.labels(kind).inc()
                self.killed.labels(kind).inc(len(report.killed))
                if report.survivors:
                    self.survivors.labels(kind).inc(len(report.survivors))
            case _:
                pass

    def _channel(self, ident: str, what: str, notice: Notice) -> None:
        agent, platform = self._conversation(ident)
        match what:
            case "turn":
                self.turns.labels(agent, platform).inc()
                self.turn_messages.labels(agent, platform).inc(_num(notice.fields, "messages"))
            case "retry":
                self.turn_retries.labels(agent, platform).inc()
            case "hibernate":
                self.hibernations.labels(agent, platform).inc()
            case "delegate" if notice.text == "started":
                kind = notice.fields.get("kind")
                self.delegations.labels(agent, kind if kind in ("branch", "worker") else OTHER).inc()
            case "compaction":
                level = notice.fields.get("level", "truncate" if notice.text == "truncated" else UNKNOWN)
                event = notice.text if notice.text in ("started", "done", "failed", "truncated") else OTHER
                self.compactions.labels(self._level(level), event).inc()
            case _:
                pass

    def _ingest(self, agent: str, notice: Notice) -> None:
        match notice.text:
            case "ingest":
                self.ingest_chunks.labels(agent).inc()
                total = _num(notice.fields, "total")
                if total and _num(notice.fields, "done") >= total:
                    self.ingest_files.labels(agent, "done").inc()
            case "ingest_retry":
                self.ingest_files.labels(agent, "retry").inc()
            case "ingest_failed":
                self.ingest_files.labels(agent, "failed").inc()
            case _:
                pass

    def feed_all(self, events: Iterable[Event]) -> None:
        """Feed many events (the benchmark, replays)."""
        for event in events:
            self.feed(event)
