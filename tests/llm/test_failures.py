"""Failure handling against the fake: retries, fallbacks, cooldowns, typed errors, cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from spacebot.llm import (
    LLM,
    AllModelsFailed,
    AuthError,
    BadRequest,
    ContextOverflow,
    CooldownNotice,
    Fallback,
    Request,
    TextDelta,
    Timeouts,
    UserMessage,
)
from spacebot.llm.fake import FakeLLM

from .conftest import make_config

# "explain why" keeps the scorer from stepping channel traffic down to oa/small.
REQ = Request([UserMessage("please explain why the deploy failed and compare both designs")])


def models_called(fake: FakeLLM) -> list[str]:
    return [r.model for r in fake.requests]


async def test_429_retry_after_then_fallback(fake: FakeLLM) -> None:
    fake.fail(429, retry_after="0.05", times=2, model="^main$")
    fake.add(text="answer")
    notices: list[CooldownNotice] = []
    llm = LLM(make_config(fake), publish_cooldown=notices.append)
    before = time.time()
    events = [ev async for ev in llm.stream(REQ, process="channel")]
    fallbacks = [ev for ev in events if isinstance(ev, Fallback)]
    assert [(f.from_model, f.next_model) for f in fallbacks] == [
        ("oa/main", "oa/main"),
        ("oa/main", "an/backup"),
    ]
    assert models_called(fake) == ["main", "main", "backup"]
    assert "".join(ev.text for ev in events if isinstance(ev, TextDelta)) == "answer"
    (notice,) = notices
    assert notice.model == "oa/main" and "429" in notice.reason
    # Cooled for its Retry-After (0.05 s), counted from the 429, which came between the two reads.
    assert before + 0.05 <= notice.until <= time.time() + 0.05
    await llm.aclose()


async def test_long_retry_after_cools_model_and_next_call_skips_it(fake: FakeLLM) -> None:
    fake.fail(429, retry_after="120", times=None, model="^main$")
    llm = LLM(make_config(fake))
    first = await llm.complete(REQ, process="channel")
    assert first.model == "an/backup" and first.fallbacks == ["oa/main"]
    assert models_called(fake) == ["main", "backup"]  # not waited in place: Retry-After > max_delay
    assert 100 < llm.cooldowns.remaining("oa/main") <= 120
    second = await llm.complete(REQ, process="channel")
    assert second.model == "an/backup" and second.fallbacks == ["oa/main"]
    assert models_called(fake) == ["main", "backup", "backup"]
    await llm.aclose()


@pytest.mark.parametrize(
    ("kind", "status", "extra"),
    [
        ("status", 429, {}),
        ("status", 500, {}),
        ("status", 502, {}),
        ("status", 503, {}),
        ("status", 504, {}),
        ("status", 529, {}),
        ("status", 408, {}),
        ("cut", 0, {"after_events": 2}),
        ("cut", 0, {"after_events": 2, "abort": False}),
        ("garbage", 0, {"after_events": 1}),
        ("garbage", 0, {}),
        ("hang", 0, {}),
        ("error_event", 529, {"after_events": 2}),
        ("error_event", 500, {"after_events": 2}),
    ],
)
@pytest.mark.parametrize("primary", ["main", "big"])
async def test_every_retriable_failure_reaches_the_chain(
    fake: FakeLLM, kind: str, status: int, extra: dict, primary: str
) -> None:
    fake.fail(status, kind=kind, times=None, model=f"^{primary}$", **extra)
    fake.add(text="rescued by the chain")
    cfg = make_config(fake, retry={"attempts_per_model": 1, "base_delay": 0.0})
    llm = LLM(cfg)
    tier = "standard" if primary == "main" else "strong"
    # Only a hang needs the clock to fail; the others fail by themselves, so their deadline is far
    # (a loaded machine can take longer than a short one just to connect).
    hang = kind == "hang"
    tmo = Timeouts(connect=30.0, first_token=0.3 if hang else 30.0, total=5.0 if hang else 60.0)
    try:
        res = await llm.complete(Request(REQ.messages, tier=tier), process="channel", timeouts=tmo)
    finally:
        await llm.aclose()
    assert res.text == "rescued by the chain"
    assert res.fallbacks[0].endswith("/" + primary) and res.model != res.fallbacks[0]
    if not hang:  # a hung request may not even have reached the fake when its deadline came
        assert models_called(fake)[0] == primary


async def test_cut_mid_stream_retries_same_model_and_discards_partial(fake: FakeLLM) -> None:
    fake.fail(kind="cut", after_events=3, times=1, model="^main$")
    fake.add(text="one two three four five")
    llm = LLM(make_config(fake))
    events = [ev async for ev in llm.stream(REQ, process="channel")]
    kinds = [type(ev).__name__ for ev in events]
    first_fb = kinds.index("Fallback")
    assert "TextDelta" in kinds[:first_fb]  # partial text reached the caller before the cut
    assert models_called(fake) == ["main", "main"]
    res = await llm.complete(REQ, process="channel")
    assert res.text == "one two three four five" and res.fallbacks == []
    await llm.aclose()


async def test_502_status_retried_on_same_model(fake: FakeLLM) -> None:
    fake.fail(502, times=1)
    fake.add(text="fine")
    llm = LLM(make_config(fake))
    res = await llm.complete(REQ, process="channel")
    assert res.text == "fine" and res.model == "oa/main" and models_called(fake) == ["main", "main"]
    await llm.aclose()


@pytest.mark.parametrize("tier", ["standard", "strong"])
async def test_context_overflow_is_typed_and_not_retried(fake: FakeLLM, tier: str) -> None:
    fake.fail(400, error="context_length", times=None)
    llm = LLM(make_config(fake))
    with pytest.raises(ContextOverflow) as info:
        await llm.complete(Request(REQ.messages, tier=tier), process="channel")
    assert info.value.status == 400 and len(fake.requests) == 1
    await llm.aclose()


@pytest.mark.parametrize("tier", ["standard", "strong"])
async def test_model_not_found_moves_on_without_retry(fake: FakeLLM, tier: str) -> None:
    primary = "main" if tier == "standard" else "big"
    fake.fail(404, times=None, model=f"^{primary}$")
    fake.add(text="from the next model")
    llm = LLM(make_config(fake))
    res = await llm.complete(Request(REQ.messages, tier=tier), process="channel")
    assert res.text == "from the next model" and res.fallbacks == [res.fallbacks[0]]
    assert models_called(fake)[0] == primary and models_called(fake)[1] != primary
    assert llm.cooldowns.remaining(res.fallbacks[0]) == 0  # not found is not a rate limit
    await llm.aclose()


async def test_bad_request_stops_and_auth_is_not_retried(fake: FakeLLM) -> None:
    fake.fail(400, times=1)
    llm = LLM(make_config(fake))
    with pytest.raises(BadRequest, match="400"):
        await llm.complete(REQ, process="channel")
    assert len(fake.requests) == 1
    fake.fail(401, times=None)
    with pytest.raises(AllModelsFailed) as info:
        await llm.complete(REQ, process="channel")
    assert [type(e) for _, e in info.value.errors] == [AuthError, AuthError, AuthError]
    assert models_called(fake)[1:] == ["main", "backup", "last"]
    await llm.aclose()


async def test_all_models_failed_names_each_model(fake: FakeLLM) -> None:
    fake.fail(503, times=None)
    llm = LLM(make_config(fake))
    with pytest.raises(AllModelsFailed) as info:
        await llm.complete(REQ, process="channel")
    assert [m for m, _ in info.value.errors] == ["oa/main", "an/backup", "oa/last"]
    assert "'oa/main'" in str(info.value)
    assert len(fake.requests) == 6  # two attempts per model
    await llm.aclose()


@pytest.mark.parametrize("tier", ["standard", "strong"])
async def test_cancellation_closes_the_http_stream(fake: FakeLLM, tier: str) -> None:
    fake.fail(kind="hang", after_events=3, times=None)
    llm = LLM(make_config(fake))
    got_text = asyncio.Event()

    async def consume() -> None:
        async for ev in llm.stream(Request([UserMessage("hi")], tier=tier), process="channel"):
            if isinstance(ev, TextDelta):
                got_text.set()

    fake.rules[0].text = "partial words then a hang"
    task = asyncio.create_task(consume())
    async with asyncio.timeout(10):
        await got_text.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.wait_disconnect(10)
    assert fake.disconnects == 1
    await llm.aclose()


async def test_total_timeout_is_retriable_and_typed() -> None:
    from spacebot.llm.errors import Timeout

    async with FakeLLM(token_latency=0.2) as slow:
        slow.add(text=" ".join(["w"] * 50))
        llm = LLM(make_config(slow, retry={"attempts_per_model": 1}))
        tmo = Timeouts(connect=5.0, first_token=5.0, total=0.3)
        with pytest.raises(AllModelsFailed) as info:
            await llm.complete(REQ, process="channel", timeouts=tmo)
        assert {type(e) for _, e in info.value.errors} == {Timeout}
        assert "total timeout" in str(info.value)
        await llm.aclose()


def test_retry_delay_policy() -> None:
    from spacebot.llm import RateLimited, RetryPolicy
    from spacebot.llm.errors import ModelNotFound, ServerError
    from spacebot.llm.fallback import cooldown_seconds, retry_delay

    pol = RetryPolicy(attempts_per_model=3, base_delay=0.5, max_delay=4.0, cooldown=30.0)
    assert retry_delay(pol, RateLimited("x", retry_after=2.0), 0) == 2.0  # Retry-After respected
    assert retry_delay(pol, RateLimited("x", retry_after=60.0), 0) is None  # too long: fall back
    assert retry_delay(pol, ServerError("x"), 2) is None  # attempts exhausted
    assert retry_delay(pol, ModelNotFound("x"), 0) is None  # never retried
    delays = [retry_delay(pol, ServerError("x"), a) for a in (0, 1)]
    assert all(d is not None and 0 <= d <= 0.5 * 2**a for a, d in enumerate(delays))
    assert cooldown_seconds(pol, RateLimited("x", retry_after=None)) == 30.0
    assert cooldown_seconds(pol, RateLimited("x", retry_after=5000.0)) == pol.max_cooldown
