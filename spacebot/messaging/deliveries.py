"""What a platform gateway has put on its platform, kept across its own restarts.

The conversation's transcript lives in the agent's memory; this small SQLite file beside it records
only what the gateway did on the platform: which platform messages show a reply that is still being
streamed (so a restarted gateway finishes that message instead of posting a second one), which
stored replies were delivered (so none is posted twice and a missed one is found), and which
conversations it served (where to look after a restart). SQLite from the standard library: one
writer (this process), a few rows per reply, no server.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    conversation TEXT NOT NULL, reply_id TEXT NOT NULL, platform_ids TEXT NOT NULL,
    started_at REAL NOT NULL, PRIMARY KEY (conversation, reply_id));
CREATE TABLE IF NOT EXISTS delivered (
    stored_id INTEGER NOT NULL, agent TEXT NOT NULL, conversation TEXT NOT NULL,
    platform_ids TEXT NOT NULL, delivered_at REAL NOT NULL, PRIMARY KEY (agent, stored_id));
CREATE TABLE IF NOT EXISTS served (
    conversation TEXT PRIMARY KEY, agent TEXT NOT NULL, first_at REAL NOT NULL, last_at REAL NOT NULL,
    direct INTEGER NOT NULL DEFAULT 0);
"""


@dataclass(frozen=True, slots=True)
class OpenStream:
    """A reply shown while it was streamed, whose final text was not delivered yet."""

    conversation: str
    reply_id: str
    platform_ids: list[str]
    started_at: float


@dataclass(frozen=True, slots=True)
class Served:
    """A conversation this gateway received messages in."""

    conversation: str
    agent: str
    first_at: float
    last_at: float
    direct: bool = False
    """A one-to-one conversation (a DM)."""


class Deliveries:
    """The gateway's record of its platform side (one file per gateway instance)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None)  # autocommit: every write lands
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # -- streams -------------------------------------------------------------------------------

    def stream_shown(self, conversation: str, reply_id: str, platform_ids: list[str]) -> None:
        self._db.execute(
            "INSERT INTO streams VALUES (?, ?, ?, ?) ON CONFLICT (conversation, reply_id) "
            "DO UPDATE SET platform_ids = excluded.platform_ids",
            (conversation, reply_id, json.dumps(platform_ids), time.time()),
        )

    def stream_done(self, conversation: str, reply_id: str) -> None:
        self._db.execute(
            "DELETE FROM streams WHERE conversation = ? AND reply_id = ?", (conversation, reply_id)
        )

    def open_streams(self) -> list[OpenStream]:
        rows = self._db.execute(
            "SELECT conversation, reply_id, platform_ids, started_at FROM streams ORDER BY started_at"
        ).fetchall()
        return [OpenStream(c, r, json.loads(ids), at) for c, r, ids, at in rows]

    # -- delivered replies ---------------------------------------------------------------------

    def delivered(self, agent: str, stored_id: int) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM delivered WHERE agent = ? AND stored_id = ?", (agent, stored_id)
        ).fetchone()
        return row is not None

    def mark_delivered(self, agent: str, stored_id: int, conversation: str, platform_ids: list[str]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?, ?)",
            (stored_id, agent, conversation, json.dumps(platform_ids), time.time()),
        )

    def platform_ids(self, agent: str, stored_id: int) -> list[str]:
        row = self._db.execute(
            "SELECT platform_ids FROM delivered WHERE agent = ? AND stored_id = ?", (agent, stored_id)
        ).fetchone()
        return list(json.loads(row[0])) if row else []

    # -- conversations -------------------------------------------------------------------------

    def served(self, conversation: str, agent: str, direct: bool = False) -> None:
        now = time.time()
        self._db.execute(
            "INSERT INTO served VALUES (?, ?, ?, ?, ?) ON CONFLICT (conversation) "
            "DO UPDATE SET last_at = excluded.last_at, agent = excluded.agent",
            (conversation, agent, now, now, int(direct)),
        )

    def recent(self, since: float) -> list[Served]:
        rows = self._db.execute(
            "SELECT conversation, agent, first_at, last_at, direct FROM served WHERE last_at >= ? "
            "ORDER BY last_at",
            (since,),
        ).fetchall()
        return [Served(c, a, first, last, bool(d)) for c, a, first, last, d in rows]
