"""Recall modes and Reciprocal Rank Fusion.

``hybrid`` fuses up to five ranked lists with RRF (score = sum of weight / (k + rank)):

* ``vector``: HNSW nearest neighbours of the query embedding (cosine);
* ``bm25``: tantivy BM25 over the indexed text;
* ``bm25_ctx``: BM25 over a memory's sequence context: its text together with the texts of the
  memories right before and after it (a reply is found through the question it answers);
* ``vector_ctx``: cosine between the query and the normalised sum of a memory's vector and its
  sequence neighbours' vectors;
* ``person_vector`` and ``person_bm25_ctx`` (source ``person``): when the query names people
  (by name or alias, :mod:`spacebot.memory.people`), the vector and context-BM25 lists restricted
  to the memories by or about them ("what does Ana do on weekends" is also searched among Ana's);
* ``graph``: association neighbours (any relation, by edge weight) of the strongest fused hits, so
  a connected memory is found even when it shares no words with the query, and the memories just
  before and after those hits in their sequence (``graph_sequence``).

A hybrid recall over every source then reorders its top ``rerank_depth`` fused candidates with the
learned reranker (:mod:`spacebot.memory.rerank`) when ``rerank`` is on.

``recent`` orders by creation time, ``important`` by importance, ``typed`` restricts to types
(hybrid when a query is given, most recent first otherwise). Filters by type and channel apply to
every mode; forgotten memories are never returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING, Any

import numpy as np

from spacebot.ipc.messages import Association, Memory, MemoryType, RecallHit, RecallMode
from spacebot.memory import rerank, temporal
from spacebot.memory.errors import MemoryInputError
from spacebot.memory.graph import edges_of
from spacebot.memory.types import ALL_SOURCES, RecallSource

if TYPE_CHECKING:
    from spacebot.memory.config import MemoryConfig
    from spacebot.memory.engine import MemoryEngine

Ranked = list[tuple[int, float]]


def rrf(lists: dict[str, Ranked], k: int, weights: dict[str, float] | None = None) -> list[tuple[int, float]]:
    """Fuse ranked lists: each id scores ``sum(weight / (k + rank))`` over the lists holding it."""
    fused: dict[int, float] = {}
    for name, ranked in lists.items():
        w = 1.0 if weights is None else weights.get(name, 1.0)
        for rank, (i, _) in enumerate(ranked, start=1):
            fused[i] = fused.get(i, 0.0) + w / (k + rank)
    return sorted(fused.items(), key=lambda x: (-x[1], x[0]))


def _filters(types: list[MemoryType] | None, channel: str | None) -> tuple[str, list[Any]]:
    where: list[str] = ["NOT forgotten"]
    params: list[Any] = []
    if types:
        where.append("type IN (SELECT unnest(?))")
        params.append([t.value for t in types])
    if channel is not None:
        where.append("channel = ?")
        params.append(channel)
    return " AND ".join(where), params


MAX_QUERIES = 5
"""A hybrid recall's question and up to four rephrasings of it (``queries``)."""


def _prepared(engine: MemoryEngine, query: str, as_of: float | None) -> str:
    query = query[: engine.config.max_query_chars]
    if engine.config.resolve_dates:
        day = temporal.day_of(time.time() if as_of is None else as_of, engine.config.date_timezone)
        query = temporal.expand_query(query, day)
    return query


def run(
    engine: MemoryEngine,
    query: str,
    mode: RecallMode,
    limit: int,
    types: list[MemoryType] | None,
    channel: str | None,
    sources: Sequence[RecallSource],
    as_of: float | None = None,
    queries: Sequence[str] = (),
) -> list[RecallHit]:
    """Dispatch one recall request (``as_of``: the Unix time a query's relative dates count from,
    default now; used with ``resolve_dates``; ``queries``: further phrasings of ``query``, each
    recalled like it and the rankings fused, hybrid only)."""
    if limit <= 0:
        raise MemoryInputError(f"limit must be positive, got {limit!r}")
    if mode == "typed" and not types:
        raise MemoryInputError("typed recall needs at least one type")
    if mode == "hybrid" or (mode == "typed" and query.strip()):
        if not query.strip():
            raise MemoryInputError("hybrid recall needs a query")
        if len(queries) > MAX_QUERIES - 1:
            raise MemoryInputError(
                f"at most {MAX_QUERIES - 1} further queries per recall, got {len(queries)}"
            )
        for n, extra in enumerate(queries):
            if not isinstance(extra, str) or not extra.strip():
                raise MemoryInputError(f"queries[{n}] is empty: every further query needs some text")
        texts = [_prepared(engine, q, as_of) for q in (query, *queries)]
        return hybrid(engine, texts, limit, types, channel, sources)
    if queries:
        raise MemoryInputError(f"further queries apply to hybrid recall, not to {mode!r}")
    order = {
        "recent": "created_at DESC, id DESC",
        "typed": "created_at DESC, id DESC",
        "important": "importance DESC, created_at DESC, id DESC",
    }.get(mode)
    if order is None:
        raise MemoryInputError(f"unknown recall mode {mode!r} (expected hybrid, recent, important or typed)")
    where, params = _filters(types, channel)
    rows = engine.store.query_memories(where, params, order, limit)
    key = "importance" if mode == "important" else "created_at"
    return [RecallHit(memory=m, score=float(getattr(m, key))) for m in rows]


def _context_vector(
    engine: MemoryEngine, qvec: np.ndarray, vec_hits: Ranked, prev: dict[int, int], nxt: dict[int, int]
) -> Ranked:
    """Cosine between the query and each candidate's normalised sum with its sequence neighbours.

    Candidates are the vector hits and their neighbours. A memory outside any sequence keeps its
    plain cosine, so only sequence members cost a vector read.
    """
    vectors = engine.vectors
    scores = dict(vec_hits)
    linked = {i for i, _ in vec_hits if i in prev or i in nxt}
    linked |= {j for i in list(linked) for j in (prev.get(i), nxt.get(i)) if j is not None}
    out: Ranked = [(i, s) for i, s in vec_hits if i not in linked]
    cands = sorted(i for i in linked if vectors.has(i))
    if cands:
        groups = [
            [j for j in (prev.get(c), c, nxt.get(c)) if j is not None and vectors.has(j)] for c in cands
        ]
        needed = sorted({j for g in groups for j in g})
        try:
            mat = vectors.get(needed)
        except RuntimeError:  # forgotten between the check and the read
            return sorted(scores.items(), key=lambda x: (-x[1], x[0]))
        row = {j: k for k, j in enumerate(needed)}
        members = np.zeros((len(cands), len(needed)), dtype=np.float32)
        for k, group in enumerate(groups):
            members[k, [row[j] for j in group]] = 1.0
        sums = members @ mat
        sims = (sums @ qvec) / np.maximum(np.linalg.norm(sums, axis=1), 1e-12)
        out.extend((c, float(s)) for c, s in zip(cands, sims, strict=True))
    out.sort(key=lambda x: (-x[1], x[0]))
    return out


def weights_of(cfg: MemoryConfig) -> dict[str, float]:
    """The RRF weight of each list, as configured."""
    return {
        "vector": cfg.weight_vector,
        "bm25": cfg.weight_bm25,
        "vector_ctx": cfg.weight_vector_ctx,
        "bm25_ctx": cfg.weight_bm25_ctx,
        "graph": cfg.weight_graph,
        "person_vector": cfg.weight_person,
        "person_bm25_ctx": cfg.weight_person,
    }


def candidate_lists(
    engine: MemoryEngine,
    query: str,
    qvec: np.ndarray,
    n_vec: int,
    n_bm: int,
    wanted: AbstractSet[str],
) -> dict[str, Ranked]:
    """The ranked lists fusion starts from (every wanted source but ``graph``), best first.

    With ``person`` wanted and a query that names people (``engine.people``), two more lists rank
    only their memories: by cosine (``person_vector``) and by BM25 over the sequence context
    (``person_bm25_ctx``), each the best of theirs among the top ``person_depth`` hits of its
    index. (Scoring all of a person's memories exactly would be better in theory, but reading a
    few hundred vectors back out of hnswlib takes longer than the whole recall, and its filtered
    search calls back into Python for every node it visits.)
    """
    cfg = engine.config
    among: set[int] = set()
    if "person" in wanted and cfg.weight_person > 0:
        named = engine.people.named_in(query)
        among = engine.people.members(named) if named else set()
    # One search per index, deep enough for the person lists when there are any.
    n_deep = cfg.person_depth if among else 0
    vec_all = (
        engine.vectors.search(qvec, max(n_vec, n_deep)) if among or wanted & {"vector", "vector_ctx"} else []
    )
    vec_hits = vec_all[:n_vec]
    lists: dict[str, Ranked] = {}
    if "vector" in wanted:
        lists["vector"] = vec_hits
    if "bm25" in wanted:
        lists["bm25"] = engine.text.search(query, n_bm)
    ctx: Ranked = []
    if "bm25_ctx" in wanted or among:
        ctx = engine.text.search(query, max(n_bm, n_deep), field="ctx")
    if "bm25_ctx" in wanted:
        lists["bm25_ctx"] = ctx[:n_bm]
    if "vector_ctx" in wanted:
        with engine._seq_lock:
            lists["vector_ctx"] = _context_vector(engine, qvec, vec_hits, engine.prev, engine.next)[:n_vec]
    if among:
        lists["person_vector"] = [(i, s) for i, s in vec_all if i in among][:n_vec]
        lists["person_bm25_ctx"] = [(i, s) for i, s in ctx if i in among][:n_bm]
    return lists


def fuse(
    lists: dict[str, Ranked],
    cfg: MemoryConfig,
    wanted: AbstractSet[str],
    edges: Callable[[list[int]], list[Association]],
    sequence: Callable[[int, int], list[int]] | None = None,
) -> list[tuple[int, float]]:
    """RRF of ``lists``; with ``graph`` wanted, the neighbours of the top ``graph_seeds`` fused hits
    join as one more list (added to ``lists``) and the lists are fused again.

    A seed's neighbours are its associations (``edges(ids)`` returns the edges touching ``ids``),
    scored edge weight / seed rank, and, with ``graph_sequence`` > 0, the memories up to that many
    steps before and after it in its sequence (``sequence(id, span)``), scored 1 / (seed rank × (1 +
    steps)): the turns around a strong hit, where the rest of an answer often is.
    """
    weights = weights_of(cfg)
    fused = rrf(lists, cfg.rrf_k, weights)
    if "graph" in wanted and fused:
        seeds_ranked = [i for i, _ in fused[: cfg.graph_seeds]]
        seed_rank = {i: r for r, i in enumerate(seeds_ranked, start=1)}
        neighbour: dict[int, float] = {}
        for edge in edges(seeds_ranked):
            for a, b in ((edge.source_id, edge.target_id), (edge.target_id, edge.source_id)):
                if a in seed_rank:
                    neighbour[b] = max(neighbour.get(b, 0.0), edge.weight / seed_rank[a])
        if sequence is not None and cfg.graph_sequence > 0:
            for seed, rank in seed_rank.items():
                window = sequence(seed, cfg.graph_sequence)
                at = window.index(seed)
                for pos, j in enumerate(window):
                    if j != seed:
                        neighbour[j] = max(neighbour.get(j, 0.0), 1.0 / (rank * (1 + abs(pos - at))))
        lists["graph"] = sorted(neighbour.items(), key=lambda x: (-x[1], x[0]))[: cfg.graph_top_n]
        fused = rrf(lists, cfg.rrf_k, weights)
    return fused


def ranked(
    engine: MemoryEngine,
    query: str,
    qvec: np.ndarray,
    n_vec: int,
    n_bm: int,
    wanted: AbstractSet[str],
    reranker: bool | None = None,
) -> tuple[dict[str, Ranked], Ranked]:
    """One query's candidate lists (``graph`` and, when reranked, ``rerank`` included) and its
    final ranking: the fusion, then the learned reranker over its top ``rerank_depth`` when
    ``rerank`` is on and every source is wanted (the model was fitted on all of them; a recall
    restricted to some sources keeps the fused order). ``reranker`` overrides ``rerank``."""
    cfg = engine.config
    lists = candidate_lists(engine, query, qvec, n_vec, n_bm, wanted)
    fused = fuse(lists, cfg, wanted, lambda ids: edges_of(engine.store, ids), engine.sequence_window)
    use = cfg.rerank if reranker is None else reranker
    if use and cfg.rerank_depth > 0 and wanted >= set(ALL_SOURCES):
        fused = rerank.rerank(engine, rerank.model(cfg.rerank_model), query, lists, fused, cfg.rerank_depth)
        lists["rerank"] = fused[: cfg.rerank_depth]
    return lists, fused


def hybrid(
    engine: MemoryEngine,
    queries: Sequence[str],
    limit: int,
    types: list[MemoryType] | None,
    channel: str | None,
    sources: Sequence[RecallSource],
) -> list[RecallHit]:
    """Fused recall over vectors, BM25, sequence context, people and the association graph.

    With several ``queries`` (one question put several ways: a caller's rewrites), each is
    recalled on its own and their fused rankings are fused again with RRF at equal weight; the
    hits keep the first query's per-source ranks and add each query's fused rank
    (``query_1``, ``query_2``, …)."""
    cfg = engine.config
    wanted = set(sources)
    n_vec, n_bm = max(cfg.vector_top_n, limit), max(cfg.bm25_top_n, limit)
    if len(queries) == 1:
        qvecs = [engine.embedder.embed_one(queries[0])]
    else:
        qvecs = list(engine.embedder.embed(list(queries)))
    rankings: dict[str, list[tuple[int, float]]] = {}
    first: dict[str, Ranked] = {}
    for n, (query, qvec) in enumerate(zip(queries, qvecs, strict=True), start=1):
        lists, rankings[f"query_{n}"] = ranked(engine, query, qvec, n_vec, n_bm, wanted)
        if n == 1:
            first = lists
    if len(rankings) == 1:
        return _materialise(engine, rankings["query_1"], first, limit, types, channel)
    return _materialise(engine, rrf(rankings, cfg.rrf_k), first | rankings, limit, types, channel)


def _materialise(
    engine: MemoryEngine,
    fused: list[tuple[int, float]],
    lists: dict[str, Ranked],
    limit: int,
    types: list[MemoryType] | None,
    channel: str | None,
) -> list[RecallHit]:
    filtered = bool(types) or channel is not None
    chosen: list[tuple[int, float]] = []
    rows: dict[int, Memory] = {}
    window = limit * 2
    start = 0
    # Fetch in growing windows: forgotten rows and filters may drop candidates.
    while len(chosen) < limit and start < len(fused):
        part = fused[start : start + window] if not filtered else fused[start:]
        got = engine.store.get_memories([i for i, _ in part], include_forgotten=False)
        for i, s in part:
            m = got.get(i)
            if m is None or (types and m.type not in types) or (channel is not None and m.channel != channel):
                continue
            rows[i] = m
            chosen.append((i, s))
            if len(chosen) == limit:
                break
        start += len(part)
        window *= 2
    positions = {
        name: {i: (r, s) for r, (i, s) in enumerate(ranked, start=1)} for name, ranked in lists.items()
    }
    hits = []
    for i, s in chosen:
        ranks = {name: pos[i][0] for name, pos in positions.items() if i in pos}
        scores = {name: round(pos[i][1], 6) for name, pos in positions.items() if i in pos}
        hits.append(RecallHit(memory=rows[i], score=s, ranks=ranks, scores=scores))
    return hits
