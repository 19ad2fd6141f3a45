"""The DuckDB file that is the source of truth: schema, migrations, connections and memory rows.

One process owns the file. Writes take ``write_lock``; reads use a per-thread cursor, so thanks to
DuckDB's MVCC a read never waits behind a long write (it sees the last committed state).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np

from spacebot.ipc.messages import Memory, MemoryType
from spacebot.memory.errors import MemoryStoreError, SchemaVersionError

log = logging.getLogger(__name__)

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            "CREATE SEQUENCE memory_id_seq START 1",
            "CREATE SEQUENCE message_id_seq START 1",
            "CREATE SEQUENCE run_id_seq START 1",
            """CREATE TABLE memories (
                id BIGINT PRIMARY KEY, content VARCHAR NOT NULL, type VARCHAR NOT NULL,
                importance DOUBLE NOT NULL, created_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL,
                last_accessed_at DOUBLE NOT NULL, access_count BIGINT NOT NULL DEFAULT 0,
                source VARCHAR NOT NULL DEFAULT '', channel VARCHAR, forgotten BOOLEAN NOT NULL DEFAULT FALSE,
                metadata JSON NOT NULL DEFAULT '{}', prev_id BIGINT, embedding BLOB NOT NULL,
                decayed_at DOUBLE NOT NULL DEFAULT 0)""",
            """CREATE TABLE associations (
                source_id BIGINT NOT NULL, target_id BIGINT NOT NULL, relation VARCHAR NOT NULL,
                weight DOUBLE NOT NULL, created_at DOUBLE NOT NULL,
                PRIMARY KEY (source_id, target_id, relation))""",
            "CREATE INDEX associations_target_idx ON associations (target_id)",
            """CREATE TABLE channels (
                id VARCHAR PRIMARY KEY, platform VARCHAR NOT NULL, display_name VARCHAR NOT NULL,
                last_activity_at DOUBLE NOT NULL, created_at DOUBLE NOT NULL)""",
            """CREATE TABLE messages (
                id BIGINT PRIMARY KEY, channel_id VARCHAR NOT NULL, platform_message_id VARCHAR,
                author_id VARCHAR NOT NULL, author_name VARCHAR NOT NULL, role VARCHAR NOT NULL,
                text VARCHAR NOT NULL, attachments JSON NOT NULL DEFAULT '[]', created_at DOUBLE NOT NULL,
                reply_state VARCHAR NOT NULL, replied_at DOUBLE)""",
            "CREATE INDEX messages_platform_idx ON messages (channel_id, platform_message_id)",
            """CREATE TABLE process_runs (
                id BIGINT PRIMARY KEY, proc_id VARCHAR NOT NULL, kind VARCHAR NOT NULL,
                started_at DOUBLE NOT NULL, ended_at DOUBLE, exit_code INTEGER, detail JSON)""",
            """CREATE TABLE ingest_files (
                sha256 VARCHAR PRIMARY KEY, file_name VARCHAR NOT NULL, size BIGINT NOT NULL,
                chunks_total INTEGER NOT NULL, status VARCHAR NOT NULL, error VARCHAR,
                started_at DOUBLE NOT NULL, updated_at DOUBLE NOT NULL)""",
            """CREATE TABLE ingest_chunks (
                sha256 VARCHAR NOT NULL, chunk_index INTEGER NOT NULL, memories INTEGER NOT NULL,
                done_at DOUBLE NOT NULL, PRIMARY KEY (sha256, chunk_index))""",
        ],
    ),
    (2, ["ALTER TABLE messages ADD COLUMN reactions JSON DEFAULT '[]'"]),
    (
        3,
        [
            # Cron jobs and their execution log (spacebot/cron/store.py reads and writes them).
            "CREATE SEQUENCE cron_run_id_seq START 1",
            """CREATE TABLE cron_jobs (
                id VARCHAR PRIMARY KEY, job JSON NOT NULL, enabled BOOLEAN NOT NULL,
                next_run_at DOUBLE, updated_at DOUBLE NOT NULL)""",
            """CREATE TABLE cron_runs (
                id BIGINT PRIMARY KEY, job_id VARCHAR NOT NULL, conversation VARCHAR NOT NULL,
                due_at DOUBLE NOT NULL, started_at DOUBLE NOT NULL, ended_at DOUBLE,
                outcome VARCHAR NOT NULL, delivered BOOLEAN NOT NULL DEFAULT FALSE,
                error VARCHAR NOT NULL DEFAULT '', message_id BIGINT)""",
            "CREATE INDEX cron_runs_job_idx ON cron_runs (job_id)",
        ],
    ),
    # How an agent's reply is shown beyond its text (``Shown``: card, thread); NULL for the rest.
    (4, ["ALTER TABLE messages ADD COLUMN shown JSON"]),
    # The primary key (source_id, target_id, relation) does not serve ``source_id IN (...)``: every
    # hybrid recall's graph list read all edges (a third of a recall at 100k memories).
    (5, ["CREATE INDEX associations_source_idx ON associations (source_id)"]),
]
SCHEMA_VERSION = MIGRATIONS[-1][0]

MEMORY_COLUMNS = (
    "id, content, type, importance, created_at, updated_at, last_accessed_at, access_count, "
    "source, channel, forgotten, metadata, prev_id"
)


def memory_from_row(row: Sequence[Any]) -> Memory:
    """Build a :class:`Memory` from a row selected with :data:`MEMORY_COLUMNS`."""
    return Memory(
        id=row[0],
        content=row[1],
        type=MemoryType(row[2]),
        importance=row[3],
        created_at=row[4],
        updated_at=row[5],
        last_accessed_at=row[6],
        access_count=row[7],
        source=row[8],
        channel=row[9],
        forgotten=row[10],
        metadata=msgspec.json.decode(row[11]) if row[11] else {},
        follows=row[12],
    )


def _stored_version(path: Path) -> int | None:
    """Schema version of an existing file, read without writing to it (``None``: no schema yet)."""
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise MemoryStoreError(f"cannot open memory database {str(path)!r}: {exc}") from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "schema_version" not in tables:
            return None
        row = one(conn.execute("SELECT max(version) FROM schema_version"))
        return int(row[0]) if row and row[0] is not None else None
    finally:
        conn.close()


def one(result: duckdb.DuckDBPyConnection) -> Any:
    """The first row of a statement's result (``None`` if none), the result read to its end.

    Never ``fetchone()`` on a DuckDB cursor: a result not read to the end keeps its statement's
    transaction open, and with it a snapshot every later write has to keep versions for. A
    thread's cursor that last ran ``fetchone()`` pinned one until that thread ran again; with
    1,000 conversations, the ``UPDATE`` in each transcript append walked ever longer version
    chains (1 ms growing without bound: the memory process fell behind and timed out).
    """
    rows = result.fetchall()
    return rows[0] if rows else None


class Store:
    """Connections to one agent's DuckDB file, with versioned migrations."""

    def __init__(self, path: Path, memory_mb: int = 512, threads: int = 2) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            version = _stored_version(path)
            if version is not None and version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{str(path)!r} has schema version {version}, newer than this Spacebot's "
                    f"{SCHEMA_VERSION}; upgrade Spacebot (the file was not modified)"
                )
        try:
            self._conn = duckdb.connect(
                str(path), config={"memory_limit": f"{max(64, memory_mb)}MB", "threads": max(1, threads)}
            )
        except duckdb.Error as exc:
            raise MemoryStoreError(f"cannot open memory database {str(path)!r}: {exc}") from exc
        self.write_lock = threading.RLock()
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._cursors_lock = threading.Lock()
        self._migrate()

    def _migrate(self) -> None:
        c = self._conn
        c.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, applied_at DOUBLE)"
        )
        row = one(c.execute("SELECT max(version) FROM schema_version"))
        current = int(row[0]) if row and row[0] is not None else 0
        for version, statements in MIGRATIONS:
            if version <= current:
                continue
            c.execute("BEGIN")
            try:
                for sql in statements:
                    c.execute(sql)
                c.execute("INSERT INTO schema_version VALUES (?, ?)", [version, time.time()])
                c.execute("COMMIT")
            except Exception:
                c.execute("ROLLBACK")
                raise
            log.info("memory schema migrated path=%s version=%d", self.path, version)

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's own cursor (a DuckDB connection sharing the database instance)."""
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            cur = self._conn.cursor()
            self._local.cursor = cur
            with self._cursors_lock:
                self._cursors.append(cur)
        return cur

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Hold the write lock and run the block in one transaction."""
        with self.write_lock:
            cur = self.cursor()
            cur.execute("BEGIN")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    def close(self) -> None:
        """Checkpoint and close every connection."""
        with self.write_lock, self._cursors_lock:
            for cur in self._cursors:
                with suppress(duckdb.Error):
                    cur.close()
            self._cursors.clear()
            try:
                self._conn.execute("CHECKPOINT")
            except duckdb.Error as exc:
                log.warning("checkpoint failed on close path=%s error=%s", self.path, exc)
            self._conn.close()

    # -- memories ---------------------------------------------------------------------------------

    def next_memory_ids(self, cur: duckdb.DuckDBPyConnection, n: int) -> list[int]:
        """Reserve ``n`` new memory ids."""
        return [r[0] for r in cur.execute("SELECT nextval('memory_id_seq') FROM range(?)", [n]).fetchall()]

    def insert_memories(self, cur: duckdb.DuckDBPyConnection, rows: dict[str, list[Any]]) -> None:
        """Insert memory rows given column-wise (one list per column, embeddings as float32 bytes)."""
        cols = list(rows)
        select = ", ".join(f"unnest(${i + 1})" for i in range(len(cols)))
        cur.execute(f"INSERT INTO memories ({', '.join(cols)}) SELECT {select}", [rows[c] for c in cols])

    def get_memories(self, ids: Sequence[int], include_forgotten: bool = True) -> dict[int, Memory]:
        """The memories with these ids, keyed by id (missing ids are absent)."""
        if not ids:
            return {}
        extra = "" if include_forgotten else " AND NOT forgotten"
        rows = (
            self.cursor()
            .execute(
                f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id IN (SELECT unnest(?)){extra}", [list(ids)]
            )
            .fetchall()
        )
        return {r[0]: memory_from_row(r) for r in rows}

    def shapes(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Ids, lengths in characters and question marks of every active memory (the reranker's
        shape features, read once at start-up), as arrays."""
        res = (
            self.cursor()
            .execute(
                "SELECT id, length(content) AS n, contains(content, '?') AS q "
                "FROM memories WHERE NOT forgotten"
            )
            .fetchnumpy()
        )
        return np.asarray(res["id"]), np.asarray(res["n"]), np.asarray(res["q"])

    def query_memories(self, where: str, params: list[Any], order: str, limit: int) -> list[Memory]:
        """Memories matching a WHERE clause, in ``order``."""
        sql = f"SELECT {MEMORY_COLUMNS} FROM memories WHERE {where} ORDER BY {order} LIMIT ?"
        return [memory_from_row(r) for r in self.cursor().execute(sql, [*params, limit]).fetchall()]

    def embeddings(self, ids: Sequence[int] | None = None, min_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Ids and stored vectors of active memories (all, the given ids, or those above ``min_id``)."""
        sql = "SELECT id, embedding FROM memories WHERE NOT forgotten AND id > ?"
        params: list[Any] = [min_id]
        if ids is not None:
            sql += " AND id IN (SELECT unnest(?))"
            params.append(list(ids))
        res = self.cursor().execute(sql + " ORDER BY id", params).fetchnumpy()
        id_arr = np.asarray(res["id"], dtype=np.int64)
        if len(id_arr) == 0:
            return id_arr, np.zeros((0, 0), dtype=np.float32)
        mat = np.frombuffer(b"".join(bytes(b) for b in res["embedding"]), dtype=np.float32)
        return id_arr, mat.reshape(len(id_arr), -1)

    def active_ids(self) -> np.ndarray:
        """Ids of every memory that is not forgotten."""
        res = self.cursor().execute("SELECT id FROM memories WHERE NOT forgotten ORDER BY id").fetchnumpy()
        return np.asarray(res["id"], dtype=np.int64)

    def people_rows(self) -> list[tuple[int, str]]:
        """``(id, metadata JSON)`` of active memories whose metadata names a person (``speaker``,
        ``people``, ``person``), for :class:`~spacebot.memory.people.People`."""
        sql = (
            "SELECT id, metadata FROM memories WHERE NOT forgotten AND (json_exists(metadata, '$.speaker') "
            "OR json_exists(metadata, '$.people') OR json_exists(metadata, '$.person')) ORDER BY id"
        )
        return [(r[0], r[1]) for r in self.cursor().execute(sql).fetchall()]

    def index_rows(self, ids: Sequence[int] | None = None, min_id: int = 0) -> list[tuple[int, str, str]]:
        """``(id, content, metadata JSON)`` of active memories, for (re)building the text index."""
        sql = "SELECT id, content, metadata FROM memories WHERE NOT forgotten AND id > ?"
        params: list[Any] = [min_id]
        if ids is not None:
            sql += " AND id IN (SELECT unnest(?))"
            params.append(list(ids))
        return [(r[0], r[1], r[2]) for r in self.cursor().execute(sql + " ORDER BY id", params).fetchall()]

    def sequence_links(self) -> list[tuple[int, int]]:
        """``(id, prev_id)`` for every memory that follows another."""
        sql = "SELECT id, prev_id FROM memories WHERE prev_id IS NOT NULL"
        return [(r[0], r[1]) for r in self.cursor().execute(sql).fetchall()]

    def touch(self, ids: Sequence[int], now: float) -> None:
        """Count an access to each of ``ids``."""
        if not ids:
            return
        with self.write_lock:
            self.cursor().execute(
                "UPDATE memories SET access_count = access_count + 1, last_accessed_at = ? "
                "WHERE id IN (SELECT unnest(?))",
                [now, list(ids)],
            )

    def count(self, table: str, where: str = "TRUE") -> int:
        """Row count of a table."""
        row = one(self.cursor().execute(f"SELECT count(*) FROM {table} WHERE {where}"))
        return int(row[0]) if row else 0

    # -- process runs -----------------------------------------------------------------------------

    def record_run_start(self, proc_id: str, kind: str, detail: dict[str, Any] | None = None) -> int:
        """Record that a process started; returns the run id."""
        with self.transaction() as cur:
            row = one(
                cur.execute(
                    "INSERT INTO process_runs (id, proc_id, kind, started_at, detail) "
                    "VALUES (nextval('run_id_seq'), ?, ?, ?, ?) RETURNING id",
                    [proc_id, kind, time.time(), msgspec.json.encode(detail or {}).decode()],
                )
            )
        assert row is not None
        return int(row[0])

    def record_run_end(self, run_id: int, exit_code: int | None) -> None:
        """Record how a process run ended."""
        with self.write_lock:
            self.cursor().execute(
                "UPDATE process_runs SET ended_at = ?, exit_code = ? WHERE id = ?",
                [time.time(), exit_code, run_id],
            )
