"""The HNSW vector index (hnswlib, cosine), a rebuildable cache of the vectors stored in DuckDB.

The file is written atomically with a sidecar holding its sha256; a missing, mismatched or
unloadable file is rebuilt from DuckDB rather than trusted (hnswlib does not validate what it loads).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

import hnswlib
import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, called during long work such as rebuilds and ingestion."""


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class VectorIndex:
    """Cosine HNSW over memory ids. Thread-safe (one lock; each operation is short)."""

    def __init__(self, path: Path, dim: int, m: int = 16, ef_construction: int = 100, ef: int = 100) -> None:
        self.path = path
        self.meta_path = path.with_suffix(path.suffix + ".json")
        self.dim = dim
        self._m = m
        self._efc = ef_construction
        self._ef = ef
        self._lock = threading.RLock()
        self._index = self._new(1024)
        self._active: set[int] = set()
        self.unsaved = 0

    def _new(self, capacity: int) -> hnswlib.Index:
        index = hnswlib.Index(space="cosine", dim=self.dim)
        index.init_index(
            max_elements=capacity, M=self._m, ef_construction=self._efc, allow_replace_deleted=False
        )
        index.set_ef(self._ef)
        index.set_num_threads(1)
        return index

    def __len__(self) -> int:
        return len(self._active)

    def _load(self) -> str | None:
        """Load the file if it is intact; returns why not otherwise."""
        if not self.path.exists() or not self.meta_path.exists():
            return "missing"
        try:
            meta = json.loads(self.meta_path.read_text())
            if meta.get("dim") != self.dim or meta.get("size") != self.path.stat().st_size:
                return "stale"
            if meta.get("sha256") != _sha256_file(self.path):
                return "corrupt (checksum mismatch)"
            index = hnswlib.Index(space="cosine", dim=self.dim)
            index.load_index(str(self.path), max_elements=int(meta["capacity"]))
            index.set_ef(self._ef)
            index.set_num_threads(1)
            deleted = set(meta.get("deleted", []))
        except Exception as exc:
            return f"unreadable ({exc})"
        self._index = index
        self._active = {int(i) for i in index.get_ids_list()} - deleted
        return None

    def reconcile(
        self,
        active_ids: np.ndarray,
        fetch: Callable[[list[int]], tuple[np.ndarray, np.ndarray]],
        progress: Progress | None = None,
    ) -> None:
        """Make the index hold exactly ``active_ids``: load the file, add what is missing, drop extras."""
        with self._lock:
            why = self._load()
            if why is not None:
                if active_ids.size:
                    log.warning(
                        "vector index %s, rebuilding path=%s memories=%d", why, self.path, active_ids.size
                    )
                self._index = self._new(max(1024, int(active_ids.size * 1.25)))
                self._active = set()
            want = {int(i) for i in active_ids}
            extra = sorted(self._active - want)
            missing = sorted(want - self._active)
            for i in extra:
                self._index.mark_deleted(i)
                self._active.discard(i)
            step = 5_000
            for start in range(0, len(missing), step):
                ids, vecs = fetch(missing[start : start + step])
                self.add(ids, vecs, threads=2)
                done = min(start + step, len(missing))
                if progress:
                    progress("vectors", done, len(missing))
                log.info("vector index catch-up done=%d total=%d", done, len(missing))
            if extra or missing:
                self.save()

    def add(self, ids: np.ndarray, vecs: np.ndarray, threads: int = 1) -> None:
        """Add vectors (ids must be new)."""
        if len(ids) == 0:
            return
        with self._lock:
            need = self._index.get_current_count() + len(ids)
            cap = self._index.get_max_elements()
            if need > cap:
                self._index.resize_index(max(need, cap * 2))
            self._index.add_items(vecs, ids, num_threads=threads)
            self._active.update(int(i) for i in ids)
            self.unsaved += len(ids)

    def delete(self, ids: list[int]) -> None:
        """Remove ids from search results."""
        with self._lock:
            for i in ids:
                if i in self._active:
                    self._index.mark_deleted(i)
                    self._active.discard(i)
                    self.unsaved += 1

    def get(self, ids: list[int]) -> np.ndarray:
        """Stored (normalised) vectors of active ids."""
        with self._lock:
            return np.asarray(self._index.get_items(ids), dtype=np.float32).reshape(len(ids), self.dim)

    def has(self, i: int) -> bool:
        """Whether ``i`` is searchable."""
        return i in self._active

    def search(self, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        """Up to ``k`` nearest ids with their cosine similarity, best first."""
        with self._lock:
            k = min(k, len(self._active))
            if k <= 0:
                return []
            self._index.set_ef(max(self._ef, k))
            while True:
                try:
                    labels, dists = self._index.knn_query(vec.reshape(1, -1), k=k)
                    break
                except RuntimeError:
                    # Too few reachable elements (many deleted): ask for fewer.
                    if k <= 1:
                        return []
                    k = k // 2
        return [(int(i), 1.0 - float(d)) for i, d in zip(labels[0], dists[0], strict=True)]

    def save(self) -> None:
        """Write the index and its checksum sidecar atomically."""
        with self._lock:
            tmp = self.path.with_suffix(".tmp")
            self._index.save_index(str(tmp))
            meta = {
                "dim": self.dim,
                "size": tmp.stat().st_size,
                "sha256": _sha256_file(tmp),
                "capacity": self._index.get_max_elements(),
                "deleted": sorted({int(i) for i in self._index.get_ids_list()} - self._active),
            }
            # Sidecar first (removed), then the file, then the new sidecar: any crash in between
            # leaves a mismatch that the next start detects and repairs.
            self.meta_path.unlink(missing_ok=True)
            os.replace(tmp, self.path)
            meta_tmp = self.meta_path.with_suffix(".tmp")
            meta_tmp.write_text(json.dumps(meta))
            os.replace(meta_tmp, self.meta_path)
            self.unsaved = 0
