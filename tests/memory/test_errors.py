from __future__ import annotations

import pytest

from spacebot.errors import SpacebotError
from spacebot.memory import MemoryDraft, MemoryEngine, MemoryInputError, MemoryStoreError


@pytest.mark.parametrize(
    ("draft", "needle"),
    [
        (MemoryDraft(content="   "), "empty"),
        (MemoryDraft(content="x" * 50_001), "cap"),
        (MemoryDraft(content="ok", type="feeling"), "unknown memory type 'feeling'"),  # type: ignore[arg-type]
        (MemoryDraft(content="ok", importance=1.5), "out of range"),
        (MemoryDraft(content="ok", follows=999), "missing memory id 999"),
    ],
)
def test_bad_drafts_are_refused_and_nothing_is_written(
    engine: MemoryEngine, draft: MemoryDraft, needle: str
) -> None:
    good = MemoryDraft(content="A valid memory in the same batch")
    with pytest.raises(MemoryInputError, match=needle) as info:
        engine.save_many([good, draft])
    assert isinstance(info.value, MemoryStoreError) and isinstance(info.value, SpacebotError)
    assert engine.count(include_forgotten=True) == 0


def test_bad_associations(engine: MemoryEngine) -> None:
    a = engine.save(MemoryDraft(content="first"))
    b = engine.save(MemoryDraft(content="second"))
    with pytest.raises(MemoryInputError, match="unknown relation 'likes'"):
        engine.associate(a.id, b.id, "likes")
    with pytest.raises(MemoryInputError, match="no memory with id 12345"):
        engine.associate(a.id, 12345, "related_to")
    with pytest.raises(MemoryInputError, match="itself"):
        engine.associate(a.id, a.id, "related_to")
    edge = engine.associate(a.id, b.id, "caused_by", 0.4)
    engine.associate(a.id, b.id, "caused_by", 0.8)
    edges = engine.associations(a.id)
    assert len(edges) == 1 and edges[0].weight == 0.8 and edge.relation.value == "caused_by"


def test_bad_recall_requests(engine: MemoryEngine) -> None:
    engine.save(MemoryDraft(content="Trains to Porto leave hourly"))
    with pytest.raises(MemoryInputError, match="needs a query"):
        engine.recall("   ")
    with pytest.raises(MemoryInputError, match="typed recall needs"):
        engine.recall(mode="typed")
    with pytest.raises(MemoryInputError, match="unknown memory type"):
        engine.recall("x", types=["nope"])
    with pytest.raises(MemoryInputError, match="limit"):
        engine.recall("x", limit=0)
    with pytest.raises(MemoryInputError, match="unknown recall mode"):
        engine.recall(mode="loudest")  # type: ignore[arg-type]


def test_query_longer_than_model_window_is_truncated(engine: MemoryEngine) -> None:
    m = engine.save(MemoryDraft(content="Trains to Porto leave hourly from the central station"))
    query = "trains to porto " + " ".join(f"word{i}" for i in range(20_000))
    hits = engine.recall(query, limit=1)
    assert hits[0].memory.id == m.id


def test_unknown_memory_id(engine: MemoryEngine) -> None:
    with pytest.raises(MemoryInputError, match="no memory with id 7"):
        engine.get(7)
