from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from spacebot.llm import LLMConfig
from spacebot.llm.fake import FakeLLM


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        yield server


def make_config(fake: FakeLLM, **over: object) -> LLMConfig:
    """Two providers (one per wire protocol) on the fake, a small chain and fast retries."""
    data: dict[str, object] = {
        "providers": {
            "oa": {"kind": "openai_compatible", "base_url": fake.openai_url, "api_key": "k-oa"},
            "an": {"kind": "anthropic", "base_url": fake.url, "api_key": "k-an"},
        },
        "profiles": {
            "balanced": {"light": "oa/small", "standard": "oa/main", "strong": "an/big"},
        },
        "fallbacks": {"oa/main": ["an/backup", "oa/last"], "an/big": ["oa/main"]},
        "retry": {"attempts_per_model": 2, "base_delay": 0.0, "max_delay": 0.5, "cooldown": 30.0},
        "timeouts": {"connect": 5.0, "first_token": 5.0, "total": 30.0},
    }
    data.update(over)
    return LLMConfig.from_dict(data)
