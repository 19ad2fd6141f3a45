"""Kills and liveness, for the supervisor: the one kill escalation over a process's whole subtree,
operators' and processes' kill requests (a process may stop only what it started), and the monitor
that kills what went past its heartbeat, wall-clock or progress budget.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from spacebot.ipc.messages import (
    Err,
    ErrorCode,
    KillReport,
    KillRequest,
    Kind,
    Ok,
    ProcessHung,
    ProcessKilled,
    ProcState,
)
from spacebot.ipc.replies import Reply
from spacebot.supervisor.kill import kill_tree
from spacebot.supervisor.liveness import forgettable, overdue
from spacebot.supervisor.table import LIVE, ProcessRecord

if TYPE_CHECKING:
    from spacebot.config import Config
    from spacebot.ipc.broker import Broker
    from spacebot.supervisor.exits import ExitWatcher
    from spacebot.supervisor.sdnotify import Notifier
    from spacebot.supervisor.table import ProcessTable

Publish = Callable[[str, object], None]
SpawnTask = Callable[[Coroutine[Any, Any, Any], str], "asyncio.Task[object]"]

log = logging.getLogger("spacebot.supervisor")


class Enforcer:
    """The supervisor's kills: on request, of hung processes, of a tree at shutdown.

    It is given the table and what it may do (publish, report to systemd, start background
    tasks, tell the broker a process is gone), not the supervisor."""

    def __init__(
        self,
        config: Callable[[], Config],
        table: ProcessTable,
        exits: ExitWatcher,
        notifier: Notifier,
        broker: Callable[[], Broker | None],
        publish: Publish,
        summary: Callable[[], str],
        spawn_task: SpawnTask,
        is_own: Callable[[int], bool] = lambda pid: False,
    ) -> None:
        self._config = config
        self.table = table
        self.exits = exits
        self.notifier = notifier
        self._broker = broker
        self._publish = publish
        self._summary = summary
        self.spawn_task = spawn_task
        self._is_own = is_own
        self._orphans: set[int] = set()

    @property
    def config(self) -> Config:
        return self._config()  # a reload replaces the supervisor's config object

    @property
    def broker(self) -> Broker | None:
        return self._broker()

    # -- kills ---------------------------------------------------------------------------------

    async def kill(
        self,
        rec: ProcessRecord,
        *,
        sig: int = signal.SIGTERM,
        grace: float | None = None,
        restart: bool = False,
        reason: str = "",
    ) -> KillReport:
        """Kill ``rec``'s logical subtree and every OS descendant; report what died."""
        targets = [*self.table.descendants_of(rec.id), rec]
        names = {r.pid: r.id for r in self.table if r.pid}
        for target in targets:
            target.stop_requested = not (restart and target is rec)
            target.cancel_restart()
            if target.state in LIVE and target.state is not ProcState.STOPPING and target.stop_requested:
                self.table.transition(target, ProcState.STOPPING, reason or "kill")
        reports = await asyncio.gather(
            *(
                kill_tree(
                    t.pid,
                    sig=sig,
                    grace=self.config.policy(t.kind).grace if grace is None else grace,
                    names=names,
                    ident=t.id,
                )
                for t in targets
                if t.pid
            )
        )
        killed = [k for report in reports for k in report.killed]
        survivors = [p for report in reports for p in report.survivors]
        report = KillReport(rec.id, killed, survivors)
        self._publish(f"proc.{rec.kind.value}.{rec.id}.killed", ProcessKilled(report))
        log.info("killed id=%s procs=%d survivors=%d reason=%r", rec.id, len(killed), len(survivors), reason)
        return report

    async def kill_descendant(self, src: str, req: KillRequest) -> Reply:
        """A process may kill what it started (a channel cancelling its worker), nothing else; an
        agent's cortex may also stop that agent's conversations, branches and workers."""
        if not any(r.id == req.id for r in self.table.descendants_of(src)) and not self._cortex_may_stop(
            src, req.id
        ):
            return Err(
                ErrorCode.BAD_REQUEST, f"{src!r} may only stop processes it started ({req.id!r} is not one)"
            )
        return await self.kill_request(req)

    def _cortex_may_stop(self, src: str, target: str) -> bool:
        """``cortex:<agent>`` (a running cortex, not a look-alike id) over that agent's channels,
        branches and workers: a channel by its id, the others by their chain of parents."""
        me = self.table.get(src)
        rec = self.table.get(target)
        if me is None or me.kind is not Kind.CORTEX or rec is None:
            return False
        if rec.kind not in (Kind.CHANNEL, Kind.BRANCH, Kind.WORKER):
            return False
        agent = src.partition(":")[2]
        ident: str | None = target
        for _ in range(8):  # worker of a branch of a channel: three steps
            if ident is None:
                return False
            if ident.startswith("channel:"):
                return ident.split(":", 2)[1] == agent
            parent = self.table.get(ident)
            ident = parent.parent if parent is not None else None
        return False

    async def kill_request(self, req: KillRequest) -> Reply:
        rec = self.table.get(req.id)
        if rec is None:
            return Err(ErrorCode.NOT_FOUND, f"no process {req.id!r} (see spacebotctl status)")
        try:
            sig = signal.Signals[
                req.signal.upper() if req.signal.upper().startswith("SIG") else f"SIG{req.signal.upper()}"
            ]
        except KeyError:
            return Err(ErrorCode.BAD_REQUEST, f"unknown signal {req.signal!r}")
        if not rec.pid:
            return Err(ErrorCode.BAD_REQUEST, f"process {req.id!r} is not running (state {rec.state.value})")
        return Ok(await self.kill(rec, sig=sig, grace=req.grace, restart=req.restart, reason="operator kill"))

    # -- liveness ------------------------------------------------------------------------------

    async def monitor(self) -> None:
        while True:
            await asyncio.sleep(self.config.supervisor.monitor_interval)
            now, wall = time.monotonic(), time.time()
            self.exits.reap()
            await self._reap_orphans()
            for rec in self.table:
                hung = overdue(rec, self.config.policy(rec.kind), now, wall)
                if hung is not None and not rec.stop_requested and rec.state is not ProcState.STOPPING:
                    budget, seconds = hung
                    log.warning("hung id=%s pid=%d budget=%s seconds=%.1f", rec.id, rec.pid, budget, seconds)
                    self._publish(
                        f"proc.{rec.kind.value}.{rec.id}.hung", ProcessHung(rec.id, budget, seconds)
                    )
                    self.table.transition(rec, ProcState.STOPPING, f"hung: {budget} budget")
                    self.spawn_task(self._kill_hung(rec, rec.pid), f"kill:{rec.id}")
                elif forgettable(rec, now):
                    self.table.remove(rec.id)
            if self.broker is not None:
                self.broker.report_drops()
            self.notifier.status(self._summary())

    async def _reap_orphans(self) -> None:
        """Kill what a dead process left running. The supervisor is the subreaper: a process whose
        parent died without killing it (a crashed worker's shell command, a grandchild) is
        re-parented here. Anything parented here that is neither a managed process, a zygote nor
        one of the supervisor's own helpers is such an orphan;
        it is killed with its tree on the second scan that finds it, so a child that is being
        registered at this moment (a cold start) is never taken for one."""
        found: set[int] = set()
        for pid in _children():
            if self.table.by_pid(pid) is not None or self._is_own(pid):
                continue
            found.add(pid)
            if pid in self._orphans:
                log.warning("killing orphan pid=%d", pid)
                self.spawn_task(kill_tree(pid, sig=signal.SIGKILL, ident="orphan"), f"orphan:{pid}")
        self._orphans = found

    async def _kill_hung(self, rec: ProcessRecord, pid: int) -> None:
        # The pid of the incarnation found hung, taken then: by the time this runs it may have
        # exited and a new incarnation (another pid) may be starting.
        await kill_tree(pid, grace=self.config.policy(rec.kind).grace, ident=rec.id)


def _children() -> list[int]:
    """This process's direct children.

    Read from ``/proc/self/task/<tid>/children`` (a few small files, one per thread of ours), not by
    scanning ``/proc`` for every process on the host as ``psutil.Process().children()`` does: that
    scan, twice a second on a busy host, was most of an idle supervisor's CPU. Falls back to psutil
    where the kernel has no ``children`` files (``CONFIG_PROC_CHILDREN``)."""
    pids: list[int] = []
    try:
        for task in Path("/proc/self/task").iterdir():
            pids.extend(int(p) for p in (task / "children").read_text().split())
    except (OSError, ValueError):
        try:
            return [c.pid for c in psutil.Process().children()]
        except psutil.Error:
            return []
    return pids
