"""Memory maintenance on a schedule: decay, prune, merge and the association pass.

Each operation has its own interval (``[cortex] *_interval``). When one falls due the cortex asks
memory for its change counters (``MemChanges``, a counter read) and runs only the operations for
which memory changed since they last ran — an idle agent's cortex does that one cheap check per
interval and nothing else. The cortex's own maintenance writes do not count as a change (memory
counts them apart), so maintenance never makes itself due again.

A run is bounded by ``run_budget`` seconds; a run that fails or overruns counts as a failure, and
``circuit_threshold`` failures in a row open a circuit: no run until ``circuit_open`` seconds have
passed, said on the process's status line. Every run is a row of ``process_runs``
(``kind = "maintenance"``) with its counts; the newest one tells a restarted cortex where the
association pass stopped and what memory state the operations last saw.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from spacebot.config import CortexSection
from spacebot.ipc.messages import (
    AssociationReport,
    MaintenanceReport,
    MemAssociatePass,
    MemChanges,
    MemMaintain,
    MemoryChanges,
    ProcessRun,
    RunsList,
    RunsRecord,
)
from spacebot.runtime.child import ChildContext
from spacebot.runtime.memory_link import MemoryLink

log = logging.getLogger("spacebot.cortex")

OPS = ("decay", "prune", "merge", "associate")
"""The operations, in the order one run does them."""
RUN_KIND = "maintenance"
"""``process_runs.kind`` of a maintenance run."""


def clock(ts: float) -> str:
    """``HH:MM:SS`` local time, for a status line."""
    return time.strftime("%H:%M:%S", time.localtime(ts))


class Circuit:
    """Consecutive failures; ``threshold`` of them open it for ``open_for`` seconds. The first run
    after that is a trial: success closes it, failure opens it again at once."""

    def __init__(self, threshold: int, open_for: float) -> None:
        self.threshold = threshold
        self.open_for = open_for
        self.failures = 0
        self.open_until: float | None = None
        self.last_error = ""

    def is_open(self, now: float) -> bool:
        return self.open_until is not None and now < self.open_until

    def success(self) -> None:
        self.failures = 0
        self.open_until = None
        self.last_error = ""

    def failure(self, error: str, now: float) -> bool:
        """Count a failure; returns whether it opened the circuit."""
        self.failures += 1
        self.last_error = error
        if self.failures >= self.threshold:
            self.open_until = now + self.open_for
            return True
        return False

    def line(self) -> str:
        """What the status line says about it (empty while closed and clean)."""
        if self.open_until is not None:
            return (
                f"maintenance circuit open until {clock(self.open_until)} "
                f"({self.failures} failures: {self.last_error[:120]})"
            )
        if self.failures:
            return f"maintenance failed {self.failures}x: {self.last_error[:120]}"
        return ""


class Maintenance:
    """The schedule loop and its bookkeeping (one per cortex)."""

    def __init__(
        self,
        ctx: ChildContext,
        memory: MemoryLink,
        config: CortexSection,
        *,
        changed: Callable[[], None] = lambda: None,
    ) -> None:
        self.ctx = ctx
        self.memory = memory
        self.config = config
        self.changed = changed
        """Called when the status line's part may have changed."""
        self.intervals = {
            "decay": config.decay_interval,
            "prune": config.prune_interval,
            "merge": config.merge_interval,
            "associate": config.association_interval,
        }
        now = time.time()
        self.last_at = dict.fromkeys(OPS, now)
        """When each operation last ran or was found not needed (wall clock)."""
        self.seen: dict[str, tuple[float, int] | None] = dict.fromkeys(OPS)
        """The memory state ``(epoch, outside)`` each operation last ran on."""
        self.assoc_after = 0
        self.circuit = Circuit(config.circuit_threshold, config.circuit_open)
        self.runs = 0
        self.skipped = 0
        self.last_summary = ""
        self.wake = asyncio.Event()
        """Set to re-plan at once (a test, or a request to run now)."""

    # -- status ----------------------------------------------------------------------------------

    def line(self) -> str:
        """This part's piece of the status line."""
        return self.circuit.line() or self.last_summary

    def report(self) -> dict[str, Any]:
        return {
            "circuit_open_until": self.circuit.open_until,
            "failures": self.circuit.failures,
            "last_error": self.circuit.last_error,
            "runs": self.runs,
            "skipped": self.skipped,
        }

    # -- the loop --------------------------------------------------------------------------------

    async def restore(self) -> None:
        """Take up where the newest recorded run left off (a restarted cortex)."""
        try:
            rows = await self.memory.request(
                RunsList(limit=1, kind=RUN_KIND, proc_id=self.ctx.id), returns=list[ProcessRun]
            )
        except Exception as exc:  # memory away: start afresh (the next run records its state)
            log.warning("previous maintenance state not read: %s", exc)
            return
        if not rows:
            return
        state = rows[0].detail.get("state", {})
        self.assoc_after = int(state.get("assoc_after", 0))
        for op in OPS:
            seen = state.get("seen", {}).get(op)
            if isinstance(seen, list) and len(seen) == 2:
                self.seen[op] = (float(seen[0]), int(seen[1]))
            if isinstance(at := state.get("at", {}).get(op), int | float):
                self.last_at[op] = float(at)

    def due_at(self) -> float:
        """Wall-clock time of the next check."""
        nxt = min(self.last_at[op] + self.intervals[op] for op in OPS)
        if self.circuit.is_open(time.time()) and self.circuit.open_until is not None:
            nxt = max(nxt, self.circuit.open_until)
        return nxt

    async def run(self) -> None:
        """Check at each due time, forever."""
        await self.restore()
        while True:
            delay = max(0.0, self.due_at() - time.time())
            try:
                async with asyncio.timeout(delay):
                    await self.wake.wait()
                self.wake.clear()
            except TimeoutError:
                pass
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let one bad check end the schedule
                log.exception("maintenance check failed")

    async def check(self) -> None:
        """Run the operations that are due and have something new to work on."""
        now = time.time()
        if self.circuit.is_open(now):
            return
        due = [op for op in OPS if now >= self.last_at[op] + self.intervals[op]]
        if not due:
            return
        try:
            state = await self.memory.request(MemChanges(), returns=MemoryChanges, attempts=3)
        except Exception as exc:
            log.info("maintenance check postponed: memory did not answer (%s)", exc)
            for op in due:
                self.last_at[op] = now
            return
        mark = (state.epoch, state.outside)
        todo = [op for op in due if _changed_since(self.seen[op], mark)]
        for op in due:
            if op not in todo:
                self.last_at[op] = now
        if not todo:
            self.skipped += 1
            return
        await self._run(todo, mark)

    async def _run(self, todo: list[str], mark: tuple[float, int]) -> None:
        started = time.time()
        counts: dict[str, dict[str, Any]] = {}
        error = ""
        self.ctx.set_busy(True, f"maintenance: {', '.join(todo)}")
        try:
            async with asyncio.timeout(self.config.run_budget):
                for op in todo:
                    counts[op] = await self._op(op)
                    self.seen[op] = mark
                    self.last_at[op] = time.time()
        except TimeoutError:
            budget = self.config.run_budget
            error = f"run took longer than its {budget:g}s budget ({len(counts)} of {len(todo)} done)"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
        ended = time.time()
        for op in todo:
            if op not in counts:  # not done: tried again after its interval
                self.last_at[op] = ended
        self.runs += 1
        # Stored before it is announced: whoever hears "ran" finds the run in the history.
        await self._record(started, ended, counts, error)
        if error:
            opened = self.circuit.failure(error, ended)
            (log.error if opened else log.warning)(
                "maintenance failed ops=%s failures=%d error=%s", ",".join(todo), self.circuit.failures, error
            )
            self.ctx.publish(
                f"cortex.{self.ctx.id.partition(':')[2]}.maintenance",
                _notice("failed", todo, counts, error, self.circuit.open_until),
            )
        else:
            self.circuit.success()
            self.last_summary = f"maintenance {clock(ended)}: " + ", ".join(
                f"{op} {c.get('changed', c.get('added', 0))}" for op, c in counts.items()
            )
            log.info("maintenance ran ops=%s counts=%s seconds=%.2f", ",".join(todo), counts, ended - started)
            self.ctx.publish(
                f"cortex.{self.ctx.id.partition(':')[2]}.maintenance", _notice("ran", todo, counts, "", None)
            )
        self.ctx.set_busy(False, None)
        self.changed()

    async def _op(self, op: str) -> dict[str, Any]:
        if op == "associate":
            report = await self.memory.request(
                MemAssociatePass(
                    after_id=self.assoc_after,
                    limit=self.config.association_batch,
                    threshold=self.config.association_threshold,
                ),
                returns=AssociationReport,
                attempts=3,
            )
            self.assoc_after = report.last_id
            if report.remaining:  # more wait: due again at the next check, not an interval later
                self.last_at[op] = time.time() - self.intervals[op]
            return {"examined": report.examined, "added": report.added, "last_id": report.last_id}
        result = await self.memory.request(MemMaintain(op), returns=MaintenanceReport, attempts=3)  # type: ignore[arg-type]
        return {"examined": result.examined, "changed": result.changed}

    async def _record(self, started: float, ended: float, counts: dict[str, Any], error: str) -> None:
        state = {
            "assoc_after": self.assoc_after,
            "seen": {op: list(v) for op, v in self.seen.items() if v is not None},
            "at": dict(self.last_at),
        }
        run = ProcessRun(
            proc_id=self.ctx.id,
            kind=RUN_KIND,
            started_at=started,
            ended_at=ended,
            exit_code=1 if error else 0,
            detail={"ops": counts, "error": error, "state": state},
        )
        try:
            await self.memory.request(RunsRecord([run]), returns=int, attempts=3)
        except Exception as exc:
            log.warning("maintenance run not recorded: %s", exc)


def _changed_since(seen: tuple[float, int] | None, now: tuple[float, int]) -> bool:
    """Whether memory changed since an operation last saw it. Counters start again with each
    memory process: in a new one (or before any run) only writes made since its start count, so a
    restart of memory or the cortex is not itself a reason to run."""
    if seen is None or seen[0] != now[0]:
        return now[1] > 0
    return now[1] != seen[1]


def _notice(what: str, todo: list[str], counts: dict[str, Any], error: str, open_until: float | None) -> Any:
    from spacebot.ipc.messages import Notice

    fields: dict[str, Any] = {"ops": todo, "counts": counts}
    if error:
        fields |= {"error": error, "circuit_open_until": open_until}
    return Notice(what, fields)
