"""The few Linux process controls Python lacks, through ``prctl(2)`` via ctypes."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("spacebot.supervisor")

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NAME = 15
PR_SET_CHILD_SUBREAPER = 36

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _prctl(option: int, arg: int | bytes) -> bool:
    res = _libc.prctl(option, arg, 0, 0, 0)
    if res != 0:
        log.warning("prctl(%d) failed errno=%d", option, ctypes.get_errno())
        return False
    return True


def set_pdeathsig(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when the thread that forked it dies."""
    return _prctl(PR_SET_PDEATHSIG, sig)


def set_child_subreaper() -> bool:
    """Adopt orphaned descendants, so their exit can be reaped and seen here."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1)


def forbid_dumps() -> bool:
    """``PR_SET_DUMPABLE 0``: other processes of the same user (a tool, an escaped program) can no
    longer read this process's ``/proc/<pid>/environ`` or memory, nor ptrace it; for processes
    that hold keys. Only root (``CAP_SYS_PTRACE``) still can; tools have no capabilities."""
    return _prctl(PR_SET_DUMPABLE, 0)


def set_name(name: str) -> None:
    """Set the thread name shown by ``ps -o comm`` and ``top`` (15 bytes at most)."""
    _prctl(PR_SET_NAME, name.encode()[:15])
