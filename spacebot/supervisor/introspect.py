"""What ``spacebotctl status`` and ``tree`` show: live metrics from psutil, gathered off the loop."""

from __future__ import annotations

import asyncio
import os
import time
from typing import TYPE_CHECKING, Protocol

import psutil

from spacebot.ipc.messages import Kind, ProcessInfo, ProcState, StatusReply, TreeNode
from spacebot.tools import sandbox

if TYPE_CHECKING:
    from spacebot.config import Config
    from spacebot.ipc.broker import Broker
    from spacebot.paths import Endpoints
    from spacebot.supervisor.table import ProcessRecord, ProcessTable
    from spacebot.supervisor.zygote_link import ZygoteLink


class Observed(Protocol):
    """What status and tree read of the supervisor (and nothing else)."""

    config: Config
    table: ProcessTable
    zygote: ZygoteLink
    endpoints: Endpoints
    started: float
    ready: bool

    @property
    def broker(self) -> Broker | None: ...


HIBERNATED = "hibernated"
"""How ``status`` and ``tree`` show a conversation that ended itself when idle (state ``exited``)."""


def hibernated(rec: ProcessRecord) -> bool:
    """Whether ``rec`` is a conversation that hibernated rather than crashed or was stopped.

    A conversation process exits by itself, cleanly, only after its idle timeout
    (``procs/channel.py``); a crash exits non-zero (or by a signal), and a kill or the shutdown
    is asked for (``stop_requested``). The next message addressed to it starts it again.
    """
    return (
        rec.kind is Kind.CHANNEL
        and rec.state is ProcState.EXITED
        and rec.exit_code == 0
        and not rec.stop_requested
    )


def _shown_state(rec: ProcessRecord) -> str:
    return HIBERNATED if hibernated(rec) else rec.state.value


_MB = 1024 * 1024
_procs: dict[int, psutil.Process] = {}
"""psutil handles kept between calls so ``cpu_percent`` measures the interval since the last status."""


def _metrics(pid: int) -> tuple[float, float, float]:
    """CPU %, RSS MiB, USS MiB of one process (zeros when it is gone)."""
    try:
        proc = _procs.get(pid)
        if proc is None or not proc.is_running():
            proc = _procs[pid] = psutil.Process(pid)
            proc.cpu_percent(None)
        cpu = proc.cpu_percent(None)
        try:
            mem = proc.memory_full_info()
        except psutil.AccessDenied:  # non-dumpable (it holds keys): smaps needs ptrace access
            return cpu, proc.memory_info().rss / _MB, 0.0
        return cpu, mem.rss / _MB, mem.uss / _MB
    except psutil.Error:
        _procs.pop(pid, None)
        return 0.0, 0.0, 0.0


def _collect(sup: Observed) -> StatusReply:
    now = time.monotonic()
    rows: list[ProcessInfo] = []
    cpu, rss, uss = _metrics(os.getpid())
    rows.append(
        ProcessInfo(
            "supervisor",
            "supervisor",
            os.getpid(),
            ProcState.READY,
            now - sup.started,
            cpu,
            rss,
            uss,
            None,
            None,
            "",
            "",
            0,
            None,
            sup.broker.guard.errors if sup.broker else 0,
        )
    )
    zygotes = [("zygote", sup.zygote.pid, sup.zygote.alive, sup.zygote.started_at, "fork server")]
    if sup.zygote.spare_pid:
        spare = "spare fork server (takes over at once)"
        zygotes.append(("zygote:spare", sup.zygote.spare_pid, True, sup.zygote.spare_started_at, spare))
    for ident, pid, alive, started_at, task in zygotes:
        if not pid:
            continue
        cpu, rss, uss = _metrics(pid)
        rows.append(
            ProcessInfo(
                ident,
                "zygote",
                pid,
                ProcState.READY if alive else ProcState.EXITED,
                now - started_at,
                cpu,
                rss,
                uss,
                None,
                None,
                "supervisor",
                task,
                0,
                None,
                0,
            )
        )
    for rec in sup.table:
        cpu, rss, uss = _metrics(rec.pid) if rec.pid else (0.0, 0.0, 0.0)
        rows.append(
            ProcessInfo(
                id=rec.id,
                kind=rec.kind.value,
                pid=rec.pid,
                state=rec.state,
                uptime_s=now - rec.started_at if rec.pid else 0.0,
                cpu_percent=cpu,
                rss_mb=rss,
                uss_mb=uss,
                heartbeat_age_s=None if rec.last_heartbeat is None else now - rec.last_heartbeat,
                progress_age_s=None if rec.progress_at is None else max(0.0, time.time() - rec.progress_at),
                parent=rec.parent,
                task=rec.task,
                restarts=rec.restarts,
                exit_code=rec.exit_code,
                frame_errors=rec.frame_errors,
                hibernated=hibernated(rec),
            )
        )
    live = {r.pid for r in rows}
    for pid in list(_procs):
        if pid not in live:
            del _procs[pid]
    broker = sup.broker
    assert broker is not None
    return StatusReply(
        os.getpid(),
        now - sup.started,
        str(sup.endpoints.dir),
        rows,
        sup.ready,
        broker.guard.snapshot(),
        broker.routed,
        sandbox.describe(sup.config.delegates),
    )


async def status(sup: Observed) -> StatusReply:
    """Every process with its metrics (``memory_full_info`` reads smaps: done in a thread)."""
    return await asyncio.to_thread(_collect, sup)


def _os_children(pid: int, managed: set[int]) -> list[TreeNode]:
    try:
        kids = psutil.Process(pid).children()
    except psutil.Error:
        return []
    nodes = []
    for kid in kids:
        if kid.pid in managed:
            continue
        try:
            command = " ".join(kid.cmdline()) or kid.name()
            state = kid.status()
        except psutil.Error:
            continue
        nodes.append(
            TreeNode(f"pid:{kid.pid}", kid.pid, state, command[:120], _os_children(kid.pid, managed))
        )
    return nodes


def tree(sup: Observed) -> TreeNode:
    """Supervisor → zygote and managed processes by logical parent → their unmanaged OS descendants."""
    records = list(sup.table)
    managed = {r.pid for r in records if r.pid} | {sup.zygote.pid, sup.zygote.spare_pid}

    def node(ident: str) -> list[TreeNode]:
        out = []
        for rec in records:
            if rec.parent == ident:
                kids = node(rec.id) + (_os_children(rec.pid, managed) if rec.pid else [])
                out.append(TreeNode(rec.id, rec.pid, _shown_state(rec), rec.kind.value, kids))
        return out

    top = []
    if sup.zygote.pid:
        top.append(TreeNode("zygote", sup.zygote.pid, "ready" if sup.zygote.alive else "exited", "zygote"))
    if sup.zygote.spare_pid:
        top.append(TreeNode("zygote:spare", sup.zygote.spare_pid, "ready", "zygote"))
    top += node("supervisor")
    # Processes whose logical parent is gone still belong somewhere visible.
    known = {r.id for r in records} | {"supervisor"}
    top += [
        TreeNode(r.id, r.pid, _shown_state(r), r.kind.value, node(r.id))
        for r in records
        if r.parent not in known
    ]
    return TreeNode("supervisor", os.getpid(), "ready", "supervisor", top)
