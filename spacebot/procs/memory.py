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
    TranscriptAppend,
    TranscriptMarkReply,
    TranscriptPage,
    TranscriptSearch,
    TranscriptUnanswered,
)
from spacebot.supervisor.child import ChildContext

if TYPE_CHECKING:
    from spacebot.memory.engine import MemoryEngine

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
    TranscriptSearch: lambda e, r: e.transcripts.search(r.query, r.limit, r.channel, r.exclude_channel),
    ChannelUpsert: lambda e, r: e.transcripts.upsert_channel(r.id, r.platform, r.display_name),
    ChannelList: lambda e, r: e.transcripts.channels(),
}
"""One handler per request type; each runs in the engine's thread pool."""


def _error(exc: Exception) -> Err:
    from spacebot.memory.errors import MemoryInputError, MemoryStoreError

    text = str(exc)
    if isinstance(exc, KeyError | LookupError) or "no memory" in text or "not found" in text:
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


async def serve(ctx: ChildContext, agent: str = "main", workers: int = 4) -> None:
    """Open the agent's memory (rebuilding indexes if needed), then serve until told to stop."""
    from spacebot.memory.engine import MemoryEngine

    data_dir = await asyncio.to_thread(_data_dir, ctx.config.home, agent)
    topic = f"memory.{agent}.progress"

    def progress(what: str, done: int, total: int) -> None:
        # Called from the loading thread: hand the event to the loop.
        loop.call_soon_threadsafe(ctx.publish, topic, Notice(what, {"done": done, "total": total}))
        loop.call_soon_threadsafe(ctx.progress, f"{what} {done}/{total}")

    loop = asyncio.get_running_loop()
    ctx.set_busy(True, f"opening {data_dir}")
    engine: MemoryEngine = await asyncio.to_thread(
        MemoryEngine, data_dir, ctx.config.memory, progress=progress
    )
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="memory")
    ctx.set_busy(False, f"serving {engine.count()} memories")
    log.info("memory ready agent=%s memories=%d dir=%s", agent, engine.count(), data_dir)

    async def handle(env: Envelope) -> Ok | Err:
        handler = HANDLERS.get(type(env.body))
        if handler is None:
            if isinstance(env.body, MemIngest):
                return Err(
                    ErrorCode.UNSUPPORTED, "ingestion needs the LLM layer, which this build does not wire yet"
                )
            return Err(ErrorCode.UNSUPPORTED, f"memory does not handle {type(env.body).__name__}")
        ctx.progress()
        try:
            result = await loop.run_in_executor(pool, handler, engine, env.body)
        except Exception as exc:
            return _error(exc)
        return Ok(result)

    ctx.on_message(handle)
    ctx.ready()
    try:
        await ctx.stopping.wait()
    finally:
        pool.shutdown(wait=True)
        await asyncio.to_thread(engine.close)
        log.info("memory closed agent=%s", agent)


serve.manual_ready = True  # type: ignore[attr-defined]
