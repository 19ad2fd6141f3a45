"""Ingest progress for ``GET /api/ingest``: each file of an agent's ingest folder, how many of its
chunks are stored, and why it failed.

``memory:<agent>`` publishes its ingestion on ``memory.<agent>.ingest`` (a
:class:`~spacebot.ipc.messages.Notice`): ``ingest`` after each stored chunk (``file``, ``done``,
``total``), ``ingest_retry`` when an attempt failed and the file waits (``error``, ``attempt``,
``max_attempts``, ``retry_in``), ``ingest_failed`` when it was given up and moved to
``ingest/failed/``. ``gateway:api`` follows those events from the moment it started; what the folder
holds (files waiting for their first chunk, files given up on earlier, with their ``.reason``) is
read from disk at each request, so an answer is complete even for what happened before.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Literal

import msgspec

from spacebot.agent.identity import agent_dir
from spacebot.ipc.messages import Event, Notice
from spacebot.memory.ingest_retry import FAILED_DIR

MAX_FILES = 500
"""Files remembered per agent (the oldest-updated go first)."""
MAX_LISTED = 500
"""Files read from a folder per request."""
REASON_BYTES = 2000
"""How much of a ``.reason`` file is shown."""

IngestState = Literal["waiting", "ingesting", "done", "retry", "failed"]


class IngestFile(msgspec.Struct, frozen=True, kw_only=True):
    """One file of an agent's ingest folder."""

    agent: str
    """The agent whose folder it is in."""
    file: str
    """File name."""
    state: IngestState
    """``waiting`` (in the folder, no chunk stored yet), ``ingesting``, ``done``, ``retry`` (an
    attempt failed; it waits for the next) or ``failed`` (given up, in ``ingest/failed/``)."""
    done: int = 0
    """Chunks stored."""
    total: int = 0
    """Chunks in the file (0: not known yet)."""
    error: str = ""
    """Why the last attempt failed."""
    attempt: int = 0
    """Failed attempts so far (``retry``, ``failed``)."""
    max_attempts: int = 0
    """Attempts before it is given up (``retry``)."""
    retry_in: float | None = None
    """Seconds until the next attempt, when the failure was published (``retry``)."""
    updated_at: float = 0.0
    """When this was last heard of (epoch seconds; a file's modification time for what was only
    found on disk)."""


class IngestBook:
    """The latest state of each file, by agent, from the bus events."""

    def __init__(self, home: str | Path) -> None:
        self.home = home
        self.files: dict[str, collections.OrderedDict[str, IngestFile]] = collections.defaultdict(
            collections.OrderedDict
        )

    def feed(self, event: Event) -> None:
        """Take one bus event (anything but ``memory.<agent>.ingest`` notices is ignored)."""
        parts = event.topic.split(".")
        if len(parts) != 3 or parts[0] != "memory" or parts[2] != "ingest":
            return
        body = event.body
        if not isinstance(body, Notice) or not isinstance(body.fields.get("file"), str):
            return
        agent, fields = parts[1], body.fields
        name: str = fields["file"]
        book = self.files[agent]
        before = book.pop(name, None)
        done = before.done if before else 0
        total = before.total if before else 0
        now = event.ts or time.time()
        match body.text:
            case "ingest":
                done, total = _int(fields.get("done")), _int(fields.get("total"))
                state: IngestState = "done" if total and done >= total else "ingesting"
                entry = IngestFile(
                    agent=agent, file=name, state=state, done=done, total=total, updated_at=now
                )
            case "ingest_retry":
                entry = IngestFile(
                    agent=agent,
                    file=name,
                    state="retry",
                    done=done,
                    total=total,
                    error=str(fields.get("error", "")),
                    attempt=_int(fields.get("attempt")),
                    max_attempts=_int(fields.get("max_attempts")),
                    retry_in=_float(fields.get("retry_in")),
                    updated_at=now,
                )
            case "ingest_failed":
                entry = IngestFile(
                    agent=agent,
                    file=name,
                    state="failed",
                    done=done,
                    total=total,
                    error=str(fields.get("error", "")),
                    attempt=_int(fields.get("attempts")),
                    updated_at=now,
                )
            case _:
                if before is not None:
                    book[name] = before
                return
        book[name] = entry
        while len(book) > MAX_FILES:
            book.popitem(last=False)

    def listing(self, agent: str) -> list[IngestFile]:
        """Every file known for ``agent``, most recently updated first: those heard of on the bus,
        then those only found in the folder (blocking: reads the folder; call it in a thread)."""
        heard = dict(self.files.get(agent, {}))
        folder = agent_dir(self.home, agent) / "ingest"
        found: list[IngestFile] = []
        for path in _files(folder):
            if path.name not in heard:
                found.append(
                    IngestFile(agent=agent, file=path.name, state="waiting", updated_at=_mtime(path))
                )
        for path in _files(folder / FAILED_DIR):
            if path.suffix == ".reason":
                continue
            known = heard.get(path.name)
            if known is None or known.state != "failed":
                reason = _read(path.with_name(path.name + ".reason"))
                found.append(
                    IngestFile(
                        agent=agent,
                        file=path.name,
                        state="failed",
                        done=known.done if known else 0,
                        total=known.total if known else 0,
                        error=reason,
                        updated_at=_mtime(path),
                    )
                )
                heard.pop(path.name, None)
        rows = [*heard.values(), *found]
        rows.sort(key=lambda row: row.updated_at, reverse=True)
        return rows


def _files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())[:MAX_LISTED]
    except OSError:  # no folder yet
        return []
    return [p for p in entries if p.is_file() and not p.name.startswith(".")]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[:REASON_BYTES].strip()
    except OSError:
        return ""


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
