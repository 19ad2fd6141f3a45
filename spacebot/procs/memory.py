"""``memory:<agent>``: the one process that owns an agent's memory files, serving them over the bus.

A thin server over :class:`spacebot.memory.MemoryEngine`: each request type maps to one small
handler in :data:`HANDLERS`; every engine call runs in a thread pool so embedding or an index
build never stops the event loop from answering other callers (or heartbeating). Reads run
concurrently; the engine serialises writes itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from spacebot.cortex import memory_side
from spacebot.cron.store import CronStore
from spacebot.errors import ConfigError
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    AssociationReport,
    ChannelList,
    ChannelUpsert,
    CronClaim,
    CronClaimBatch,
    CronDelete,
    CronFinish,
    CronFinishBatch,
    CronListJobs,
    CronPut,
    CronRuns,
    Envelope,
    Err,
    ErrorCode,
    MaintenanceReport,
    MemAssociate,
    MemAssociatePass,
    MemAssociations,
    MemChanges,
    MemForget,
    MemGet,
    MemIngest,
    MemKnowledge,
    MemMaintain,
    MemoryChanges,
    MemRecall,
    MemSave,
    Notice,
    Ok,
    PendingChannel,
    RunsList,
    RunsRecord,
    TranscriptAppend,
    TranscriptEdit,
    TranscriptMarkReply,
    TranscriptPage,
    TranscriptPendingChannels,
    TranscriptReact,
    TranscriptSearch,
    TranscriptUnanswered,
)

# Imported here, not on first use: the zygote imports this module before it forks the first memory
# process, so a restarted memory does not pay for DuckDB, hnswlib and tantivy again (the ONNX
# runtime stays lazy: importing it starts a thread, and the zygote must not have any).
from spacebot.memory.embedder import BackgroundEmbedder
from spacebot.memory.engine import MemoryEngine
from spacebot.runtime.child import ChildContext

if TYPE_CHECKING:
    from spacebot.config import Config
    from spacebot.ipc.messages import IngestReport
    from spacebot.memory.config import MemoryConfig
    from spacebot.runtime.llm_link import LinkedLLM

log = logging.getLogger("spacebot.memory")

Handler = Callable[["MemoryEngine", Any], Any]


def _maintain(engine: MemoryEngine, req: MemMaintain) -> Any:
    ops: dict[str, Callable[[], Any]] = {
        "decay": engine.decay,
        "prune": engine.prune,
        "merge": engine.merge_duplicates,
    }
    if req.op not in ops:
        raise ValueError(f"unknown maintenance op {req.op!r} (decay, prune or merge)")
    return ops[req.op]()


def _append(engine: MemoryEngine, req: TranscriptAppend) -> Any:
    return engine.transcripts.append(
        req.channel,
        req.text,
        author_id=req.author_id,
        author_name=req.author_name,
        role=req.role,
        platform_message_id=req.platform_message_id,
        attachments=req.attachments,
        created_at=req.created_at,
        reply_state=req.reply_state,
        answers=req.answers,
        answers_state=req.answers_state,
        shown=req.shown,
    )


CRON_HANDLERS: dict[type, Handler] = {
    CronPut: lambda e, r: CronStore(e.store).put(r.job),
    CronListJobs: lambda e, r: CronStore(e.store).jobs(),
    CronDelete: lambda e, r: CronStore(e.store).delete(r.id),
    CronClaim: lambda e, r: CronStore(e.store).claim(r.job_id, r.due_at, r.next_run_at, r.manual),
    CronFinish: lambda e, r: CronStore(e.store).finish(
        r.run_id, r.outcome, r.delivered, r.error, r.message_id, r.max_failures
    ),
    CronRuns: lambda e, r: CronStore(e.store).runs(r.job_id, r.limit, r.running),
    CronClaimBatch: lambda e, r: CronStore(e.store).claim_many(
        [(c.job_id, c.due_at, c.next_run_at, c.manual) for c in r.claims]
    ),
    CronFinishBatch: lambda e, r: CronStore(e.store).finish_many(
        [(f.run_id, f.outcome, f.delivered, f.error, f.message_id, f.max_failures) for f in r.finishes]
    ),
}
"""Cron jobs and runs (``spacebot/cron/store.py``), written only by ``cortex:<agent>``."""

HANDLERS: dict[type, Handler] = {
    MemSave: lambda e, r: e.save_many(r.drafts),
    MemGet: lambda e, r: e.get(r.id),
    MemRecall: lambda e, r: e.recall(
        r.query, r.mode, r.limit, r.types, r.channel, as_of=r.as_of, queries=r.queries
    ),
    MemForget: lambda e, r: e.forget(r.ids),
    MemAssociate: lambda e, r: e.associate(r.source, r.target, r.relation, r.weight),
    MemAssociations: lambda e, r: e.associations(r.id),
    MemMaintain: _maintain,
    TranscriptAppend: _append,
    TranscriptPage: lambda e, r: e.transcripts.page(r.channel, r.limit, r.before_id),
    TranscriptEdit: lambda e, r: e.transcripts.edit(r.channel, r.platform_message_id, r.text),
    TranscriptMarkReply: lambda e, r: e.transcripts.mark_reply(r.message_id, r.state),
    TranscriptUnanswered: lambda e, r: e.transcripts.unanswered(r.channel, r.limit),
    TranscriptPendingChannels: lambda e, r: [
        PendingChannel(c, t, n) for c, t, n in e.transcripts.pending_channels(r.limit)
    ],
    TranscriptSearch: lambda e, r: e.transcripts.search(r.query, r.limit, r.channel, r.exclude_channel),
    ChannelUpsert: lambda e, r: e.transcripts.upsert_channel(r.id, r.platform, r.display_name),
    ChannelList: lambda e, r: e.transcripts.channels(r.platform),
    TranscriptReact: lambda e, r: e.transcripts.react(r.message_id, r.emoji),
    MemAssociatePass: memory_side.associate_pass,
    MemKnowledge: memory_side.knowledge_snapshot,
    RunsRecord: memory_side.record_runs,
    RunsList: memory_side.list_runs,
    **CRON_HANDLERS,
}
"""One handler per request type; each runs in the engine's thread pool."""

COUNT_CHANGERS = (MemSave, MemForget, MemMaintain)
"""Requests that can change how many memories there are (the status line shows the count)."""
CHANGERS = (MemSave, MemForget, MemMaintain, MemAssociate, MemAssociatePass)
"""Requests that change memories or their edges: each success moves :class:`Changes` on."""


class Changes:
    """The counters behind ``MemChanges``: the cortex compares them to skip work when nothing changed."""

    def __init__(self, cortex: str) -> None:
        self.cortex = cortex
        self.epoch = time.time()
        self.generation = 0
        self.outside = 0

    def bump(self, src: str) -> None:
        """One write that changed something, asked by ``src``."""
        self.generation += 1
        if src != self.cortex:
            self.outside += 1

    def now(self) -> MemoryChanges:
        return MemoryChanges(epoch=self.epoch, generation=self.generation, outside=self.outside)


def _changed(result: Any) -> bool:
    """Whether a write's result says it changed something (a maintenance pass may change nothing)."""
    if isinstance(result, MaintenanceReport):
        return result.changed > 0
    if isinstance(result, AssociationReport):
        return result.added > 0
    if isinstance(result, int) and not isinstance(result, bool):  # MemForget: how many
        return result > 0
    return bool(result) if isinstance(result, list) else True


def _error(exc: Exception) -> Err:
    from spacebot.memory.errors import MemoryInputError, MemoryNotFound, MemoryStoreError

    text = str(exc)
    if isinstance(exc, ConfigError):
        return Err(ErrorCode.CONFIG, text)
    if isinstance(exc, MemoryNotFound):
        return Err(ErrorCode.NOT_FOUND, text)
    if isinstance(exc, MemoryInputError | ValueError):
        return Err(ErrorCode.BAD_REQUEST, text)
    if isinstance(exc, MemoryStoreError):
        return Err(ErrorCode.INTERNAL, text)
    log.exception("memory request failed")
    return Err(ErrorCode.INTERNAL, f"{type(exc).__name__}: {exc}")


def _data_dir(home: str, agent: str) -> Path:
    path = Path(home).expanduser() / "agents" / agent / "data"
    path.mkdir(parents=True, exist_ok=True)
    return path


NO_MODEL = (
    "no model is configured for ingestion: set [llm] in config.toml, or ANTHROPIC_API_KEY, "
    "OPENAI_API_KEY, or SPACEBOT_LLM_BASE_URL + SPACEBOT_LLM_MODEL"
)


class Ingestor:
    """Turns files dropped in ``agents/<id>/ingest/`` into memories through the LLM layer.

    One pass at a time; a pass runs on request (``MemIngest``) and every ``every`` seconds.
    Without a configured model it does nothing and says why. A file that fails waits its back-off
    before the periodic scan tries it again (a request tries it at once) and moves to
    ``ingest/failed/`` after ``[memory] ingest_max_attempts``; each failure is published on
    ``memory.<agent>.ingest`` and the status line says what waits or failed.
    """

    def __init__(self, ctx: ChildContext, engine: MemoryEngine, folder: Path, agent: str) -> None:
        from spacebot.memory.ingest_retry import IngestRetries

        self.ctx = ctx
        self.engine = engine
        self.folder = folder
        self.agent = agent
        self._lock = asyncio.Lock()
        self._llm: LinkedLLM | None = None
        cfg = ctx.config.memory
        self.retries = IngestRetries(
            engine.data_dir / IngestRetries.FILE_NAME,
            max_attempts=cfg.ingest_max_attempts,
            base_delay=cfg.ingest_retry_delay,
            max_delay=cfg.ingest_retry_max_delay,
        )
        self.summary = ""
        """What ingestion wants the operator to see (``ingest: 1 failed (see ingest/failed/)``)."""
        self.changed: Callable[[], None] = lambda: None
        """Called after a pass that created memories."""

    @property
    def configured(self) -> bool:
        """Whether a model is configured to do the extraction."""
        return bool(self.ctx.config.llm.providers)

    def status_line(self, count: int) -> str:
        """The process's status text: the memory count, then what ingestion wants seen."""
        return f"serving {count} memories" + (f"; {self.summary}" if self.summary else "")

    def _summarise(self) -> str:
        from spacebot.memory.ingest_retry import FAILED_DIR

        failed_dir = self.folder / FAILED_DIR
        failed = (
            sum(1 for p in failed_dir.iterdir() if p.is_file() and p.suffix != ".reason")
            if failed_dir.is_dir()
            else 0
        )
        parts = [f"{n} waiting to retry" for n in [self.retries.waiting()] if n]
        parts += [f"{failed} failed (see ingest/{FAILED_DIR}/)"] if failed else []
        return "ingest: " + ", ".join(parts) if parts else ""

    async def show_status(self) -> None:
        """Recount what waits or failed and put it on the status line (the process is idle)."""
        self.summary = await asyncio.to_thread(self._summarise)
        self.ctx.set_busy(False, self.status_line(await asyncio.to_thread(self.engine.count)))

    def _due(self) -> bool:
        """Whether the folder holds a file that a periodic pass would try now."""
        from spacebot.memory.ingest import SUPPORTED

        return self.folder.is_dir() and any(
            p.is_file() and p.suffix.lower() in SUPPORTED and self.retries.due(p)
            for p in self.folder.iterdir()
        )

    async def run(self, force: bool = True) -> list[IngestReport]:
        """Ingest whatever is in the folder now; one report per file tried.

        ``force`` (a request) tries failed files before their back-off is over; a periodic pass
        does not."""
        from spacebot.llm.types import Request, UserMessage
        from spacebot.memory.ingest import ingest_folder, llm_extractor
        from spacebot.runtime.llm_link import connect_llm

        if not self.configured:
            raise ConfigError(NO_MODEL)
        async with self._lock:
            if self._llm is None:
                self._llm = await connect_llm(self.ctx)
            llm = self._llm.llm

            async def complete(prompt: str) -> str:
                result = await llm.complete(Request([UserMessage(prompt)]), process="ingest", task="extract")
                self.ctx.progress()
                return result.text

            def progress(file_name: str, done: int, total: int) -> None:
                self.ctx.progress(f"ingesting {file_name} {done}/{total}")
                self.ctx.publish(
                    f"memory.{self.agent}.ingest",
                    Notice("ingest", {"file": file_name, "done": done, "total": total}),
                )

            def notify(event: str, fields: dict[str, Any]) -> None:
                self.ctx.publish(f"memory.{self.agent}.ingest", Notice(event, fields))

            self.ctx.set_busy(True, "ingesting")
            try:
                reports = await ingest_folder(
                    self.engine,
                    self.folder,
                    llm_extractor(complete),
                    progress,
                    retries=self.retries,
                    force=force,
                    notify=notify,
                )
            finally:
                await self.show_status()
            if any(report.memories_created for report in reports):
                self.changed()
            for report in reports:
                log.info(
                    "ingested file=%s status=%s chunks=%d/%d memories=%d error=%s",
                    report.file_name,
                    report.status,
                    report.chunks_done,
                    report.chunks_total,
                    report.memories_created,
                    report.error or "-",
                )
            return reports

    async def every(self, seconds: float) -> None:
        """Scan the folder periodically (only when a file is due), after showing what earlier runs
        left (files given up on, files waiting to be retried)."""
        if not self._lock.locked():
            await self.show_status()
        while True:
            await asyncio.sleep(seconds)
            if self.configured and await asyncio.to_thread(self._due):
                try:
                    await self.run(force=False)
                except Exception:
                    log.exception("ingest pass failed agent=%s", self.agent)

    async def aclose(self) -> None:
        """Release the LLM clients."""
        if self._llm is not None:
            await self._llm.aclose()


def memory_config(config: Config) -> MemoryConfig:
    """``[memory]`` as the engine runs it: relative dates are resolved in ``[defaults] timezone``
    (the zone the operator named for the agent's jobs) unless ``[memory] date_timezone`` names one."""
    cfg = config.memory
    if not cfg.date_timezone and config.defaults.timezone:
        cfg = msgspec.structs.replace(cfg, date_timezone=config.defaults.timezone)
    return cfg


async def serve(ctx: ChildContext, agent: str = "main", workers: int = 4, ingest_every: float = 30.0) -> None:
    """Open the agent's memory (rebuilding indexes if needed), then serve until told to stop."""
    data_dir = await asyncio.to_thread(_data_dir, ctx.config.home, agent)
    topic = f"memory.{agent}.progress"

    def progress(what: str, done: int, total: int) -> None:
        # Called from the loading thread: hand the event to the loop.
        loop.call_soon_threadsafe(ctx.publish, topic, Notice(what, {"done": done, "total": total}))
        loop.call_soon_threadsafe(ctx.progress, f"{what} {done}/{total}")

    loop = asyncio.get_running_loop()
    ctx.set_busy(True, f"opening {data_dir}")
    cfg = memory_config(ctx.config)
    # The model loads in a thread of its own while the database and indexes open.
    embedder = BackgroundEmbedder(cfg.embed_threads, cfg.max_tokens, cfg.embed_batch)
    engine = await asyncio.to_thread(MemoryEngine, data_dir, cfg, embedder, progress)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memory")
    count = await asyncio.to_thread(engine.count)
    ingestor = Ingestor(ctx, engine, data_dir.parent / "ingest", agent)
    changes = Changes(ids.cortex(agent))
    ingestor.changed = lambda: changes.bump("ingest")
    ctx.set_busy(False, ingestor.status_line(count))
    log.info("memory ready agent=%s memories=%d dir=%s", agent, count, data_dir)

    async def handle(env: Envelope) -> Ok | Err:
        if isinstance(env.body, MemChanges):
            return Ok(changes.now())  # a counter read: no thread, no database
        if isinstance(env.body, MemIngest):
            try:
                return Ok(await ingestor.run())
            except Exception as exc:
                return _error(exc)
        handler = HANDLERS.get(type(env.body))
        if handler is None:
            return Err(ErrorCode.UNSUPPORTED, f"memory does not handle {type(env.body).__name__}")
        ctx.progress()
        try:
            result = await loop.run_in_executor(pool, handler, engine, env.body)
        except Exception as exc:
            return _error(exc)
        if isinstance(env.body, CHANGERS) and _changed(result):
            changes.bump(env.src)
        if isinstance(env.body, COUNT_CHANGERS):
            await recount()
        return Ok(result)

    counts = {"asked": 0, "shown": 0}

    async def recount() -> None:
        """Keep the status line's count current after a write (reads leave it alone)."""
        counts["asked"] += 1
        mine = counts["asked"]
        try:
            count = await loop.run_in_executor(pool, engine.count)
        except Exception:  # the write itself succeeded: its caller must not hear otherwise
            log.exception("counting memories failed agent=%s", agent)
            return
        # Counts run in parallel threads: one begun earlier may end later, and must not win.
        # An ingest pass owns the line while it runs, and sets it when done.
        if mine > counts["shown"] and not ctx.busy:
            counts["shown"] = mine
            ctx.progress(ingestor.status_line(count))
            ctx.heartbeat()  # now, not at the next beat: the reply follows it to the caller

    ctx.on_message(handle)
    ctx.ready()
    scanner = asyncio.get_running_loop().create_task(ingestor.every(ingest_every), name="ingest-scan")
    try:
        await ctx.stopping.wait()
    finally:
        scanner.cancel()
        await asyncio.gather(scanner, return_exceptions=True)
        await ingestor.aclose()
        pool.shutdown(wait=True)
        await asyncio.to_thread(engine.close)
        log.info("memory closed agent=%s", agent)


serve.manual_ready = True  # type: ignore[attr-defined]
