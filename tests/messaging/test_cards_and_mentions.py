"""The reply tool's ``card`` (checked, drawn for each platform, plain text elsewhere) and ``@Name``
mentions (a bounded map of who wrote where)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spacebot.ipc.messages import Card, CardField
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging import cards
from spacebot.messaging.mentions import People
from spacebot.messaging.slack_adapter import escape
from spacebot.testing import ChatSystem
from spacebot.tools.errors import ToolArgumentError


@pytest.mark.parametrize(
    ("card", "error"),
    [
        ("a string", "must be an object"),
        ({}, "needs a title, a text or at least one field"),
        ({"title": "x", "colour": "#fff"}, "unknown key 'colour'"),
        ({"title": "x" * 257}, "'title' must be at most 256 characters, got 257"),
        ({"text": 5}, "'text' must be a string, got int"),
        ({"title": "x", "url": "javascript:alert(1)"}, "'url' must be an http:// or https://"),
        ({"title": "x", "color": "green"}, "'color' must be '#RRGGBB'"),
        ({"fields": "a: b"}, "'fields' must be an array"),
        ({"fields": [{"name": "a"}]}, "fields[0]: 'value' is required"),
        ({"fields": [{"name": "a", "value": "b", "inline": True}]}, "fields[0] must be an object"),
        ({"fields": [{"name": "a", "value": "b"}] * 26}, "at most 25 fields, got 26"),
        ({"fields": [{"name": "a", "value": "v" * 1025}]}, "fields[0]: 'value' must be at most 1024"),
        ({"text": "t" * 4000, "fields": [{"name": "n", "value": "v" * 1000}] * 2}, "6002 characters in all"),
    ],
)
def test_a_bad_card_is_refused_naming_what_is_wrong(card: Any, error: str) -> None:
    with pytest.raises(ToolArgumentError, match=r"^reply: argument 'card'") as info:
        cards.parse(card)
    assert error in str(info.value)


def test_a_card_is_parsed_and_drawn_for_each_platform() -> None:
    card = cards.parse(
        {
            "title": "Build 42",
            "text": "All green.",
            "fields": [{"name": "Tests", "value": "120 passed"}],
            "url": "https://ci.example/42",
            "color": "#22aa55",
        }
    )
    assert card == Card(
        title="Build 42",
        text="All green.",
        fields=[CardField("Tests", "120 passed")],
        url="https://ci.example/42",
        color=0x22AA55,
    )
    stored = cards.with_card("Here it is.", card)
    assert stored == "Here it is.\n\n**Build 42**\nhttps://ci.example/42\nAll green.\n**Tests:** 120 passed"
    assert cards.without_card(stored, card) == "Here it is."
    assert cards.without_card(cards.with_card("", card), card) == ""
    assert cards.without_card(stored[:20], card) is None  # cut: shown as stored
    assert cards.discord_embed(card) == {
        "type": "rich",
        "title": "Build 42",
        "description": "All green.",
        "url": "https://ci.example/42",
        "color": 0x22AA55,
        "fields": [{"name": "Tests", "value": "120 passed", "inline": False}],
    }


def test_slack_blocks_keep_within_slacks_limits() -> None:
    card = Card(
        title="T" * 200,
        text="x" * 4000,
        fields=[CardField(f"n{i}", "v") for i in range(25)],
    )
    blocks = cards.slack_blocks(card, escape)
    header, *rest = blocks
    assert header["type"] == "header" and len(header["text"]["text"]) == cards.SLACK_HEADER_MAX
    texts = [b["text"]["text"] for b in rest if "text" in b]
    assert "".join(texts) == "x" * 4000 and all(len(t) <= cards.SLACK_SECTION_MAX for t in texts)
    field_sections = [b["fields"] for b in rest if "fields" in b]
    assert [len(f) for f in field_sections] == [10, 10, 5]


def test_at_names_of_people_seen_become_mentions_longest_name_first() -> None:
    people = People()
    people.seen("c1", "Ana", "1")
    people.seen("c1", "Ana Maria", "2")
    people.seen("c2", "ben", "3")
    link = people.link("c1", "@ana, @Ana Maria, @ben, mail@ana.org, @Anabel, @everyone", lambda i: f"<@{i}>")
    assert link == "<@1>, <@2>, @ben, mail@ana.org, @Anabel, @everyone"
    people.inherit("thread", "c1")
    assert people.link("thread", "@Ana Maria", lambda i: f"<@{i}>") == "<@2>"


def test_at_names_in_code_stay_as_written() -> None:
    people = People()
    people.seen("c1", "Ana", "1")
    text = "Ask @Ana: run `git blame @Ana` or\n```\nnotify @Ana\n```\nthen @Ana again; ```@Ana unclosed"
    assert people.link("c1", text, lambda i: f"<@{i}>") == (
        "Ask <@1>: run `git blame @Ana` or\n```\nnotify @Ana\n```\nthen <@1> again; ```@Ana unclosed"
    )


def test_the_map_of_names_is_bounded() -> None:
    people = People(names_per_chat=2, chats=2)
    for name, uid in (("a", "1"), ("b", "2"), ("c", "3")):
        people.seen("c1", name, uid)
    assert people.link("c1", "@a @b @c", str) == "@a 2 3"  # the least recently seen is forgotten
    people.seen("c2", "x", "9")
    people.seen("c3", "y", "8")
    assert people.link("c1", "@b", str) == "@b"  # and so is the least recently active chat
    assert people.link("c3", "@y", str) == "8"


def test_slack_escape_keeps_user_mentions_only() -> None:
    assert escape("<@U0ADA> <!channel> <!here> <#C1> <@U0ADA|x> a&b") == (
        "<@U0ADA> &lt;!channel&gt; &lt;!here&gt; &lt;#C1&gt; &lt;@U0ADA|x&gt; a&amp;b"
    )


async def test_the_web_chat_shows_a_card_as_text_and_ignores_a_thread_name(short_tmp: Path) -> None:
    card = {"title": "Build 42", "fields": [{"name": "Tests", "value": "120 passed"}]}
    call = FakeToolCall("reply", {"content": "Here.", "card": card, "thread_name": "Build"})
    async with FakeLLM() as llm:
        llm.add(user="report", tool_calls=[call])
        async with ChatSystem(short_tmp, llm) as system:
            ana = await system.client("Ana")
            conv = await ana.create("builds")
            await ana.open(conv)
            await ana.send(conv, "report please")
            final = await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["role"] == "assistant", timeout=60.0
            )
            assert final["message"]["text"] == "Here.\n\n**Build 42**\n**Tests:** 120 passed"
            assert final["conversation"] == conv
