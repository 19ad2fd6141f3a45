"""People in recall: a query that names someone (or one of their aliases) is also searched among
the memories by or about them. Real engine, real model, real indexes."""

from __future__ import annotations

from pathlib import Path

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine, MemoryType
from spacebot.memory.embedder import Embedder
from spacebot.memory.people import People, aliases_in, common, members_of, words

PERSON_LISTS = {"person_vector", "person_bm25_ctx"}


def test_names_match_whole_words_in_order_and_case_insensitively() -> None:
    people = People()
    people.add(
        [
            (1, {"speaker": "Ana"}),
            (2, {"people": ["Mary Jane", "Bob"]}),
            (3, {"speaker": "bob"}),
            (4, {"speaker": "X"}),  # too short to be a name
        ]
    )
    assert people.named_in("What does ANA's cat eat?") == [("ana",)]
    assert people.named_in("Banana bread") == []
    assert people.named_in("did mary jane and Bob meet") == [("mary", "jane"), ("bob",)]
    assert people.named_in("Jane Mary?") == []
    assert people.named_in("x marks the spot") == []
    assert people.members([("bob",)]) == {2, 3}
    assert people.members([("mary", "jane"), ("ana",)]) == {1, 2}


def test_aliases_stand_for_their_person_until_their_memory_is_forgotten() -> None:
    people = People()
    people.add([(1, {"speaker": "Anastasia"}), (9, {"person": "Anastasia", "aliases": ["ana_b", "Stacy"]})])
    assert people.named_in("what did ana_b say about the trip") == [("anastasia",)]
    assert people.named_in("ask Stacy") == [("anastasia",)]
    people.remove([9])
    assert people.named_in("what did ana_b say") == []
    people.remove([1])
    assert people.named_in("Anastasia") == [] and len(people) == 0


def test_metadata_that_names_nobody_is_ignored() -> None:
    assert members_of({"speaker": 3, "people": "Ana"}) == []
    assert members_of({"speaker": "Ana", "people": ["Ana", "", None, "Bo"]}) == [("ana",), ("bo",)]
    assert aliases_in({"person": "Ana", "aliases": "ana_b"}) == []
    assert aliases_in({"person": "Ana", "aliases": ["ana", "a_b"]}) == [(("a_b",), ("ana",))]
    assert words("Ana-Maria O'Neil") == ("ana", "maria", "o", "neil")


CHAT = [
    ("Ana", "I finally finished the pottery class, the bowl came out lopsided"),
    ("Ben", "Nice! I went climbing at the gym on Saturday"),
    ("Ana", "Next weekend I want to try camping by the lake"),
    ("Ben", "I spent the evening painting miniatures"),
    ("Ana", "Also started learning the violin, my neighbours hate it"),
    ("Ben", "Work was busy, the release slipped again"),
]


def _chat(engine: MemoryEngine) -> dict[str, list[int]]:
    drafts = [
        MemoryDraft(content=text, type=MemoryType.EVENT, metadata={"speaker": who}, channel="c")
        for who, text in CHAT
    ]
    by: dict[str, list[int]] = {}
    for (who, _), m in zip(CHAT, engine.save_many(drafts, chain=True), strict=True):
        by.setdefault(who, []).append(m.id)
    return by


def _person_hits(engine: MemoryEngine, query: str) -> set[int]:
    return {h.memory.id for h in engine.recall(query, limit=10, touch=False) if PERSON_LISTS & set(h.ranks)}


def test_a_query_naming_a_person_ranks_their_memories_in_the_person_lists(engine: MemoryEngine) -> None:
    by = _chat(engine)
    hits = engine.recall("What hobbies does Ana have?", limit=10, touch=False)
    ranked = {h.memory.id: h.ranks for h in hits}
    assert {i for i, r in ranked.items() if "person_vector" in r} == set(by["Ana"])
    assert not any(PERSON_LISTS & set(ranked.get(i, {})) for i in by["Ben"])
    # Without a name there are no person lists; with the source off neither.
    assert _person_hits(engine, "What hobbies do they have?") == set()
    off = engine.recall("What hobbies does Ana have?", limit=10, touch=False, sources=["vector", "bm25"])
    assert all(not PERSON_LISTS & set(h.ranks) for h in off)


def test_forgotten_memories_leave_the_person_lists(engine: MemoryEngine) -> None:
    by = _chat(engine)
    engine.forget(by["Ana"][:1])
    assert _person_hits(engine, "what does Ana do") == set(by["Ana"][1:])


def test_an_alias_memory_makes_the_alias_find_the_person_also_after_a_restart(
    tmp_path: Path, embedder: Embedder
) -> None:
    with MemoryEngine(tmp_path, MemoryConfig(), embedder=embedder) as eng:
        by = _chat(eng)
        assert _person_hits(eng, "what does potterqueen do on weekends") == set()
        alias = eng.save(
            MemoryDraft(
                content="Ana goes by potterqueen on Discord",
                type=MemoryType.IDENTITY,
                metadata={"person": "Ana", "aliases": ["potterqueen"]},
            )
        )
        assert _person_hits(eng, "what does potterqueen do on weekends") == set(by["Ana"])
    with MemoryEngine(tmp_path, MemoryConfig(), embedder=embedder) as eng:
        assert _person_hits(eng, "what does potterqueen do on weekends") == set(by["Ana"])
        assert _person_hits(eng, "anything about Ben") == set(by["Ben"])
        eng.forget([alias.id])
        assert _person_hits(eng, "what does potterqueen do on weekends") == set()


def test_an_alias_made_of_common_words_stands_for_nobody() -> None:
    """An alias like "the" (saved by a prompt-injected branch, or by an older version) would add one
    person's lists to nearly every question: the index ignores it."""
    assert common(words("the")) and common(words("What Is")) and not common(words("the Rock"))
    people = People()
    people.add([(4, {"person": "Ana", "aliases": ["the", "you", "ana_b"]})])
    assert people.named_in("what did the cat do") == []
    assert people.named_in("where is ana_b") == [("ana",)]
