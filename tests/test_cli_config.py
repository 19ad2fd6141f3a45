"""``spacebot config check`` and the one config-loading path, run as a user runs them: a real
``spacebot`` process with a temporary home, its exit code and what it prints."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spacebot.testing import spacebot_cli as spacebot


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


LLM = """\
[llm]
profile = "balanced"
[llm.providers.an]
kind = "anthropic"
api_key = "env:SPACEBOT_TEST_AN_KEY"
[llm.providers.oa]
kind = "openai"
api_key = "secret:OPENAI"
[llm.providers.lit]
kind = "openai"
api_key = "sk-literal-never-printed"
[llm.profiles.balanced]
light = "an/haiku"
standard = "an/sonnet"
strong = "an/opus"
[llm.fallbacks]
"an/opus" = ["oa/gpt-4.1"]
"an/sonnet" = ["lit/gpt-4o"]
"""


def test_missing_config_file_named_by_option_or_variable_is_an_error(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    run = spacebot(home, "--config", str(missing), "config", "check")
    assert run.code == 1, run
    assert f"{missing}: config file named by --config does not exist" in run.err, run
    assert "config ok" not in run.out
    run = spacebot(home, "config", "check", SPACEBOT_CONFIG=str(missing))
    assert run.code == 1 and f"{missing}: config file named by SPACEBOT_CONFIG" in run.err, run
    run = spacebot(home, "--config", str(missing), "routing", "explain", "--process", "channel", "hi")
    assert run.code == 2 and str(missing) in run.err, run
    # Only the default file may be absent.
    run = spacebot(home, "config", "check")
    assert run.code == 0 and "config ok: (no file: defaults and environment)" in run.out, run


def test_routing_explain_reads_the_global_config(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text(LLM)
    run = spacebot(home, "--config", str(config), "routing", "explain", "--process", "channel", "x" * 500)
    assert run.code == 0, run
    assert run.out.splitlines()[0] == "model:   an/sonnet"
    assert "chain:   an/sonnet -> lit/gpt-4o" in run.out
    # The subcommand's own --config means the same.
    run = spacebot(home, "routing", "explain", "--config", str(config), "--process", "worker", "x" * 500)
    assert run.code == 0 and "model:   an/sonnet" in run.out, run
    # Without either, the home's config.toml (here none, and no model in the environment).
    run = spacebot(home, "routing", "explain", "--process", "channel", "x")
    assert run.code == 2 and "no model configured" in run.err, run


def test_readme_example_keeps_the_tier_the_task_asks_for(home: Path) -> None:
    (home / "config.toml").write_text(LLM)
    argv = ("routing", "explain", "--process", "worker", "--task", "coding", "why does the build fail?")
    run = spacebot(home, *argv)
    assert run.code == 0, run
    assert "profile: balanced   tier: strong" in run.out and "model:   an/opus" in run.out, run
    assert "task 'coding' asks for 'strong': kept" in run.out
    run = spacebot(home, "routing", "explain", "--process", "channel", "thanks!")
    assert "tier: light" in run.out, run
    scorer = next(line for line in run.out.splitlines() if line.strip().startswith("scorer"))
    assert "score 0.001 < 0.25 and 7 chars <= 400: a simple prompt steps 'standard' down to 'light'" in scorer


def test_every_error_is_reported_with_file_and_line(home: Path) -> None:
    config = home / "config.toml"
    config.write_text(
        "[runtime]\n"
        "hwm = 'many'\n"  # 2: a type error
        "\n"
        "[supervisor]\n"
        "bogus = 1\n"  # 5: an unknown key
        "\n"
        "[processes.worker]\n"
        "restart = 'sometimes'\n"  # 8: an enum error
        "[delegates]\n"
        "shell_timeout = 0\n"  # 10: a range check
    )
    run = spacebot(home, "config", "check")
    assert run.code == 1, run
    assert "spacebot: 4 problems in the configuration:" in run.err
    expected = [
        ("runtime.hwm", 2, "expected integer, got string"),
        ("supervisor.bogus", 5, "unknown key"),
        ("processes.worker.restart", 8, "invalid value 'sometimes'"),
        ("delegates.shell_timeout", 10, "must be > 0"),
    ]
    lines = [line for line in run.err.splitlines() if line.startswith("spacebot: config key")]
    assert len(lines) == len(expected), run
    for line, (key, number, message) in zip(lines, expected, strict=True):
        assert f"config key {key!r} ({config}:{number}): {message}" in line, line
    assert " - at" not in run.err


def test_enum_error_lists_the_valid_values(home: Path) -> None:
    (home / "config.toml").write_text('[runtime]\nlog_level = "verbose"\n')
    run = spacebot(home, "config", "check")
    assert run.code == 1, run
    assert (
        "config key 'runtime.log_level' ("
        + str(home / "config.toml")
        + ":2): invalid value 'verbose' (expected one of: 'debug', 'info', 'warning', 'error')"
    ) in run.err, run
    run = spacebot(home, "config", "check", SPACEBOT_LOG_LEVEL="loud")
    assert "config key 'runtime.log_level' (environment SPACEBOT_LOG_LEVEL): invalid value 'loud'" in run.err


def test_starter_config_table_header_with_comment_gives_the_line(home: Path) -> None:
    assert spacebot(home, "init").code == 0
    config = home / "config.toml"
    lines = config.read_text().splitlines()
    # `spacebot init` writes headers such as `[webchat]   # the web chat (docs/webchat.md)`.
    header = next(i for i, line in enumerate(lines) if re.fullmatch(r"\[webchat\]\s+#.*", line))
    lines.insert(header + 1, "port = 70000")
    config.write_text("\n".join(lines) + "\n")
    run = spacebot(home, "config", "check")
    assert run.code == 1, run
    assert f"config key 'webchat.port' ({config}:{header + 2}): must be 0-65535" in run.err, run


def test_profile_alone_has_nothing_to_route_to(home: Path) -> None:
    config = home / "config.toml"
    config.write_text('[llm]\nprofile = "eco"\n')
    run = spacebot(home, "config", "check")
    assert run.code == 1, run
    assert f"config key 'llm.profile' ({config}:2): profile 'eco' has nothing to route to" in run.err
    assert "ANTHROPIC_API_KEY" in run.err  # names what would fix it
    # With a provider in the environment, the table is laid over the environment's setup.
    run = spacebot(home, "config", "check", ANTHROPIC_API_KEY="sk-ant-env-value")
    assert run.code == 0, run
    assert "models (profile 'eco'):" in run.out
    assert re.search(r"channel\s+standard\s+anthropic/claude-haiku-4-5\n", run.out), run
    assert "sk-ant-env-value" not in run.out + run.err


def test_models_per_process_and_references(home: Path) -> None:
    (home / "config.toml").write_text(
        LLM + '[webchat]\ntoken = "env:SPACEBOT_TEST_TOKEN"\n[llm.task_tiers]\ncoding = "strong"\n'
    )
    run = spacebot(home, "config", "check", SPACEBOT_TEST_AN_KEY="sk-env-value-never-printed")
    assert run.code == 0, run
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^  (\w+)\s+(light|standard|strong)\s+(.+)$", run.out, re.M)
    }
    assert rows["channel"] == ("standard", "an/sonnet -> lit/gpt-4o"), run
    assert rows["worker"] == ("standard", "an/sonnet -> lit/gpt-4o")
    assert rows["compactor"] == rows["cortex"] == rows["ingest"] == ("light", "an/haiku")
    assert set(rows) == {"channel", "branch", "worker", "compactor", "cortex", "ingest"}
    assert "tasks keep their tier: coding=strong" in run.out
    refs = {
        m.group(1): (m.group(2), m.group(3))
        for m in re.finditer(r"^  ([\w.]+(?:api_key|token))\s+(\S+)\s+(.+)$", run.out, re.M)
    }
    assert refs["llm.providers.an.api_key"] == (
        "env:SPACEBOT_TEST_AN_KEY",
        "resolves: environment variable SPACEBOT_TEST_AN_KEY",
    )
    assert refs["llm.providers.oa.api_key"][0] == "secret:OPENAI"
    assert refs["llm.providers.oa.api_key"][1].startswith("MISSING: no secret 'OPENAI' in")
    assert refs["llm.providers.lit.api_key"][0] == "(literal)"
    assert refs["webchat.token"] == (
        "env:SPACEBOT_TEST_TOKEN",
        "MISSING: environment variable 'SPACEBOT_TEST_TOKEN' is not set",
    )
    assert "warning: webchat.token (env:SPACEBOT_TEST_TOKEN) does not resolve here" in run.out
    output = run.out + run.err
    assert "sk-env-value-never-printed" not in output and "sk-literal-never-printed" not in output
    # --strict turns unresolved references into a failure.
    run = spacebot(home, "config", "check", "--strict", SPACEBOT_TEST_AN_KEY="k", SPACEBOT_TEST_TOKEN="t")
    assert run.code == 1 and "warning: llm.providers.oa.api_key (secret:OPENAI)" in run.out, run


def test_a_reranker_model_that_cannot_be_used_is_a_config_error(home: Path, tmp_path: Path) -> None:
    """Checked when the config loads, so the memory process is never started (and restarted) with
    a model file it would refuse."""
    bad = tmp_path / "model.json"
    bad.write_text('{"format": 1, "features": ["fused"], "coef": [1], "intercept": 0}')
    config = home / "config.toml"
    config.write_text(f"[memory]\nrerank_model = '{bad}'\nrerank_depth = -1\n")
    run = spacebot(home, "config", "check")
    assert run.code == 1, run
    assert "config key 'memory.rerank_depth'" in run.err and "must be >= 0" in run.err, run
    assert "config key 'memory.rerank_model'" in run.err and "fitted on other features" in run.err, run
    assert str(bad) in run.err
    config.write_text("[memory]\nrerank_model = 'model.json'\n")
    run = spacebot(home, "config", "check")
    assert run.code == 1 and "must be an absolute path" in run.err, run
    # Switched off, the model is not read at all.
    config.write_text(f"[memory]\nrerank = false\nrerank_model = '{bad}'\n")
    assert spacebot(home, "config", "check").code == 0
