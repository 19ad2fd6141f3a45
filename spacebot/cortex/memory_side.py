"""What ``memory:<agent>`` runs for its cortex: the association pass, the knowledge snapshot and the
``process_runs`` table. Plain synchronous functions over a :class:`~spacebot.memory.MemoryEngine`,
called from the memory process's thread pool like every other engine call; they live here, beside
the cortex that asks for them, rather than in the engine (none of them is part of recall or save).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from spacebot.ipc.messages import (
    AssociationReport,
    KnowledgeSnapshot,
    MemAssociatePass,
    MemKnowledge,
    ProcessRun,
    Relation,
    RunsList,
    RunsRecord,
)
from spacebot.memory import graph
from spacebot.memory.errors import MemoryInputError

if TYPE_CHECKING:
    from spacebot.memory.engine import MemoryEngine

log = logging.getLogger("spacebot.memory")

_json = msgspec.json.Encoder()


def associate_pass(engine: MemoryEngine, req: MemAssociatePass) -> AssociationReport:
    """Link up to ``req.limit`` memories saved after ``req.after_id`` with their near neighbours.

    Each examined memory gets a ``related_to`` edge (weight = cosine) to every active neighbour at
    or above ``req.threshold`` that it shares no edge with yet, at most ``req.per_memory``; a
    same-type older neighbour at or above ``[memory] duplicate_threshold`` gets an ``updates`` edge
    instead (the merge pass decides what to forget). Saving already linked what was above
    ``link_threshold`` when the memory arrived; this pass adds what a lower threshold finds, and
    what arrived after it (a later memory's neighbours include earlier ones, not the reverse)."""
    if req.limit < 1 or req.per_memory < 1:
        raise MemoryInputError(f"limit {req.limit!r} and per_memory {req.per_memory!r} must be >= 1")
    if not 0.0 < req.threshold <= 1.0:
        raise MemoryInputError(f"threshold {req.threshold!r} must be in (0, 1]")
    rows = (
        engine.store.cursor()
        .execute(
            "SELECT id, type, embedding FROM memories WHERE NOT forgotten AND id > ? ORDER BY id LIMIT ?",
            [req.after_id, req.limit + 1],
        )
        .fetchall()
    )
    remaining = len(rows) > req.limit
    rows = rows[: req.limit]
    if not rows:
        return AssociationReport(examined=0, added=0, last_id=req.after_id, remaining=False)
    ids = [int(r[0]) for r in rows]
    linked = {(e.source_id, e.target_id) for e in graph.edges_of(engine.store, ids)}
    linked |= {(b, a) for a, b in linked}
    found: list[tuple[int, str, list[tuple[int, float]]]] = []
    for mid, mtype, blob in rows:
        vec = np.frombuffer(bytes(blob), dtype=np.float32)
        hits = engine.vectors.search(vec, min(3 * req.per_memory + 1, 64))  # some are linked already
        found.append((int(mid), str(mtype), [(j, s) for j, s in hits if j != mid and s >= req.threshold]))
    neighbours = engine.store.get_memories(
        sorted({j for _, _, hits in found for j, _ in hits}), include_forgotten=False
    )
    edges: list[tuple[int, int, Relation, float]] = []
    duplicate = engine.config.duplicate_threshold
    for mid, mtype, hits in found:
        made = 0
        for j, sim in hits:
            other = neighbours.get(j)
            if other is None or (mid, j) in linked or made >= req.per_memory:
                continue
            if other.type.value == mtype and j < mid and sim >= duplicate:
                edges.append((mid, j, Relation.UPDATES, 1.0))
            else:
                edges.append((mid, j, Relation.RELATED_TO, round(float(sim), 4)))
            linked |= {(mid, j), (j, mid)}
            made += 1
    if edges:
        with engine.store.transaction() as cur:
            graph.upsert_edges(cur, edges)
    log.info("memory associate examined=%d added=%d last_id=%d", len(ids), len(edges), ids[-1])
    return AssociationReport(examined=len(ids), added=len(edges), last_id=ids[-1], remaining=remaining)


def knowledge_snapshot(engine: MemoryEngine, req: MemKnowledge) -> KnowledgeSnapshot:
    """The ``per_type`` most important memories of each wanted type (newer first among equals),
    and how many active memories each type has. Reading them is not an access (no touch)."""
    counts: dict[str, int] = {}
    memories = []
    for mtype in req.types:
        counts[mtype.value] = engine.store.count("memories", f"NOT forgotten AND type = '{mtype.value}'")
        if counts[mtype.value]:
            memories += engine.store.query_memories(
                "NOT forgotten AND type = ?",
                [mtype.value],
                "importance DESC, updated_at DESC, id DESC",
                max(req.per_type, 0),
            )
    return KnowledgeSnapshot(counts=counts, memories=memories)


def record_runs(engine: MemoryEngine, req: RunsRecord) -> int:
    """Insert finished runs into ``process_runs``; with ``req.keep``, drop all but the newest rows."""
    if not req.runs:
        return 0
    with engine.store.transaction() as cur:
        for run in req.runs:
            cur.execute(
                "INSERT INTO process_runs (id, proc_id, kind, started_at, ended_at, exit_code, detail) "
                "VALUES (nextval('run_id_seq'), ?, ?, ?, ?, ?, ?)",
                [
                    run.proc_id,
                    run.kind,
                    run.started_at,
                    run.ended_at,
                    run.exit_code,
                    _json.encode(run.detail).decode(),
                ],
            )
        if req.keep > 0:
            cur.execute(
                "DELETE FROM process_runs WHERE id <= (SELECT max(id) FROM process_runs) - ?", [req.keep]
            )
    return len(req.runs)


def list_runs(engine: MemoryEngine, req: RunsList) -> list[ProcessRun]:
    """The newest runs (optionally of one kind or one process), newest first."""
    where, params = ["TRUE"], []
    if req.kind:
        where.append("kind = ?")
        params.append(req.kind)
    if req.proc_id:
        where.append("proc_id = ?")
        params.append(req.proc_id)
    rows = (
        engine.store.cursor()
        .execute(
            "SELECT id, proc_id, kind, started_at, ended_at, exit_code, detail FROM process_runs "
            f"WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
            [*params, max(0, min(req.limit, 10_000))],
        )
        .fetchall()
    )
    return [
        ProcessRun(
            id=int(r[0]),
            proc_id=r[1],
            kind=r[2],
            started_at=r[3],
            ended_at=r[4],
            exit_code=r[5],
            detail=_detail(r[6]),
        )
        for r in rows
    ]


def _detail(raw: Any) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return {"raw": str(raw)[:200]}
    return value if isinstance(value, dict) else {"value": value}
