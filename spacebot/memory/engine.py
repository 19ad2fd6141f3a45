"""``MemoryEngine``: the synchronous, thread-safe facade the ``memory:<agent>`` process serves.

Writes go to DuckDB first and to the indexes after; at start-up the indexes are reconciled with
DuckDB (rebuilt when missing, stale or corrupt), so a crash at any moment loses nothing that a
call had returned. Call it from worker threads: embedding and index work are CPU-bound.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import duckdb
import msgspec
import numpy as np

from spacebot.ipc.messages import (
    Association,
    MaintenanceReport,
    Memory,
    MemoryDraft,
    MemoryType,
    RecallHit,
    RecallMode,
    Relation,
)
from spacebot.memory import graph, maintenance, recall, rerank, temporal
from spacebot.memory.config import MemoryConfig
from spacebot.memory.embedder import BackgroundEmbedder, Embedder
from spacebot.memory.errors import MemoryInputError, MemoryNotFound
from spacebot.memory.people import People
from spacebot.memory.store import Store
from spacebot.memory.text import Doc, TextIndex
from spacebot.memory.transcripts import Transcripts
from spacebot.memory.types import ALL_SOURCES, DEFAULT_IMPORTANCE, RecallSource
from spacebot.memory.vectors import Progress, VectorIndex

log = logging.getLogger(__name__)

_encode = msgspec.json.Encoder()


def document_text(content: str, metadata: dict[str, Any]) -> str:
    """The text indexed and embedded for a memory: its content, prefixed with the ``date`` and
    ``speaker`` metadata when present (a transcript line is found by when and by whom it was said)
    and followed by the absolute dates its relative ones mean (``dates`` metadata, written when
    ``resolve_dates`` is on: "(yesterday = 7 May 2023)")."""
    speaker = metadata.get("speaker")
    body = f"{speaker}: {content}" if speaker else content
    if dated := temporal.notes(metadata):
        body = f"{body} {dated}"
    date = metadata.get("date")
    return f"[{date}] {body}" if date else body


def parse_type(value: str) -> MemoryType:
    """The :class:`MemoryType` named ``value``, or a clear error."""
    try:
        return MemoryType(value)
    except ValueError:
        names = ", ".join(t.value for t in MemoryType)
        raise MemoryInputError(f"unknown memory type {value!r} (expected one of {names})") from None


class MemoryEngine:
    """One agent's memory: DuckDB store, HNSW vectors, tantivy text, graph, transcripts."""

    def __init__(
        self,
        data_dir: Path,
        config: MemoryConfig | None = None,
        embedder: Embedder | BackgroundEmbedder | None = None,
        progress: Progress | None = None,
    ) -> None:
        self.config = config or MemoryConfig()
        cfg = self.config
        if cfg.rerank:
            # A bad model file fails the start, naming the file (config loading checks it first).
            differs = rerank.model(cfg.rerank_model).fusion_differs(rerank.fusion_settings(cfg))
            if differs:
                log.warning(
                    "the reranker was fitted with other fusion settings (%s): refit it for these "
                    "(bench/locomo.py --write-reranker) or set rerank = false if recall gets worse",
                    ", ".join(differs),
                )
        self.data_dir = Path(data_dir)
        self.store = Store(self.data_dir / "agent.duckdb", cfg.duckdb_memory_mb, cfg.duckdb_threads)
        self.embedder: Embedder | BackgroundEmbedder = embedder or Embedder(
            cfg.embed_threads, cfg.max_tokens, cfg.embed_batch
        )
        self.vectors = VectorIndex(
            self.data_dir / "vectors.hnsw",
            self.embedder.dim,
            cfg.hnsw_m,
            cfg.hnsw_ef_construction,
            cfg.hnsw_ef,
        )
        self.text = TextIndex(self.data_dir / "text", cfg.text_commit_every)
        self.transcripts = Transcripts(
            self.store, TextIndex(self.data_dir / "transcripts", cfg.text_commit_every)
        )
        self._seq_lock = threading.Lock()
        self.prev: dict[int, int] = {}
        self.next: dict[int, int] = {}
        self.people = People()
        """Who each memory is by or about (:mod:`spacebot.memory.people`)."""
        self.shapes = rerank.Shapes()
        """Each memory's length and question mark, for the reranker."""
        self._touch_lock = threading.Lock()
        self._pending_touch: dict[int, int] = {}
        self._pending_touch_at = 0.0
        self._closed = False
        self._reconcile(progress)

    # -- start-up ---------------------------------------------------------------------------------

    def _reconcile(self, progress: Progress | None) -> None:
        for mid, prev in self.store.sequence_links():
            self.prev[mid] = prev
            self.next[prev] = mid
        self.people.add((mid, msgspec.json.decode(raw)) for mid, raw in self.store.people_rows())
        self.shapes.add(*self.store.shapes())
        active = self.store.active_ids()
        self.vectors.reconcile(active, lambda ids: self.store.embeddings(ids), progress)

        def fetch(ids: list[int]) -> list[Doc]:
            # A missing memory's neighbours hold a stale context too: refresh them with it.
            wanted = set(ids)
            with self._seq_lock:
                for i in ids:
                    wanted.update(self._window(i))
            return self._text_docs(sorted(wanted), {})

        self.text.reconcile(active, fetch, progress)
        self.transcripts.reconcile(progress)
        log.info(
            "memory engine open path=%s memories=%d messages=%d",
            self.data_dir,
            len(active),
            self.store.count("messages"),
        )

    def _window(self, i: int, span: int | None = None) -> list[int]:
        """``i`` with up to ``span`` (default ``context_window``) sequence neighbours on each side,
        in order (call with ``_seq_lock`` held)."""
        span = self.config.context_window if span is None else span
        before: list[int] = []
        after: list[int] = []
        j: int | None = i
        for _ in range(span):
            j = self.prev.get(j) if j is not None else None
            if j is None:
                break
            before.append(j)
        j = i
        for _ in range(span):
            j = self.next.get(j) if j is not None else None
            if j is None:
                break
            after.append(j)
        return [*reversed(before), i, *after]

    def sequence_window(self, i: int, span: int) -> list[int]:
        """``i`` with up to ``span`` sequence neighbours on each side, in order."""
        with self._seq_lock:
            return self._window(i, span)

    def _text_docs(self, ids: list[int], known: dict[int, str]) -> list[Doc]:
        """Text-index documents for active ``ids``: the indexed text and its sequence context
        (the texts of its window of neighbours). ``known`` holds texts not yet readable from DuckDB."""
        with self._seq_lock:
            around = {i: self._window(i) for i in ids}
        need = {j for window in around.values() for j in window if j not in known}
        texts = dict(known)
        if need:
            texts.update(
                (i, document_text(c, msgspec.json.decode(m)))
                for i, c, m in self.store.index_rows(sorted(need))
            )
        docs: list[Doc] = []
        for i, window in around.items():
            if i not in texts:
                continue  # forgotten
            ctx = "\n".join(texts[j] for j in window if j in texts)
            docs.append((i, texts[i], ctx))
        return docs

    # -- saving -----------------------------------------------------------------------------------

    def _validate(self, draft: MemoryDraft) -> tuple[str, MemoryType, float]:
        content = draft.content.strip() if isinstance(draft.content, str) else ""
        if not content:
            raise MemoryInputError("memory content is empty")
        size = len(content.encode("utf-8"))
        if size > self.config.max_content_bytes:
            raise MemoryInputError(
                f"memory content is {size} bytes, over the {self.config.max_content_bytes}-byte cap"
            )
        mtype = parse_type(draft.type)
        importance = DEFAULT_IMPORTANCE[mtype] if draft.importance is None else float(draft.importance)
        if not 0.0 <= importance <= 1.0:
            raise MemoryInputError(f"importance {draft.importance!r} out of range 0..1")
        return content, mtype, importance

    def _metadata(self, content: str, draft: MemoryDraft, now: float) -> dict[str, Any]:
        """The metadata stored for ``draft``: with ``resolve_dates``, its relative dates resolved
        against when it was said (``created_at``; ``now`` when it is saved as it happens, but not
        for an ingested document, whose writing time is unknown)."""
        if not self.config.resolve_dates:
            return draft.metadata
        said_at = draft.created_at
        if said_at is None and not draft.source.startswith("ingest:"):
            said_at = now
        return temporal.annotate(content, draft.metadata, said_at, self.config.date_timezone)

    def save(self, draft: MemoryDraft) -> Memory:
        """Save one memory (linking it to near neighbours) and return it as stored."""
        return self.save_many([draft])[0]

    def save_many(
        self,
        drafts: Sequence[MemoryDraft],
        chain: bool = False,
        link: bool = True,
        also: Callable[[duckdb.DuckDBPyConnection], None] | None = None,
        vectors: np.ndarray | None = None,
    ) -> list[Memory]:
        """Save memories in one transaction, embedding them in batches.

        Args:
            drafts: What to save. All are validated before anything is written.
            chain: Each draft follows the previous one in the batch (unless it names ``follows``).
            link: Link each to near neighbours already stored (``related_to`` / ``updates``).
            also: Extra SQL run inside the same transaction (ingestion marks its chunk done here).
            vectors: This model's embeddings of the drafts' indexed text, already computed (a
                re-import, a benchmark's cache); normally ``None``.
        """
        checked = [self._validate(d) for d in drafts]
        follows_ids = {d.follows for d in drafts if d.follows is not None}
        if follows_ids:
            found = self.store.get_memories(sorted(follows_ids))
            missing = follows_ids - set(found)
            if missing:
                raise MemoryInputError(f"follows refers to missing memory id {min(missing)!r}")
        if not drafts:
            if also is not None:
                with self.store.transaction() as cur:
                    also(cur)
            return []
        now = time.time()
        metas = [self._metadata(c, d, now) for d, (c, _, _) in zip(drafts, checked, strict=True)]
        texts = [document_text(c, m) for m, (c, _, _) in zip(metas, checked, strict=True)]
        if vectors is None:
            vecs = self.embedder.embed(texts)
        elif vectors.shape != (len(drafts), self.embedder.dim):
            raise MemoryInputError(f"vectors shape {vectors.shape} does not match {len(drafts)} drafts")
        else:
            vecs = np.ascontiguousarray(vectors, dtype=np.float32)
        with self.store.transaction() as cur:
            self._apply_pending_touches(cur)
            plans = (
                graph.plan_links(self.vectors, self.store, vecs, [t for _, t, _ in checked], self.config)
                if (link)
                else [([], None)] * len(drafts)
            )
            ids = self.store.next_memory_ids(cur, len(drafts))
            prev_ids: list[int | None] = []
            for k, d in enumerate(drafts):
                prev_ids.append(d.follows if d.follows is not None else (ids[k - 1] if chain and k else None))
            created = [d.created_at if d.created_at is not None else now for d in drafts]
            self.store.insert_memories(
                cur,
                {
                    "id": ids,
                    "content": [c for c, _, _ in checked],
                    "type": [t.value for _, t, _ in checked],
                    "importance": [i for _, _, i in checked],
                    "created_at": created,
                    "updated_at": [now] * len(ids),
                    "last_accessed_at": created,
                    "source": [d.source for d in drafts],
                    "channel": [d.channel for d in drafts],
                    "metadata": [_encode.encode(m).decode() for m in metas],
                    "prev_id": prev_ids,
                    "embedding": [v.tobytes() for v in vecs],
                },
            )
            edges: list[tuple[int, int, Relation, float]] = []
            superseded: list[int] = []
            for new_id, (related, old) in zip(ids, plans, strict=True):
                edges.extend((new_id, t, Relation.RELATED_TO, round(s, 4)) for t, s in related)
                if old is not None:
                    edges.append((new_id, old, Relation.UPDATES, 1.0))
                    superseded.append(old)
            graph.upsert_edges(cur, edges)
            if superseded:
                cur.execute(
                    "UPDATE memories SET importance = importance * ?, updated_at = ? "
                    "WHERE id IN (SELECT unnest(?)) AND type <> 'identity'",
                    [self.config.superseded_factor, now, superseded],
                )
            if also is not None:
                also(cur)
        # Committed: now the indexes (rebuilt from DuckDB at the next start if we die here). The
        # shapes first: a recall that finds a new memory in an index reads its length.
        self.shapes.add(ids, [len(c) for c, _, _ in checked], ["?" in c for c, _, _ in checked])
        id_arr = np.asarray(ids, dtype=np.int64)
        for start in range(0, len(ids), 256):
            self.vectors.add(id_arr[start : start + 256], vecs[start : start + 256])
        with self._seq_lock:
            for mid, prev in zip(ids, prev_ids, strict=True):
                if prev is not None:
                    self.prev[mid] = prev
                    self.next[prev] = mid
        self.people.add(zip(ids, metas, strict=True))
        with self._seq_lock:
            outside = sorted({j for i in ids for j in self._window(i)} - set(ids))
        self.text.add(self._text_docs(ids + outside, dict(zip(ids, texts, strict=True))))
        if self.vectors.unsaved >= self.config.hnsw_save_every:
            self.vectors.save()
        stored = self.store.get_memories(ids)
        return [stored[i] for i in ids]

    # -- reading ----------------------------------------------------------------------------------

    def get(self, memory_id: int) -> Memory:
        """One memory by id (forgotten ones included)."""
        self.apply_touches()
        found = self.store.get_memories([memory_id])
        if memory_id not in found:
            raise MemoryNotFound(f"no memory with id {memory_id!r}")
        return found[memory_id]

    def count(self, include_forgotten: bool = False) -> int:
        """Number of memories."""
        return self.store.count("memories", "TRUE" if include_forgotten else "NOT forgotten")

    def recall(
        self,
        query: str = "",
        mode: RecallMode = "hybrid",
        limit: int = 10,
        types: Sequence[str] | None = None,
        channel: str | None = None,
        sources: Sequence[RecallSource] = ALL_SOURCES,
        touch: bool = True,
        as_of: float | None = None,
        queries: Sequence[str] = (),
    ) -> list[RecallHit]:
        """Find memories. See :mod:`spacebot.memory.recall` for the modes. With ``resolve_dates``,
        the query's relative dates are resolved against ``as_of`` (Unix time; default now).
        ``queries``: up to four further phrasings of ``query`` (hybrid), fused with it."""
        type_list = [parse_type(t) for t in types] if types else None
        hits = recall.run(self, query, mode, limit, type_list, channel, sources, as_of, queries)
        if touch and hits:
            self._touch([h.memory.id for h in hits])
        return hits

    def _touch(self, ids: list[int]) -> None:
        now = time.time()
        with self._touch_lock:
            for i in ids:
                self._pending_touch[i] = self._pending_touch.get(i, 0) + 1
            self._pending_touch_at = now
            due = len(self._pending_touch) >= self.config.touch_batch
        if due:
            self.apply_touches()

    def apply_touches(self) -> None:
        """Write pending access counts now, unless a write holds the lock (it then applies them)."""
        # Never wait behind a write for bookkeeping.
        if self.store.write_lock.acquire(blocking=False):
            try:
                self._apply_pending_touches(self.store.cursor())
            finally:
                self.store.write_lock.release()

    def _apply_pending_touches(self, cur: duckdb.DuckDBPyConnection) -> None:
        with self._touch_lock:
            pending, self._pending_touch = self._pending_touch, {}
            at = self._pending_touch_at
        if pending:
            cur.execute(
                "UPDATE memories SET access_count = access_count + u.n, "
                "last_accessed_at = greatest(last_accessed_at, ?) "
                "FROM (SELECT unnest(?) AS id, unnest(?) AS n) AS u WHERE memories.id = u.id",
                [at, list(pending), list(pending.values())],
            )

    # -- graph ------------------------------------------------------------------------------------

    def associate(self, source: int, target: int, relation: str, weight: float = 1.0) -> Association:
        """Create (or re-weight) an edge between two existing memories."""
        return graph.associate(self.store, source, target, relation, weight)

    def associations(self, memory_id: int) -> list[Association]:
        """Edges touching a memory, in either direction."""
        return graph.edges_of(self.store, [memory_id])

    def forget(self, ids: Sequence[int]) -> int:
        """Mark memories forgotten (kept in the store, never recalled); returns how many changed."""
        with self.store.transaction() as cur:
            rows = cur.execute(
                "UPDATE memories SET forgotten = TRUE, updated_at = ? "
                "WHERE id IN (SELECT unnest(?)) AND NOT forgotten RETURNING id",
                [time.time(), list(ids)],
            ).fetchall()
        changed = [r[0] for r in rows]
        self.drop_from_indexes(changed)
        return len(changed)

    def drop_from_indexes(self, ids: list[int]) -> None:
        """Remove already-forgotten memories from the vector and text indexes."""
        if ids:
            self.vectors.delete(ids)
            self.text.delete(ids)
            self.people.remove(ids)

    # -- maintenance ------------------------------------------------------------------------------

    def decay(self, now: float | None = None) -> MaintenanceReport:
        """Lower importance by age since last access (identity exempt)."""
        return maintenance.decay(self, now)

    def prune(self, floor: float | None = None) -> MaintenanceReport:
        """Forget memories whose importance fell below the floor (identity exempt)."""
        return maintenance.prune(self, floor)

    def merge_duplicates(self, threshold: float | None = None) -> MaintenanceReport:
        """Fold near-duplicate memories of the same type into the newest one."""
        return maintenance.merge_duplicates(self, threshold)

    # -- lifecycle --------------------------------------------------------------------------------

    def flush(self) -> None:
        """Commit the text indexes and save the vector index."""
        with self.store.write_lock:
            self._apply_pending_touches(self.store.cursor())
            self.text.commit()
            self.transcripts.index.commit()
            if self.vectors.unsaved:
                self.vectors.save()

    def close(self) -> None:
        """Flush and close everything. The engine is unusable afterwards."""
        if self._closed:
            return
        self.flush()
        self.text.close()
        self.transcripts.index.close()
        self.store.close()
        self._closed = True

    def __enter__(self) -> MemoryEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
