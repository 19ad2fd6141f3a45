"""The streamed-JSON field reader behind streaming replies."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from spacebot.llm.partial import StreamedField


def _feed_all(raw: str, cuts: list[int], name: str = "content") -> tuple[str, StreamedField]:
    field = StreamedField(name)
    pieces, last = [], 0
    for cut in sorted(set(c % (len(raw) + 1) for c in cuts)):
        pieces.append(raw[last:cut])
        last = cut
    pieces.append(raw[last:])
    return "".join(field.feed(p) for p in pieces), field


def test_plain_field_streams_as_it_arrives() -> None:
    field = StreamedField("content")
    assert field.feed('{"cont') == ""
    assert field.feed('ent": "Hel') == "Hel"
    assert field.feed("lo") == "lo"
    assert field.feed('"}') == ""
    assert field.done and field.value == "Hello"


def test_escapes_split_across_fragments() -> None:
    field = StreamedField("content")
    out = field.feed('{"content": "a\\')
    out += field.feed("nb \\u00")
    out += field.feed("e9 \\ud83d")
    out += field.feed('\\ude00 \\"q\\""}')
    assert out == 'a\nb é 😀 "q"'


def test_other_fields_and_nested_values_are_ignored() -> None:
    raw = '{"meta": {"content": "no"}, "list": ["content", "x"], "content": "yes", "z": "content"}'
    text, field = _feed_all(raw, [5, 17, 40])
    assert text == "yes" and field.done


@given(st.text(max_size=60), st.lists(st.integers(min_value=0, max_value=400), max_size=8))
def test_any_text_any_cuts_decodes_exactly(value: str, cuts: list[int]) -> None:
    raw = json.dumps({"emoji": "👍", "content": value, "after": 1})
    text, field = _feed_all(raw, cuts)
    assert text == value
    assert field.value == value
