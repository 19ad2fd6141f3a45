"""The process table: one record per managed process and the only place states change."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psutil

from spacebot.ipc.messages import Kind, ProcState, SpawnSpec, StateChanged

log = logging.getLogger("spacebot.supervisor")

_ROUTINE = frozenset({ProcState.READY, ProcState.BUSY, ProcState.IDLE})

S = ProcState
TRANSITIONS: dict[ProcState, frozenset[ProcState]] = {
    S.STARTING: frozenset({S.READY, S.STOPPING, S.EXITED, S.FAILED}),
    S.READY: frozenset({S.BUSY, S.IDLE, S.STOPPING, S.EXITED, S.FAILED}),
    S.BUSY: frozenset({S.IDLE, S.STOPPING, S.EXITED, S.FAILED}),
    S.IDLE: frozenset({S.BUSY, S.STOPPING, S.EXITED, S.FAILED}),
    S.STOPPING: frozenset({S.EXITED, S.FAILED}),
    S.EXITED: frozenset({S.STARTING, S.FAILED}),
    S.FAILED: frozenset({S.STARTING}),
}
"""Legal moves. ``EXITED → STARTING`` is a restart; ``FAILED → STARTING`` only by an explicit spawn."""

LIVE = frozenset({S.STARTING, S.READY, S.BUSY, S.IDLE, S.STOPPING})
"""States in which the process has an OS pid."""


class IllegalTransition(RuntimeError):
    """A bug: code tried a move the table does not allow."""


@dataclass
class ProcessRecord:
    """Everything the supervisor knows about one managed process."""

    spec: SpawnSpec
    parent: str
    state: ProcState = S.STARTING
    pid: int = 0
    started_at: float = 0.0
    """Monotonic start time of the current incarnation."""
    wall_started_at: float = 0.0
    """Wall-clock start time of the current incarnation."""
    last_heartbeat: float | None = None
    """Monotonic time of the last heartbeat."""
    progress_at: float | None = None
    """Wall-clock time of the last progress the child reported."""
    task: str = ""
    restarts: int = 0
    restart_times: list[float] = field(default_factory=list)
    backoff_step: int = 0
    start_failures: int = 0
    """Starts in a row that produced no process (reset when one says ``Ready``)."""
    exit_code: int | None = None
    frame_errors: int = 0
    early_ready: int = 0
    """Pid named by a ``Ready`` that arrived before the zygote reported the fork."""
    stop_requested: bool = False
    """Set when the supervisor or an operator asked it to stop: no restart follows."""
    restart_handle: asyncio.TimerHandle | None = None
    """A scheduled restart, if one is pending."""
    proc: psutil.Process | None = None

    def cancel_restart(self) -> None:
        """Drop a pending scheduled restart."""
        if self.restart_handle is not None:
            self.restart_handle.cancel()
            self.restart_handle = None

    @property
    def id(self) -> str:
        """The bus id."""
        return self.spec.id

    @property
    def kind(self) -> Kind:
        """The kind."""
        return self.spec.kind


class ProcessTable:
    """Records by id, with every state change validated and published."""

    def __init__(self, publish: Callable[[str, StateChanged], None]) -> None:
        self._records: dict[str, ProcessRecord] = {}
        self._by_pid: dict[int, ProcessRecord] = {}
        self._publish = publish

    def __iter__(self) -> Iterator[ProcessRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    def get(self, pid_or_id: str) -> ProcessRecord | None:
        """Look a record up by bus id."""
        return self._records.get(pid_or_id)

    def by_pid(self, pid: int) -> ProcessRecord | None:
        """Look a live record up by OS pid."""
        return self._by_pid.get(pid)

    def add(self, record: ProcessRecord) -> None:
        """Register a new record (state ``starting``, no pid yet)."""
        self._records[record.id] = record

    def remove(self, ident: str) -> None:
        """Forget a record that will never run again."""
        rec = self._records.pop(ident, None)
        if rec is not None and rec.pid:
            self._by_pid.pop(rec.pid, None)

    def attach_pid(self, record: ProcessRecord, pid: int) -> None:
        """A new incarnation of ``record`` is running as ``pid``."""
        if record.pid:
            self._by_pid.pop(record.pid, None)
        record.pid = pid
        record.started_at = time.monotonic()
        record.wall_started_at = time.time()
        record.last_heartbeat = None
        record.progress_at = None
        record.exit_code = None
        self._by_pid[pid] = record
        try:
            record.proc = psutil.Process(pid)
            record.proc.cpu_percent(None)  # prime the CPU counter
        except psutil.Error:
            record.proc = None

    def detach_pid(self, record: ProcessRecord) -> None:
        """The current incarnation is gone: forget its pid, so that no check or kill can ever
        target it again (the number may already belong to another process)."""
        if record.pid:
            self._by_pid.pop(record.pid, None)
        record.pid = 0
        record.proc = None

    def transition(self, record: ProcessRecord, new: ProcState, reason: str = "") -> bool:
        """Move ``record`` to ``new`` and publish it; a no-op when already there."""
        old = record.state
        if old is new:
            return False
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(f"{record.id!r}: {old.value} → {new.value} is not allowed ({reason})")
        record.state = new
        # busy ⇄ idle happens on every turn of every conversation: an event, but only a debug line.
        routine = {old, new} <= _ROUTINE
        (log.debug if routine else log.info)(
            "state id=%s pid=%d %s→%s reason=%r", record.id, record.pid, old.value, new.value, reason
        )
        self._publish(
            f"proc.{record.kind.value}.{record.id}.state",
            StateChanged(record.id, record.kind.value, record.pid, old, new, reason),
        )
        return True

    def children_of(self, ident: str) -> list[ProcessRecord]:
        """Records whose logical parent is ``ident``."""
        return [r for r in self._records.values() if r.parent == ident]

    def descendants_of(self, ident: str) -> list[ProcessRecord]:
        """Every record below ``ident`` in the logical tree, deepest first."""
        out: list[ProcessRecord] = []
        for child in self.children_of(ident):
            out.extend(self.descendants_of(child.id))
            out.append(child)
        return out
