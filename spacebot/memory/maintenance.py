"""Maintenance the cortex schedules: decay, prune, merge near-duplicates. Identity is exempt from
decay and pruning. Nothing is deleted: pruned and merged memories are marked forgotten."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from spacebot.ipc.messages import MaintenanceReport, Relation
from spacebot.memory.graph import upsert_edges
from spacebot.memory.store import one

if TYPE_CHECKING:
    from spacebot.memory.engine import MemoryEngine

log = logging.getLogger(__name__)
DAY = 86_400.0


def decay(engine: MemoryEngine, now: float | None = None) -> MaintenanceReport:
    """Halve importance per ``decay_half_life_days`` without access, the half-life stretched by
    ``1 + decay_access_bonus * access_count``. Time already decayed is not counted twice."""
    cfg = engine.config
    now = time.time() if now is None else now
    with engine.store.transaction() as cur:
        engine._apply_pending_touches(cur)
        examined = one(
            cur.execute("SELECT count(*) FROM memories WHERE NOT forgotten AND type <> 'identity'")
        )
        rows = cur.execute(
            """UPDATE memories SET
                 importance = importance * pow(0.5, (? - greatest(last_accessed_at, decayed_at))
                     / (? * (1 + ? * access_count))),
                 decayed_at = ?
               WHERE NOT forgotten AND type <> 'identity' AND ? > greatest(last_accessed_at, decayed_at)
               RETURNING id""",
            [now, cfg.decay_half_life_days * DAY, cfg.decay_access_bonus, now, now],
        ).fetchall()
    log.info("memory decay examined=%d changed=%d", examined[0] if examined else 0, len(rows))
    return MaintenanceReport(examined=int(examined[0]) if examined else 0, changed=len(rows))


def prune(engine: MemoryEngine, floor: float | None = None) -> MaintenanceReport:
    """Forget non-identity memories whose importance is below ``floor`` (default ``prune_floor``)."""
    floor = engine.config.prune_floor if floor is None else floor
    with engine.store.transaction() as cur:
        engine._apply_pending_touches(cur)
        examined = engine.store.count("memories", "NOT forgotten")
        rows = cur.execute(
            "UPDATE memories SET forgotten = TRUE, updated_at = ? "
            "WHERE NOT forgotten AND type <> 'identity' AND importance < ? RETURNING id",
            [time.time(), floor],
        ).fetchall()
    ids = [r[0] for r in rows]
    engine.drop_from_indexes(ids)
    log.info("memory prune examined=%d forgotten=%d floor=%s", examined, len(ids), floor)
    return MaintenanceReport(examined=examined, changed=len(ids))


def merge_duplicates(engine: MemoryEngine, threshold: float | None = None) -> MaintenanceReport:
    """Fold each memory into a newer one of the same type whose cosine is above ``threshold``:
    the newer keeps the higher importance and the summed access count, gets an ``updates`` edge to
    the older, and the older is forgotten."""
    threshold = engine.config.merge_threshold if threshold is None else threshold
    ids, vecs = engine.store.embeddings()
    if len(ids) < 2:
        return MaintenanceReport(examined=len(ids), changed=0)
    rows = engine.store.get_memories(ids.tolist(), include_forgotten=False)
    merged: dict[int, int] = {}  # older -> newer
    for start in range(0, len(ids), 1_000):
        block = ids[start : start + 1_000]
        for i, vec in zip(block, vecs[start : start + 1_000], strict=True):
            old = int(i)
            if old in merged or old not in rows:
                continue
            for j, sim in engine.vectors.search(vec, 6):
                other = rows.get(j)
                if (
                    j > old
                    and sim >= threshold
                    and j not in merged
                    and other
                    and other.type == rows[old].type
                ):
                    merged[old] = j
                    break
    if not merged:
        return MaintenanceReport(examined=len(ids), changed=0)
    now = time.time()
    with engine.store.transaction() as cur:
        for old, new in merged.items():
            cur.execute(
                "UPDATE memories SET importance = greatest(importance, ?), access_count = access_count + ?, "
                "updated_at = ? WHERE id = ?",
                [rows[old].importance, rows[old].access_count, now, new],
            )
        cur.execute(
            "UPDATE memories SET forgotten = TRUE, updated_at = ? WHERE id IN (SELECT unnest(?))",
            [now, list(merged)],
        )
        upsert_edges(cur, [(new, old, Relation.UPDATES, 1.0) for old, new in merged.items()])
    engine.drop_from_indexes(list(merged))
    log.info("memory merge examined=%d merged=%d", len(ids), len(merged))
    return MaintenanceReport(examined=len(ids), changed=len(merged))
