"""Model usage for ``GET /api/usage``: tokens and estimated cost by day, model, agent and process kind.

Nothing in Spacebot stores usage: every model call is published once on the bus
(``llm.usage.<process>``, a :class:`~spacebot.ipc.messages.UsageReport`) and ``gateway:metrics``
turns those events into Prometheus counters. ``gateway:api`` reads the same events and adds them up
here, in memory, from the moment it started (the answer says when): a restart of ``gateway:api`` or
of the service starts the tally again.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import msgspec

from spacebot.ipc.messages import Event, Notice, ProcessInfo, UsageReport

MAX_ROWS = 20_000
"""(day, model, agent, kind) rows kept; beyond that the oldest day's rows go first."""
MAX_PARENTS = 10_000
"""Process → parent entries remembered to find the agent of a worker or branch (oldest dropped)."""
DAY_S = 86_400.0


class UsageRow(msgspec.Struct, frozen=True, kw_only=True):
    """Model calls of one day, model, agent and process kind."""

    day: str
    """UTC date, ``YYYY-MM-DD``."""
    model: str
    """The model that answered (``provider/model``)."""
    agent: str
    """The agent the calling process works for (``unknown`` when it cannot be told)."""
    process: str
    """Kind of the calling process (``channel``, ``worker``, ``branch``, ``compactor``…)."""
    requests: int
    """Model calls."""
    input_tokens: int
    """Prompt tokens billed at the full rate."""
    output_tokens: int
    """Generated tokens."""
    cached_tokens: int
    """Prompt tokens served from the provider's cache."""
    cost_usd: float
    """Estimated cost in US dollars (from the price table of ``spacebot.llm.cost``)."""


class UsageSummary(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/usage``: what the API process has seen since it started."""

    since: float
    """When counting started (epoch seconds): ``gateway:api``'s start; usage is not stored anywhere."""
    days: int
    """How many days (today included) the rows cover."""
    rows: list[UsageRow]
    """By day (oldest first), then model, agent and process kind."""
    requests: int
    """Model calls in ``rows``."""
    cost_usd: float
    """Estimated cost of ``rows``."""


def day_of(ts: float) -> str:
    """The UTC date of ``ts`` as ``YYYY-MM-DD``."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


class UsageBook:
    """Running totals of the usage events, keyed by (day, model, agent, kind)."""

    def __init__(self, agents: Iterable[str], now: float | None = None) -> None:
        self.agents = frozenset(agents)
        self.since = time.time() if now is None else now
        self.totals: dict[tuple[str, str, str, str], list[float]] = {}
        self.parents: dict[str, str] = {}

    def agent_of(self, ident: str) -> str:
        """The agent a process works for: from its id, or up its chain of parents."""
        for _ in range(8):  # a worker of a branch of a channel is three steps; a cycle ends here
            kind, _, rest = ident.partition(":")
            if kind == "channel":
                agent = rest.partition(":")[0]
                return agent if agent in self.agents else "unknown"
            if kind in ("memory", "cortex"):
                return rest if rest in self.agents else "unknown"
            parent = self.parents.get(ident)
            if parent is None:
                return "unknown"
            ident = parent
        return "unknown"

    def seed(self, processes: Iterable[ProcessInfo]) -> None:
        """Learn the parents of the processes that were spawned before this one subscribed."""
        for row in processes:
            self.parents.setdefault(row.id, row.parent)

    def feed(self, event: Event) -> None:
        """Count a usage event; remember the parent of a spawned process; ignore the rest."""
        body = event.body
        if isinstance(body, UsageReport):
            self._add(event.src, event.ts, body)
        elif isinstance(body, Notice) and event.topic.startswith("proc.") and event.topic.endswith(".spawn"):
            ident = event.topic[: -len(".spawn")].split(".", 2)[-1]
            parent = body.fields.get("parent")
            if isinstance(parent, str):
                self.parents.pop(ident, None)
                self.parents[ident] = parent
                while len(self.parents) > MAX_PARENTS:
                    del self.parents[next(iter(self.parents))]

    def _add(self, src: str, ts: float, report: UsageReport) -> None:
        kind = report.process or src.partition(":")[0]
        key = (day_of(ts), report.model[:100], self.agent_of(src), kind[:40])
        row = self.totals.get(key)
        if row is None:
            while len(self.totals) >= MAX_ROWS:
                del self.totals[min(self.totals)]
            row = self.totals[key] = [0, 0, 0, 0, 0.0]
        usage = report.usage
        row[0] += 1
        row[1] += usage.input_tokens
        row[2] += usage.output_tokens
        row[3] += usage.cached_tokens
        row[4] += max(report.cost_usd, 0.0)

    def summary(self, days: int, now: float | None = None) -> UsageSummary:
        """The rows of the last ``days`` days, today included."""
        now = time.time() if now is None else now
        first = day_of(now - (days - 1) * DAY_S)
        rows = [
            UsageRow(
                day=day,
                model=model,
                agent=agent,
                process=kind,
                requests=int(t[0]),
                input_tokens=int(t[1]),
                output_tokens=int(t[2]),
                cached_tokens=int(t[3]),
                cost_usd=round(t[4], 6),
            )
            for (day, model, agent, kind), t in sorted(self.totals.items())
            if day >= first
        ]
        return UsageSummary(
            since=self.since,
            days=days,
            rows=rows,
            requests=sum(r.requests for r in rows),
            cost_usd=round(sum(r.cost_usd for r in rows), 6),
        )
