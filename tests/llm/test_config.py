"""Configuration: conversion, bad input naming what is wrong, keys, zero-config from the environment."""

from __future__ import annotations

import msgspec
import pytest

from spacebot.ipc.messages import Usage
from spacebot.llm import (
    LLM,
    AssistantMessage,
    CooldownNotice,
    CooldownRegistry,
    ImagePart,
    LLMConfig,
    LLMConfigError,
    Message,
    Request,
    TextPart,
    ToolCall,
    ToolMessage,
    UsageReport,
    UserMessage,
)
from spacebot.llm.cost import estimate_cost, prices_for
from spacebot.llm.errors import classify_status, parse_retry_after
from spacebot.llm.types import StreamEvent, TextDelta, UsageEvent


def test_defaults_convert_from_plain_dict() -> None:
    cfg = LLMConfig.from_dict({})
    assert cfg.profile == "balanced" and cfg.retry.attempts_per_model == 2
    assert cfg.process_tiers["compactor"] == "light" and cfg.task_tiers["coding"] == "strong"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"providers": {"x": {"kind": "grpc"}}}, "providers.x.kind"),
        ({"providers": {"x": {"kind": "openai_compatible"}}}, "'openai_compatible' needs base_url"),
        ({"profiles": {"balanced": {"light": "no-slash"}}}, "invalid model id 'no-slash'"),
        (
            {"providers": {"a": {"kind": "openai"}}, "profiles": {"balanced": {"light": "b/m"}}},
            "unknown provider 'b'",
        ),
        ({"profiles": {"balanced": {"huge": "a/m"}}}, "unknown tier 'huge'"),
        ({"profiles": {"eco": {"light": "a/m"}}, "profile": "premium"}, "unknown profile 'premium'"),
        ({"task_tiers": {"coding": "mega"}}, "llm.task_tiers.coding"),
        ({"retry": {"attempts_per_model": "two"}}, "retry.attempts_per_model"),
        ({"typo_field": 1}, "typo_field"),
    ],
)
def test_bad_config_names_the_problem(data: dict, needle: str) -> None:
    with pytest.raises(LLMConfigError) as info:
        LLMConfig.from_dict(data)
    assert needle in str(info.value)


def test_missing_env_key_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACEBOT_TEST_MISSING_KEY", raising=False)
    cfg = LLMConfig.from_dict(
        {
            "providers": {"a": {"kind": "anthropic", "api_key": "env:SPACEBOT_TEST_MISSING_KEY"}},
            "profiles": {"balanced": {"light": "a/m", "standard": "a/m", "strong": "a/m"}},
        }
    )
    with pytest.raises(LLMConfigError, match="'SPACEBOT_TEST_MISSING_KEY'") as info:
        cfg.resolve_key("a")
    assert "'a'" in str(info.value)
    monkeypatch.setenv("SPACEBOT_TEST_MISSING_KEY", "sk-1")
    assert cfg.resolve_key("a") == "sk-1"


async def test_missing_key_surfaces_from_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPACEBOT_TEST_MISSING_KEY", raising=False)
    cfg = LLMConfig.from_dict(
        {
            "providers": {"a": {"kind": "openai", "api_key": "env:SPACEBOT_TEST_MISSING_KEY"}},
            "profiles": {"balanced": {"light": "a/m", "standard": "a/m", "strong": "a/m"}},
        }
    )
    with pytest.raises(LLMConfigError, match="'SPACEBOT_TEST_MISSING_KEY'"):
        await LLM(cfg).complete(Request([UserMessage("hi")]), process="channel")


def test_secret_keys_use_the_resolver() -> None:
    cfg = LLMConfig.from_dict({"providers": {"a": {"kind": "openai", "api_key": "secret:OPENAI"}}})
    assert cfg.resolve_key("a", {"OPENAI": "sk-s"}.get) == "sk-s"
    with pytest.raises(LLMConfigError, match="secret 'OPENAI'"):
        cfg.resolve_key("a")
    with pytest.raises(LLMConfigError, match="unknown provider 'zz'"):
        cfg.resolve_key("zz")


def test_from_env_variants() -> None:
    with pytest.raises(LLMConfigError, match="no LLM configured"):
        LLMConfig.from_env({})
    local = LLMConfig.from_env(
        {"SPACEBOT_LLM_BASE_URL": "http://127.0.0.1:8080/v1", "SPACEBOT_LLM_MODEL": "qwen"}
    )
    assert (
        local.providers["local"].kind == "openai_compatible"
        and local.profiles["eco"]["strong"] == "local/qwen"
    )
    with pytest.raises(LLMConfigError, match="SPACEBOT_LLM_MODEL"):
        LLMConfig.from_env({"SPACEBOT_LLM_BASE_URL": "http://x"})
    an = LLMConfig.from_env({"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"})
    assert set(an.providers) == {"anthropic"} and an.providers["anthropic"].api_key == "env:ANTHROPIC_API_KEY"
    oa = LLMConfig.from_env({"OPENAI_API_KEY": "k"})
    assert oa.profiles["premium"]["light"] == "openai/gpt-4o"
    assert oa.fallbacks == {"openai/gpt-4.1": ["openai/gpt-4o"], "openai/gpt-4o": ["openai/gpt-4o-mini"]}
    assert local.fallbacks == {}


def test_error_classification_table() -> None:
    cases = {
        (429, "{}"): "RateLimited",
        (529, '{"type": "overloaded_error"}'): "RateLimited",
        (500, "{}"): "ServerError",
        (503, "{}"): "ServerError",
        (404, "{}"): "ModelNotFound",
        (400, '{"code": "model_not_found"}'): "ModelNotFound",
        (400, '{"code": "context_length_exceeded"}'): "ContextOverflow",
        (400, "prompt is too long: 210000 tokens"): "ContextOverflow",
        (401, "{}"): "AuthError",
        (403, "{}"): "AuthError",
        (400, "{}"): "BadRequest",
        (422, "{}"): "BadRequest",
    }
    got = {k: type(classify_status(k[0], k[1], model="p/m")).__name__ for k in cases}
    assert got == cases
    assert (
        parse_retry_after("2.5") == 2.5
        and parse_retry_after(None) is None
        and parse_retry_after("soon") is None
    )
    assert 0 <= (parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") or 0) == 0


def test_cost_defaults_and_overrides() -> None:
    cfg = LLMConfig.from_dict({"models": {"x/claude-sonnet-4-5": {"output_price": 1.0}}})
    assert prices_for(cfg, "x/claude-sonnet-4-5") == (3.0, 1.0, 0.3)
    assert prices_for(cfg, "y/gpt-4o-mini-2024") == (0.15, 0.6, 0.075)
    assert prices_for(cfg, "local/qwen") == (0.0, 0.0, 0.0)
    assert estimate_cost(cfg, "y/gpt-4o", Usage(1_000_000, 1_000_000, 1_000_000)) == 2.5 + 10.0 + 1.25


def test_cooldown_registry_apply_and_publish() -> None:
    now = [100.0]
    sent: list[CooldownNotice] = []
    reg = CooldownRegistry(sent.append, monotonic=lambda: now[0], wall=lambda: 1000.0 + now[0])
    reg.cool("p/m", 30, "rate_limited")
    assert sent == [CooldownNotice("p/m", 1130.0, "rate_limited")]
    other = CooldownRegistry(monotonic=lambda: now[0] + 5, wall=lambda: 1000.0 + now[0])
    other.apply(sent[0])
    assert other.remaining("p/m") == 30
    other.apply(CooldownNotice("p/m", 1110.0, "shorter"))  # never shortens
    assert other.remaining("p/m") == 30
    other.apply(CooldownNotice("p/x", 900.0, "expired"))
    assert other.remaining("p/x") == 0
    now[0] += 31
    assert reg.remaining("p/m") == 0 and reg.snapshot() == {}

    def broken(_: CooldownNotice) -> None:
        raise OSError("bus down")

    CooldownRegistry(broken).cool("p/m", 1, "x")  # a failing publish does not raise


def test_types_round_trip_msgpack() -> None:
    msgs: list[Message] = [
        UserMessage([TextPart("look"), ImagePart(data="aGk=")]),
        AssistantMessage("ok", [ToolCall("c1", "t", {"a": 1}, '{"a": 1}')]),
        ToolMessage("c1", "done"),
    ]
    req = Request(msgs)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(req), type=Request) == req
    evs: list[StreamEvent] = [TextDelta("x"), UsageEvent(Usage(1, 2, 3), 0.5)]
    enc = msgspec.msgpack.encode(evs)
    assert msgspec.msgpack.decode(enc, type=list[StreamEvent]) == evs
    rep = UsageReport("p/m", "worker", "coding", Usage(1, 2), 0.1, 3.0)
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(rep), type=UsageReport) == rep


def test_every_cross_field_problem_is_named_at_once() -> None:
    with pytest.raises(LLMConfigError) as info:
        LLMConfig.from_dict(
            {
                "providers": {"a": {"kind": "openai"}},
                "profiles": {"balanced": {"light": "b/m", "huge": "a/m"}},
                "fallbacks": {"a/gpt-4.1": ["no-slash"]},
            }
        )
    message = str(info.value)
    assert "llm.profiles.balanced.light: model 'b/m' names unknown provider 'b'" in message
    assert "llm.profiles.balanced.huge: unknown tier 'huge'" in message
    assert "llm.fallbacks.\"a/gpt-4.1\": invalid model id 'no-slash'" in message
