"""Cutting replies at a platform's message limit (spacebot/messaging/split.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacebot.messaging.split import split_message

FENCE_LINE = re.compile(r"^[ \t]*```.*$", re.MULTILINE)


def solid(text: str) -> str:
    """The non-whitespace content, in order."""
    return re.sub(r"\s+", "", text)


def test_short_text_is_one_part_and_blank_text_none() -> None:
    assert split_message("hello world", 2000) == ["hello world"]
    assert split_message("", 10) == []
    assert split_message(" \n\n\t ", 10) == []
    with pytest.raises(ValueError, match="limit must be >= 1"):
        split_message("x", 0)


def test_paragraph_boundary_is_preferred_over_filling_the_part() -> None:
    first = "First paragraph here. " * 3
    second = "Second one follows. And more words."
    parts = split_message(f"{first.strip()}\n\n{second}", len(first) + 20)
    assert parts == [first.strip(), second]


def test_then_lines_then_sentences_then_words() -> None:
    lines = "line one is here\nline two is here\nline three"
    assert split_message(lines, 34) == ["line one is here\nline two is here", "line three"]
    sentences = "One sentence. Two sentence here! Three?"
    assert split_message(sentences, 33) == ["One sentence. Two sentence here!", "Three?"]
    words = "alpha beta gamma delta"
    assert split_message(words, 11) == ["alpha beta", "gamma delta"]


def test_a_word_is_cut_only_when_longer_than_the_limit() -> None:
    assert split_message("short " + "x" * 12 + " end", 5) == ["short", "xxxxx", "xxxxx", "xx", "end"]


def test_code_block_that_fits_is_kept_whole() -> None:
    code = "```python\nprint('a')\n\nprint('b')\n```"
    text = "Intro paragraph that is long enough.\n\n" + code + "\n\nOutro."
    parts = split_message(text, len(code) + 5)
    assert code in parts
    assert all(len(p) <= len(code) + 5 for p in parts)


def test_long_code_block_is_cut_on_lines_and_refenced_with_its_language() -> None:
    body = [f"value_{n} = compute({n})" for n in range(30)]
    text = "Here it is:\n```python\n" + "\n".join(body) + "\n```\nDone."
    parts = split_message(text, 120)
    code_parts = [p for p in parts if "value_" in p]
    assert len(code_parts) > 2
    for part in code_parts:
        assert len(part) <= 120
        assert part.startswith("```python\n") or part.startswith("Here it is:\n```python\n"), part
        assert part.endswith("\n```"), part
        # Cut between lines: every line inside is a whole original line.
        inner = [line for line in part.split("\n") if line.startswith("value_")]
        assert inner and all(line in body for line in inner)
    assert [line for p in code_parts for line in p.split("\n") if line.startswith("value_")] == body
    assert parts[-1].endswith("Done.")


def test_unclosed_code_block_is_still_fenced_in_every_part() -> None:
    text = "```sh\n" + "\n".join(f"echo {n}" for n in range(40))
    parts = split_message(text, 60)
    assert len(parts) > 1
    assert all(p.startswith("```sh\n") and p.endswith("\n```") and len(p) <= 60 for p in parts)


def test_limit_too_small_for_fences_falls_back_to_plain_text() -> None:
    text = "```python\nabc def\n```"
    parts = split_message(text, 8)
    assert all(len(p) <= 8 for p in parts)
    assert solid("".join(parts)) == solid(text)


PROSE = st.text(alphabet="ab c.!?\n\t\u00e9\U0001f600", max_size=400)


@settings(max_examples=300, deadline=None)
@given(PROSE, st.integers(min_value=1, max_value=60))
def test_parts_respect_the_limit_and_lose_only_whitespace(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    assert all(0 < len(part) <= limit and part.strip() for part in parts)
    assert solid("".join(parts)) == solid(text)


LINE = st.text(alphabet="xy z=()", max_size=30)
CODE = st.builds(
    lambda lang, lines: f"```{lang}\n" + "\n".join(lines) + "\n```",
    st.sampled_from(["", "py", "rust"]),
    st.lists(LINE, max_size=12),
)
DOC = st.lists(st.one_of(CODE, st.text(alphabet="ab c.\n", max_size=80)), max_size=6).map("\n".join)


@settings(max_examples=300, deadline=None)
@given(DOC, st.integers(min_value=20, max_value=120))
def test_code_blocks_stay_balanced_and_lose_nothing(text: str, limit: int) -> None:
    parts = split_message(text, limit)
    for part in parts:
        assert 0 < len(part) <= limit and part.strip()
        assert len(FENCE_LINE.findall(part)) % 2 == 0, part
    # Only fence lines are added; with them removed, only whitespace differs.
    assert solid(FENCE_LINE.sub("", "\n".join(parts))) == solid(FENCE_LINE.sub("", text))
