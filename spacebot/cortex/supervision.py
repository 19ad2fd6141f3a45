"""Supervision beyond heartbeats: the agent's work that is alive but stuck.

The supervisor kills what stops heartbeating or passes its kind's budgets. The cortex knows more
about what the work means, and ends, through the supervisor's kill path (``KillRequest``):

* a branch or worker whose outcome its channel recorded (``channel.<id>.delegate`` ``finished``)
  but that is still running ``outcome_grace`` seconds later;
* a branch or worker older than its own time limit (``[delegates] branch_timeout`` /
  ``worker_timeout``) plus ``branch_grace`` — its own timer should have ended it;
* a conversation busy on one turn without progress for ``turn_stall`` seconds: it is restarted,
  and the new process finds the unanswered messages and answers them.

At most ``max_kills_per_tick`` per check; each is published on ``cortex.<agent>.supervision`` with
its reason and noted in the process's history row. A check works from the bus's events (spawns,
states, outcomes) that the cortex follows anyway; it asks the supervisor for its table (which
measures every process) only to confirm that a conversation busy for ``turn_stall`` is stuck.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from spacebot.config import Config
from spacebot.ipc.messages import (
    SUPERVISOR_ID,
    Event,
    KillReport,
    KillRequest,
    Notice,
    ProcessInfo,
    ProcState,
    StatusReply,
    StatusRequest,
)
from spacebot.runtime.child import ChildContext

if TYPE_CHECKING:
    from spacebot.cortex.history import History

log = logging.getLogger("spacebot.cortex")

RUNNING = frozenset({ProcState.READY, ProcState.BUSY, ProcState.IDLE})
STALLED = "stalled?"
"""A verdict to confirm with the supervisor's table before acting on it."""
MAX_OUTCOMES = 10_000
"""Recorded outcomes remembered at once."""


class Supervision:
    """One cortex's supervision checks."""

    def __init__(self, ctx: ChildContext, agent: str, history: History) -> None:
        self.ctx = ctx
        self.agent = agent
        self.history = history
        self.outcomes: dict[str, float] = {}
        """Branch/worker id → when its channel recorded its outcome (wall clock)."""
        self.kills = 0
        self.topic = f"cortex.{agent}.supervision"

    @property
    def config(self) -> Config:
        return self.ctx.config

    def feed(self, event: Event) -> None:
        """``channel.<id>.delegate`` ``finished``: the channel holds the outcome of that process."""
        head, _, rest = event.topic.partition(".")
        channel, _, what = rest.rpartition(".")
        body = event.body
        if head != "channel" or what != "delegate" or not isinstance(body, Notice) or body.text != "finished":
            return
        ident = body.fields.get("id")
        # Only the channel itself speaks for its delegates (its bus id is the event's source).
        if isinstance(ident, str) and event.src == channel and self.history.parents.get(ident) == channel:
            self.outcomes.pop(ident, None)
            self.outcomes[ident] = event.ts
            while len(self.outcomes) > MAX_OUTCOMES:
                del self.outcomes[next(iter(self.outcomes))]

    def verdict(self, ident: str, now: float) -> tuple[str, bool] | None:
        """From what the events said: why ``ident`` should be ended and whether it is restarted
        afterwards; ``(STALLED, True)`` for a conversation to confirm with the supervisor first."""
        tracked = self.history.procs.get(ident)
        if tracked is None or tracked.state not in RUNNING:
            return None
        cx = self.config.cortex
        if tracked.kind in ("branch", "worker"):
            reported = self.outcomes.get(ident)
            if reported is not None and now - reported >= cx.outcome_grace:
                return f"reported its outcome {now - reported:.0f}s ago but did not exit", False
            delegates = self.config.delegates
            limit = delegates.branch_timeout if tracked.kind == "branch" else delegates.worker_timeout
            age = now - tracked.started_at
            if age >= limit + cx.branch_grace:
                return f"ran {age:.0f}s, past its {limit:g}s limit and {cx.branch_grace:g}s grace", False
        elif (
            tracked.kind == "channel"
            and cx.turn_stall > 0
            and tracked.state is ProcState.BUSY
            and now - tracked.state_since >= cx.turn_stall
        ):
            return STALLED, True
        return None

    def stalled(self, row: ProcessInfo) -> str | None:
        """The supervisor's row of a conversation busy for ``turn_stall``: is its turn stuck?
        Busy while only its delegates work is not a stalled turn: the turn's own task line says
        ``answering …`` (set when a turn starts; every streamed token is progress)."""
        age = row.progress_age_s
        if row.task.startswith("answering") and age is not None and age >= self.config.cortex.turn_stall:
            return f"turn made no progress for {age:.0f}s"
        return None

    async def tick(self) -> int:
        """One check; returns how many processes it ended. It works from the events it follows and
        asks the supervisor for its table only to confirm a conversation that looks stalled."""
        now = time.time()
        for gone in [i for i in self.outcomes if i not in self.history.procs]:
            del self.outcomes[gone]
        found: list[tuple[str, str, bool]] = []
        confirm: list[str] = []
        for ident in self.history.live():
            verdict = self.verdict(ident, now)
            if verdict is None:
                continue
            if verdict[0] == STALLED:
                confirm.append(ident)
            else:
                found.append((ident, *verdict))
        if confirm:
            status = await self.ctx.request(SUPERVISOR_ID, StatusRequest(), returns=StatusReply, timeout=5.0)
            rows = {row.id: row for row in status.processes if row.pid}
            for ident in confirm:
                if ident in rows and (reason := self.stalled(rows[ident])) is not None:
                    found.append((ident, reason, True))
        ended = 0
        for ident, reason, restart in found[: self.config.cortex.max_kills_per_tick]:
            if await self.end(ident, reason, restart):
                ended += 1
        return ended

    async def end(self, ident: str, reason: str, restart: bool) -> bool:
        """Stop ``ident`` through the supervisor; publish what was done and why."""
        log.warning("supervision ends id=%s reason=%s restart=%s", ident, reason, restart)
        self.history.note(ident, "ended_by_cortex", reason)
        try:
            report = await self.ctx.request(
                SUPERVISOR_ID, KillRequest(ident, restart=restart), returns=KillReport, timeout=30.0
            )
        except Exception as exc:
            log.error("supervision could not end id=%s: %s", ident, exc)
            self.ctx.publish(
                self.topic, Notice("kill_failed", {"id": ident, "reason": reason, "error": str(exc)})
            )
            return False
        self.kills += 1
        self.outcomes.pop(ident, None)
        self.ctx.publish(
            self.topic,
            Notice(
                "ended",
                {
                    "id": ident,
                    "kind": ident.partition(":")[0],
                    "reason": reason,
                    "restart": restart,
                    "killed": [k.name for k in report.killed],
                },
            ),
        )
        return True
