"""Ingestion of files dropped into ``agents/<id>/ingest/``.

Each file is split at line boundaries into ~``ingest_chunk_chars`` chunks; an injected async
``extract(chunk_text, file_name, chunk_index)`` turns each chunk into :class:`MemoryDraft`s (in
production an LLM call with :data:`EXTRACTION_PROMPT`, parsed by :func:`parse_extraction`).
Progress is recorded per chunk, keyed by the file's sha256, in the same transaction that saves the
chunk's memories, so an interrupted ingest resumes exactly where it stopped. A file is removed only
when every chunk succeeded; a failure keeps it and records why.

With :class:`IngestRetries` a failed file is tried again after an exponential back-off (30 s, 60 s,
120 s … capped), at most ``ingest_max_attempts`` times, then moved to ``ingest/failed/`` next to a
``<name>.reason`` file. Attempt counts are persisted before each attempt, so they survive restarts.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import msgspec

from spacebot.ipc.messages import IngestReport, MemoryDraft, MemoryType
from spacebot.llm.errors import LLMError
from spacebot.memory.errors import MemoryStoreError
from spacebot.memory.ingest_retry import FAILED_DIR, IngestRetries

if TYPE_CHECKING:
    from spacebot.memory.engine import MemoryEngine

log = logging.getLogger(__name__)

Extractor = Callable[[str, str, int], Awaitable[list[MemoryDraft]]]
"""``extract(chunk_text, file_name, chunk_index) -> drafts``."""
IngestProgress = Callable[[str, int, int], None]
"""``progress(file_name, chunks_done, chunks_total)``."""
IngestNotify = Callable[[str, dict[str, Any]], None]
"""``notify(event, fields)``: ``ingest_retry`` (a file failed and waits) or ``ingest_failed`` (given up)."""

SUPPORTED = frozenset(
    {
        ".txt",
        ".md",
        ".markdown",
        ".json",
        ".jsonl",
        ".csv",
        ".tsv",
        ".log",
        ".yaml",
        ".yml",
        ".toml",
        ".html",
        ".htm",
    }
)


class ExtractionError(MemoryStoreError):
    """A model's extraction answer could not be turned into memories."""


EXTRACTION_PROMPT = """\
You turn a chunk of a document into memories for an AI agent's long-term memory.
Document: {file_name} (chunk {chunk_number})

Extract the durable, self-contained pieces of information a teammate would want to remember.
Each memory is one or two sentences that make sense without the document (name people, projects and
dates explicitly). Skip boilerplate, navigation, and anything trivial.

Types: fact, preference, decision, identity, event, observation, goal, todo.
Importance: 0.0 (trivial) to 1.0 (critical).

Answer with JSON only, exactly this shape:
{{"memories": [{{"content": "...", "type": "fact", "importance": 0.6}}]}}
Answer {{"memories": []}} if nothing is worth remembering.

<chunk>
{chunk}
</chunk>
"""


def build_extraction_prompt(chunk_text: str, file_name: str, chunk_index: int) -> str:
    """The prompt that asks a model to extract memories from one chunk."""
    return EXTRACTION_PROMPT.format(file_name=file_name, chunk_number=chunk_index + 1, chunk=chunk_text)


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


def parse_extraction(answer: str, source: str = "") -> list[MemoryDraft]:
    """Turn a model's JSON answer into drafts; raise :class:`ExtractionError` saying what is wrong."""
    text = answer.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1)
    try:
        data: Any = msgspec.json.decode(text)
    except msgspec.DecodeError as exc:
        raise ExtractionError(f"extraction answer is not JSON ({exc}): {text[:120]!r}") from None
    items = data.get("memories") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ExtractionError('extraction answer must be {"memories": [...]} or a list')
    drafts = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise ExtractionError(f"memory #{n} is not an object: {item!r}")
        content = item.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ExtractionError(f"memory #{n} has no content")
        raw_type = item.get("type", "fact")
        try:
            mtype = MemoryType(raw_type)
        except ValueError:
            raise ExtractionError(f"memory #{n} has unknown type {raw_type!r}") from None
        importance = item.get("importance")
        if importance is not None and (
            isinstance(importance, bool)
            or not isinstance(importance, int | float)
            or not 0 <= importance <= 1
        ):
            raise ExtractionError(f"memory #{n} has importance {importance!r}, expected 0..1")
        drafts.append(
            MemoryDraft(
                content=content.strip(),
                type=mtype,
                importance=None if importance is None else float(importance),
                source=source,
            )
        )
    return drafts


def llm_extractor(complete: Callable[[str], Awaitable[str]]) -> Extractor:
    """Wrap an async ``complete(prompt) -> answer`` (the LLM layer) into an :data:`Extractor`."""

    async def extract(chunk_text: str, file_name: str, chunk_index: int) -> list[MemoryDraft]:
        answer = await complete(build_extraction_prompt(chunk_text, file_name, chunk_index))
        return parse_extraction(answer, source=f"ingest:{file_name}")

    return extract


class _TextOnly(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag in ("p", "div", "li", "br", "tr", "h1", "h2", "h3", "h4", "section", "article"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.parts.append(data)


def file_text(path: Path, data: bytes) -> str:
    """Decode a file (HTML reduced to its visible text)."""
    text = data.decode("utf-8", errors="replace")
    if path.suffix.lower() in (".html", ".htm"):
        parser = _TextOnly()
        parser.feed(text)
        text = re.sub(r"\n\s*\n+", "\n\n", "".join(parser.parts))
    return text


def chunk_lines(text: str, size: int) -> list[str]:
    """Split at line boundaries into chunks of about ``size`` characters (a longer line is cut)."""
    chunks: list[str] = []
    current: list[str] = []
    length = 0
    for line in text.splitlines(keepends=True):
        while len(line) > size:
            if current:
                chunks.append("".join(current))
                current, length = [], 0
            chunks.append(line[:size])
            line = line[size:]
        if length + len(line) > size and current:
            chunks.append("".join(current))
            current, length = [], 0
        current.append(line)
        length += len(line)
    if current:
        chunks.append("".join(current))
    return [c for c in chunks if c.strip()]


def _set_status(engine: MemoryEngine, digest: str, status: str, error: str | None) -> None:
    with engine.store.transaction() as cur:
        cur.execute(
            "UPDATE ingest_files SET status = ?, error = ?, updated_at = ? WHERE sha256 = ?",
            [status, error, time.time(), digest],
        )


def _begin(engine: MemoryEngine, path: Path) -> tuple[str, int, list[str], set[int]]:
    """Read, hash and chunk a file and record it; returns the chunks and those already done."""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    too_big = len(data) > engine.config.ingest_max_file_bytes
    chunks = [] if too_big else chunk_lines(file_text(path, data), engine.config.ingest_chunk_chars)
    now = time.time()
    with engine.store.transaction() as cur:
        cur.execute(
            "INSERT INTO ingest_files VALUES (?, ?, ?, ?, 'running', NULL, ?, ?) ON CONFLICT (sha256) "
            "DO UPDATE SET file_name = excluded.file_name, status = 'running', error = NULL, "
            "updated_at = excluded.updated_at",
            [digest, path.name, len(data), len(chunks), now, now],
        )
        rows = cur.execute("SELECT chunk_index FROM ingest_chunks WHERE sha256 = ?", [digest]).fetchall()
    return digest, len(data), chunks, {r[0] for r in rows}


async def ingest_file(
    engine: MemoryEngine, path: Path, extract: Extractor, progress: IngestProgress | None = None
) -> IngestReport:
    """Ingest one file, resuming from recorded progress; remove it only if every chunk succeeded.

    Safe to await on an event loop: disk, DuckDB and embedding work run in threads."""
    name = path.name
    digest, size, chunks, done = await asyncio.to_thread(_begin, engine, path)
    total = len(chunks)
    created = 0

    async def fail(error: str) -> IngestReport:
        await asyncio.to_thread(_set_status, engine, digest, "failed", error)
        log.warning(
            "ingest failed file=%s chunks_done=%d chunks_total=%d error=%s", name, len(done), total, error
        )
        return IngestReport(
            file_name=name, sha256=digest, chunks_total=total, chunks_done=len(done),
            memories_created=created, status="failed", error=error,
        )  # fmt: skip

    if size > engine.config.ingest_max_file_bytes:
        return await fail(f"file is {size} bytes, over the {engine.config.ingest_max_file_bytes}-byte cap")
    if done:
        log.info("ingest resuming file=%s chunks_done=%d chunks_total=%d", name, len(done), total)
    for index, chunk in enumerate(chunks):
        if index in done:
            continue
        try:
            drafts = await extract(chunk, name, index)
            drafts = [
                msgspec.structs.replace(
                    d,
                    source=d.source or f"ingest:{name}",
                    metadata={**d.metadata, "file": name, "chunk": index},
                )
                for d in drafts
            ]

            def mark(cur: duckdb.DuckDBPyConnection, index: int = index, count: int = len(drafts)) -> None:
                cur.execute(
                    "INSERT INTO ingest_chunks VALUES (?, ?, ?, ?)", [digest, index, count, time.time()]
                )

            await asyncio.to_thread(engine.save_many, drafts, False, True, mark)
        except Exception as exc:
            # A model failure says which server and what to check; anything else says what it was.
            detail = exc.operator_line() if isinstance(exc, LLMError) else f"{type(exc).__name__}: {exc}"
            return await fail(f"chunk {index}: {detail}")
        done.add(index)
        created += len(drafts)
        if progress:
            progress(name, len(done), total)
    await asyncio.to_thread(_set_status, engine, digest, "done", None)
    await asyncio.to_thread(path.unlink, missing_ok=True)
    log.info("ingest done file=%s chunks=%d memories=%d", name, total, created)
    return IngestReport(
        file_name=name,
        sha256=digest,
        chunks_total=total,
        chunks_done=total,
        memories_created=created,
        status="done",
    )


async def ingest_folder(
    engine: MemoryEngine,
    folder: Path,
    extract: Extractor,
    progress: IngestProgress | None = None,
    *,
    retries: IngestRetries | None = None,
    force: bool = False,
    notify: IngestNotify | None = None,
) -> list[IngestReport]:
    """Ingest every supported file in ``folder`` (sorted by name); unsupported files are left alone.

    Without ``retries`` every file is tried. With them a failed file waits its back-off (unless
    ``force``), and one that used up its attempts moves to ``failed/``; files left waiting get no
    report. ``notify`` hears of each failure (``ingest_retry``) and each file given up
    (``ingest_failed``)."""
    files = await asyncio.to_thread(
        lambda: sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED)
    )
    if retries is not None:
        await asyncio.to_thread(retries.prune, {p.name for p in files})
    reports = []
    for path in files:
        if retries is None:
            reports.append(await ingest_file(engine, path, extract, progress))
            continue
        report = await _attempt(engine, path, extract, progress, retries, force, notify)
        if report is not None:
            reports.append(report)
    return reports


def _unread(name: str, error: str) -> IngestReport:
    """The report of a file that failed before its content was read."""
    return IngestReport(
        file_name=name,
        sha256="",
        chunks_total=0,
        chunks_done=0,
        memories_created=0,
        status="failed",
        error=error,
    )


async def _attempt(
    engine: MemoryEngine,
    path: Path,
    extract: Extractor,
    progress: IngestProgress | None,
    retries: IngestRetries,
    force: bool,
    notify: IngestNotify | None,
) -> IngestReport | None:
    """One file under a retry policy; None when it is not tried now."""
    name = path.name
    try:
        decision, entry = await asyncio.to_thread(retries.begin, path, force)
    except FileNotFoundError:
        return None  # taken away since the listing
    if decision == "wait":
        return None
    if decision == "give_up":
        if entry.running:
            before = f" (the one before failed: {entry.error})" if entry.error else ""
            reason = f"the memory process stopped during attempt {entry.attempts}{before}"
        else:
            reason = entry.error or "no attempts left"
        report = _unread(name, reason)
    else:
        try:
            report = await ingest_file(engine, path, extract, progress)
        except asyncio.CancelledError:
            await asyncio.to_thread(retries.interrupted, name)
            raise
        except Exception as exc:  # reading or storing failed: as much a failed attempt as a bad answer
            log.warning("ingest attempt failed file=%s error=%s: %s", name, type(exc).__name__, exc)
            report = _unread(name, f"{type(exc).__name__}: {exc}")
        if report.status == "done":
            await asyncio.to_thread(retries.succeeded, name)
            return report
        entry = await asyncio.to_thread(retries.failed, name, report.error or "unknown error")
    error = report.error or "unknown error"
    # A file over the size cap cannot succeed: it does not wait for its other attempts.
    if (
        decision == "give_up"
        or entry.attempts >= retries.max_attempts
        or entry.size > engine.config.ingest_max_file_bytes
    ):
        target = await asyncio.to_thread(retries.give_up, path, entry, error)
        moved = f"{FAILED_DIR}/{target.name}"
        log.error(
            "ingest gave up file=%s attempts=%d moved_to=%s error=%s", name, entry.attempts, moved, error
        )
        if notify:
            notify(
                "ingest_failed", {"file": name, "attempts": entry.attempts, "moved_to": moved, "error": error}
            )
        return msgspec.structs.replace(
            report,
            error=f"{error} (gave up after {entry.attempts} attempt{'s' * (entry.attempts != 1)}: {moved})",
        )
    retry_in = max(0.0, entry.next_at - retries.clock())
    log.info(
        "ingest will retry file=%s attempt=%d/%d retry_in=%.0fs",
        name,
        entry.attempts,
        retries.max_attempts,
        retry_in,
    )
    if notify:
        fields = {"file": name, "attempt": entry.attempts, "max_attempts": retries.max_attempts}
        notify("ingest_retry", {**fields, "retry_in": retry_in, "error": error})
    return report
