"""Credentials read from the environment or written in config.toml are scrubbed from log lines too
(not only those fetched from the secrets store), in both log formats."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import pytest

from spacebot import logs
from spacebot.llm.config import LLMConfig, ProviderConfig
from spacebot.messaging import credentials
from spacebot.runtime.child import ChildContext


def _line(fmt: logs.LogFormat, text: str) -> str:
    record = logging.LogRecord(
        "spacebot.test", logging.WARNING, __file__, 1, "upstream said: %s", (text,), None
    )
    line = logs.formatter("gateway:discord", fmt).format(record)
    return json.loads(line)["msg"] if fmt == "json" else line


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_platform_token_from_the_environment_is_scrubbed(
    fmt: logs.LogFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = f"discord-env-token-{fmt}-0123456789"
    monkeypatch.setenv("SPACEBOT_TEST_DISCORD_TOKEN", token)
    assert token in _line(fmt, f"Authorization: Bot {token}")  # not registered yet: shown
    ctx = cast(ChildContext, None)  # env: and literal values never ask the supervisor
    assert (
        await credentials.resolve(ctx, "env:SPACEBOT_TEST_DISCORD_TOKEN", "messaging.discord.token") == token
    )
    line = _line(fmt, f"Authorization: Bot {token}")
    assert token not in line and "Authorization: Bot ***" in line


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_a_literal_platform_token_is_scrubbed(fmt: logs.LogFormat) -> None:
    token = f"xoxb-literal-{fmt}-0123456789"
    ctx = cast(ChildContext, None)
    assert await credentials.resolve(ctx, token, "messaging.slack.bot_token") == token
    assert token not in _line(fmt, f"token={token}")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_model_key_from_the_environment_is_scrubbed(
    fmt: logs.LogFormat, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = f"sk-env-model-key-{fmt}-0123456789"
    monkeypatch.setenv("SPACEBOT_TEST_MODEL_KEY", key)
    providers: dict[str, Any] = {
        "p": ProviderConfig("openai_compatible", "http://127.0.0.1:9/v1", "env:SPACEBOT_TEST_MODEL_KEY")
    }
    llm = LLMConfig(providers=providers)
    assert key in _line(fmt, key)
    assert llm.resolve_key("p") == key
    assert key not in _line(fmt, f"POST with api_key={key} failed")
