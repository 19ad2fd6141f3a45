"""The one kill-escalation function: first signal to the group, wait, SIGKILL the whole tree, reap.

It runs in a worker thread (``psutil`` calls block) and never signals the caller's own group.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import psutil

from spacebot.ipc.messages import KilledProc, KillReport

_POLL = 0.02


def _tree(pid: int) -> list[psutil.Process]:
    """The process, its descendants, and every member of its process group (orphans included)."""
    procs: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(pid)
        procs[pid] = root
        for child in root.children(recursive=True):
            procs[child.pid] = child
    except psutil.Error:
        pass
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return list(procs.values())
    if pgid != os.getpgid(0):
        for proc in psutil.process_iter():
            try:
                if proc.pid not in procs and os.getpgid(proc.pid) == pgid:
                    procs[proc.pid] = proc
                    for child in proc.children(recursive=True):
                        procs.setdefault(child.pid, child)
            except (ProcessLookupError, psutil.Error):
                continue
    return list(procs.values())


def _dead(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


def _wait(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait up to ``timeout`` for ``procs`` to end; zombies (ended, not yet reaped) count as ended."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if not _dead(p)]
    while alive:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        _gone, alive = psutil.wait_procs(alive, timeout=min(_POLL, remaining))
        alive = [p for p in alive if not _dead(p)]
    return alive


def _signal_all(pid: int, procs: list[psutil.Process], sig: int) -> None:
    own_group = os.getpgid(0)
    try:
        pgid = os.getpgid(pid)
        if pgid != own_group:
            os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    for proc in procs:
        try:
            if proc.pid != os.getpid():
                proc.send_signal(sig)
        except psutil.Error:
            pass


def _name(proc: psutil.Process, names: dict[int, str]) -> str:
    if proc.pid in names:
        return names[proc.pid]
    try:
        return proc.name()
    except psutil.Error:
        return f"pid {proc.pid}"


def kill_tree_sync(
    pid: int,
    *,
    sig: int = signal.SIGTERM,
    grace: float = 5.0,
    names: dict[int, str] | None = None,
    ident: str = "",
) -> KillReport:
    """Kill ``pid`` and everything below it; return what died and how."""
    names = names or {}
    procs = _tree(pid)
    # Name every process now, while /proc still has it.
    labels = {p.pid: _name(p, names) for p in procs}
    already = {p.pid for p in procs if _dead(p)}
    alive = [p for p in procs if p.pid not in already]
    killed = [KilledProc(p, labels[p], "exited") for p in sorted(already)]
    if alive and sig != signal.SIGKILL:
        _signal_all(pid, alive, sig)
        still = _wait(alive, grace)
        still_pids = {p.pid for p in still}
        killed += [KilledProc(p.pid, labels[p.pid], "signal") for p in alive if p.pid not in still_pids]
        alive = still
    if alive:
        # Re-read the tree: a process may have forked while we waited.
        for proc in _tree(pid):
            if proc.pid not in labels and not _dead(proc):
                labels[proc.pid] = _name(proc, names)
                alive.append(proc)
        _signal_all(pid, alive, signal.SIGKILL)
        still = _wait(alive, 5.0)
        still_pids = {p.pid for p in still}
        killed += [KilledProc(p.pid, labels[p.pid], "sigkill") for p in alive if p.pid not in still_pids]
        alive = still
    return KillReport(ident or str(pid), killed, [p.pid for p in alive])


async def kill_tree(
    pid: int,
    *,
    sig: int = signal.SIGTERM,
    grace: float = 5.0,
    names: dict[int, str] | None = None,
    ident: str = "",
) -> KillReport:
    """:func:`kill_tree_sync` in a thread, so the event loop keeps serving while we wait."""
    return await asyncio.to_thread(kill_tree_sync, pid, sig=sig, grace=grace, names=names, ident=ident)
