"""Which budget a process has run out of: pure checks, run by the supervisor's monitor."""

from __future__ import annotations

from spacebot.config import ProcessPolicy
from spacebot.ipc.messages import Budget, Kind, ProcState
from spacebot.supervisor.table import ProcessRecord

RETAIN_EXITED = 300.0
"""Seconds an exited branch or worker stays visible in ``status`` before it is forgotten."""


def overdue(
    rec: ProcessRecord, policy: ProcessPolicy, now: float, wall: float
) -> tuple[Budget, float] | None:
    """``(budget, seconds)`` when ``rec`` is alive but stuck past a budget, else ``None``.

    ``now`` is monotonic time, ``wall`` is epoch time (progress stamps come from the child's clock).
    """
    if rec.state is ProcState.STARTING and rec.pid:
        age = now - rec.started_at
        return ("ready", age) if age > policy.ready_timeout else None
    if rec.state not in (ProcState.READY, ProcState.BUSY, ProcState.IDLE):
        return None
    silent = now - (rec.last_heartbeat or rec.started_at)
    if silent > policy.heartbeat_interval * policy.heartbeat_miss_limit:
        return ("heartbeat", silent)
    if policy.wall_clock_limit and now - rec.started_at > policy.wall_clock_limit:
        return ("wall_clock", now - rec.started_at)
    if policy.progress_limit and rec.state is ProcState.BUSY and rec.progress_at is not None:
        quiet = wall - rec.progress_at
        if quiet > policy.progress_limit:
            return ("progress", quiet)
    return None


def forgettable(rec: ProcessRecord, now: float) -> bool:
    """An exited branch or worker that nobody will restart, old enough to drop from status."""
    return (
        rec.state in (ProcState.EXITED, ProcState.FAILED)
        and rec.kind in (Kind.BRANCH, Kind.WORKER)
        and rec.restart_handle is None
        and now - rec.started_at > RETAIN_EXITED
    )
