from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import msgspec
import pytest

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine, MemoryType
from spacebot.memory.embedder import Embedder
from spacebot.memory.engine import document_text
from spacebot.memory.temporal import annotate, expand_query, notes, parse_day, resolve

MONDAY = date(2023, 5, 8)
"""LoCoMo's first session: 1:56 pm on 8 May, 2023 (a Monday)."""


def _utc(y: int, m: int, d: int, h: int = 12, minute: int = 0) -> float:
    return datetime(y, m, d, h, minute, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "said", "iso", "label"),
    [
        (
            "I went to a LGBTQ support group yesterday and it was so powerful.",
            "yesterday",
            "2023-05-07",
            "7 May 2023",
        ),
        ("Last night we saw a play", "last night", "2023-05-07", "7 May 2023"),
        ("I ran a charity race last Saturday", "last saturday", "2023-05-06", "6 May 2023"),
        ("We talked last Tuesday", "last tuesday", "2023-05-02", "2 May 2023"),
        ("Gonna go next Tues", "next tues", "2023-05-09", "9 May 2023"),
        ("Are you free this coming Friday?", "this coming friday", "2023-05-12", "12 May 2023"),
        ("I painted it two days ago", "two days ago", "2023-05-06", "6 May 2023"),
        ("I adopted him 3 weeks ago", "3 weeks ago", "2023-04-17", "17 April 2023"),
        ("the day before yesterday was rough", "the day before yesterday", "2023-05-06", "6 May 2023"),
        ("see you the day after tomorrow", "the day after tomorrow", "2023-05-10", "10 May 2023"),
        ("Last week I went camping", "last week", "2023-05-01/2023-05-07", "week of 1 May 2023"),
        ("We're moving next week", "next week", "2023-05-15/2023-05-21", "week of 15 May 2023"),
        ("We went hiking last weekend", "last weekend", "2023-05-06/2023-05-07", "weekend of 6 May 2023"),
        ("this past weekend was fun", "this past weekend", "2023-05-06/2023-05-07", "weekend of 6 May 2023"),
        (
            "two weekends ago we camped",
            "two weekends ago",
            "2023-04-29/2023-04-30",
            "weekend of 29 April 2023",
        ),
        ("I'm going to a conference next month", "next month", "2023-06-01/2023-06-30", "June 2023"),
        ("a couple of months ago I started", "a couple of months ago", "2023-03-01/2023-03-31", "March 2023"),
        ("Last year's trip was the best", "last year", "2022-01-01/2022-12-31", "2022"),
        ("my 18th birthday ten years ago", "ten years ago", "2013-01-01/2013-12-31", "2013"),
        ("I saw them last May", "last may", "2022-05-01/2022-05-31", "May 2022"),
        ("We married last December", "last december", "2022-12-01/2022-12-31", "December 2022"),
    ],
)
def test_relative_expressions_resolve_against_the_reference_day(
    text: str, said: str, iso: str, label: str
) -> None:
    [span] = resolve(text, MONDAY)
    assert (span.said, span.iso(), span.label()) == (said, iso, label)


@pytest.mark.parametrize(
    "text",
    [
        "May I ask what you think?",
        "She came second place in the race",
        "Now that you mention it, I do remember",
        "We met on Wednesday",  # a bare weekday: past or future?
        "We went there recently, the other day",
        "A few weeks ago it rained",  # vague
        "Two weeks before the trip I packed",  # relative to another event
        "The cat this sat on was mine",
        "Over the last year I have grown",  # a duration, not the calendar year
        "In the past week it rained",
        "The next month will be busy",
        "That was the last one, see you next time",
        "at last may we rest",  # a month name only when capitalised
    ],
)
def test_ordinary_words_do_not_resolve(text: str) -> None:
    assert resolve(text, MONDAY) == []


def test_spans_cross_month_and_year_boundaries() -> None:
    assert [s.iso() for s in resolve("next month, last week", date(2023, 12, 15))] == [
        "2024-01-01/2024-01-31",
        "2023-12-04/2023-12-10",
    ]
    assert [s.iso() for s in resolve("last month and last week", date(2024, 1, 3))] == [
        "2023-12-01/2023-12-31",
        "2023-12-25/2023-12-31",
    ]
    tuesday = date(2023, 5, 9)
    assert [s.iso() for s in resolve("last Tuesday, next Tuesday, this Friday", tuesday)] == [
        "2023-05-02",
        "2023-05-16",
        "2023-05-12",
    ]


def test_repeats_are_returned_once_in_order() -> None:
    spans = resolve("Yesterday? yes, yesterday. And last week.", MONDAY)
    assert [s.said for s in spans] == ["yesterday", "last week"]


def test_parse_day_reads_the_usual_formats() -> None:
    assert parse_day("1:56 pm on 8 May, 2023") == MONDAY
    assert parse_day("2023-05-08T13:56:00") == MONDAY
    assert parse_day("May 8, 2023") == MONDAY
    assert parse_day("8th Sept 2023") == date(2023, 9, 8)
    assert parse_day("31 February, 2023") is None
    assert parse_day("sometime last spring") is None


def test_annotate_prefers_the_stated_date_and_skips_same_day_words() -> None:
    meta = {"speaker": "Caroline", "date": "1:56 pm on 8 May, 2023"}
    out = annotate("Today I remembered what happened yesterday", meta, _utc(2024, 1, 1))
    assert out == {**meta, "dates": {"yesterday": "2023-05-07"}}
    assert meta == {"speaker": "Caroline", "date": "1:56 pm on 8 May, 2023"}  # not modified
    assert annotate("nothing relative here", meta, None) is meta
    assert annotate("yesterday", {}, None) == {}  # no reference: nothing resolved
    # Without a stated date the time it was said counts, read in the configured zone.
    late = _utc(2023, 5, 8, 23, 30)
    assert annotate("yesterday", {}, late, "UTC")["dates"] == {"yesterday": "2023-05-07"}
    assert annotate("yesterday", {}, late, "Asia/Tokyo")["dates"] == {"yesterday": "2023-05-08"}
    assert annotate("today", {}, late, "UTC")["dates"] == {"today": "2023-05-08"}


def test_notes_render_the_stored_dates() -> None:
    meta = {
        "dates": {
            "yesterday": "2023-05-07",
            "last week": "2023-05-01/2023-05-07",
            "next month": "2023-06-01/2023-06-30",
        }
    }
    assert notes(meta) == "(yesterday = 7 May 2023; last week = week of 1 May 2023; next month = June 2023)"
    assert notes({}) == "" and notes({"dates": ["2023-05-07"]}) == ""
    assert (
        document_text(
            "I went yesterday",
            {"speaker": "Ana", "date": "8 May, 2023", "dates": {"yesterday": "2023-05-07"}},
        )
        == "[8 May, 2023] Ana: I went yesterday (yesterday = 7 May 2023)"
    )


def test_expand_query() -> None:
    assert expand_query("what did Ana do last week", MONDAY) == (
        "what did Ana do last week (last week = week of 1 May 2023)"
    )
    assert expand_query("what does Ana like", MONDAY) == "what does Ana like"


def test_config_checks_the_zone() -> None:
    with pytest.raises(msgspec.ValidationError, match="date_timezone"):
        msgspec.convert({"date_timezone": "Mars/Olympus"}, MemoryConfig)


@pytest.fixture
def dated_engine(tmp_path: Path, embedder: Embedder) -> Iterator[MemoryEngine]:
    eng = MemoryEngine(
        tmp_path / "data", MemoryConfig(resolve_dates=True, date_timezone="UTC"), embedder=embedder
    )
    yield eng
    eng.close()


def test_save_resolves_dates_into_metadata_and_index_not_content(dated_engine: MemoryEngine) -> None:
    engine = dated_engine
    said = "I went to a support group yesterday"
    saved = engine.save_many(
        [
            MemoryDraft(
                content=said,
                type=MemoryType.EVENT,
                metadata={"speaker": "Caroline", "date": "1:56 pm on 8 May, 2023"},
            ),
            MemoryDraft(
                content="The support group meets every week",
                metadata={"speaker": "Melanie", "date": "1:56 pm on 8 May, 2023"},
            ),
            MemoryDraft(content="We shipped the release two days ago", created_at=_utc(2023, 6, 20)),
            MemoryDraft(content="Yesterday the build broke", source="ingest:notes.md"),
        ]
    )
    assert saved[0].content == said
    assert saved[0].metadata["dates"] == {"yesterday": "2023-05-07"}
    assert "dates" not in saved[1].metadata
    assert saved[2].metadata["dates"] == {"two days ago": "2023-06-18"}
    assert "dates" not in saved[3].metadata  # an ingested document: when it was written is unknown
    # The absolute date is searchable: only the first memory's indexed text holds a 7.
    hits = engine.recall("what happened on 7 May 2023", sources=("bm25",), limit=5, touch=False)
    assert hits[0].memory.id == saved[0].id
    hits = engine.recall("release on June 18, 2023", sources=("bm25",), limit=5, touch=False)
    assert hits[0].memory.id == saved[2].id


def test_indexed_dates_survive_a_rebuild_of_the_text_index(tmp_path: Path, embedder: Embedder) -> None:
    cfg = MemoryConfig(resolve_dates=True)
    with MemoryEngine(tmp_path / "data", cfg, embedder=embedder) as engine:
        m = engine.save(MemoryDraft(content="We met yesterday", metadata={"date": "8 May, 2023"}))
    for path in sorted((tmp_path / "data" / "text").iterdir()):
        if path.is_file():
            path.unlink()
    # The note is rebuilt from the stored metadata, even with resolution now switched off.
    with MemoryEngine(tmp_path / "data", MemoryConfig(), embedder=embedder) as engine:
        hits = engine.recall("7 May 2023", sources=("bm25",), limit=3, touch=False)
        assert [h.memory.id for h in hits] == [m.id]


def test_query_dates_resolve_against_as_of(dated_engine: MemoryEngine) -> None:
    engine = dated_engine
    may = engine.save(MemoryDraft(content="Ana painted the fence", metadata={"date": "2 May, 2023"}))
    june = engine.save(MemoryDraft(content="Ana painted the garage", metadata={"date": "20 June, 2023"}))
    query = "what did Ana paint last week"
    early = engine.recall(query, sources=("bm25",), limit=2, touch=False, as_of=_utc(2023, 5, 9))
    late = engine.recall(query, sources=("bm25",), limit=2, touch=False, as_of=_utc(2023, 6, 27))
    assert [h.memory.id for h in early] == [may.id, june.id]
    assert [h.memory.id for h in late] == [june.id, may.id]


def test_resolution_is_off_by_default(engine: MemoryEngine) -> None:
    m = engine.save(MemoryDraft(content="I went there yesterday", metadata={"date": "8 May, 2023"}))
    assert "dates" not in m.metadata
