"""The fake LLM server shipped with Spacebot (OpenAI + Anthropic wire protocols on loopback)."""

from __future__ import annotations

from spacebot.llm.fake.rules import FakeToolCall, Fault, Rule, Script, load_script
from spacebot.llm.fake.server import FakeLLM, Recorded

__all__ = ["FakeLLM", "FakeToolCall", "Fault", "Recorded", "Rule", "Script", "load_script"]
