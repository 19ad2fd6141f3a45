"""Associations between memories: validated edges, linking on save, and neighbour walks."""

from __future__ import annotations

import time
from collections.abc import Sequence

import duckdb
import numpy as np

from spacebot.ipc.messages import Association, MemoryType, Relation
from spacebot.memory.config import MemoryConfig
from spacebot.memory.errors import MemoryInputError, MemoryNotFound
from spacebot.memory.store import Store
from spacebot.memory.vectors import VectorIndex


def parse_relation(relation: str) -> Relation:
    """The :class:`Relation` named ``relation``, or a clear error."""
    try:
        return Relation(relation)
    except ValueError:
        names = ", ".join(r.value for r in Relation)
        raise MemoryInputError(f"unknown relation {relation!r} (expected one of {names})") from None


def upsert_edges(cur: duckdb.DuckDBPyConnection, edges: Sequence[tuple[int, int, Relation, float]]) -> None:
    """Insert edges, or update the weight of an existing (source, target, relation)."""
    if not edges:
        return
    now = time.time()
    cur.execute(
        "INSERT INTO associations SELECT unnest($1), unnest($2), unnest($3), unnest($4), $5 "
        "ON CONFLICT (source_id, target_id, relation) DO UPDATE SET weight = excluded.weight",
        [
            [e[0] for e in edges],
            [e[1] for e in edges],
            [e[2].value for e in edges],
            [e[3] for e in edges],
            now,
        ],
    )


def associate(store: Store, source: int, target: int, relation: str, weight: float) -> Association:
    """Create or re-weight one edge between two existing memories."""
    rel = parse_relation(relation)
    if not 0.0 <= weight <= 1.0:
        raise MemoryInputError(f"weight {weight!r} out of range 0..1")
    if source == target:
        raise MemoryInputError(f"a memory cannot be associated with itself (id {source!r})")
    found = store.get_memories([source, target])
    for i in (source, target):
        if i not in found:
            raise MemoryNotFound(f"no memory with id {i!r}")
    with store.transaction() as cur:
        upsert_edges(cur, [(source, target, rel, weight)])
    return Association(
        source_id=source, target_id=target, relation=rel, weight=weight, created_at=time.time()
    )


def edges_of(store: Store, ids: Sequence[int]) -> list[Association]:
    """Every edge touching any of ``ids``, in either direction."""
    if not ids:
        return []
    id_list = ",".join(str(int(i)) for i in ids)  # ints only: safe to inline, and index-friendly
    cols = "SELECT source_id, target_id, relation, weight, created_at FROM associations"
    # Two index lookups (one per direction); UNION ALL and the set below instead of UNION, which
    # would sort and hash the rows in DuckDB (an edge between two of ``ids`` comes back twice).
    rows = (
        store.cursor()
        .execute(f"{cols} WHERE source_id IN ({id_list}) UNION ALL {cols} WHERE target_id IN ({id_list})")
        .fetchall()
    )
    seen: set[tuple[int, int, str]] = set()
    out: list[Association] = []
    for r in rows:
        if (r[0], r[1], r[2]) in seen:
            continue
        seen.add((r[0], r[1], r[2]))
        out.append(
            Association(source_id=r[0], target_id=r[1], relation=Relation(r[2]), weight=r[3], created_at=r[4])
        )
    return out


def plan_links(
    vectors: VectorIndex,
    store: Store,
    vecs: np.ndarray,
    types: Sequence[MemoryType],
    config: MemoryConfig,
) -> list[tuple[list[tuple[int, float]], int | None]]:
    """For each new vector: ``related_to`` targets with similarity, and the id it supersedes, if any.

    A near-duplicate (``duplicate_threshold``) of the same type is superseded (an ``updates`` edge);
    other neighbours above ``link_threshold`` get ``related_to`` edges, at most ``link_max``.
    """
    found: list[list[tuple[int, float]]] = []
    for vec in vecs:
        hits = vectors.search(vec, config.link_max + 1)
        found.append([(i, s) for i, s in hits if s >= config.link_threshold])
    wanted = {i for hits in found for i, _ in hits}
    rows = store.get_memories(sorted(wanted), include_forgotten=False)
    plans: list[tuple[list[tuple[int, float]], int | None]] = []
    for hits, mtype in zip(found, types, strict=True):
        superseded: int | None = None
        related: list[tuple[int, float]] = []
        for i, sim in hits:
            old = rows.get(i)
            if old is None:
                continue
            if superseded is None and sim >= config.duplicate_threshold and old.type == mtype:
                superseded = i
            elif len(related) < config.link_max:
                related.append((i, sim))
        plans.append((related, superseded))
    return plans
