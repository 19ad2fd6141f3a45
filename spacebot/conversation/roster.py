"""A channel's running and recently finished branches and workers, and the status block its model sees."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from spacebot.ipc.messages import OUTCOMES


@dataclass
class Delegate:
    """One branch or worker started by the channel."""

    id: str
    kind: str
    task: str
    task_type: str = ""
    interactive: bool = False
    started: float = field(default_factory=time.monotonic)
    status: str = ""
    waiting: bool = False
    outcome: str = ""
    result: str = ""
    finished: float = 0.0


class Delegates:
    """Limits, duplicates, status lines, outcomes; renders the live status block."""

    def __init__(self, max_branches: int, max_workers: int, keep_finished: int = 6) -> None:
        self.limits = {"branch": max_branches, "worker": max_workers}
        self.running: dict[str, Delegate] = {}
        self.finished: collections.deque[Delegate] = collections.deque(maxlen=keep_finished)

    def refuse(self, kind: str, task: str) -> str | None:
        """Why a new ``kind`` for ``task`` may not start (``None`` = it may)."""
        mine = [d for d in self.running.values() if d.kind == kind]
        if len(mine) >= self.limits[kind]:
            plural = "branches" if kind == "branch" else "workers"
            return (
                f"refused: {len(mine)} {plural} already running (limit {self.limits[kind]}); "
                "wait for one to finish or cancel one"
            )
        key = _norm(task)
        for d in mine:
            if _norm(d.task) == key:
                return f"refused: {d.id} is already working on this ({d.task!r}); its result will come to you"
        return None

    def add(self, delegate: Delegate) -> None:
        self.running[delegate.id] = delegate

    def set_status(self, ident: str, text: str, kind: str) -> Delegate | None:
        d = self.running.get(ident)
        if d is not None:
            d.status = text
            d.waiting = kind == "waiting"
        return d

    def finish(self, ident: str, outcome: str, result: str) -> Delegate | None:
        """Record an outcome once; returns the delegate, or ``None`` if it was already finished/unknown."""
        d = self.running.pop(ident, None)
        if d is None:
            return None
        d.outcome = outcome if outcome in OUTCOMES else "failed"
        d.result = result
        d.finished = time.monotonic()
        d.waiting = False
        self.finished.appendleft(d)
        return d

    def block(self, now: float | None = None) -> str:
        """The status block: what runs (id, task, age, last status) and what finished recently."""
        now = time.monotonic() if now is None else now
        lines = []
        if self.running:
            lines.append("## Work in progress (yours)")
            for d in self.running.values():
                state = "waiting for input (use route)" if d.waiting else (d.status or "started")
                lines.append(f"- {d.id} [{d.kind}, {_age(now - d.started)}] {d.task!r}: {state}")
        if self.finished:
            lines.append("## Recently finished")
            for d in self.finished:
                lines.append(f"- {d.id} [{d.kind}, {d.outcome} {_age(now - d.finished)} ago] {d.task!r}")
        return "\n".join(lines)


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def _age(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f}s"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
