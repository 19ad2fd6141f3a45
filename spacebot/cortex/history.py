"""Process history: the agent's processes as they start and end, read from the bus's ``proc.*``
events and kept in ``process_runs`` (one row per run: start, end, exit code, parent, restarts,
why it was killed or found hung).

The events say nothing about agents, so :class:`History` remembers each process's parent from
its ``spawn`` event (a worker of a branch of ``channel:main:…`` belongs to ``main``) and keeps the
live set that supervision checks. Rows are written in batches, at most one request a second,
and only when something ended: an idle agent writes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from spacebot.config import CortexSection
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    Event,
    HistoryGet,
    Notice,
    ProcessExited,
    ProcessHung,
    ProcessInfo,
    ProcessKilled,
    ProcessRun,
    ProcState,
    RunsList,
    RunsRecord,
    StateChanged,
)
from spacebot.runtime.memory_link import MemoryLink

log = logging.getLogger("spacebot.cortex")

MAX_TRACKED = 10_000
"""Processes remembered at once (the oldest entries go first)."""
FLUSH_EVERY = 1.0
"""Seconds between two writes of finished runs (they are batched)."""
LIVE = frozenset({ProcState.STARTING, ProcState.READY, ProcState.BUSY, ProcState.IDLE})


@dataclass
class Tracked:
    """What is known of one process of the agent."""

    kind: str
    parent: str
    started_at: float
    state: ProcState = ProcState.STARTING
    state_since: float = 0.0
    """When it entered ``state`` (wall clock)."""
    restarts: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


class History:
    """Follows the agent's processes; records every run that ended."""

    def __init__(self, agent: str, memory: MemoryLink, config: CortexSection) -> None:
        self.agent = agent
        self.memory = memory
        self.config = config
        self.parents: dict[str, str] = {}
        self.procs: dict[str, Tracked] = {}
        self.pending: list[ProcessRun] = []
        self.recorded = 0
        self._due = asyncio.Event()

    # -- whose is it -----------------------------------------------------------------------------

    def agent_of(self, ident: str) -> str:
        """The agent a process works for ("" when not known): from its id or its parents."""
        for _ in range(8):  # a worker of a branch of a channel is three steps; a cycle ends here
            kind, _, rest = ident.partition(":")
            if kind == "channel":
                return rest.partition(":")[0]
            if kind in ("memory", "cortex"):
                return rest
            parent = self.parents.get(ident)
            if parent is None:
                return ""
            ident = parent
        return ""

    def mine(self, ident: str) -> bool:
        return self.agent_of(ident) == self.agent

    def live(self, kinds: frozenset[str] = frozenset({"channel", "branch", "worker"})) -> list[str]:
        """Ids of the agent's live processes of ``kinds``."""
        return [i for i, t in self.procs.items() if t.kind in kinds and t.state in LIVE]

    # -- feeding ---------------------------------------------------------------------------------

    def seed(self, rows: list[ProcessInfo]) -> None:
        """What runs already (from a status request): processes started before this cortex."""
        for row in rows:
            if row.parent:
                self._parent(row.id, row.parent)
        for row in rows:
            if self.mine(row.id) and row.id not in self.procs and row.state in LIVE:
                started = time.time() - row.uptime_s
                since = time.time() - (row.progress_age_s or 0.0)  # at worst: since its last progress
                self.procs[row.id] = Tracked(row.kind, row.parent, started, row.state, since, row.restarts)

    def _parent(self, ident: str, parent: str) -> None:
        self.parents.pop(ident, None)
        self.parents[ident] = parent
        while len(self.parents) > MAX_TRACKED:
            del self.parents[next(iter(self.parents))]

    def feed(self, event: Event) -> None:
        """Account for one ``proc.<kind>.<id>.<what>`` event."""
        head, _, rest = event.topic.partition(".")
        if head != "proc":
            return
        kind, _, tail = rest.partition(".")
        ident, _, what = tail.rpartition(".")
        body = event.body
        if what == "spawn" and isinstance(body, Notice):
            parent = str(body.fields.get("parent", ""))
            self._parent(ident, parent)
            if self.mine(ident):
                self.procs[ident] = Tracked(kind, parent, event.ts, state_since=event.ts)
                while len(self.procs) > MAX_TRACKED:
                    del self.procs[next(iter(self.procs))]
            return
        tracked = self.procs.get(ident)
        if tracked is None:
            return
        match body:
            case StateChanged(new=new):
                if new is not tracked.state:
                    tracked.state, tracked.state_since = new, event.ts
                if new is ProcState.FAILED:
                    tracked.notes["failed"] = body.reason
            case Notice(text="restart"):
                tracked.restarts += 1
                tracked.started_at = event.ts
            case ProcessHung(budget=budget, seconds=seconds):
                tracked.notes["hung"] = f"{budget} budget ({seconds:.0f}s)"
            case ProcessKilled(report=report):
                tracked.notes["killed"] = len(report.killed)
            case ProcessExited(exit_code=code, restart_in=restart_in):
                self._ended(ident, tracked, event.ts, code, restart_in)
            case _:
                pass

    def note(self, ident: str, key: str, value: Any) -> None:
        """Add to what the next row of ``ident`` says (supervision's reason for a kill)."""
        if (tracked := self.procs.get(ident)) is not None:
            tracked.notes[key] = value

    def _ended(
        self, ident: str, tracked: Tracked, at: float, code: int | None, restart_in: float | None
    ) -> None:
        detail: dict[str, Any] = {"parent": tracked.parent, **tracked.notes}
        if tracked.restarts:
            detail["restarts"] = tracked.restarts
        if restart_in is not None:
            detail["restart_in"] = restart_in
        self.pending.append(
            ProcessRun(
                proc_id=ident,
                kind=tracked.kind,
                started_at=tracked.started_at,
                ended_at=at,
                exit_code=code,
                detail=detail,
            )
        )
        tracked.notes = {}
        if restart_in is None:
            del self.procs[ident]
        else:
            tracked.state = ProcState.EXITED
        self._due.set()

    # -- running ---------------------------------------------------------------------------------

    async def follow(self, events: EventStream) -> None:
        """Feed every event of the stream (``proc.`` topics)."""
        async for event in events:
            self.feed(event)

    async def write(self) -> None:
        """Write what ended, in batches, until cancelled."""
        while True:
            await self._due.wait()
            self._due.clear()
            await self.flush()
            await asyncio.sleep(FLUSH_EVERY)  # batches a burst of exits into one write

    async def flush(self) -> None:
        batch, self.pending = self.pending, []
        if not batch:
            return
        try:
            stored = await self.memory.request(
                RunsRecord(batch, keep=self.config.history_keep), returns=int, attempts=20
            )
            self.recorded += stored
        except asyncio.CancelledError:
            self.pending[:0] = batch
            raise
        except Exception as exc:
            log.warning("process history: %d runs not recorded: %s", len(batch), exc)

    async def get(self, req: HistoryGet) -> list[ProcessRun]:
        """``HistoryGet``: the newest rows, after writing what is still waiting."""
        await self.flush()
        return await self.memory.request(
            RunsList(limit=req.limit, kind=req.kind, proc_id=req.proc_id), returns=list[ProcessRun]
        )
