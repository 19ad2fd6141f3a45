"""Cron rows in the agent's DuckDB (``cron_jobs``, ``cron_runs``), used by ``memory:<agent>``.

A job is stored whole as JSON, with the columns the scheduler queries beside it. Claiming a run
moves the job's cursor and inserts the ``running`` run in one transaction: once a claim has
committed, no restart can start that run again.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgspec

from spacebot.ipc.messages import CronJob, CronOutcome, CronRun
from spacebot.memory.store import Store, one

FAILURES: frozenset[CronOutcome] = frozenset({"failed", "timed_out"})
"""Outcomes that count towards disabling a job."""

_RUN_COLUMNS = "id, job_id, conversation, due_at, started_at, ended_at, outcome, delivered, error, message_id"


def run_conversation(job_id: str, run_id: int) -> str:
    """The fresh conversation a run talks in: ``cron:<job>.<run>``."""
    return f"cron:{job_id}.{run_id}"


def _run(row: Sequence[Any]) -> CronRun:
    return CronRun(
        id=row[0],
        job_id=row[1],
        conversation=row[2],
        due_at=row[3],
        started_at=row[4],
        ended_at=row[5],
        outcome=row[6],
        delivered=row[7],
        error=row[8],
        message_id=row[9],
    )


class CronStore:
    """Jobs and runs of one agent."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _job(self, cur: Any, job_id: str) -> CronJob | None:
        row = one(cur.execute("SELECT job FROM cron_jobs WHERE id = ?", [job_id]))
        return msgspec.json.decode(row[0], type=CronJob) if row else None

    def _write(self, cur: Any, job: CronJob, *, exists: bool | None = None) -> CronJob:
        """Store ``job``; ``exists`` (when the caller knows) picks an UPDATE, cheaper than a replace."""
        job = msgspec.structs.replace(job, updated_at=time.time())
        values = [msgspec.json.encode(job).decode(), job.enabled, job.next_run_at, job.updated_at, job.id]
        if exists is None:
            exists = one(cur.execute("SELECT 1 FROM cron_jobs WHERE id = ?", [job.id])) is not None
        if exists:
            cur.execute(
                "UPDATE cron_jobs SET job = ?, enabled = ?, next_run_at = ?, updated_at = ? WHERE id = ?",
                values,
            )
        else:
            cur.execute(
                "INSERT INTO cron_jobs (job, enabled, next_run_at, updated_at, id) VALUES (?, ?, ?, ?, ?)",
                values,
            )
        return job

    def put(self, job: CronJob) -> CronJob:
        """Insert or replace a job."""
        with self.store.transaction() as cur:
            return self._write(cur, job)

    def jobs(self) -> list[CronJob]:
        """Every job, by id."""
        rows = self.store.cursor().execute("SELECT job FROM cron_jobs ORDER BY id").fetchall()
        return [msgspec.json.decode(r[0], type=CronJob) for r in rows]

    def delete(self, job_id: str) -> bool:
        """Delete a job; its runs stay."""
        with self.store.transaction() as cur:
            found = self._job(cur, job_id) is not None
            cur.execute("DELETE FROM cron_jobs WHERE id = ?", [job_id])
        return found

    def claim(
        self, job_id: str, due_at: float, next_run_at: float | None, manual: bool = False
    ) -> CronRun | None:
        """Move the cursor and record a ``running`` run, or ``None`` if it is not due any more."""
        return self.claim_many([(job_id, due_at, next_run_at, manual)])[0]

    def claim_many(self, claims: Sequence[tuple[str, float, float | None, bool]]) -> list[CronRun | None]:
        """:meth:`claim` for several jobs in one transaction (the jobs due at one moment)."""
        now = time.time()
        with self.store.transaction() as cur:
            return [self._claim(cur, now, *claim) for claim in claims]

    def _claim(
        self, cur: Any, now: float, job_id: str, due_at: float, next_run_at: float | None, manual: bool
    ) -> CronRun | None:
        job = self._job(cur, job_id)
        if job is None:
            return None
        if not manual:
            if not job.enabled or job.next_run_at != due_at:
                return None
            job = msgspec.structs.replace(job, next_run_at=next_run_at)
        self._write(cur, msgspec.structs.replace(job, last_run_at=now), exists=True)
        row = one(cur.execute("SELECT nextval('cron_run_id_seq')"))
        assert row is not None
        run = CronRun(
            id=int(row[0]),
            job_id=job_id,
            conversation=run_conversation(job_id, int(row[0])),
            due_at=due_at,
            started_at=now,
        )
        cur.execute(
            f"INSERT INTO cron_runs ({_RUN_COLUMNS}) "
            "VALUES (?, ?, ?, ?, ?, NULL, 'running', FALSE, '', NULL)",
            [run.id, run.job_id, run.conversation, run.due_at, run.started_at],
        )
        return run

    def finish(
        self,
        run_id: int,
        outcome: CronOutcome,
        delivered: bool,
        error: str,
        message_id: int | None,
        max_failures: int,
    ) -> CronJob | None:
        """Close a run and count it in its job's consecutive failures (a second call changes nothing)."""
        return self.finish_many([(run_id, outcome, delivered, error, message_id, max_failures)])[0]

    def finish_many(
        self, ends: Sequence[tuple[int, CronOutcome, bool, str, int | None, int]]
    ) -> list[CronJob | None]:
        """:meth:`finish` for several runs in one transaction."""
        now = time.time()
        with self.store.transaction() as cur:
            return [self._finish(cur, now, *end) for end in ends]

    def _finish(
        self,
        cur: Any,
        now: float,
        run_id: int,
        outcome: CronOutcome,
        delivered: bool,
        error: str,
        message_id: int | None,
        max_failures: int,
    ) -> CronJob | None:
        row = one(cur.execute("SELECT job_id, outcome FROM cron_runs WHERE id = ?", [run_id]))
        if row is None:
            raise ValueError(f"cron run {run_id} does not exist")
        job_id, previous = row
        job = self._job(cur, job_id)
        if previous != "running":
            return job
        cur.execute(
            "UPDATE cron_runs SET ended_at = ?, outcome = ?, delivered = ?, error = ?, message_id = ? "
            "WHERE id = ?",
            [now, outcome, delivered, error[:2000], message_id, run_id],
        )
        if job is None:
            return None
        if outcome in FAILURES:
            failures = job.failures + 1
            job = msgspec.structs.replace(job, failures=failures)
            if failures >= max_failures and job.enabled:
                reason = f"{failures} consecutive failures; last: {error[:300] or outcome}"
                job = msgspec.structs.replace(job, enabled=False, disabled_reason=reason)
        elif outcome in ("success", "skipped"):
            if not job.failures:
                return job  # nothing changes: no write
            job = msgspec.structs.replace(job, failures=0)
        return self._write(cur, job, exists=True)

    def runs(self, job_id: str | None, limit: int, running: bool = False) -> list[CronRun]:
        """The execution log, newest first."""
        where, params = [], []
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)
        if running:
            where.append("outcome = 'running'")
        sql = f"SELECT {_RUN_COLUMNS} FROM cron_runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.store.cursor().execute(sql + " ORDER BY id DESC LIMIT ?", [*params, limit]).fetchall()
        return [_run(r) for r in rows]
