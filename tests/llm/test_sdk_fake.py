"""The real anthropic and openai SDKs, through our providers, against the fake server."""

from __future__ import annotations

import json

import anthropic
import openai

from spacebot.llm import (
    LLM,
    AssistantMessage,
    Request,
    SystemMessage,
    TextDelta,
    ToolCallDelta,
    ToolMessage,
    ToolSpec,
    UserMessage,
)
from spacebot.llm.fake import FakeLLM, FakeToolCall, Rule

from .conftest import make_config

SPAWN = ToolSpec(
    "spawn_worker", "Start a worker", {"type": "object", "properties": {"task": {"type": "string"}}}
)


async def test_streamed_text_openai(fake: FakeLLM) -> None:
    fake.add(user="hello", text="Hi there, friend.")
    llm = LLM(make_config(fake))
    req = Request([SystemMessage("be nice"), UserMessage("hello bot")])
    deltas = [ev.text async for ev in llm.stream(req, process="channel") if isinstance(ev, TextDelta)]
    assert "".join(deltas) == "Hi there, friend."
    assert len(deltas) == 3
    rec = fake.requests[-1]
    assert rec.path == "/v1/chat/completions" and rec.model == "small"  # scorer stepped down
    assert rec.headers["authorization"] == "Bearer k-oa"
    assert rec.body["stream_options"] == {"include_usage": True}
    assert rec.conversation.system == "be nice"
    await llm.aclose()


async def test_streamed_text_anthropic_with_usage_and_cost(fake: FakeLLM) -> None:
    fake.add(model="big", text="strong answer")
    reports = []
    cfg = make_config(fake, models={"an/big": {"input_price": 1000.0, "output_price": 2000.0}})
    llm = LLM(cfg, on_usage=reports.append)
    res = await llm.complete(Request([UserMessage("x")], tier="strong"), process="worker", task="coding")
    assert res.text == "strong answer" and res.model == "an/big" and res.stop_reason == "end_turn"
    assert res.usage.output_tokens == 2 and res.usage.input_tokens >= 1
    expected = (res.usage.input_tokens * 1000.0 + res.usage.output_tokens * 2000.0) / 1e6
    assert abs(res.cost_usd - expected) < 1e-12
    assert len(reports) == 1 and reports[0].model == "an/big" and reports[0].task == "coding"
    assert reports[0].cost_usd == res.cost_usd
    rec = fake.requests[-1]
    assert rec.path == "/v1/messages" and "anthropic-version" in rec.headers
    await llm.aclose()


async def _tool_round_trip(fake: FakeLLM, tier: str) -> None:
    fake.add(tool_result="spawn_worker", tool_result_content="id=7", text="started")
    fake.add(user="deploy", tool_calls=[FakeToolCall("spawn_worker", {"task": "deploy prod"})])
    llm = LLM(make_config(fake))
    convo: list = [UserMessage("please deploy")]
    first = await llm.complete(Request(convo, tools=[SPAWN], tier=tier), process="channel")
    assert first.stop_reason == "tool_use" and first.text == ""
    (call,) = first.tool_calls
    assert call.name == "spawn_worker" and call.arguments == {"task": "deploy prod"} and not call.error
    convo += [AssistantMessage("", [call]), ToolMessage(call.id, "worker id=7", name="spawn_worker")]
    second = await llm.complete(Request(convo, tools=[SPAWN], tier=tier), process="channel")
    assert second.text == "started" and second.tool_calls == []
    assert fake.requests[-1].conversation.tool_results == [("spawn_worker", "worker id=7")]
    await llm.aclose()


async def test_tool_round_trip_openai(fake: FakeLLM) -> None:
    await _tool_round_trip(fake, "standard")
    assert fake.requests[-1].body["messages"][-1]["role"] == "tool"


async def test_tool_round_trip_anthropic(fake: FakeLLM) -> None:
    await _tool_round_trip(fake, "strong")
    last = fake.requests[-1].body["messages"][-1]
    assert last["content"][0]["type"] == "tool_result"


async def test_parallel_tool_calls_both_protocols(fake: FakeLLM) -> None:
    calls = [FakeToolCall("a", {"n": 1}), FakeToolCall("b", {"n": 2}), FakeToolCall("a", {"n": 3})]
    fake.add(text="doing three things", tool_calls=calls)
    llm = LLM(make_config(fake))
    for tier in ("standard", "strong"):
        events = [ev async for ev in llm.stream(Request([UserMessage("go")], tier=tier), process="channel")]
        heads = [(ev.index, ev.name) for ev in events if isinstance(ev, ToolCallDelta) and ev.name]
        assert heads == [(0, "a"), (1, "b"), (2, "a")]
        res = await llm.complete(Request([UserMessage("go")], tier=tier), process="channel")
        assert res.text == "doing three things"
        assert [(c.name, c.arguments) for c in res.tool_calls] == [
            ("a", {"n": 1}),
            ("b", {"n": 2}),
            ("a", {"n": 3}),
        ]
        assert len({c.id for c in res.tool_calls}) == 3
    await llm.aclose()


async def test_malformed_tool_json_becomes_tool_error(fake: FakeLLM) -> None:
    from spacebot.llm import tool_error_message

    fake.add(tool_calls=[FakeToolCall("spawn_worker", raw_arguments='{"task": "dep')])
    llm = LLM(make_config(fake))
    for tier in ("standard", "strong"):
        res = await llm.complete(Request([UserMessage("go")], tools=[SPAWN], tier=tier), process="channel")
        (call,) = res.tool_calls
        assert call.error and "not valid JSON" in call.error and call.arguments == {}
        msg = tool_error_message(call)
        assert msg.is_error and msg.tool_call_id == call.id and "'spawn_worker'" in msg.content
    await llm.aclose()


async def test_raw_sdks_non_streaming_and_models(fake: FakeLLM) -> None:
    fake.add(Rule(name="r", text="plain", tool_calls=[FakeToolCall("t", {"x": 1})]))
    oa = openai.AsyncOpenAI(base_url=fake.openai_url, api_key="k", max_retries=0)
    r = await oa.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert r.choices[0].message.content == "plain"
    assert json.loads(r.choices[0].message.tool_calls[0].function.arguments) == {"x": 1}
    models = await oa.models.list()
    assert [m.id for m in models.data] == ["fake-model"]
    an = anthropic.AsyncAnthropic(base_url=fake.url, api_key="k", max_retries=0)
    m = await an.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "q"}])
    assert m.content[0].text == "plain" and m.content[1].input == {"x": 1} and m.stop_reason == "tool_use"
    assert fake.hits("r") == 2
    await oa.close()
    await an.close()


async def test_images_reach_both_wire_formats(fake: FakeLLM) -> None:
    from spacebot.llm import ImagePart, TextPart

    fake.add(user="what is this", text="a cat")
    llm = LLM(make_config(fake))
    msg = UserMessage(
        [TextPart("what is this"), ImagePart("image/png", data="aGk="), ImagePart(url="http://x/c.png")]
    )
    for tier in ("standard", "strong"):
        res = await llm.complete(Request([msg], tier=tier), process="channel")
        assert res.text == "a cat"
    oa_parts = fake.requests[0].body["messages"][0]["content"]
    assert oa_parts[1] == {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}
    assert oa_parts[2]["image_url"]["url"] == "http://x/c.png"
    an_parts = fake.requests[1].body["messages"][0]["content"]
    assert an_parts[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "aGk="}
    assert an_parts[2]["source"] == {"type": "url", "url": "http://x/c.png"}
    await llm.aclose()
