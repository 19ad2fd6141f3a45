"""The providers' zygote warm-up: whole streamed calls answered from memory, run by the zygote."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from spacebot.llm.providers import anthropic as anthropic_provider
from spacebot.llm.providers import openai as openai_provider
from spacebot.llm.types import Stop, StreamEvent, TextDelta, ToolCallDone, UsageEvent
from spacebot.supervisor import zygote


@pytest.mark.parametrize(
    ("module", "cls"),
    [
        (openai_provider, openai_provider.OpenAIProvider),
        (anthropic_provider, anthropic_provider.AnthropicProvider),
    ],
)
def test_warm_up_streams_whole_calls_without_network(
    module: Any, cls: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The warm-up's base URL (``warm.invalid``) does not resolve: a call that reached the network
    # would fail, so complete answers prove they came from memory.
    seen: list[StreamEvent] = []
    threads_during: list[int] = []
    real = cls.stream

    async def recording(self: Any, *args: Any) -> AsyncIterator[StreamEvent]:
        async for event in real(self, *args):
            seen.append(event)
            threads_during.append(threading.active_count())
            yield event

    monkeypatch.setattr(cls, "stream", recording)
    threads = threading.active_count()
    asyncio.run(module.warm_up(calls=2))  # as the zygote runs it: on its own loop, closed after
    kinds = [type(e) for e in seen]
    assert kinds.count(Stop) == 2, kinds
    assert kinds.count(ToolCallDone) == 2 and kinds.count(UsageEvent) == 2, kinds
    assert any(isinstance(e, TextDelta) and e.text == "ok" for e in seen)
    stops = [e for e in seen if isinstance(e, Stop)]
    assert all(s.reason == "tool_use" for s in stops), stops
    assert threading.active_count() == threads  # no thread outlives the loop: the zygote may fork
    # Nor is one started meanwhile: the SDK's platform lookup (a worker thread) was done at import.
    assert set(threads_during) == {threads}, threads_during


def _module(tmp_path: Path, name: str, body: str, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


def test_zygote_import_runs_a_modules_async_warm_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    name = _module(
        tmp_path,
        "sb_warm_ok",
        "import asyncio\nWARMED = []\n"
        "async def warm_up():\n    await asyncio.sleep(0)\n    WARMED.append(asyncio.get_running_loop())\n",
        monkeypatch,
    )
    assert zygote._import(name) is None
    warmed = sys.modules[name].WARMED
    assert len(warmed) == 1 and warmed[0].is_closed()  # on its own loop, closed before any fork


def test_zygote_import_survives_a_failing_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    name = _module(
        tmp_path, "sb_warm_bad", "async def warm_up():\n    raise RuntimeError('boom')\n", monkeypatch
    )
    assert zygote._import(name) is None  # imported: the module is usable, only not warmed
    assert name in sys.modules
    assert "could not warm up sb_warm_bad" in caplog.text
