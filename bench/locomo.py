"""LoCoMo retrieval benchmark for the memory engine (Recall@k over dialog turns, as the paper scores it).

Every dialog turn of a conversation becomes a memory (speaker and session date in its metadata,
consecutive turns of a session chained as a sequence) in a fresh engine; every question is then a
recall, and Recall@k is the fraction of the question's evidence turns found in the top k, averaged
over all questions (a question without evidence counts as 1).

Protocol (held-out): every tunable of hybrid recall — the six fusion weights, the RRF constant
``rrf_k``, the sequence ``context_window``, the candidate depth (``vector_top_n`` =
``bm25_top_n``), ``graph_seeds`` and ``graph_sequence`` — is chosen on conversations 1-5 only, by
coordinate ascent over a small grid (``GRID``) from equal weights (the person lists, which rank a
named speaker's turns, off), maximising the mean of
R@5/10/25/50: first fusion alone (``graph_sequence`` 0, reported as ``"fusion_only"``), then with
the sequence expansion of the graph list free, starting from that optimum. With the chosen fusion
the learned reranker (``spacebot/memory/rerank.py``) is then fitted on the same conversations: the
features of each question's top ``rerank_depth`` fused candidates, labelled by whether they are
evidence, with the regularisation chosen by leave-one-conversation-out among ``RERANK_C``
(``"reranker"``; ``--write-reranker PATH`` writes the model, the shipped one is
``spacebot/memory/data/reranker.json``). The chosen setting with that model is then scored on
conversations 6-10 (``"heldout"``) and on all 10 (continuity), side by side with the same fusion
without the reranker (``"no_rerank"``), with equal-weight fusion (same window and depth, every
weight 1, ``rrf_k`` 60, no reranker: ``"equal_weights"``), with the engine's defaults
(``"hybrid"``) and with the chosen fusion without the person lists (``"no_person"``, when the search
turned them on), all in the same run; every method's block also has ``"tuning_split"`` (1-5).
``"dates"`` is the chosen setting with ``resolve_dates`` on (relative dates in the turns resolved
against their session date, those in the questions against the last session's date), against
``"tuned"`` without it. During the search
the candidate lists of each question are computed once per window and depth and fused again for
each grid point (with the engine's own ``fuse``); the reported figures come from real ``engine.recall`` calls.
Turn and question embeddings are computed once per run and reused; they are also kept on disk
(``$XDG_CACHE_HOME/spacebot-bench``, keyed by the model's hash) for the next run (``--no-cache``:
compute them afresh).

Usage: python bench/locomo.py [--data PATH] [--limit-conversations N] [--no-tune] [--no-cache]
                             [--write-reranker PATH] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import msgspec
import numpy as np

from spacebot.ipc.messages import Association, MemoryType
from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine, rerank, temporal
from spacebot.memory import recall as recall_mod
from spacebot.memory.embedder import MODEL_SHA256, Embedder
from spacebot.memory.engine import document_text
from spacebot.memory.graph import edges_of
from spacebot.memory.types import ALL_SOURCES, RecallSource

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo10.json"
KS = (5, 10, 25, 50)
CATEGORIES = {4: "single-hop", 1: "multi-hop", 2: "temporal", 3: "open-domain", 5: "adversarial"}
TUNE_CONVERSATIONS = 5
"""Conversations 1..5 choose the tunables; the rest are held out."""
WEIGHT_KEYS = (
    "weight_vector",
    "weight_bm25",
    "weight_vector_ctx",
    "weight_bm25_ctx",
    "weight_graph",
    "weight_person",
)
GRID: dict[str, tuple[Any, ...]] = {
    "context_window": (1, 2, 3, 4),
    "depth": (50, 100, 200),
    "rrf_k": (10, 30, 60, 100),
    "graph_seeds": (3, 5, 10),
    "graph_sequence": (0, 1, 2),
    **{k: (0.0, 0.25, 0.5, 1.0, 2.0, 4.0) for k in WEIGHT_KEYS},
}
START: dict[str, Any] = {
    "context_window": 2,
    "depth": 100,
    "rrf_k": 60,
    "graph_seeds": 5,
    "graph_sequence": 0,
    **{k: 1.0 for k in WEIGHT_KEYS},
    "weight_person": 0.0,
}
MAX_PASSES = 3
RERANK_C = (0.01, 0.1, 1.0, 10.0)
"""Regularisation strengths tried for the reranker (leave-one-conversation-out on 1-5)."""

Row = tuple[int, int, dict[int, float]]
"""(conversation index, category, {k: recall})"""


def evidence_ids(raw: list[str], known: set[str]) -> list[str]:
    """Normalise LoCoMo's evidence references and drop those that name no real turn."""
    out: list[str] = []
    for ref in raw:
        for part in re.split(r"[;\s]+", ref):
            part = part.strip()
            if not part:
                continue
            part = re.sub(r"^D:(\d+):", r"D\1:", part)
            m = re.fullmatch(r"D(\d+):(\d+)", part)
            if m:
                part = f"D{int(m.group(1))}:{int(m.group(2))}"
            if part in known and part not in out:
                out.append(part)
    return out


def turns_of(sample: dict[str, Any]) -> list[list[dict[str, Any]]]:
    """Sessions in order, each a list of turns with the session date attached."""
    conv = sample["conversation"]
    numbers = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))
    sessions = []
    for n in numbers:
        date = conv.get(f"session_{n}_date_time", "")
        session = []
        for turn in conv[f"session_{n}"]:
            text = turn.get("text", "")
            if turn.get("blip_caption"):
                text = f"{text} [shares an image: {turn['blip_caption']}]"
            session.append({"dia_id": turn["dia_id"], "speaker": turn["speaker"], "text": text, "date": date})
        sessions.append(session)
    return sessions


class CachedEmbedder:
    """The real embedder, remembering every text it embedded during this run (questions are
    recalled many times with different settings; their vectors do not change)."""

    def __init__(self, inner: Embedder, path: Path | None = None) -> None:
        self.inner = inner
        self.dim = inner.dim
        self.cache: dict[str, np.ndarray] = {}
        self.path = path
        if path is not None and path.is_file():
            with np.load(path) as saved:
                self.cache = dict(zip(saved["texts"].tolist(), saved["vectors"], strict=True))

    def save(self) -> None:
        """Write the vectors to ``path`` (same model, same texts: same vectors on the next run)."""
        if self.path is not None and self.cache:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            texts = list(self.cache)
            tmp = self.path.with_suffix(".tmp.npz")
            np.savez(tmp, texts=np.array(texts), vectors=np.stack([self.cache[t] for t in texts]))
            tmp.replace(self.path)

    def embed(self, texts: list[str]) -> np.ndarray:
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            for t, v in zip(missing, self.inner.embed(missing), strict=True):
                self.cache[t] = v
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for k, t in enumerate(texts):
            out[k] = self.cache[t]
        return out

    def embed_one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class Conversation:
    """One LoCoMo conversation: its turns as drafts (with their vectors) and its questions."""

    def __init__(self, index: int, sample: dict[str, Any], embedder: CachedEmbedder) -> None:
        self.index = index
        self.sample_id: str = sample["sample_id"]
        self.sessions = [
            [
                MemoryDraft(
                    content=t["text"],
                    type=MemoryType.EVENT,
                    source="locomo",
                    channel=sample["sample_id"],
                    metadata={"speaker": t["speaker"], "date": t["date"], "dia_id": t["dia_id"]},
                )
                for t in session
            ]
            for session in turns_of(sample)
        ]
        flat = [d for s in self.sessions for d in s]
        self.vectors = embedder.embed([document_text(d.content, d.metadata) for d in flat])
        # What an engine with resolve_dates indexes (the same function it calls on save).
        t0 = time.perf_counter()
        dated = [temporal.annotate(d.content, d.metadata, None) for d in flat]
        self.dating_seconds = time.perf_counter() - t0
        self.dated = sum(1 for m in dated if "dates" in m)
        self.dated_vectors = embedder.embed(
            [document_text(d.content, m) for d, m in zip(flat, dated, strict=True)]
        )
        # Questions are asked after the last session: their relative dates count from its day.
        last = temporal.parse_day(str(flat[-1].metadata["date"])) if flat else None
        self.as_of = time.mktime(last.timetuple()) + 12 * 3600 if last else None
        known = {d.metadata["dia_id"] for d in flat}
        self.questions = [
            (str(qa["question"]), int(qa["category"]), evidence_ids(qa.get("evidence", []), known))
            for qa in sample["qa"]
        ]
        embedder.embed([q for q, _, _ in self.questions])
        self.turns = len(flat)

    @contextmanager
    def engine(
        self, config: MemoryConfig, embedder: CachedEmbedder
    ) -> Iterator[tuple[MemoryEngine, dict[int, str]]]:
        """A fresh engine holding this conversation; yields it with memory id -> dia_id."""
        with tempfile.TemporaryDirectory(prefix="locomo-") as tmp:
            engine = MemoryEngine(Path(tmp), config, embedder=cast(Embedder, embedder))
            dia_of: dict[int, str] = {}
            start = 0
            vectors = self.dated_vectors if config.resolve_dates else self.vectors
            for drafts in self.sessions:
                vecs = vectors[start : start + len(drafts)]
                start += len(drafts)
                for draft, memory in zip(
                    drafts, engine.save_many(drafts, chain=True, vectors=vecs), strict=True
                ):
                    dia_of[memory.id] = draft.metadata["dia_id"]
            try:
                yield engine, dia_of
            finally:
                engine.close()


def recall_at(gold: list[str], got: list[str]) -> dict[int, float]:
    return {k: (sum(1 for g in gold if g in got[:k]) / len(gold)) if gold else 1.0 for k in KS}


def with_params(config: MemoryConfig, params: dict[str, Any]) -> MemoryConfig:
    """``config`` with a grid point applied (``depth`` sets both candidate depths, or each of a
    ``[vector, bm25]`` pair)."""
    fields = {k: v for k, v in params.items() if k != "depth"}
    if "depth" in params:
        depth = params["depth"]
        fields["vector_top_n"], fields["bm25_top_n"] = depth if isinstance(depth, list) else (depth, depth)
    return msgspec.structs.replace(config, **fields)


# -- tuning on conversations 1-5 --------------------------------------------------------------------


class TuneCase:
    """One tuning question: its candidate lists at the largest depth, per window, ready to re-fuse."""

    __slots__ = (
        "bm25",
        "bm25_ctx",
        "category",
        "dia_of",
        "edges",
        "gold",
        "person_bm25_ctx",
        "person_vector",
        "sequence",
        "vector",
        "vector_ctx",
    )

    def __init__(self, category: int, gold: list[str]) -> None:
        self.category = category
        self.gold = gold
        self.vector: recall_mod.Ranked = []
        self.bm25: recall_mod.Ranked = []
        self.bm25_ctx: dict[int, recall_mod.Ranked] = {}
        self.vector_ctx: dict[int, recall_mod.Ranked] = {}
        self.person_vector: recall_mod.Ranked = []
        self.person_bm25_ctx: dict[int, recall_mod.Ranked] = {}
        self.edges: Callable[[list[int]], list[Association]] = lambda ids: []
        self.sequence: Callable[[int, int], list[int]] = lambda i, span: [i]
        self.dia_of: dict[int, str] = {}


def collect_tune_cases(
    convs: list[Conversation], base: MemoryConfig, embedder: CachedEmbedder, log: Callable[[str], None]
) -> list[TuneCase]:
    depth = max(GRID["depth"])
    cases: list[TuneCase] = []
    wanted: set[str] = set(ALL_SOURCES)
    for conv in convs:
        mine = [TuneCase(cat, gold) for _, cat, gold in conv.questions]
        for w in GRID["context_window"]:
            cfg = with_params(base, {"context_window": w})
            with conv.engine(cfg, embedder) as (engine, dia_of):
                if w == GRID["context_window"][0]:
                    adjacency: dict[int, list[Association]] = {}
                    for e in edges_of(engine.store, sorted(dia_of)):
                        adjacency.setdefault(e.source_id, []).append(e)
                        adjacency.setdefault(e.target_id, []).append(e)

                    def edges(
                        ids: list[int], adj: dict[int, list[Association]] = adjacency
                    ) -> list[Association]:
                        return [e for i in ids for e in adj.get(i, [])]

                for case, (q, _, _) in zip(mine, conv.questions, strict=True):
                    qvec = embedder.embed_one(q)
                    lists = recall_mod.candidate_lists(engine, q, qvec, depth, depth, wanted)
                    case.bm25_ctx[w] = lists["bm25_ctx"]
                    case.person_bm25_ctx[w] = lists.get("person_bm25_ctx", [])
                    if w == GRID["context_window"][0]:
                        case.person_vector = lists.get("person_vector", [])
                        case.vector, case.bm25, case.edges, case.dia_of = (
                            lists["vector"],
                            lists["bm25"],
                            edges,
                            dia_of,
                        )
                        # Only the in-memory sequence links are read: usable after close.
                        case.sequence = engine.sequence_window
                        for d in GRID["depth"]:
                            with engine._seq_lock:
                                case.vector_ctx[d] = recall_mod._context_vector(
                                    engine, qvec, lists["vector"][:d], engine.prev, engine.next
                                )[:d]
        cases.extend(mine)
        log(f"tune lists: {conv.sample_id} ({len(conv.questions)} questions)")
    return cases


def score_cases(cases: list[TuneCase], base: MemoryConfig, params: dict[str, Any]) -> float:
    """Mean of R@5/10/25/50 over the tuning questions for one grid point."""
    cfg = with_params(base, params)
    d, w = params["depth"], params["context_window"]
    wanted: set[str] = set(ALL_SOURCES)
    total = 0.0
    for c in cases:
        lists = {
            "vector": c.vector[:d],
            "bm25": c.bm25[:d],
            "vector_ctx": c.vector_ctx[d],
            "bm25_ctx": c.bm25_ctx[w][:d],
        }
        if c.person_vector:
            lists["person_vector"] = c.person_vector[:d]
            lists["person_bm25_ctx"] = c.person_bm25_ctx[w][:d]
        fused = recall_mod.fuse(lists, cfg, wanted, c.edges, c.sequence)
        got = [c.dia_of[i] for i, _ in fused[: max(KS)]]
        r = recall_at(c.gold, got)
        total += sum(r.values()) / len(KS)
    return 100 * total / max(1, len(cases))


def tune(
    cases: list[TuneCase],
    base: MemoryConfig,
    log: Callable[[str], None],
    start: dict[str, Any],
    fixed: frozenset[str] = frozenset(),
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Coordinate ascent over ``GRID`` (but the ``fixed`` keys) from ``start``; returns the best
    point and the trace."""
    best = dict(start)
    best_score = score_cases(cases, base, best)
    trace = [{"params": dict(best), "score": round(best_score, 2)}]
    log(f"tune start {best_score:.2f}")
    for _ in range(MAX_PASSES):
        improved = False
        for key, values in GRID.items():
            if key in fixed:
                continue
            for v in values:
                if v == best[key]:
                    continue
                trial = {**best, key: v}
                s = score_cases(cases, base, trial)
                if s > best_score + 1e-9:
                    best, best_score, improved = trial, s, True
                    trace.append({"params": dict(best), "score": round(best_score, 2)})
                    log(f"tune {key}={v} -> {best_score:.2f}")
        if not improved:
            break
    return best, trace


# -- the reranker, fitted on conversations 1-5 -------------------------------------------------------


class RerankCase:
    """One tuning question: the reranker's features of its fused top candidates and their labels."""

    __slots__ = ("conv", "gold", "x", "y")

    def __init__(self, conv: int, x: np.ndarray, y: np.ndarray, gold: int) -> None:
        self.conv, self.x, self.y, self.gold = conv, x, y, gold


def collect_rerank_cases(
    convs: list[Conversation], tuned: MemoryConfig, embedder: CachedEmbedder, log: Callable[[str], None]
) -> list[RerankCase]:
    """Features and labels (is the candidate an evidence turn) with the chosen fusion, by the
    engine's own ``ranked`` and ``rerank.features``."""
    cfg = with_params(tuned, {"rerank": False})
    wanted: set[str] = set(ALL_SOURCES)
    cases: list[RerankCase] = []
    for conv in convs:
        with conv.engine(cfg, embedder) as (engine, dia_of):
            for q, _, gold in conv.questions:
                if not gold:
                    continue
                qvec = embedder.embed_one(q)
                lists, fused = recall_mod.ranked(
                    engine, q, qvec, cfg.vector_top_n, cfg.bm25_top_n, wanted, reranker=False
                )
                ids, x = rerank.features(engine, q, lists, fused, cfg.rerank_depth)
                y = np.array([dia_of[i] in gold for i in ids], dtype=np.float64)
                cases.append(RerankCase(conv.index, x, y, len(gold)))
        log(f"reranker features: {conv.sample_id}")
    return cases


def rerank_score(cases: list[RerankCase], model: rerank.Reranker) -> float:
    """Mean of R@5/10/25/50 over ``cases`` with their candidates in the model's order."""
    total = 0.0
    for c in cases:
        y = c.y[np.argsort(-model.logits(c.x), kind="stable")]
        total += sum(y[:k].sum() / c.gold for k in KS) / len(KS)
    return 100 * total / max(1, len(cases))


def fit_reranker(
    cases: list[RerankCase], chosen: dict[str, Any], log: Callable[[str], None]
) -> tuple[rerank.Reranker, dict[str, Any]]:
    """The regularisation chosen by leave-one-conversation-out over the tuning conversations, then
    the model fitted on all of them."""
    convs = sorted({c.conv for c in cases})
    cv: dict[str, float] = {}
    for c_reg in RERANK_C:
        scores = []
        for held in convs:
            train = [(c.x, c.y) for c in cases if c.conv != held]
            scores.append(rerank_score([c for c in cases if c.conv == held], rerank.fit(train, c_reg)))
        cv[str(c_reg)] = round(sum(scores) / len(scores), 2)
        log(f"reranker C={c_reg}: leave-one-conversation-out {cv[str(c_reg)]:.2f}")
    best = max(RERANK_C, key=lambda c_reg: cv[str(c_reg)])
    meta = {
        "fitted_on": f"LoCoMo conversations {convs[0] + 1}-{convs[-1] + 1} (bench/locomo.py)",
        "c": best,
        "fusion": chosen,
    }
    model = rerank.fit([(c.x, c.y) for c in cases], best, meta)
    return model, {"c": best, "cv": cv, "tuning_score": round(rerank_score(cases, model), 2)}


# -- reporting --------------------------------------------------------------------------------------


def block(rows: list[Row], convs: set[int] | None = None) -> dict[str, Any]:
    """R@k and per-category figures over ``rows`` (restricted to conversation indexes ``convs``)."""
    rows = [r for r in rows if convs is None or r[0] in convs]
    if not rows:
        return {}
    entry: dict[str, Any] = {f"r@{k}": round(100 * sum(r[k] for _, _, r in rows) / len(rows), 1) for k in KS}
    per: dict[str, Any] = {}
    for cat, name in CATEGORIES.items():
        sub = [r for _, c, r in rows if c == cat]
        if sub:
            per[name] = {f"r@{k}": round(100 * sum(r[k] for r in sub) / len(sub), 1) for k in KS}
            per[name]["n"] = len(sub)
    entry["per_category"] = per
    entry["questions"] = len(rows)
    return entry


def run(
    data: Path,
    limit_conversations: int | None,
    log: Callable[[str], None],
    config: MemoryConfig,
    diagnostic: bool,
    do_tune: bool = True,
    use_cache: bool = True,
    write_reranker: Path | None = None,
) -> dict[str, Any]:
    samples = json.loads(data.read_text())[:limit_conversations]
    cache = None
    if use_cache:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spacebot-bench"
        cache = root / f"locomo-{MODEL_SHA256[:16]}.npz"
    embedder = CachedEmbedder(Embedder(threads=config.embed_threads), cache)
    t0 = time.perf_counter()
    convs = [Conversation(i, s, embedder) for i, s in enumerate(samples)]
    embedder.save()
    t_embed = time.perf_counter() - t0
    log(f"embedded {sum(c.turns for c in convs)} turns and the questions in {t_embed:.0f} s")
    tune_set = {c.index for c in convs if c.index < TUNE_CONVERSATIONS}
    held_set = {c.index for c in convs} - tune_set
    out: dict[str, Any] = {}
    if do_tune:
        cases = collect_tune_cases([c for c in convs if c.index in tune_set], config, embedder, log)
        # Fusion alone first, then the sequence expansion of the graph list from there: the
        # expansion is kept only if it beats the fusion-only optimum (reported side by side).
        fusion_only, trace = tune(cases, config, log, START, frozenset({"graph_sequence"}))
        chosen, trace2 = tune(cases, config, log, fusion_only)
        out["tuning"] = {
            "conversations": sorted(i + 1 for i in tune_set),
            "chosen": chosen,
            "fusion_only": fusion_only,
            "trace": trace + trace2[1:],
        }
        del cases
    else:
        chosen = rerank.fusion_settings(config)
        fusion_only = {**chosen, "graph_sequence": 0}
    tuned = with_params(config, chosen)
    # The reranker is fitted on the tuning conversations with the chosen fusion; its file lives
    # for this run (and is written where --write-reranker says).
    model_dir = tempfile.TemporaryDirectory(prefix="locomo-reranker-")
    if do_tune:
        rcases = collect_rerank_cases([c for c in convs if c.index in tune_set], tuned, embedder, log)
        model, info = fit_reranker(rcases, chosen, log)
        del rcases
        model_path = Path(model_dir.name) / "reranker.json"
        model_path.write_text(model.to_json())
        if write_reranker is not None:
            write_reranker.write_text(model.to_json())
            log(f"reranker written to {write_reranker}")
        tuned = with_params(tuned, {"rerank": True, "rerank_model": str(model_path)})
        out["reranker"] = info
    fusion = with_params(tuned, {"rerank": False})
    # The five lists of the first engine at weight 1 (no person lists): the baseline every stage must beat.
    equal = with_params(
        fusion, {"rrf_k": 60, "graph_sequence": 0, **{k: 1.0 for k in WEIGHT_KEYS}, "weight_person": 0.0}
    )
    # method -> (config, sources)
    methods: dict[str, tuple[MemoryConfig, tuple[RecallSource, ...]]] = {
        "hybrid": (config, ALL_SOURCES),
        "tuned": (tuned, ALL_SOURCES),
        "equal": (equal, ALL_SOURCES),
        "rrf2": (with_params(equal, {}), ("vector", "bm25")),
        "vector": (config, ("vector",)),
        "bm25": (config, ("bm25",)),
    }
    if tuned.rerank:
        methods["no_rerank"] = (fusion, ALL_SOURCES)
    if chosen.get("weight_person"):
        methods["no_person"] = (with_params(fusion, {"weight_person": 0.0}), ALL_SOURCES)
    if fusion_only != chosen:
        methods["fusion_only"] = (with_params(fusion, fusion_only), ALL_SOURCES)
    if diagnostic:
        methods |= {
            "bm25_ctx": (tuned, ("bm25_ctx",)),
            "vector_ctx": (tuned, ("vector_ctx",)),
            "no_graph": (tuned, ("vector", "bm25", "vector_ctx", "bm25_ctx", "person")),
        }
    results: dict[str, list[Row]] = {m: [] for m in methods}
    t_query = 0.0
    n_recalls = 0
    dated_rows: list[Row] = []
    windows = sorted({cfg.context_window for cfg, _ in methods.values()})
    for conv in convs:
        for w in windows:
            with conv.engine(with_params(config, {"context_window": w}), embedder) as (engine, dia_of):
                for method, (cfg, sources) in methods.items():
                    if cfg.context_window != w:
                        continue
                    engine.config = cfg
                    t1 = time.perf_counter()
                    for q, cat, gold in conv.questions:
                        hits = engine.recall(q, limit=max(KS), sources=sources, touch=False, as_of=conv.as_of)
                        results[method].append(
                            (conv.index, cat, recall_at(gold, [dia_of[h.memory.id] for h in hits]))
                        )
                    t_query += time.perf_counter() - t1
                    n_recalls += len(conv.questions)
        # The chosen setting with relative dates resolved (its own engine: the indexed text differs).
        with conv.engine(with_params(tuned, {"resolve_dates": True}), embedder) as (engine, dia_of):
            for q, cat, gold in conv.questions:
                hits = engine.recall(q, limit=max(KS), touch=False, as_of=conv.as_of)
                dated_rows.append((conv.index, cat, recall_at(gold, [dia_of[h.memory.id] for h in hits])))
        log(f"{conv.sample_id}: {conv.turns} turns, {len(conv.questions)} questions")
    for method, rows in results.items():
        out[method] = {**block(rows), "heldout": block(rows, held_set), "tuning_split": block(rows, tune_set)}
    out["heldout"] = {**block(results["tuned"], held_set), "all10": block(results["tuned"]), "config": chosen}
    out["equal_weights"] = {
        **block(results["equal"], held_set),
        "all10": block(results["equal"]),
    }
    turns = sum(c.turns for c in convs)
    out["dates"] = {
        **block(dated_rows),
        "heldout": block(dated_rows, held_set),
        "tuning_split": block(dated_rows, tune_set),
        "without": block(results["tuned"], held_set),
        "turns_with_dates": sum(c.dated for c in convs),
        "us_per_memory": round(1e6 * sum(c.dating_seconds for c in convs) / max(1, turns), 1),
    }
    out["questions"] = len(results["hybrid"])
    out["turns"] = sum(c.turns for c in convs)
    out["query_ms_per_recall"] = round(1000 * t_query / max(1, n_recalls), 2)
    model_dir.cleanup()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--limit-conversations", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="override a MemoryConfig key"
    )
    parser.add_argument(
        "--diagnostic", action="store_true", help="also score single context lists and ablations"
    )
    parser.add_argument(
        "--no-tune", action="store_true", help="skip the search on conversations 1-5 (tuned = the config)"
    )
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="embed every turn and question afresh (default: reuse vectors this model computed for the same "
        "texts on an earlier run, kept in $XDG_CACHE_HOME/spacebot-bench)",
    )
    parser.add_argument(
        "--write-reranker",
        type=Path,
        default=None,
        metavar="PATH",
        help="write the reranker fitted on conversations 1-5 to PATH (the shipped one is "
        "spacebot/memory/data/reranker.json)",
    )
    args = parser.parse_args(argv)
    if args.write_reranker is not None and args.no_tune:
        parser.error("--write-reranker needs the fitting that --no-tune skips")
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    config = msgspec.convert(overrides, MemoryConfig)
    if not args.data.is_file():
        print(f"LoCoMo data not found at {str(args.data)!r} (expected locomo10.json there)", file=sys.stderr)
        return 2

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    out = run(
        args.data,
        args.limit_conversations,
        log,
        config,
        args.diagnostic,
        not args.no_tune,
        not args.no_cache,
        args.write_reranker,
    )
    print(f"LoCoMo Recall@k, {out['questions']} questions, {out['turns']} turns (dialog-turn units)")
    if "tuning" in out:
        print(f"chosen on conversations 1-5: {out['tuning']['chosen']}")
    head = "".join(f"{'R@' + str(k):>7}" for k in KS)
    print(f"{'method':<22}{head}   | held-out (6-10){head}")
    for method in [m for m in out if isinstance(out[m], dict) and "heldout" in out[m] and "r@5" in out[m]]:
        row, held = out[method], out[method]["heldout"]
        cells = "".join(f"{row[f'r@{k}']:>7.1f}" for k in KS)
        hcells = "".join(f"{held[f'r@{k}']:>7.1f}" for k in KS) if held else ""
        print(f"{method:<22}{cells}   | {'':<15}{hcells}")
        if method in ("tuned", "no_rerank", "equal", "dates") and held:
            for name, r in held["per_category"].items():
                label = f"{name} ({r['n']})"
                print(f"  {'':<20}{'':<28}   |   {label:<13}" + "".join(f"{r[f'r@{k}']:>7.1f}" for k in KS))
    print(f"{'DRAGON (published)':<22}" + "".join(f"{v:>7.1f}" for v in (56.7, 66.2, 76.7, 82.7)))
    print(f"{out['query_ms_per_recall']} ms per recall")
    dates = out["dates"]
    print(f"dates: {dates['turns_with_dates']} turns dated, {dates['us_per_memory']} µs per memory")
    if args.json:
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
