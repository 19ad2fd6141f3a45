"""The permission rule every platform gateway applies (spacebot/messaging/bindings.py), its
configuration and ``spacebot bindings explain`` run as a user runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from spacebot.config import Binding, ConfigProblems, PlatformInstance, from_dict, load
from spacebot.messaging.bindings import Scope, decide, explain, warnings
from spacebot.testing import spacebot_cli

INSTANCE = PlatformInstance(name="main", token="t", dm_allowed_users=["dm-ok"], authority=["boss"])
BINDINGS = [
    Binding(agent="ops", platform="discord", guild="G1", channels=["C-ops"]),
    Binding(agent="support", platform="discord", guild="G1", require_mention=False),
    Binding(agent="slacker", platform="slack"),
    Binding(agent="private", platform="discord", dms=True),
]


def scope(**kw: object) -> Scope:
    fields: dict[str, object] = {
        "platform": "discord",
        "instance": "main",
        "guild": "G1",
        "channel": "C-ops",
        "author_id": "someone",
        "mentions_bot": True,
    }
    fields.update(kw)
    return Scope(**fields)  # type: ignore[arg-type]


def test_first_matching_binding_wins() -> None:
    decision = decide(scope(), INSTANCE, BINDINGS, "")
    assert (decision.agent, decision.binding, decision.drop_kind) == ("ops", 0, None)
    assert decision.accepted and "bindings[0]" in decision.reason
    # Another channel of the guild falls through to the guild-wide binding.
    decision = decide(scope(channel="C-other"), INSTANCE, BINDINGS, "")
    assert (decision.agent, decision.binding) == ("support", 1)
    # Swapping the order changes the winner: order is the rule, not specificity.
    swapped = [BINDINGS[1], BINDINGS[0]]
    assert decide(scope(), INSTANCE, swapped, "").agent == "support"


def test_thread_matches_by_its_parent_channel() -> None:
    only_ops = BINDINGS[:1]
    thread = scope(channel="T-123", parent_channel="C-ops")
    assert decide(thread, INSTANCE, only_ops, "").agent == "ops"
    elsewhere = scope(channel="T-456", parent_channel="C-general")
    decision = decide(elsewhere, INSTANCE, only_ops, "")
    assert (decision.agent, decision.drop_kind) == (None, "no_binding")


def test_instance_and_guild_must_agree_when_set() -> None:
    pinned = [Binding(agent="ops", platform="discord", instance="second")]
    assert decide(scope(), INSTANCE, pinned, "").drop_kind == "no_binding"
    assert decide(scope(instance="second"), INSTANCE, pinned, "").agent == "ops"
    assert decide(scope(guild="G2", channel="C-ops"), INSTANCE, BINDINGS[:2], "").drop_kind == "no_binding"


def test_bot_authors_are_dropped_unless_allowed() -> None:
    decision = decide(scope(author_is_bot=True), INSTANCE, BINDINGS, "main")
    assert (decision.agent, decision.drop_kind, decision.binding) == (None, "bot", None)
    allowing = PlatformInstance(name="main", token="t", allow_bots=True)
    assert decide(scope(author_is_bot=True), allowing, BINDINGS, "").agent == "ops"


def test_direct_messages_only_from_allowed_users_and_only_to_dm_bindings() -> None:
    dm = scope(guild="", channel="D-1", is_dm=True, mentions_bot=False)
    decision = decide(dm, INSTANCE, BINDINGS, "main")
    assert (decision.agent, decision.drop_kind) == (None, "dm_not_allowed")
    nobody = PlatformInstance(name="main", token="t")  # empty list: no DMs at all
    assert decide(scope(guild="", is_dm=True, author_id="dm-ok"), nobody, BINDINGS, "main").drop_kind == (
        "dm_not_allowed"
    )
    allowed = scope(guild="", channel="D-1", is_dm=True, author_id="dm-ok", mentions_bot=False)
    decision = decide(allowed, INSTANCE, BINDINGS, "")
    # The guild bindings do not take DMs; the DM binding does, and no mention is asked in a DM.
    assert (decision.agent, decision.binding) == ("private", 3)
    assert decide(allowed, INSTANCE, BINDINGS[:3], "").drop_kind == "no_binding"


def test_dm_only_binding_does_not_match_group_channels() -> None:
    dm_only = [Binding(agent="private", platform="discord", dms=True)]
    assert decide(scope(), INSTANCE, dm_only, "").drop_kind == "no_binding"
    both = [Binding(agent="private", platform="discord", dms=True, guild="G1")]
    assert decide(scope(), INSTANCE, both, "").agent == "private"


def test_default_agent_takes_unmatched_messages() -> None:
    lost = scope(guild="G9", channel="C-9")
    decision = decide(lost, INSTANCE, BINDINGS, "main")
    assert (decision.agent, decision.binding, decision.drop_kind) == ("main", None, None)
    assert "default_agent" in decision.reason
    decision = decide(lost, INSTANCE, BINDINGS, "")
    assert (decision.agent, decision.drop_kind) == (None, "no_binding")


def test_mentions_required_by_instance_unless_binding_overrides() -> None:
    quiet = scope(mentions_bot=False)
    decision = decide(quiet, INSTANCE, BINDINGS, "")
    assert (decision.agent, decision.drop_kind) == (None, "needs_mention")
    # bindings[1] sets require_mention = false.
    assert decide(scope(channel="C-other", mentions_bot=False), INSTANCE, BINDINGS, "").agent == "support"
    # ... and an override to true applies where the instance does not ask.
    relaxed = PlatformInstance(name="main", token="t", require_mention=False)
    strict = [Binding(agent="ops", platform="discord", require_mention=True)]
    assert decide(quiet, relaxed, strict, "").drop_kind == "needs_mention"
    assert decide(quiet, relaxed, BINDINGS, "").agent == "ops"
    # The default agent follows the instance's setting.
    assert decide(scope(guild="G9", mentions_bot=False), INSTANCE, [], "main").drop_kind == "needs_mention"


def test_authority_is_reported_whatever_the_decision() -> None:
    assert decide(scope(author_id="boss"), INSTANCE, BINDINGS, "").authority
    assert not decide(scope(), INSTANCE, BINDINGS, "").authority
    dropped = decide(scope(author_id="boss", mentions_bot=False), INSTANCE, BINDINGS, "")
    assert dropped.drop_kind == "needs_mention" and dropped.authority


def test_explain_walks_the_bindings_until_one_matches() -> None:
    lines = explain(scope(channel="C-other"), INSTANCE, BINDINGS, "")
    text = "\n".join(lines)
    assert "bindings[0] -> 'ops': no: channel 'C-other' is not in its channels" in text
    assert "bindings[1] -> 'support': matches" in text
    assert "bindings[2] -> 'slacker': not considered" in text
    assert "require_mention: false (from bindings[1])" in text
    bot = explain(scope(author_is_bot=True), INSTANCE, BINDINGS, "")
    assert any("dropped here" in line for line in bot) and not any("bindings[" in line for line in bot)


def test_config_problems_name_the_entry_and_line(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'agents = ["main"]\n'
        "[[messaging.discord]]\n"
        'token = "very-secret-token"\n'
        "[[messaging.discord]]\n"  # line 4: same default name, no token
        "[[messaging.slack]]\n"
        'name = "bad name"\n'
        'app_token = "xapp-secret"\n'
        "[[bindings]]\n"
        'agent = "main"\n'
        'platform = "discord"\n'
        'instance = "nope"\n'  # line 11
        "[[bindings]]\n"
        'agent = "ghost"\n'  # line 13
        'platform = "irc"\n'
    )
    with pytest.raises(ConfigProblems) as caught:
        load(path, {})
    found = {(p.key, p.where.rsplit(":", 1)[1]): p.message for p in caught.value.problems}
    assert "very-secret-token" not in str(caught.value) and "xapp-secret" not in str(caught.value)
    assert "a second [[messaging.discord]]" in found["messaging.discord[1].name", "4"]
    assert "needs token" in found["messaging.discord[1].token", "4"]
    assert "needs bot_token" in found["messaging.slack[0].bot_token", "5"]
    assert "must be 1-64" in found["messaging.slack[0].name", "6"]
    assert "no [[messaging.discord]] is named 'nope'" in found["bindings[0].instance", "11"]
    assert "not one of agents" in found["bindings[1].agent", "13"]
    assert "expected one of: 'discord'" in found["bindings[1].platform", "14"]
    assert len(found) == 7


def test_config_loads_and_warns_about_unreachable_bindings() -> None:
    config = from_dict(
        {
            "agents": ["main", "ops"],
            "messaging": {"default_agent": "main", "slack": [{"app_token": "a", "bot_token": "b"}]},
            "bindings": [
                {"agent": "ops", "platform": "slack", "channels": ["C1"]},
                {"agent": "ops", "platform": "discord"},
                {"agent": "ops", "platform": "slack", "dms": True},
            ],
        },
        {},
    )
    assert config.bindings[0].channels == ["C1"] and config.messaging.slack[0].name == "main"
    found = warnings(config)
    assert any(w.startswith("bindings[1] never matches: no enabled [[messaging.discord]]") for w in found)
    assert any(w.startswith("bindings[2] takes direct messages but dm_allowed_users is empty") for w in found)
    assert len(found) == 2
    with pytest.raises(ConfigProblems, match=r"messaging.default_agent.*'nobody' is not one of agents"):
        from_dict({"messaging": {"default_agent": "nobody"}}, {})


CLI_CONFIG = """\
agents = ["main", "ops"]

[[messaging.discord]]
token = "env:SPACEBOT_TEST_DISCORD_TOKEN"
dm_allowed_users = ["42"]

[[bindings]]
agent = "ops"
platform = "discord"
guild = "G1"
channels = ["C-ops"]
"""


def test_explain_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    config = tmp_path / "elsewhere.toml"
    config.write_text(CLI_CONFIG)
    base = ("--config", str(config), "bindings", "explain", "discord")
    run = spacebot_cli(home, *base, "--guild", "G1", "--channel", "T7", "--thread-of", "C-ops", "--mention")
    assert run.code == 0, run
    assert run.out.startswith("accepted: agent 'ops' answers, by bindings[0]"), run
    assert "thread of 'C-ops'" in run.out and "bindings[0] -> 'ops': matches" in run.out, run
    run = spacebot_cli(home, *base, "--guild", "G1", "--channel", "C-ops")
    assert run.code == 1 and run.out.startswith("dropped: bindings[0] requires a mention"), run
    run = spacebot_cli(home, *base, "--dm", "--user", "7")
    assert run.code == 1 and "direct message from '7': not in dm_allowed_users" in run.out, run
    run = spacebot_cli(home, *base, "--instance", "other", "--channel", "C-ops")
    assert run.code == 2 and "no [[messaging.discord]] instance named 'other'" in run.err, run
    config.write_text(CLI_CONFIG.replace('agent = "ops"', 'agent = "ghost"'))
    run = spacebot_cli(home, *base, "--channel", "C-ops")
    assert run.code == 2 and "bindings[0].agent" in run.err and "'ghost'" in run.err, run
