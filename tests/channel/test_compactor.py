"""The compactor's thresholds and spans (unit), and its emergency and failure paths (real processes)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from spacebot.conversation.context_budget import choose_span, level_for
from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import Notice, ReplyState, StoredMessage
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.procs.compaction import parse
from spacebot.testing import ChatSystem, eventually


def _m(
    i: int, role: str = "user", text: str = "x" * 100, state: ReplyState = ReplyState.ANSWERED
) -> StoredMessage:
    return StoredMessage(
        id=i,
        channel_id="web:1",
        platform_message_id=None,
        author_id="a" if role != "system" else "worker:1",
        author_name="A",
        role=role,
        text=text,
        attachments=[],
        created_at=float(i),
        reply_state=state if role == "user" else ReplyState.NONE,
        replied_at=None,
    )


def test_levels() -> None:
    assert level_for(790, 1000) is None
    assert level_for(810, 1000) == ("background", 0.3)
    assert level_for(860, 1000) == ("aggressive", 0.5)
    assert level_for(960, 1000) == ("emergency", 0.5)


def test_span_takes_the_oldest_share_and_stops_at_unanswered_messages() -> None:
    history = [_m(i, "user" if i % 2 == 0 else "assistant") for i in range(10)]
    assert choose_span(history, 0.3) == 3
    assert choose_span(history, 0.5) == 5
    history[2] = _m(2, state=ReplyState.PENDING)
    assert choose_span(history, 0.5) == 2  # never drops a message that still waits for an answer


def test_span_never_ends_on_a_worker_result_line() -> None:
    history = [_m(0), _m(1, "assistant"), _m(2, "system"), _m(3), _m(4, "assistant")]
    assert choose_span(history, 0.5) == 2  # the result line (2) stays with what comes after it


def test_parse_compaction_answers() -> None:
    summary, drafts = parse(
        'Sure: {"summary": "s", "memories": [{"content": "c", "type": "goal"}, 5]}', "web:1"
    )
    assert summary == "s" and [(d.content, d.type.value, d.channel) for d in drafts] == [
        ("c", "goal", "web:1")
    ]
    for bad in ("no json", '{"memories": []}'):
        try:
            parse(bad)
        except ValueError as exc:
            assert "summary" in str(exc) or "JSON" in str(exc)
        else:
            raise AssertionError(bad)


async def _watch(system: ChatSystem) -> tuple[BusClient, list[Any], asyncio.Task[None]]:
    bus = BusClient("tester", system.sup.endpoints.bus)
    bus.start()
    events = await bus.subscribe("channel.")
    seen: list[Any] = []

    async def collect() -> None:
        async for e in events:
            seen.append(e)

    return bus, seen, asyncio.get_running_loop().create_task(collect())


def _has(seen: list[Any], what: str) -> Any:
    return next((e for e in seen if isinstance(e.body, Notice) and e.body.text == what), None)


async def test_emergency_and_failed_compactions_truncate_and_say_so(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(system="You compact a chat transcript", text="this is not JSON")
        fake.add(tool_calls=[FakeToolCall("reply", {"content": "ok"})])
        async with ChatSystem(short_tmp, fake, channel={"context_window": 2000}) as system:
            bus, seen, task = await _watch(system)
            try:
                ana = await system.client("Ana")
                conv = await ana.create()
                await ana.open(conv)
                # Grow past 80 %: the compaction's answer is unusable -> failed -> truncated.
                for i in range(12):
                    ack = await ana.send(conv, f"note {i} " + "z" * 400)
                    await ana.wait_for(
                        lambda f, a=ack["message"]["id"]: (
                            f["type"] == "message"
                            and f["message"]["role"] == "assistant"
                            and f["message"]["id"] > a
                        )
                    )
                    if _has(seen, "truncated"):
                        break
                await eventually(lambda: _has(seen, "truncated") is not None)
                failed = _has(seen, "failed")
                assert failed is not None and "unusable summary" in failed.body.fields["reason"]
                assert "compaction failed" in _has(seen, "truncated").body.fields["reason"]
                # One message far over 95 % at once: dropped without a model.
                seen.clear()
                await ana.send(conv, "w" * 9000)
                await eventually(lambda: _has(seen, "truncated") is not None)
                assert "emergency" in _has(seen, "truncated").body.fields["reason"]
                # The conversation still answers.
                ack = await ana.send(conv, "still there?")
                await ana.wait_for(
                    lambda f: (
                        f["type"] == "message"
                        and f["message"]["role"] == "assistant"
                        and f["message"]["id"] > ack["message"]["id"]
                    )
                )
            finally:
                task.cancel()
                await bus.close()
