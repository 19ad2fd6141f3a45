"""When a file of the ingest folder that failed is tried again, and when it is given up on.

A failed file waits an exponential back-off (30 s, 60 s, 120 s … capped) before its next attempt;
after ``ingest_max_attempts`` attempts it moves to ``ingest/failed/`` next to a ``<name>.reason``
file. Attempt counts are written to the agent's data directory before each attempt starts, so a
restart, or a process that dies during an attempt, cannot make a file retry forever.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import msgspec

log = logging.getLogger(__name__)

FAILED_DIR = "failed"
"""Where files that used up their attempts go, inside the ingest folder."""

Decision = Literal["try", "wait", "give_up"]


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to wait after failed attempt number ``attempts`` (1-based): base, 2×base, 4×base …,
    never more than ``cap``."""
    return min(cap, base * 2.0 ** max(0, attempts - 1))


class FileAttempts(msgspec.Struct, kw_only=True):
    """What is known of the attempts at one file of the ingest folder."""

    size: int
    """Size and modification time identify the file's content: a changed file starts afresh."""
    mtime_ns: int
    attempts: int = 0
    """Attempts started (one that is running counts)."""
    next_at: float = 0.0
    """Wall-clock time before which the file is not tried again (unless asked to)."""
    error: str = ""
    """Why the last finished attempt failed."""
    running: bool = False
    """An attempt started and has not finished: found at start-up, the process died during it."""
    first_at: float = 0.0
    """When the first attempt started."""


class IngestRetries:
    """Counts attempts per file of the ingest folder, spaces them out, and gives up on a file.

    The counts live in ``path`` (JSON, replaced atomically) and an attempt is written down before
    it starts, so a process that dies during one (a crash loop) uses its attempts up too. A file
    still failing after ``max_attempts`` attempts moves to ``<ingest>/failed/`` with a
    ``<name>.reason`` text file saying why and when; moved back, it starts afresh. Every method
    touches the disk: call them from a thread (they are thread-safe).

    Args:
        path: the JSON file of counts, in the agent's data directory.
        max_attempts: attempts before a file is given up on.
        base_delay: wait after the first failed attempt, doubled after each further one.
        max_delay: longest wait.
        clock: wall-clock seconds (the counts outlive the process, so not monotonic).
    """

    FILE_NAME = "ingest_attempts.json"
    """The name of ``path`` in the agent's data directory."""

    def __init__(
        self,
        path: Path,
        *,
        max_attempts: int = 5,
        base_delay: float = 30.0,
        max_delay: float = 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.clock = clock
        self._files: dict[str, FileAttempts] | None = None
        self._lock = threading.RLock()

    @property
    def files(self) -> dict[str, FileAttempts]:
        """File name → its attempts (read from ``path`` on first use)."""
        if self._files is None:
            self._files = {}
            with contextlib.suppress(FileNotFoundError):
                try:
                    self._files = msgspec.json.decode(self.path.read_bytes(), type=dict[str, FileAttempts])
                except msgspec.DecodeError as exc:  # not ours to fix by hand: start counting again
                    log.warning(
                        "ingest attempts unreadable, starting afresh path=%s error=%s", self.path, exc
                    )
        return self._files

    def _save(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(msgspec.json.encode(self.files))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def _entry(self, path: Path) -> FileAttempts:
        st = path.stat()
        entry = self.files.get(path.name)
        if entry is None or (entry.size, entry.mtime_ns) != (st.st_size, st.st_mtime_ns):
            entry = FileAttempts(size=st.st_size, mtime_ns=st.st_mtime_ns)
        return entry

    def due(self, path: Path) -> bool:
        """Whether ``path`` would be tried (or given up on) by a pass now."""
        with self._lock:
            try:
                entry = self._entry(path)
            except FileNotFoundError:
                return False
            return entry.attempts >= self.max_attempts or self.clock() >= entry.next_at

    def waiting(self) -> int:
        """Files that failed (or whose attempt was cut short) and wait for their next attempt."""
        with self._lock:
            return sum(1 for e in self.files.values() if e.attempts)

    def prune(self, present: set[str]) -> None:
        """Forget files no longer in the folder (removed or moved away by hand)."""
        with self._lock:
            gone = [name for name in self.files if name not in present]
            for name in gone:
                del self.files[name]
            if gone:
                self._save()

    def begin(self, path: Path, force: bool = False) -> tuple[Decision, FileAttempts]:
        """Decide about ``path``; on ``try`` the attempt is counted (and saved) before returning.

        ``force`` (an explicit request) skips the wait, never the limit."""
        with self._lock:
            return self._begin(path, force)

    def _begin(self, path: Path, force: bool) -> tuple[Decision, FileAttempts]:
        entry = self._entry(path)
        if entry.attempts >= self.max_attempts:
            return "give_up", entry  # the last attempt never finished (the process died), or a lower limit
        now = self.clock()
        if not force and now < entry.next_at:
            return "wait", entry
        entry.attempts += 1
        entry.running = True
        entry.first_at = entry.first_at or now
        # Should the process die during this attempt, the next one still waits its turn.
        entry.next_at = now + retry_delay(entry.attempts, self.base_delay, self.max_delay)
        self.files[path.name] = entry
        self._save()
        return "try", entry

    def succeeded(self, name: str) -> None:
        """The file is ingested: forget its attempts."""
        with self._lock:
            if self.files.pop(name, None) is not None:
                self._save()

    def failed(self, name: str, error: str) -> FileAttempts:
        """An attempt failed: the file waits ``retry_delay`` from now (the caller gives up at the limit)."""
        with self._lock:
            entry = self.files[name]
            entry.running = False
            entry.error = error
            entry.next_at = self.clock() + retry_delay(entry.attempts, self.base_delay, self.max_delay)
            self._save()
            return entry

    def interrupted(self, name: str) -> None:
        """An attempt was stopped on purpose (shutdown): it does not count."""
        with self._lock:
            entry = self.files.get(name)
            if entry is None:
                return
            entry.attempts -= 1
            entry.running = False
            entry.next_at = 0.0
            if not entry.attempts:
                del self.files[name]
            self._save()

    def give_up(self, path: Path, entry: FileAttempts, reason: str) -> Path:
        """Move ``path`` to ``failed/`` with ``<name>.reason``; returns where it went."""
        with self._lock:
            return self._give_up(path, entry, reason)

    def _give_up(self, path: Path, entry: FileAttempts, reason: str) -> Path:
        failed = path.parent / FAILED_DIR
        failed.mkdir(exist_ok=True)
        target = failed / path.name
        n = 1
        while target.exists() or target.with_name(target.name + ".reason").exists():
            target = failed / f"{path.stem}.{n}{path.suffix}"
            n += 1
        now = self.clock()
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(now))
        first = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(entry.first_at or now))
        target.with_name(target.name + ".reason").write_text(
            f"{path.name} was not ingested: {reason}\n"
            f"attempts: {entry.attempts} (first {first})\n"
            f"given up: {when}\n"
            "Move the file back into the ingest folder to try again.\n"
        )
        os.replace(path, target)
        if self.files.pop(path.name, None) is not None:
            self._save()
        return target
