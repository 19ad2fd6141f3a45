"""The cron scheduler of one agent; it runs inside ``cortex:<agent>``. A run's conversation is
``spacebot.cron.talk``'s; jobs and runs in storage are ``spacebot.cron.store``'s.

Jobs and their next-run cursors live in the agent's DuckDB (``spacebot/cron/store.py``, served by
``memory:<agent>``); this process keeps them in a heap and sleeps until the earliest is due —
nothing wakes while no job is due, and a job firing is the only thing that calls a model.

One run, in order:

1. **claim**: the job's cursor moves to its next fire time and a ``running`` run row is written,
   in one memory transaction. A claimed run is never started twice: not after a crash, not after
   a restart (a ``run_once`` job has no next time, so it is over once claimed).
2. **ask**: the prompt is stored as a pending message of a fresh conversation ``cron:<job>.<run>``
   and sent as an :class:`Inbound` to ``channel:<agent>:cron:<job>.<run>``, which the supervisor
   starts on that message. That conversation's gateway is this process: its ``Out*`` replies come
   here (:meth:`CronRunner.on_message`).
3. **deliver**: the first agent message of the run is appended to the target conversation's
   transcript through memory (idempotent per run, with bounded retries) and sent to the target's
   gateway as an :class:`OutMessage`, which shows it to the people there.
4. **log**: the run row gets its end, outcome, delivery and error; the job's consecutive failures
   are counted there too, and three disable it (``spacebot cron enable ID`` turns it back on).

Missed fires (Spacebot was down) are fast-forwarded: a job whose cursor is in the past runs once,
then continues from the next time after now. Runs still ``running`` when this process starts are
picked up again: an answer already given is delivered (the same message, once), a prompt still
pending is sent again.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from spacebot.cron import schedule
from spacebot.cron.host import ContextHost, CronHost, Memory
from spacebot.cron.schedule import CronSpecError
from spacebot.cron.talk import OUTBOUND, Active, Conversations
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    TRANSIENT_CODES,
    CronClaim,
    CronClaimBatch,
    CronCmdAdd,
    CronCmdEnable,
    CronCmdHistory,
    CronCmdList,
    CronCmdRemove,
    CronCmdRunNow,
    CronDelete,
    CronFinish,
    CronFinishBatch,
    CronJob,
    CronJobSpec,
    CronListJobs,
    CronOutcome,
    CronPut,
    CronRun,
    CronRuns,
    Envelope,
    Err,
    ErrorCode,
    Notice,
    Ok,
)
from spacebot.ipc.replies import BusError, Reply

log = logging.getLogger("spacebot.cron")

MAX_SLEEP = 300.0
"""Longest sleep with jobs scheduled: a wall-clock jump (suspend, NTP) is noticed within this."""
MAX_FAILURES = 3
"""Consecutive failed or timed-out runs that disable a job."""

CRON_COMMANDS = (CronCmdList, CronCmdAdd, CronCmdRemove, CronCmdEnable, CronCmdRunNow, CronCmdHistory)


class _Batch:
    """Requests that arrive while one is in flight go together in the next: no delay when one
    comes alone, one round trip (and one transaction) for many under load."""

    MAX = 500

    def __init__(
        self,
        send: Callable[[list[CronFinish]], Awaitable[list[CronJob | None]]],
        spawn: Callable[[Any, str], None],
    ) -> None:
        self.send = send
        self.spawn = spawn
        self.pending: list[tuple[CronFinish, asyncio.Future[CronJob | None]]] = []
        self.flushing = False

    async def submit(self, item: CronFinish) -> CronJob | None:
        fut: asyncio.Future[CronJob | None] = asyncio.get_running_loop().create_future()
        self.pending.append((item, fut))
        if not self.flushing:
            self.flushing = True
            self.spawn(self._flush(), "cron-finish")
        return await fut

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending[: self.MAX], self.pending[self.MAX :]
                try:
                    results = await self.send([item for item, _ in batch])
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, fut), result in zip(batch, results, strict=True):
                    if not fut.done():
                        fut.set_result(result)
        finally:
            self.flushing = False


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:300]


class CronRunner:
    """Schedules and runs the jobs of ``agent``.

    ``run()`` is the scheduler loop (it loads, upserts the config's jobs, resumes interrupted
    runs, then sleeps until the next job is due). ``on_message`` takes what the cortex receives
    for cron: the ``Out*`` messages of ``cron:`` conversations and the cron commands.
    """

    def __init__(
        self, ctx: Any, agent: str, *, clock: Callable[[], float] = time.time, host: CronHost | None = None
    ) -> None:
        self.host: CronHost = host if host is not None else ContextHost(ctx)
        self.agent = agent
        self.clock = clock
        self._mem = Memory(self.host, ids.memory(agent))
        self.defaults = self.host.config.defaults
        self.jobs: dict[str, CronJob] = {}
        self.heap: list[tuple[float, str]] = []
        self.wake = asyncio.Event()
        self.talks = Conversations(self.host, agent, self._mem)
        """The conversations of the runs under way."""
        self.tasks: set[asyncio.Task[Any]] = set()
        self.slots = asyncio.Semaphore(self.defaults.cron_max_concurrent)
        self.loaded = asyncio.Event()
        self.finishes = _Batch(self._finish_batch, self._spawn)
        """Run ends recorded together when several end at once (one transaction, not one each)."""
        self.wakeups = 0
        """Times the loop woke (the idle benchmark reads it: no due job, no wake-up)."""

    # -- what the cortex receives ----------------------------------------------------------------

    @staticmethod
    def handles(body: object) -> bool:
        """Whether ``body`` is for the scheduler (a cron command, or ``Out*`` of a cron conversation)."""
        if isinstance(body, CRON_COMMANDS):
            return True
        return isinstance(body, OUTBOUND) and body.conversation.startswith("cron:")

    def on_message(self, env: Envelope) -> Reply | Awaitable[Reply] | None:
        """Handle a cron command (replies) or an ``Out*`` of a run's conversation (one-way)."""
        body = env.body
        if isinstance(body, OUTBOUND):
            self.talks.outbound(body)
            return Ok()  # one-way: nobody reads it, but it tells a dispatcher the body was taken
        if isinstance(body, CRON_COMMANDS):
            if not self.loaded.is_set():
                return Err(ErrorCode.NOT_READY, f"{self.host.id} is loading its cron jobs; try again")
            return self._command(body)
        if isinstance(body, Ok | Err):
            return None  # a bounce of a one-way message (a gateway that is not running)
        return Err(ErrorCode.UNSUPPORTED, f"cron of {self.host.id} does not handle {type(body).__name__}")

    async def _command(self, body: Any) -> Reply:
        try:
            match body:
                case CronCmdList():
                    return Ok(sorted(self.jobs.values(), key=lambda j: j.id))
                case CronCmdAdd():
                    return Ok(await self.add(body.spec, body.source, body.created_by))
                case CronCmdRemove():
                    return Ok(await self.remove(body.id, body.created_by))
                case CronCmdEnable():
                    return Ok(await self.enable(body.id, body.enabled))
                case CronCmdRunNow():
                    return Ok(await self.run_now(body.id))
                case CronCmdHistory():
                    limit = max(1, min(body.limit, 1000))
                    return Ok(await self._mem(CronRuns(body.id, limit), list[CronRun]))
        except CronSpecError as exc:
            return Err(ErrorCode.BAD_REQUEST, str(exc))
        except KeyError as exc:
            return Err(ErrorCode.NOT_FOUND, str(exc.args[0]))
        except BusError as exc:
            return Err(exc.code, exc.message)
        return Err(ErrorCode.UNSUPPORTED, type(body).__name__)

    # -- commands --------------------------------------------------------------------------------

    def _get(self, job_id: str) -> CronJob:
        job = self.jobs.get(job_id)
        if job is None:
            known = ", ".join(sorted(self.jobs)[:20]) or "none"
            raise KeyError(f"no cron job {job_id!r} for agent {self.agent!r} (jobs: {known})")
        return job

    async def add(self, spec: CronJobSpec, source: str = "cli", created_by: str = "") -> CronJob:
        """Define or redefine (and re-enable) a job."""
        now = self.clock()
        if created_by and not spec.deliver_to and not created_by.startswith("cron:"):
            spec = msgspec.structs.replace(spec, deliver_to=created_by)
        sched = schedule.check_spec(spec, self.defaults.timezone, now)
        old = self.jobs.get(spec.id)
        if old is not None and old.source == "config" and source != "config":
            raise CronSpecError(f"job {spec.id!r} is defined in config.toml ([[cron]]); change it there")
        if old is not None and source == "conversation" and old.created_by != created_by:
            raise CronSpecError(
                f"job {spec.id!r} exists and was not made in this conversation; pick another id"
            )
        keep = old is not None and schedule.same_timing(old, spec) and old.next_run_at is not None
        nxt = old.next_run_at if keep and old is not None else sched.next_after(now)
        job = CronJob(
            **msgspec.structs.asdict(spec),
            source=source,  # type: ignore[arg-type]
            created_by=created_by if old is None else old.created_by,
            next_run_at=nxt,
            last_run_at=old.last_run_at if old is not None else None,
            created_at=old.created_at if old is not None else now,
        )
        job = await self._mem(CronPut(job), CronJob)
        self._schedule(job)
        log.info("cron job defined agent=%s job=%s source=%s next=%s", self.agent, job.id, source, nxt)
        return job

    async def remove(self, job_id: str, created_by: str = "") -> bool:
        """Delete a job (its runs stay in the history)."""
        job = self._get(job_id)
        if job.source == "config":
            raise CronSpecError(f"job {job_id!r} is defined in config.toml ([[cron]]); remove it there")
        if created_by and job.created_by != created_by:
            raise CronSpecError(f"job {job_id!r} was not made in this conversation")
        await self._mem(CronDelete(job_id), bool)
        self.jobs.pop(job_id, None)
        log.info("cron job removed agent=%s job=%s", self.agent, job_id)
        return True

    async def enable(self, job_id: str, enabled: bool = True) -> CronJob:
        """Turn a job on (clearing its failures; it continues from the next time after now) or off."""
        job = self._get(job_id)
        if enabled:
            nxt = job.next_run_at
            if not job.enabled or nxt is None or nxt < self.clock():
                nxt = schedule.of(job, self.defaults.timezone).next_after(self.clock())
                if job.run_once and job.last_run_at is not None:
                    nxt = None
            job = msgspec.structs.replace(job, enabled=True, failures=0, disabled_reason="", next_run_at=nxt)
        else:
            job = msgspec.structs.replace(job, enabled=False)
        job = await self._mem(CronPut(job), CronJob)
        self._schedule(job)
        return job

    async def run_now(self, job_id: str) -> CronRun:
        """Start a run outside the schedule (the cursor stays where it is)."""
        job = self._get(job_id)
        now = self.clock()
        run = await self._mem(CronClaim(job_id, now, job.next_run_at, manual=True), CronRun | None)
        if run is None:
            raise KeyError(f"cron job {job_id!r} is gone")
        self._spawn(self._execute(job, run), f"cron-run:{run.id}")
        return run

    # -- the loop --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Load, then sleep until a job is due, fire it, and so on until cancelled."""
        try:
            await self._load()
            while True:
                delay = self.tick()
                try:
                    async with asyncio.timeout(delay):
                        await self.wake.wait()
                except TimeoutError:
                    pass
                self.wakeups += 1
        finally:
            for task in list(self.tasks):
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)

    def tick(self) -> float | None:
        """Fire every job due by now; return how long to sleep (``None``: until woken)."""
        now = self.clock()
        due_now: list[tuple[CronJob, float, float | None]] = []
        while self.heap and self.heap[0][0] <= now:
            due, job_id = heapq.heappop(self.heap)
            job = self.jobs.get(job_id)
            if job is None or not job.enabled or job.next_run_at != due:
                continue  # changed or removed since it was pushed
            nxt = self.next_time(job, due, now)
            self._schedule(msgspec.structs.replace(job, next_run_at=nxt, last_run_at=now))
            due_now.append((job, due, nxt))
        if due_now:  # claimed together: one transaction for every job due at this moment
            self._spawn(self._claim_and_run(due_now), f"cron-fire:{len(due_now)}")
        self.wake.clear()
        if not self.heap:
            return None
        return max(0.0, min(self.heap[0][0] - now, MAX_SLEEP))

    def _schedule(self, job: CronJob) -> None:
        self.jobs[job.id] = job
        if job.enabled and job.next_run_at is not None:
            first = not self.heap or job.next_run_at < self.heap[0][0]
            heapq.heappush(self.heap, (job.next_run_at, job.id))
            if first:
                self.wake.set()

    def next_time(self, job: CronJob, due: float, now: float) -> float | None:
        """The cursor after a fire of ``job`` due at ``due`` handled at ``now``: the next time after
        now (missed times are skipped, not run one by one); ``None`` for ``run_once``."""
        if job.run_once:
            return None
        try:
            sched = schedule.of(job, self.defaults.timezone)
        except CronSpecError as exc:
            log.error("cron job %s cannot be scheduled again: %s", job.id, exc)
            return None
        return sched.next_after(now, last=due if job.every else None)

    async def _claim_and_run(self, due_now: list[tuple[CronJob, float, float | None]]) -> None:
        claims = [CronClaim(job.id, due, nxt) for job, due, nxt in due_now]
        try:
            runs = await self._mem(CronClaimBatch(claims), list[CronRun | None])
        except BusError as exc:
            names = ", ".join(job.id for job, _, _ in due_now[:10])
            log.error("cron claim failed agent=%s jobs=%s error=%s", self.agent, names, exc)
            return
        for (job, due, _), run in zip(due_now, runs, strict=True):
            if run is None:
                log.info("cron run not claimed (claimed already or disabled) job=%s due=%.0f", job.id, due)
                continue
            self.host.publish(
                f"cron.{self.agent}.fire",
                Notice("fire", {"job": job.id, "run": run.id, "due_at": due, "late_s": run.started_at - due}),
            )
            self._spawn(self._execute(job, run), f"cron-run:{run.id}")

    # -- start-up --------------------------------------------------------------------------------

    async def _load(self) -> None:
        stored = {j.id: j for j in await self._mem(CronListJobs(), list[CronJob])}
        now = self.clock()
        wanted: set[str] = set()
        for entry in self.host.config.cron:
            if entry.agent != self.agent:
                continue
            wanted.add(entry.id)
            spec = schedule.spec_of_config(entry)
            try:
                sched = schedule.check_spec(spec, self.defaults.timezone, now)
            except CronSpecError as exc:
                log.error("[[cron]] job %s skipped: %s", entry.id, exc)
                continue
            old = stored.get(entry.id)
            same = old is not None and old.source == "config" and schedule.spec_of(old) == spec
            if same and old is not None:
                job = msgspec.structs.replace(old, enabled=entry.enabled and not old.disabled_reason)
            else:
                keep = old is not None and schedule.same_timing(old, spec) and old.next_run_at is not None
                job = CronJob(
                    **msgspec.structs.asdict(spec),
                    source="config",
                    enabled=entry.enabled,
                    next_run_at=old.next_run_at if keep and old is not None else sched.next_after(now),
                    last_run_at=old.last_run_at if old is not None else None,
                    created_at=old.created_at if old is not None else now,
                )
            if job != old:
                job = await self._mem(CronPut(job), CronJob)
            stored[job.id] = job
        for job in [j for j in stored.values() if j.source == "config" and j.id not in wanted]:
            await self._mem(CronDelete(job.id), bool)  # taken out of config.toml
            del stored[job.id]
        for job in stored.values():
            self._schedule(job)
        running = await self._mem(CronRuns(None, 10_000, running=True), list[CronRun])
        for run in running:
            self._spawn(self._resume(run), f"cron-resume:{run.id}")
        self.loaded.set()
        due = sum(
            1 for j in stored.values() if j.enabled and j.next_run_at is not None and j.next_run_at <= now
        )
        log.info(
            "cron ready agent=%s jobs=%d due_now=%d resumed_runs=%d",
            self.agent,
            len(stored),
            due,
            len(running),
        )
        self.host.publish(
            f"cron.{self.agent}.ready",
            Notice("ready", {"jobs": len(stored), "due": due, "resumed": len(running)}),
        )

    async def _resume(self, run: CronRun) -> None:
        job = self.jobs.get(run.job_id)
        if job is None:
            await self._finish(run, None, "interrupted", False, "the job was deleted while it ran", None)
            return
        await self._execute(job, run, resume=True)

    # -- one run ---------------------------------------------------------------------------------

    async def _execute(self, job: CronJob, run: CronRun, *, resume: bool = False) -> None:
        async with self.slots:
            act: Active | None = None
            try:
                (outcome, message, error), act = await self.talks.talk(job, run, resume=resume)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not (isinstance(exc, BusError) and exc.code in TRANSIENT_CODES):
                    log.exception("cron run failed job=%s run=%d", job.id, run.id)
                outcome, message, error = "failed", None, _describe(exc)
            delivered, message_id = False, None
            if message is not None and job.deliver_to:
                try:
                    stored = await self.talks.deliver(job, run, message)
                    delivered, message_id = True, stored.id
                except BusError as exc:
                    outcome, error = "failed", f"delivery to {job.deliver_to!r} failed: {exc.message}"
            if act is not None:
                if outcome == "timed_out":
                    await self.talks.abandon(act)
                self.talks.stop(act, outcome == "timed_out")
            await self._finish(run, job, outcome, delivered, error, message_id)

    async def _finish(
        self,
        run: CronRun,
        job: CronJob | None,
        outcome: CronOutcome,
        delivered: bool,
        error: str,
        message_id: int | None,
    ) -> None:
        finish = CronFinish(run.id, outcome, delivered, error, message_id, MAX_FAILURES)
        try:
            after = await self.finishes.submit(finish)
        except BusError as exc:
            log.error("cron run not recorded run=%d outcome=%s error=%s", run.id, outcome, exc)
            after = None
        current = self.jobs.get(run.job_id)
        if after is not None and current is not None:
            current = msgspec.structs.replace(
                current, failures=after.failures, enabled=after.enabled, disabled_reason=after.disabled_reason
            )
            self.jobs[current.id] = current
        level = logging.INFO if outcome in ("success", "skipped") else logging.WARNING
        log.log(
            level,
            "cron run ended agent=%s job=%s run=%d outcome=%s delivered=%s error=%s",
            self.agent,
            run.job_id,
            run.id,
            outcome,
            delivered,
            error or "-",
        )
        fields = {
            "job": run.job_id,
            "run": run.id,
            "outcome": outcome,
            "delivered": delivered,
            "error": error,
            "message_id": message_id,
            "due_at": run.due_at,
            "ended_at": time.time(),
        }
        self.host.publish(f"cron.{self.agent}.run", Notice("run", fields))
        if current is not None and after is not None and not after.enabled and after.disabled_reason:
            log.warning(
                "cron job disabled agent=%s job=%s reason=%s", self.agent, current.id, after.disabled_reason
            )
            self.host.publish(
                f"cron.{self.agent}.disabled",
                Notice("disabled", {"job": current.id, "reason": after.disabled_reason}),
            )

    async def _finish_batch(self, finishes: list[CronFinish]) -> list[CronJob | None]:
        result: list[CronJob | None] = await self._mem(CronFinishBatch(finishes), list[CronJob | None])
        return result

    # -- helpers ---------------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("cron task %s failed: %r", task.get_name(), exc)
