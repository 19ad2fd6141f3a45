"""A tantivy BM25 index (``en_stem``) over id + text; a rebuildable cache of rows held in DuckDB.

Used twice: for memories and for transcript messages. Ids live in an i64 field (deleting by term on
a u64 field silently deletes nothing). Commits are batched: writes stay pending until the next
search or until ``commit_every`` of them accumulate, because each commit + reload costs ~12 ms.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tantivy

from spacebot.memory.vectors import Progress

log = logging.getLogger(__name__)

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64


def _schema() -> tantivy.Schema:
    sb = tantivy.SchemaBuilder()
    sb.add_integer_field("id", stored=True, indexed=True, fast=True)
    sb.add_text_field("body", stored=False, tokenizer_name="en_stem")
    sb.add_text_field("ctx", stored=False, tokenizer_name="en_stem")
    return sb.build()


def query_terms(text: str) -> str:
    """Reduce free text to lower-case words, so no query-language syntax can fail or mislead."""
    return " ".join(w.lower() for w in _WORD.findall(text)[:MAX_QUERY_TERMS])


Doc = tuple[int, str, str | None]
"""``(id, body, context)``: context is the body with its sequence neighbours (``None``: the body)."""


class TextIndex:
    """BM25 search over ``(id, body, context)`` documents. Thread-safe."""

    def __init__(self, path: Path, commit_every: int = 2_000) -> None:
        self.path = path
        self._commit_every = commit_every
        self._lock = threading.RLock()
        self._pending = 0
        try:
            self._open()
        except Exception as exc:
            log.warning("text index unreadable, rebuilding path=%s error=%s", path, exc)
            shutil.rmtree(path, ignore_errors=True)
            self._open()

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._index = tantivy.Index(_schema(), path=str(self.path), reuse=True)
        self._writer = self._index.writer(heap_size=32_000_000, num_threads=1)

    def _wipe(self, why: str) -> None:
        log.warning("text index %s, rebuilding path=%s", why, self.path)
        with contextlib.suppress(Exception):
            self._writer.rollback()
        del self._writer
        del self._index
        shutil.rmtree(self.path, ignore_errors=True)
        self._open()

    def _all_ids(self) -> set[int]:
        self._index.reload()
        searcher = self._index.searcher()
        n = searcher.num_docs
        if n == 0:
            return set()
        hits = searcher.search(tantivy.Query.all_query(), limit=n, count=False).hits
        return {int(v) for v in searcher.fast_field_values("id", [a for _, a in hits]) if v is not None}

    def reconcile(
        self,
        active_ids: np.ndarray,
        fetch: Callable[[list[int]], list[Doc]],
        progress: Progress | None = None,
        name: str = "text",
    ) -> None:
        """Make the index hold exactly ``active_ids`` (rebuilding it if it cannot be read)."""
        with self._lock:
            try:
                have = self._all_ids()
            except Exception as exc:
                self._wipe(f"unreadable ({exc})")
                have = set()
            want = {int(i) for i in active_ids}
            extra = sorted(have - want)
            missing = sorted(want - have)
            if extra:
                self.delete(extra)
            step = 5_000
            for start in range(0, len(missing), step):
                self.add(fetch(missing[start : start + step]))
                done = min(start + step, len(missing))
                if progress:
                    progress(name, done, len(missing))
                log.info("%s index catch-up done=%d total=%d", name, done, len(missing))
            self.commit()

    def add(self, docs: list[Doc]) -> None:
        """Index documents, replacing any with the same id."""
        with self._lock:
            for doc_id, text, ctx in docs:
                self._writer.delete_documents_by_term("id", int(doc_id))
                doc = tantivy.Document()
                doc.add_integer("id", int(doc_id))
                doc.add_text("body", text)
                doc.add_text("ctx", text if ctx is None else ctx)
                self._writer.add_document(doc)
            self._pending += len(docs)
            if self._pending >= self._commit_every:
                self.commit()

    def delete(self, ids: list[int]) -> None:
        """Remove documents by id."""
        with self._lock:
            for doc_id in ids:
                self._writer.delete_documents_by_term("id", int(doc_id))
            self._pending += len(ids)
            if self._pending >= self._commit_every:
                self.commit()

    def commit(self) -> None:
        """Make pending writes durable and visible."""
        with self._lock:
            if self._pending:
                self._writer.commit()
                self._pending = 0
            self._index.reload()

    def search(self, text: str, k: int, field: str = "body") -> list[tuple[int, float]]:
        """Up to ``k`` ids with BM25 scores over ``field`` (``body`` or ``ctx``), best first."""
        terms = query_terms(text)
        if not terms or k <= 0:
            return []
        with self._lock:
            if self._pending:
                self.commit()
            searcher = self._index.searcher()
        query, _errors = self._index.parse_query_lenient(terms, [field])
        hits = searcher.search(query, limit=k, count=False).hits
        if not hits:
            return []
        ids = searcher.fast_field_values("id", [a for _, a in hits])
        return [(int(i), float(s)) for (s, _), i in zip(hits, ids, strict=True) if i is not None]

    def num_docs(self) -> int:
        """Documents visible to searches."""
        with self._lock:
            if self._pending:
                self.commit()
            return int(self._index.searcher().num_docs)

    def close(self) -> None:
        """Commit what is pending and release the writer lock."""
        with self._lock:
            self.commit()
            self._writer.wait_merging_threads()
