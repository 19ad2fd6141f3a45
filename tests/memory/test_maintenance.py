from __future__ import annotations

import time

import pytest

from spacebot.memory import MemoryDraft, MemoryEngine, Relation

DAY = 86_400.0


def test_decay_by_age_and_access_spares_identity(engine: MemoryEngine) -> None:
    now = time.time()
    old = engine.save(MemoryDraft(content="The old build server was in Frankfurt", created_at=now - 60 * DAY))
    used = engine.save(
        MemoryDraft(content="Deploys happen through the blue pipeline", created_at=now - 60 * DAY)
    )
    me = engine.save(MemoryDraft(content="I am Spacebot", type="identity", created_at=now - 600 * DAY))
    engine.store.cursor().execute("UPDATE memories SET access_count = 10 WHERE id = ?", [used.id])
    report = engine.decay(now=now)
    assert report.changed == 2
    half_life = engine.config.decay_half_life_days
    assert engine.get(old.id).importance == pytest.approx(0.6 * 0.5 ** (60 / half_life), rel=1e-6)
    slower = half_life * (1 + engine.config.decay_access_bonus * 10)
    assert engine.get(used.id).importance == pytest.approx(0.6 * 0.5 ** (60 / slower), rel=1e-6)
    assert engine.get(me.id).importance == 1.0
    # The same span is not decayed twice.
    engine.decay(now=now)
    assert engine.get(old.id).importance == pytest.approx(0.6 * 0.5 ** (60 / half_life), rel=1e-6)


def test_prune_below_floor_identity_exempt(engine: MemoryEngine) -> None:
    low = engine.save(MemoryDraft(content="Someone mentioned the weather once", importance=0.01))
    keep = engine.save(MemoryDraft(content="The weather station is on the roof", importance=0.5))
    me = engine.save(
        MemoryDraft(content="My name is Spacebot and I like weather", type="identity", importance=0.01)
    )
    report = engine.prune()
    assert report.changed == 1
    assert (
        engine.get(low.id).forgotten and not engine.get(keep.id).forgotten and not engine.get(me.id).forgotten
    )
    hits = engine.recall("weather", limit=10)
    assert low.id not in [h.memory.id for h in hits]
    assert {keep.id, me.id} <= {h.memory.id for h in hits}


def test_merge_near_duplicates(engine: MemoryEngine) -> None:
    a = engine.save_many(
        [MemoryDraft(content="The standup meeting is at 9:30 every weekday", importance=0.9)]
    )[0]
    b = engine.save_many(
        [MemoryDraft(content="The standup meeting is at 9:30 every weekday.", importance=0.4)], link=False
    )[0]
    c = engine.save(MemoryDraft(content="Lunch is usually at noon in the cafeteria"))
    report = engine.merge_duplicates(threshold=0.95)
    assert report.changed == 1
    assert engine.get(a.id).forgotten and not engine.get(b.id).forgotten and not engine.get(c.id).forgotten
    assert engine.get(b.id).importance == pytest.approx(0.9)
    assert any(e.relation is Relation.UPDATES and e.source_id == b.id for e in engine.associations(a.id))
    hits = engine.recall("when is standup", limit=5)
    assert a.id not in [h.memory.id for h in hits]
