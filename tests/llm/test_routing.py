"""Routing levels, profiles and the scorer, table-driven; plus the ``routing explain`` CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from spacebot.llm import LLMConfig, LLMConfigError, Request, Router, ToolMessage, UserMessage
from spacebot.llm.cli import register
from spacebot.llm.scorer import score

CONFIG = {
    "providers": {
        "an": {"kind": "anthropic", "api_key": "x"},
        "oa": {"kind": "openai", "api_key": "y"},
    },
    "profiles": {
        "eco": {"light": "oa/mini", "standard": "oa/mini", "strong": "an/sonnet"},
        "balanced": {"light": "an/haiku", "standard": "an/sonnet", "strong": "an/opus"},
        "premium": {"light": "an/sonnet", "standard": "an/opus", "strong": "an/opus"},
    },
    "fallbacks": {"an/sonnet": ["oa/gpt", "an/haiku"], "an/opus": ["an/sonnet"]},
}
SIMPLE = "thanks!"
HARD = "Please explain why this design is slow and compare it with the alternative architecture."
CODE = "```python\ndef f(x):\n    return x\n```\nwhat does this return?"

CASES = [
    # (profile, process, task, prompt, tier, model)
    ("balanced", "channel", None, HARD, "standard", "an/sonnet"),
    ("balanced", "channel", None, SIMPLE, "light", "an/haiku"),  # scorer steps down
    ("balanced", "compactor", None, HARD, "light", "an/haiku"),
    ("balanced", "compactor", None, SIMPLE, "light", "an/haiku"),  # already lowest
    ("balanced", "worker", "coding", HARD, "strong", "an/opus"),
    ("balanced", "worker", "coding", SIMPLE, "strong", "an/opus"),  # a task's tier is never stepped down
    ("balanced", "worker", "coding", "why does the build fail?", "strong", "an/opus"),  # README example
    ("balanced", "worker", "summarize", SIMPLE, "light", "an/haiku"),
    ("balanced", "worker", "coding", CODE, "strong", "an/opus"),  # code fence keeps it complex
    ("balanced", "worker", "summarize", HARD, "light", "an/haiku"),
    ("balanced", "worker", "unknown-task", HARD, "standard", "an/sonnet"),
    ("balanced", "cortex", None, HARD, "light", "an/haiku"),
    ("eco", "channel", None, HARD, "standard", "oa/mini"),
    ("eco", "worker", "research", HARD, "strong", "an/sonnet"),
    ("premium", "channel", None, HARD, "standard", "an/opus"),
    ("premium", "branch", None, SIMPLE, "light", "an/sonnet"),
]


@pytest.mark.parametrize(("profile", "process", "task", "prompt", "tier", "model"), CASES)
def test_routing_table(
    profile: str, process: str, task: str | None, prompt: str, tier: str, model: str
) -> None:
    router = Router(LLMConfig.from_dict(CONFIG), profile)
    d = router.decide(Request([UserMessage(prompt)]), process=process, task=task)
    assert (d.tier, d.chain[0]) == (tier, model)
    assert [s.level for s in d.steps] == ["process", "task", "scorer", "fallback"]


def test_fallback_chain_and_forced_choices() -> None:
    router = Router(LLMConfig.from_dict(CONFIG))
    d = router.decide(Request([UserMessage(HARD)]), process="channel")
    assert d.chain == ["an/sonnet", "oa/gpt", "an/haiku"]
    forced = router.decide(Request([UserMessage(SIMPLE)], tier="strong"), process="channel")
    assert (
        forced.chain == ["an/opus", "an/sonnet", "oa/gpt", "an/haiku"] and forced.steps[0].level == "forced"
    )
    named = router.decide(Request([UserMessage(SIMPLE)], model="oa/gpt"), process="channel")
    assert named.chain == ["oa/gpt"]
    with pytest.raises(LLMConfigError, match="'nope/x'"):
        router.decide(Request([UserMessage(SIMPLE)], model="nope/x"), process="channel")
    with pytest.raises(LLMConfigError, match="'janitor'"):
        router.decide(Request([UserMessage(SIMPLE)]), process="janitor")


def test_scorer_is_deterministic_and_documented_features() -> None:
    s1 = score(Request([UserMessage(HARD)]))
    assert s1 == score(Request([UserMessage(HARD)]))
    assert set(s1.features) == {"length", "code", "questions", "reasoning", "lines"}
    assert score(Request([UserMessage(CODE)])).features["code"] > 0
    assert score(Request([UserMessage("a? b? c? d?")])).features["questions"] > 0
    assert score(Request([UserMessage(SIMPLE)])).value < 0.05
    mid_task = score(Request([UserMessage(SIMPLE), ToolMessage("c1", "output")]))
    assert mid_task.value >= 0.5
    long = score(Request([UserMessage("word " * 1000)]))
    assert long.features["length"] == 0.3


def test_scorer_step_says_why() -> None:
    router = Router(LLMConfig.from_dict(CONFIG))
    down = router.decide(Request([UserMessage(SIMPLE)]), process="channel").steps[2]
    assert (down.level, down.tier) == ("scorer", "light")
    assert "< 0.25" in down.reason and "7 chars <= 400" in down.reason
    assert "steps 'standard' down to 'light'" in down.reason
    kept = router.decide(Request([UserMessage(SIMPLE)]), process="worker", task="coding").steps[2]
    assert kept.tier == "strong" and "task 'coding' asks for 'strong': kept" in kept.reason
    long = router.decide(Request([UserMessage("ok " * 200)]), process="channel").steps[2]
    assert long.tier == "standard" and "600 chars > max_simple_chars 400" in long.reason


def test_scorer_disabled_keeps_tier() -> None:
    cfg = LLMConfig.from_dict({**CONFIG, "scorer": {"enabled": False}})
    d = Router(cfg).decide(Request([UserMessage(SIMPLE)]), process="channel")
    assert d.tier == "standard" and d.steps[2].reason == "scorer disabled"


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="spacebot")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def _write_config(tmp_path: Path) -> Path:
    lines = [
        "[llm]",
        'profile = "balanced"',
        "[llm.providers.an]",
        'kind = "anthropic"',
        'api_key = "env:NOPE"',
    ]
    lines += ["[llm.providers.oa]", 'kind = "openai"', "[llm.profiles.balanced]"]
    lines += ['light = "an/haiku"', 'standard = "an/sonnet"', 'strong = "an/opus"']
    lines += ["[llm.fallbacks]", '"an/opus" = ["oa/gpt"]']
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_cli_routing_explain_text_and_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path)
    code = _run(["routing", "explain", "--config", str(cfg), "--process", "worker", "--task", "coding", HARD])
    out = capsys.readouterr().out
    assert code == 0
    assert out.splitlines()[0] == "model:   an/opus"
    assert "task 'coding' overrides to 'strong'" in out and "chain:   an/opus -> oa/gpt" in out
    code = _run(["routing", "explain", "--config", str(cfg), "--process", "channel", "--json", SIMPLE])
    data = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and data["chain"] == ["an/haiku"] and data["tier"] == "light"
    assert [s["level"] for s in data["steps"]] == ["process", "task", "scorer", "fallback"]


def test_cli_routing_explain_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _write_config(tmp_path)
    assert _run(["routing", "explain", "--config", str(cfg), "--process", "janitor", "x"]) == 2
    assert "'janitor'" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text('[llm.profiles.balanced]\nlight = "ghost/model"\n[llm.providers.an]\nkind = "anthropic"\n')
    assert _run(["routing", "explain", "--config", str(bad), "--process", "channel", "x"]) == 2
    assert "'ghost'" in capsys.readouterr().err
