"""A learned reranking stage over the fused top candidates of hybrid recall.

RRF sees only ranks. The reranker looks at the top ``rerank_depth`` fused candidates again with
what fusion throws away or cannot express, and orders them by a logistic model of "this memory is
evidence for the query":

* per source list: ``1 / (10 + rank)``, the log rank and the score relative to that list's best
  (a hit whose cosine or BM25 score is close to the top is worth more than its rank says);
* agreement: how many lists hold it in their top 10 and top 50;
* its sequence neighbours: the best fused score and rank one and two steps before or after it
  (a turn next to a strong hit is often the rest of the answer);
* its shape: length (capped, so that long documents are not favoured beyond what chat turns
  showed) and whether it contains a question mark (questions are rarely the evidence);
* people: whether it is by or about someone the query names, or the query names people and it is
  by or about none of them.

No cross-encoder qualified (docs/memory.md: none ships its weights in a PyPI package, and one pass
per candidate would not fit the latency budget); this model is a weighted sum of 33 numbers per
candidate (about 1-2 ms of recall for 200 candidates, bench/README.md), and its coefficients ship
as ``data/reranker.json``. They are fitted by ``bench/locomo.py`` on LoCoMo conversations 1-5 only
(the same split the fusion weights are chosen on) and checked on 6-10; ``fit`` is the fitting
code. A model file is refused unless it lists exactly the features computed here, in this order.
The features include the fused score, so the model belongs to the fusion settings it was fitted
with (kept in the file as ``fusion``); the engine logs a warning when the configured ones differ.
"""

from __future__ import annotations

import functools
import json
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from spacebot.memory.errors import MemoryStoreError

if TYPE_CHECKING:
    from spacebot.memory.config import MemoryConfig
    from spacebot.memory.engine import MemoryEngine

Ranked = list[tuple[int, float]]

LISTS = ("vector", "bm25", "vector_ctx", "bm25_ctx", "person_vector", "person_bm25_ctx", "graph")
"""The source lists whose positions are features (the ones hybrid recall fuses)."""
RR_K = 10
"""Constant of the reciprocal-rank features, fixed so that a model does not depend on ``rrf_k``."""
ABSENT_RANK = 1000
"""The rank a candidate missing from a list is given in the log-rank features (deeper ranks are
counted as this one)."""
MAX_CHARS = 400
"""Length is counted up to this many characters (about the longest chat turns fitted on)."""

FEATURES: tuple[str, ...] = (
    "fused",
    "fused_log_rank",
    *(f"{name}_{kind}" for name in LISTS for kind in ("rr", "log_rank", "rel_score")),
    "lists_top10",
    "lists_top50",
    "near1_fused",
    "near1_log_rank",
    "near2_fused",
    "near2_log_rank",
    "log_chars",
    "question_mark",
    "by_named",
    "by_other",
)
FORMAT = 1
MODEL_PATH = Path(__file__).parent / "data" / "reranker.json"


class RerankerError(MemoryStoreError):
    """A reranker model file is missing, unreadable or made for other features."""


class Reranker:
    """A linear model over ``FEATURES``: ``logit = coef · x + intercept``."""

    def __init__(self, coef: Sequence[float], intercept: float, meta: dict[str, Any] | None = None) -> None:
        if len(coef) != len(FEATURES):
            raise RerankerError(f"a reranker needs {len(FEATURES)} coefficients, got {len(coef)}")
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = float(intercept)
        self.meta = dict(meta or {})

    def logits(self, x: np.ndarray) -> np.ndarray:
        return x @ self.coef + self.intercept

    def to_json(self) -> str:
        doc = {
            "format": FORMAT,
            "features": list(FEATURES),
            "coef": [round(float(c), 8) for c in self.coef],
            "intercept": round(self.intercept, 8),
            **self.meta,
        }
        return json.dumps(doc, indent=1) + "\n"

    @classmethod
    def load(cls, path: str | Path = "") -> Reranker:
        """The model at ``path`` (``~`` expanded; empty: the one shipped with the package)."""
        where = Path(path).expanduser() if path else MODEL_PATH
        try:
            doc = json.loads(where.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise RerankerError(f"cannot read the reranker model {str(where)!r}: {e}") from e
        fmt = doc.get("format") if isinstance(doc, dict) else None
        if isinstance(fmt, bool) or fmt != FORMAT:
            raise RerankerError(f"{str(where)!r} is not a reranker model of format {FORMAT}")
        if doc.get("features") != list(FEATURES):
            raise RerankerError(
                f"{str(where)!r} was fitted on other features than this version computes "
                f"(refit it with bench/locomo.py --write-reranker)"
            )
        coef, intercept = doc.get("coef"), doc.get("intercept")
        if not isinstance(coef, list) or not all(_finite(c) for c in coef):
            raise RerankerError(f"{str(where)!r}: 'coef' must be a list of finite numbers")
        if len(coef) != len(FEATURES):
            raise RerankerError(f"{str(where)!r}: {len(coef)} coefficients for {len(FEATURES)} features")
        if not _finite(intercept):
            raise RerankerError(f"{str(where)!r}: 'intercept' must be a finite number")
        meta = {k: v for k, v in doc.items() if k not in ("format", "features", "coef", "intercept")}
        return cls(coef, intercept, meta)

    def fusion_differs(self, settings: dict[str, Any]) -> list[str]:
        """The fusion settings (``bench/locomo.py``'s grid keys) whose value in ``settings`` is not
        the one this model was fitted with (none when the model does not say)."""
        fitted = self.meta.get("fusion")
        if not isinstance(fitted, dict):
            return []
        return sorted(k for k, v in fitted.items() if k in settings and settings[k] != v)


def _finite(v: Any) -> bool:
    """A JSON number that is a real, finite number (``true`` and ``NaN`` are not)."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class Shapes:
    """Each memory's length (capped at ``MAX_CHARS``) and question mark, kept in memory by id: one
    16-bit number per id (``2 * chars + question``; -1 unknown), so that reranking reads no rows.
    Contents never change once saved; forgotten ids keep their entry (they are never candidates)."""

    def __init__(self) -> None:
        self._a = np.full(1024, -1, dtype=np.int16)
        self._lock = threading.Lock()

    def add(self, ids: Sequence[int] | np.ndarray, chars: Sequence[int] | np.ndarray, question: Any) -> None:
        """Record each memory's length in characters and whether it holds a question mark."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return
        vals = (
            2 * np.minimum(np.asarray(chars, dtype=np.int64), MAX_CHARS) + np.asarray(question, dtype=bool)
        ).astype(np.int16)
        with self._lock:
            a = self._a
            top = int(ids.max())
            if top >= len(a):
                grown = np.full(max(top + 1, 2 * len(a)), -1, dtype=np.int16)
                grown[: len(a)] = a
                a = grown
            a[ids] = vals
            self._a = a  # readers see the old array or the new one, both consistent

    def get(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Characters (0 when unknown) and question marks (0/1) of ``ids``."""
        a = self._a
        idx = np.asarray(ids, dtype=np.int64)
        v = np.where(idx < len(a), a[np.minimum(idx, len(a) - 1)], -1).astype(np.int64)
        known = v >= 0
        return np.where(known, v // 2, 0), np.where(known, v % 2, 0)


FUSION_FIELDS = (
    "context_window",
    "rrf_k",
    "graph_seeds",
    "graph_sequence",
    "weight_vector",
    "weight_bm25",
    "weight_vector_ctx",
    "weight_bm25_ctx",
    "weight_graph",
    "weight_person",
)
"""The ``MemoryConfig`` fields of fusion a model belongs to, beside ``depth``."""


def fusion_settings(cfg: MemoryConfig) -> dict[str, Any]:
    """The settings a model's ``fusion`` record names, as ``cfg`` has them (``depth``: the candidate
    depth, or ``[vector_top_n, bm25_top_n]`` when they differ)."""
    depth: Any = (
        cfg.vector_top_n if cfg.vector_top_n == cfg.bm25_top_n else [cfg.vector_top_n, cfg.bm25_top_n]
    )
    return {"depth": depth, **{k: getattr(cfg, k) for k in FUSION_FIELDS}}


@functools.lru_cache(maxsize=8)
def model(path: str = "") -> Reranker:
    """The model at ``path`` (empty: the shipped one), read once per process."""
    return Reranker.load(path)


def features(
    engine: MemoryEngine, query: str, lists: dict[str, Ranked], fused: Ranked, depth: int
) -> tuple[list[int], np.ndarray]:
    """The top ``depth`` fused ids and their feature rows (``FEATURES`` order)."""
    ids = [i for i, _ in fused[:depth]]
    n = len(ids)
    x = np.zeros((n, len(FEATURES)), dtype=np.float64)
    if not n:
        return ids, x
    row = {i: r for r, i in enumerate(ids)}
    x[:, 0] = [s for _, s in fused[:n]]
    x[:, 1] = np.log(np.minimum(np.arange(1, n + 1), ABSENT_RANK))
    top10 = np.zeros(n)
    top50 = np.zeros(n)
    col = 2
    for name in LISTS:
        x[:, col + 1] = math.log(ABSENT_RANK)
        ranked = lists.get(name) or []
        hit = [
            (r, rank, score)
            for rank, (i, score) in enumerate(ranked, start=1)
            if (r := row.get(i)) is not None
        ]
        if hit:
            at = np.array([h[0] for h in hit])
            rank_arr = np.array([h[1] for h in hit], dtype=np.float64)
            best = ranked[0][1]
            x[at, col] = 1.0 / (RR_K + rank_arr)
            x[at, col + 1] = np.log(np.minimum(rank_arr, ABSENT_RANK))
            if best > 0:
                x[at, col + 2] = np.array([h[2] for h in hit]) / best
            top10[at] += rank_arr <= 10
            top50[at] += rank_arr <= 50
        col += 3
    x[:, col] = top10
    x[:, col + 1] = top50
    col += 2
    # Neighbours in the memory's sequence, one and two steps away on either side: their best fused
    # score and rank.
    score_of = dict(fused)
    rank_of = {i: r for r, (i, _) in enumerate(fused, start=1)}
    x[:, col + 1] = x[:, col + 3] = math.log(ABSENT_RANK)
    with engine._seq_lock:
        prev, nxt = engine.prev, engine.next
        for r, i in enumerate(ids):
            before, after = prev.get(i), nxt.get(i)
            for step in (0, 2):
                near = [j for j in (before, after) if j is not None]
                if near:
                    x[r, col + step] = max(score_of.get(j, 0.0) for j in near)
                    x[r, col + step + 1] = math.log(
                        min(ABSENT_RANK, *(rank_of.get(j, ABSENT_RANK) for j in near))
                    )
                before = prev.get(before) if before is not None else None
                after = nxt.get(after) if after is not None else None
    col += 4
    chars, question = engine.shapes.get(ids)
    x[:, col] = np.log1p(chars)
    x[:, col + 1] = question
    col += 2
    named = engine.people.named_in(query)
    if named:
        theirs = engine.people.members(named)
        by = np.fromiter((i in theirs for i in ids), dtype=bool, count=n)
        x[:, col] = by
        x[:, col + 1] = ~by
    return ids, x


def rerank(
    engine: MemoryEngine, model: Reranker, query: str, lists: dict[str, Ranked], fused: Ranked, depth: int
) -> Ranked:
    """``fused`` with its top ``depth`` ordered by the model (score: its probability); the rest
    follow in fused order with score 0."""
    ids, x = features(engine, query, lists, fused, depth)
    if not ids:
        return fused
    prob = 1.0 / (1.0 + np.exp(-model.logits(x)))
    order = np.argsort(-prob, kind="stable")
    head = [(ids[k], float(prob[k])) for k in order]
    return head + [(i, 0.0) for i, _ in fused[len(ids) :]]


def fit(
    groups: Sequence[tuple[np.ndarray, np.ndarray]], c: float, meta: dict[str, Any] | None = None
) -> Reranker:
    """L2-regularised logistic regression (loss + ``|w|² / 2c`` on standardised features, the
    intercept unpenalised) by Newton's method over the rows of every (features, labels) group.

    Written here rather than taken from scikit-learn: a 34-parameter Newton solve is a few lines of
    numpy, and the library would be a large dependency of the benchmark for one call."""
    x = np.concatenate([g for g, _ in groups]) if groups else np.zeros((0, len(FEATURES)))
    y = np.concatenate([lab for _, lab in groups]).astype(np.float64) if groups else np.zeros(0)
    if not len(y) or y.min() == y.max():
        raise RerankerError("fitting a reranker needs both evidence and non-evidence candidates")
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.full(z.shape[1], 1.0 / c)
    penalty[-1] = 0.0
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(z @ w)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty)
        hess[-1, -1] += 1e-9
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    else:
        raise RerankerError("fitting the reranker did not converge in 100 Newton steps (try a smaller c)")
    coef = w[:-1] / scale
    intercept = w[-1] - float(coef @ mean)
    return Reranker(coef.tolist(), intercept, meta)


__all__ = [
    "FEATURES",
    "FUSION_FIELDS",
    "Reranker",
    "RerankerError",
    "Shapes",
    "features",
    "fit",
    "fusion_settings",
    "model",
    "rerank",
]
