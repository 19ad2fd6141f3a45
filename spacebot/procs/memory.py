"""``memory:<agent>``: the one process that owns an agent's memory files, serving them over the bus.

A thin server over :class:`spacebot.memory.MemoryEngine`: each request type maps to one small
handler in :data:`HANDLERS`; every engine call runs in a thread pool so embedding or an index
build never stops the event loop from answering other callers (or heartbeating). Reads run
concurrently; the engine serialises writes itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacebot.errors import ConfigError
from spacebot.ipc.messages import (
    ChannelList,
    ChannelUpsert,
    Envelope,
    Err,
    ErrorCode,
    MemAssociate,
    MemAssociations,
    MemForget,
    MemGet,
    MemIngest,
    MemMaintain,
    MemRecall,
    MemSave,
    Notice,
    Ok,
    PendingChannel,
    TranscriptAppend,
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
    from spacebot.ipc.messages import IngestReport
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
    )


HANDLERS: dict[type, Handler] = {
    MemSave: lambda e, r: e.save_many(r.drafts),
    MemGet: lambda e, r: e.get(r.id),
    MemRecall: lambda e, r: e.recall(r.query, r.mode, r.limit, r.types, r.channel),
    MemForget: lambda e, r: e.forget(r.ids),
    MemAssociate: lambda e, r: e.associate(r.source, r.target, r.relation, r.weight),
    MemAssociations: lambda e, r: e.associations(r.id),
    MemMaintain: _maintain,
    TranscriptAppend: _append,
    TranscriptPage: lambda e, r: e.transcripts.page(r.channel, r.limit, r.before_id),
    TranscriptMarkReply: lambda e, r: e.transcripts.mark_reply(r.message_id, r.state),
    TranscriptUnanswered: lambda e, r: e.transcripts.unanswered(r.channel, r.limit),
    TranscriptPendingChannels: lambda e, r: [
        PendingChannel(c, t, n) for c, t, n in e.transcripts.pending_channels(r.limit)
    ],
    TranscriptSearch: lambda e, r: e.transcripts.search(r.query, r.limit, r.channel, r.exclude_channel),
    ChannelUpsert: lambda e, r: e.transcripts.upsert_channel(r.id, r.platform, r.display_name),
    ChannelList: lambda e, r: e.transcripts.channels(r.platform),
    TranscriptReact: lambda e, r: e.transcripts.react(r.message_id, r.emoji),
}
"""One handler per request type; each runs in the engine's thread pool."""


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
    Without a configured model it does nothing and says why.
    """

    def __init__(self, ctx: ChildContext, engine: MemoryEngine, folder: Path, agent: str) -> None:
        self.ctx = ctx
        self.engine = engine
        self.folder = folder
        self.agent = agent
        self._lock = asyncio.Lock()
        self._llm: LinkedLLM | None = None

    @property
    def configured(self) -> bool:
        """Whether a model is configured to do the extraction."""
        return bool(self.ctx.config.llm.providers)

    async def run(self) -> list[IngestReport]:
        """Ingest whatever is in the folder now; one report per file."""
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

            self.ctx.set_busy(True, "ingesting")
            try:
                reports = await ingest_folder(self.engine, self.folder, llm_extractor(complete), progress)
            finally:
                self.ctx.set_busy(False, f"serving {self.engine.count()} memories")
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
        """Scan the folder periodically (only when something is there)."""
        while True:
            await asyncio.sleep(seconds)
            if self.configured and await asyncio.to_thread(_has_files, self.folder):
                try:
                    await self.run()
                except Exception:
                    log.exception("ingest pass failed agent=%s", self.agent)

    async def aclose(self) -> None:
        """Release the LLM clients."""
        if self._llm is not None:
            await self._llm.aclose()


def _has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.iterdir())


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
    cfg = ctx.config.memory
    # The model loads in a thread of its own while the database and indexes open.
    embedder = BackgroundEmbedder(cfg.embed_threads, cfg.max_tokens, cfg.embed_batch)
    engine = await asyncio.to_thread(MemoryEngine, data_dir, cfg, embedder, progress)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memory")
    ctx.set_busy(False, f"serving {engine.count()} memories")
    log.info("memory ready agent=%s memories=%d dir=%s", agent, engine.count(), data_dir)

    ingestor = Ingestor(ctx, engine, data_dir.parent / "ingest", agent)

    async def handle(env: Envelope) -> Ok | Err:
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
        return Ok(result)

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
