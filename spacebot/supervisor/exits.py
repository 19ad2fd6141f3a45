"""Knowing when a child ended, and with which code, from two sources that race.

A child's pidfd becomes readable the moment it dies; its exit code comes separately, from the
zygote (which reaps its own children) or from our own ``waitpid`` for children we adopted as
subreaper (after a zygote crash, or in cold spawn mode). :class:`ExitWatcher` joins the two and
calls ``on_exit(pid, code)`` once per pid, with ``None`` if no code arrived within a short wait.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable

log = logging.getLogger("spacebot.supervisor")

CODE_WAIT = 0.2
"""Seconds to wait for an exit code after the pidfd fired (the zygote reports within milliseconds)."""


class ExitWatcher:
    """Watches pidfds and collects exit codes; reports each exit once."""

    def __init__(
        self,
        on_exit: Callable[[int, int | None], None],
        *,
        is_ours: Callable[[int], bool],
        is_zygote: Callable[[int], bool],
    ) -> None:
        self._on_exit = on_exit
        self._is_ours = is_ours
        self._is_zygote = is_zygote
        self._pidfds: dict[int, int] = {}
        self._codes: dict[int, int] = {}
        self._waiting: set[int] = set()

    def watch(self, pid: int) -> None:
        """Start watching ``pid``; if it is already gone, report it now."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._gone(pid)
            return
        self._pidfds[pid] = fd
        asyncio.get_running_loop().add_reader(fd, self._gone, pid)

    def code_arrived(self, pid: int, code: int) -> None:
        """An exit code from the zygote or from our own reaping."""
        self._codes[pid] = code
        if pid in self._waiting:
            self._report(pid)

    def reap(self) -> None:
        """Reap our own children: the zygote and orphans adopted as subreaper.

        uvloop reserves SIGCHLD, so this runs on each monitor tick and whenever a pidfd fires.
        """
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if self._is_zygote(pid):
                log.warning("zygote exited pid=%d code=%d", pid, code)
            elif pid in self._pidfds or pid in self._waiting or self._is_ours(pid):
                self.code_arrived(pid, code)

    def _gone(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)
        self._waiting.add(pid)
        self.reap()  # an adopted orphan's exit code is ours to collect
        if pid in self._codes:
            self._report(pid)
        else:
            asyncio.get_running_loop().call_later(CODE_WAIT, self._report, pid)

    def _report(self, pid: int) -> None:
        if pid not in self._waiting:
            return  # already reported
        self._waiting.discard(pid)
        self._on_exit(pid, self._codes.pop(pid, None))
