"""Every process and conversation id scheme: format/parse round trips and clear refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spacebot.ipc import ids
from spacebot.supervisor.wake import channel_spec

part = st.text(alphabet="abcXYZ019_.+-", min_size=1, max_size=30)


@pytest.mark.parametrize(
    ("conversation", "platform", "parts"),
    [
        ("web:3f9a0c1d2e4b5a6c", "web", ("3f9a0c1d2e4b5a6c",)),
        (
            "discord:81384788765712384:81384788765712385",
            "discord",
            ("81384788765712384", "81384788765712385"),
        ),
        ("discord:dm:81384788765712385", "discord", ("dm", "81384788765712385")),
        ("slack:T024BE7LD:C024BE91L", "slack", ("T024BE7LD", "C024BE91L")),
        (
            "slack:T024BE7LD:C024BE91L:1712345678.000200",
            "slack",
            ("T024BE7LD", "C024BE91L", "1712345678.000200"),
        ),
        ("telegram:-1001234567890", "telegram", ("-1001234567890",)),
        ("telegram:-1001234567890:17", "telegram", ("-1001234567890", "17")),
        ("twitch:some_streamer", "twitch", ("some_streamer",)),
        ("webhook:github:repo-42", "webhook", ("github", "repo-42")),
        ("cron:daily-digest", "cron", ("daily-digest",)),
    ],
)
def test_every_platform_scheme_parses_and_formats_back(
    conversation: str, platform: str, parts: tuple[str, ...]
) -> None:
    parsed = ids.parse_conversation(conversation)
    assert (parsed.platform, parsed.parts) == (platform, parts)
    assert str(parsed) == conversation
    assert ids.conversation(platform, *parts) == conversation
    agent, again = ids.parse_channel(ids.channel("main", conversation))
    assert (agent, str(again)) == ("main", conversation)


@given(platform=st.sampled_from(sorted(ids.SCHEMES)), data=st.data())
def test_round_trip_for_any_valid_parts(platform: str, data: st.DataObject) -> None:
    n = len(ids.SCHEMES[platform])
    parts = tuple(data.draw(st.lists(part, min_size=n, max_size=n)))
    text = ids.conversation(platform, *parts)
    assert ids.parse_conversation(text) == ids.ConversationId(platform, parts)
    assert ids.parse_channel(ids.channel("a-1", text))[1].parts == parts


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "empty"),
        ("irc:#x", "unknown platform 'irc'"),
        ("web", "expected web:<conversation>"),
        ("web:a:b", "expected web:<conversation>"),
        ("discord:1", "expected discord:<guild>:<channel>"),
        ("slack:T1:C2:1.2:x", "expected slack:<team>:<channel>:<thread>"),
        ("web:../../etc", "conversation '../../etc'"),
        ("web:a b", "must be 1-100 characters"),
        ("web:a/b", "must be 1-100 characters"),
        ("web:" + "a" * 101, "must be 1-100 characters"),
        ("twitch:" + "a" * 300, "characters (at most 200)"),
        ("telegram:1:", "topic ''"),
    ],
)
def test_malformed_conversation_ids_are_refused_by_name(bad: str, says: str) -> None:
    with pytest.raises(ids.IdError) as info:
        ids.parse_conversation(bad)
    assert says in str(info.value)
    assert not ids.is_conversation(bad)


def test_process_ids() -> None:
    assert ids.memory("main") == "memory:main"
    assert ids.cortex("main") == "cortex:main"
    assert ids.gateway("web") == "gateway:webchat"
    assert ids.gateway("discord") == "gateway:discord"
    # Platform conversations belong to an instance's gateway: named by a webhook id, else "main".
    assert ids.gateway_of("slack:T1:C2") == "gateway:slack:main"
    assert ids.gateway_of("discord:dm:42") == "gateway:discord:main"
    assert ids.gateway_of("webhook:alerts:build-7") == "gateway:webhook:alerts"
    assert ids.gateway_of("web:4f2a") == "gateway:webchat"
    assert ids.gateway_of("cron:daily", "main") == "cortex:main"
    assert ids.process("worker").startswith("worker:")
    assert ids.process("worker") != ids.process("worker")
    assert ids.new_web_conversation() != ids.new_web_conversation()
    assert ids.is_conversation(ids.new_web_conversation())
    with pytest.raises(ids.IdError, match="agent id 'a b'"):
        ids.channel("a b", "web:1")
    with pytest.raises(ids.IdError, match="expected channel:<agent>:<conversation>"):
        ids.parse_channel("worker:ab12")


def test_only_well_formed_conversations_of_configured_agents_are_woken() -> None:
    spec = channel_spec("channel:main:slack:T1:C2:1712.5", ["main"])
    assert spec is not None and spec.args == {"agent": "main", "conversation": "slack:T1:C2:1712.5"}
    assert channel_spec("channel:other:web:1", ["main"]) is None
    assert channel_spec("channel:main:web:a/b", ["main"]) is None
    assert channel_spec("channel:main:irc:x", ["main"]) is None
    assert channel_spec("worker:main", ["main"]) is None


def test_delegate_ids_name_branches_and_workers_only() -> None:
    assert ids.is_delegate(ids.process("worker")) and ids.is_delegate("branch:ab12")
    assert not any(ids.is_delegate(x) for x in ("worker:", "agent:main", "u1", "channel:main:web:1", ""))
