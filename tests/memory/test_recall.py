from __future__ import annotations

import threading
from pathlib import Path

import pytest

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine, MemoryType, Relation
from spacebot.memory.embedder import Embedder
from spacebot.memory.recall import rrf

FACTS = [
    ("The production database runs PostgreSQL 16 on a dedicated server", "fact", "ops"),
    ("Maria prefers short status updates in the morning", "preference", "team"),
    ("We decided to ship the mobile app in March", "decision", "team"),
    ("I am Spacebot, the team's helpful assistant", "identity", None),
    ("Release 2.3 shipped on Tuesday with the new billing page", "event", "ops"),
    ("Build times doubled after the dependency upgrade", "observation", "ops"),
    ("Reach one thousand weekly active users by summer", "goal", "team"),
    ("Rotate the API keys before Friday", "todo", "ops"),
]


def _fill(engine: MemoryEngine) -> dict[str, int]:
    ids = {}
    for i, (content, mtype, channel) in enumerate(FACTS):
        m = engine.save(
            MemoryDraft(content=content, type=MemoryType(mtype), channel=channel, created_at=1000.0 + i)
        )
        ids[mtype] = m.id
    return ids


def test_hybrid_round_trip_reports_sources(engine: MemoryEngine) -> None:
    ids = _fill(engine)
    hits = engine.recall("which database does production use?", limit=3)
    assert hits[0].memory.id == ids["fact"]
    top = hits[0]
    assert {"vector", "bm25"} <= set(top.ranks)
    assert top.ranks["vector"] == 1 and top.scores["vector"] > 0.3
    assert top.score > hits[1].score
    again = engine.get(ids["fact"])
    assert again.access_count == 1 and again.last_accessed_at > again.created_at


def test_recent_important_typed_and_filters(engine: MemoryEngine) -> None:
    ids = _fill(engine)
    recent = engine.recall(mode="recent", limit=2)
    assert [h.memory.id for h in recent] == [ids["todo"], ids["goal"]]
    important = engine.recall(mode="important", limit=1)
    assert important[0].memory.type is MemoryType.IDENTITY
    typed = engine.recall(mode="typed", types=["decision", "goal"], limit=10)
    assert {h.memory.type for h in typed} == {MemoryType.DECISION, MemoryType.GOAL}
    typed_q = engine.recall("mobile app launch", mode="typed", types=["decision"], limit=10)
    assert [h.memory.id for h in typed_q] == [ids["decision"]]
    ops = engine.recall("anything that happened", limit=10, channel="ops")
    assert ops and all(h.memory.channel == "ops" for h in ops)
    assert len(ops) == 4
    only_events = engine.recall("release", types=["event"], limit=5)
    assert [h.memory.id for h in only_events] == [ids["event"]]


def test_graph_walk_finds_memory_sharing_no_words(engine: MemoryEngine) -> None:
    a = engine.save(MemoryDraft(content="Project Falcon migrates the billing service next quarter"))
    b = engine.save(MemoryDraft(content="Kestrel owns invoices; Olga leads it"))
    engine.save(MemoryDraft(content="The office coffee machine is broken again"))
    engine.associate(b.id, a.id, "part_of", 0.9)
    query = "when does falcon migrate"
    assert not set(query.split()) & set(b.content.lower().split())
    without = engine.recall(query, sources=("bm25",), limit=5)
    assert b.id not in [h.memory.id for h in without]
    hits = engine.recall(query, sources=("bm25", "graph"), limit=5)
    found = {h.memory.id: h for h in hits}
    assert hits[0].memory.id == a.id
    assert b.id in found and set(found[b.id].ranks) == {"graph"}
    assert found[b.id].scores["graph"] == pytest.approx(0.9)


def test_rrf_order_on_hand_made_lists() -> None:
    lists = {"a": [(1, 0.9), (2, 0.8), (3, 0.7)], "b": [(3, 5.0), (1, 4.0), (4, 3.0)]}
    fused = rrf(lists, k=60)
    assert [i for i, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert fused[1][1] == pytest.approx(1 / 63 + 1 / 61)
    weighted = rrf(lists, k=60, weights={"a": 0.0, "b": 1.0})
    assert [i for i, _ in weighted][:3] == [3, 1, 4]


def test_sequence_context_finds_the_answer_turn(engine: MemoryEngine) -> None:
    turns = [
        ("Ana", "Did you ever adopt that rescue greyhound?"),
        ("Ben", "Yes! Her name is Pixel and she loves naps."),
        ("Ana", "Lovely. How is the new job going?"),
        ("Ben", "Busy, lots of travel to Lisbon."),
    ]
    drafts = [MemoryDraft(content=t, metadata={"speaker": s, "date": "3 May 2023"}) for s, t in turns]
    saved = engine.save_many(drafts, chain=True)
    assert [m.follows for m in saved] == [None, saved[0].id, saved[1].id, saved[2].id]
    hits = engine.recall("rescue greyhound adopt", sources=("bm25_ctx",), limit=3)
    ranked = [h.memory.id for h in hits]
    assert saved[1].id in ranked[:2]
    assert "bm25" not in hits[0].ranks
    plain = engine.recall("rescue greyhound adopt", sources=("bm25",), limit=3)
    assert saved[1].id not in [h.memory.id for h in plain]


def test_save_links_neighbours_and_supersedes_duplicates(tmp_path: Path, embedder: Embedder) -> None:
    cfg = MemoryConfig(link_threshold=0.5, duplicate_threshold=0.9)
    with MemoryEngine(tmp_path, cfg, embedder=embedder) as eng:
        old = eng.save(MemoryDraft(content="Maria prefers tea in the morning", type="preference"))
        rel = eng.save(MemoryDraft(content="Maria likes drinking green tea", type="fact"))
        dup = eng.save(MemoryDraft(content="Maria prefers tea in the mornings", type="preference"))
        edges = {(e.source_id, e.target_id, e.relation) for e in eng.associations(dup.id)}
        assert (dup.id, old.id, Relation.UPDATES) in edges
        assert any(
            e.source_id == rel.id and e.relation is Relation.RELATED_TO for e in eng.associations(rel.id)
        )
        assert eng.get(old.id).importance == pytest.approx(0.7 * cfg.superseded_factor)
        assert eng.get(dup.id).importance == pytest.approx(0.7)


def test_reads_do_not_wait_behind_a_write(engine: MemoryEngine) -> None:
    ids = _fill(engine)
    held, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with engine.store.write_lock:
            held.set()
            release.wait(60)

    writer = threading.Thread(target=long_write)
    writer.start()
    assert held.wait(10)
    try:
        hits = engine.recall("database server", limit=1)
        assert hits[0].memory.id == ids["fact"]
        assert engine.get(ids["fact"]).access_count == 0  # deferred, not waited for
    finally:
        release.set()
        writer.join(10)
    engine.save(MemoryDraft(content="A later write applies the deferred access count"))
    assert engine.get(ids["fact"]).access_count == 1


def test_forget_hides_but_keeps(engine: MemoryEngine) -> None:
    ids = _fill(engine)
    assert engine.forget([ids["fact"]]) == 1
    assert engine.forget([ids["fact"]]) == 0
    hits = engine.recall("production database PostgreSQL", limit=8)
    assert ids["fact"] not in [h.memory.id for h in hits]
    assert engine.get(ids["fact"]).forgotten
    assert engine.count() == len(FACTS) - 1 and engine.count(include_forgotten=True) == len(FACTS)


def test_context_of_earlier_memory_is_refreshed_when_a_follower_arrives(engine: MemoryEngine) -> None:
    first = engine.save(MemoryDraft(content="What should we name the new build server?"))
    engine.save(MemoryDraft(content="Unrelated: the printer is out of toner"))
    hits = engine.recall("quokka", sources=("bm25_ctx",), limit=5)
    assert hits == []
    reply = engine.save(MemoryDraft(content="Let's call it quokka", follows=first.id))
    ranked = [h.memory.id for h in engine.recall("quokka", sources=("bm25_ctx",), limit=5)]
    assert ranked[0] == reply.id and first.id in ranked
    assert first.id not in [h.memory.id for h in engine.recall("quokka", sources=("bm25",), limit=5)]


def test_concurrent_saves_and_recalls_from_threads(engine: MemoryEngine) -> None:
    errors: list[BaseException] = []
    saved: list[int] = []
    lock = threading.Lock()

    def writer(n: int) -> None:
        try:
            for k in range(10):
                m = engine.save(MemoryDraft(content=f"Thread {n} wrote note {k} about the harbour crane"))
                with lock:
                    saved.append(m.id)
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for _ in range(20):
                engine.recall("harbour crane note", limit=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)] + [
        threading.Thread(target=reader)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert not errors
    assert len(set(saved)) == 30 and engine.count() == 30
    assert len(engine.vectors) == 30 and engine.text.num_docs() == 30


def test_process_runs_are_recorded(engine: MemoryEngine) -> None:
    run = engine.store.record_run_start("channel:main:web:1", "channel", {"pid": 42})
    engine.store.record_run_end(run, 0)
    row = engine.store.cursor().execute("SELECT proc_id, exit_code, ended_at FROM process_runs").fetchone()
    assert row is not None and row[0] == "channel:main:web:1" and row[1] == 0 and row[2] is not None


def test_results_cross_the_bus_as_msgpack(engine: MemoryEngine) -> None:
    import msgspec

    from spacebot.memory import RecallHit

    _fill(engine)
    hits = engine.recall("API keys rotation", limit=2)
    wire = msgspec.msgpack.encode(hits)
    back = msgspec.msgpack.decode(wire, type=list[RecallHit])
    assert back == hits and back[0].memory.type is MemoryType.TODO


def test_context_window_reaches_two_turns_away(tmp_path: Path, embedder: Embedder) -> None:
    cfg = MemoryConfig(context_window=2)
    with MemoryEngine(tmp_path, cfg, embedder=embedder) as eng:
        chain = eng.save_many(
            [
                MemoryDraft(content="Has anyone tried the new espresso grinder?"),
                MemoryDraft(content="Not yet."),
                MemoryDraft(content="I did, it is great."),
                MemoryDraft(content="Good to know."),
            ],
            chain=True,
        )
        later = eng.save(MemoryDraft(content="See you tomorrow.", follows=chain[3].id))
        ranked = {h.memory.id for h in eng.recall("espresso grinder", sources=("bm25_ctx",), limit=10)}
        assert ranked == {chain[0].id, chain[1].id, chain[2].id}
        ranked = {h.memory.id for h in eng.recall("tomorrow", sources=("bm25_ctx",), limit=10)}
        assert ranked == {later.id, chain[3].id, chain[2].id}


@pytest.mark.parametrize("span", [0, 1])
def test_graph_adds_the_turns_around_the_top_hits(tmp_path: Path, embedder: Embedder, span: int) -> None:
    # No associations (link threshold above 1): the graph list holds sequence neighbours only.
    cfg = MemoryConfig(graph_sequence=span, graph_seeds=1, link_threshold=1.1, duplicate_threshold=1.1)
    with MemoryEngine(tmp_path, cfg, embedder=embedder) as eng:
        chain = eng.save_many(
            [
                MemoryDraft(content="Has anyone tried the new espresso grinder?"),
                MemoryDraft(content="Yes, it is great."),
                MemoryDraft(content="Good to know."),
            ],
            chain=True,
        )
        hits = eng.recall("espresso grinder", sources=("bm25", "graph"), limit=10)
        found = {h.memory.id: h for h in hits}
        assert hits[0].memory.id == chain[0].id
        if span:
            assert found[chain[1].id].ranks == {"graph": 1}
            assert set(found) == {chain[0].id, chain[1].id}
        else:
            assert set(found) == {chain[0].id}


def test_config_refuses_a_negative_graph_sequence() -> None:
    with pytest.raises(ValueError, match="graph_sequence"):
        MemoryConfig(graph_sequence=-1)
    assert MemoryConfig(graph_sequence=0).graph_sequence == 0


def test_further_queries_are_recalled_and_fused(engine: MemoryEngine) -> None:
    ids = _fill(engine)
    one = engine.recall("what did the team decide", limit=3, touch=False)
    assert all(set(h.ranks) - {"query_1", "query_2"} for h in one)
    assert not any("query_1" in h.ranks for h in one)
    both = engine.recall("what did the team decide", queries=["rotate API keys"], limit=3, touch=False)
    by_id = {h.memory.id: h for h in both}
    assert ids["todo"] in by_id and "query_2" in by_id[ids["todo"]].ranks
    assert by_id[ids["todo"]].ranks["query_2"] == 1
    # The same query twice ranks like the query alone.
    twice = engine.recall(
        "which database does production use?", queries=["which database does production use?"]
    )
    assert [h.memory.id for h in twice][:3] == [
        h.memory.id for h in engine.recall("which database does production use?", limit=3, touch=False)
    ]


def test_edges_are_read_through_both_indexes_and_returned_once(engine: MemoryEngine) -> None:
    from spacebot.memory.graph import edges_of

    a, b, c = (engine.save(MemoryDraft(content=t)).id for t in ("alpha one", "beta two", "gamma three"))
    engine.associate(a, b, "related_to", 0.5)
    engine.associate(b, c, "caused_by", 0.7)
    got = edges_of(engine.store, [a, b])
    assert sorted((e.source_id, e.target_id, e.relation.value) for e in got) == [
        (a, b, "related_to"),
        (b, c, "caused_by"),
    ]
    names = {
        r[0] for r in engine.store.cursor().execute("SELECT index_name FROM duckdb_indexes()").fetchall()
    }
    assert {"associations_source_idx", "associations_target_idx"} <= names
