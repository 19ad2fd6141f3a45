"""The model sees every message of a conversation exactly once, in order: the first message of a new
conversation, a message that wakes a hibernated one, a burst that arrives while the conversation's
process starts, and a branch or worker result a previous process left unseen.

The message that starts a conversation process is stored before it is delivered, so the process
finds it twice: in the ``Inbound`` that woke it and in the history page it loads. These tests read
the exact requests the fake model recorded."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import msgspec

from spacebot.agent import context
from spacebot.conversation.transcript import Transcript
from spacebot.ipc import ids
from spacebot.ipc.bus import BusClient
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import Notice, ProcessExited, ReplyState, StoredMessage
from spacebot.llm.fake import FakeLLM, Recorded
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.llm.types import AssistantMessage, UserMessage
from spacebot.testing import ChatSystem

WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
WORKER = "You are a worker"
"""Starts the system prompt of a worker's model calls (the conversation's calls are the others)."""

Prompt = list[tuple[str, str]]
"""The conversation part of one model call: ``(role, text)`` of every message after the system one."""


def _echo() -> list[FakeToolCall]:
    # What `spacebot run --fake-llm` answers: the last user message, as the model received it.
    return [FakeToolCall("reply", {"content": "I received: {last_user}"})]


def _prompt(request: Recorded) -> Prompt:
    out: Prompt = []
    for m in request.body["messages"]:
        if m["role"] == "system":
            continue
        assert isinstance(m["content"], str), f"unexpected content parts in {m!r}"
        out.append((m["role"], m["content"]))
    return out


def _channel_prompts(requests: list[Recorded]) -> list[Prompt]:
    """The prompts of the conversation's own model calls (not those of its workers)."""
    return [_prompt(r) for r in requests if WORKER not in r.conversation.system]


def _notice(what: str) -> Callable[[Any], bool]:
    return lambda event: isinstance(event.body, Notice) and event.body.text == what


@contextlib.asynccontextmanager
async def _events(system: ChatSystem, *topics: str) -> AsyncIterator[EventStream]:
    bus = BusClient(f"tester:{os.getpid()}:{secrets.token_hex(2)}", system.sup.endpoints.bus)
    bus.start()
    try:
        stream = await bus.subscribe(*topics)
        try:
            yield stream
        finally:
            stream.close()
    finally:
        await bus.close()


async def _turns(events: EventStream, messages: int) -> list[dict[str, Any]]:
    """The ``turn`` notices of the conversation until ``messages`` person messages were answered."""
    turns: list[dict[str, Any]] = []

    def answered(event: Any) -> bool:
        if _notice("turn")(event):
            turns.append(event.body.fields)
        return sum(t["messages"] for t in turns) >= messages

    await events.wait_for(answered, timeout=WAIT)
    return turns


async def test_the_first_message_of_a_new_conversation_is_seen_once(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=_echo())
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            async with _events(system, f"channel.{ids.channel('main', conv)}.") as events:
                ack = await ana.send(conv, "Can you run the build check for me?")
                [turn] = await _turns(events, 1)
            mid = ack["message"]["id"]
            line = f"[#{mid}] (new) Ana: Can you run the build check for me?"
            assert turn["pending"] == 0 and turn["retry"] is False
            assert _channel_prompts(fake.requests) == [[("user", line)]]
            # The person sees the model's echo of it: one line, not two.
            echo = await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["role"] == "assistant", timeout=WAIT
            )
            assert echo["message"]["text"] == f"I received: {line}"


async def test_a_message_that_wakes_a_hibernated_conversation_is_seen_once(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=_echo())
        async with ChatSystem(short_tmp, fake, channel={"idle_timeout": 1.0}) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            channel = ids.channel("main", conv)
            async with _events(system, f"channel.{channel}.", f"proc.channel.{channel}.") as events:
                first = (await ana.send(conv, "remember the word pineapple"))["message"]["id"]
                await _turns(events, 1)
                asleep = await system.channel_pid(conv)
                exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=WAIT)
                assert isinstance(exited.body, ProcessExited) and exited.body.exit_code == 0
                second = (await ana.send(conv, "what was the word?"))["message"]["id"]
                [turn] = await _turns(events, 1)
            assert turn["turn"] == 1  # answered by a new process
            assert await system.channel_pid(conv) not in (0, asleep)
            reply = f"I received: [#{first}] (new) Ana: remember the word pineapple"
            assert _channel_prompts(fake.requests) == [
                [("user", f"[#{first}] (new) Ana: remember the word pineapple")],
                [
                    ("user", f"[#{first}] Ana: remember the word pineapple"),
                    ("assistant", reply),
                    ("user", f"[#{second}] (new) Ana: what was the word?"),
                ],
            ]


def _expected(rows: list[dict[str, Any]], batches: list[int]) -> list[Prompt]:
    """What each turn's model call must hold, given the stored rows of the conversation and how
    many person messages each turn answered: every message once, in the order it was stored,
    except that the messages the turn answers come last, marked ``(new)``; consecutive lines of
    people form one user message, and each turn's one reply is an assistant message."""
    people = [r for r in rows if r["role"] == "user"]
    replies = [r for r in rows if r["role"] == "assistant"]
    prompts: list[Prompt] = []
    start = 0
    for turn, size in enumerate(batches):
        seen = sorted(people[:start] + replies[:turn], key=lambda r: (r["created_at"], r["id"]))
        prompt: Prompt = []
        lines: list[str] = []
        for row, mark in [(r, "") for r in seen] + [(r, " (new)") for r in people[start : start + size]]:
            if row["role"] == "assistant":
                if lines:
                    prompt.append(("user", "\n".join(lines)))
                    lines = []
                prompt.append(("assistant", row["text"]))
            else:
                lines.append(f"[#{row['id']}]{mark} {row['author_name']}: {row['text']}")
        prompt.append(("user", "\n".join(lines)))
        prompts.append(prompt)
        start += size
    return prompts


async def test_a_burst_that_arrives_while_the_process_starts_is_seen_once(short_tmp: Path) -> None:
    texts = ["the build is red", "it fails in the linker", "can you look?"]
    async with FakeLLM() as fake:
        fake.add(tool_calls=_echo())
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            async with _events(system, f"channel.{ids.channel('main', conv)}.") as events:
                # Sent without waiting for acks: the first wakes the process, the others arrive
                # while it starts (and loads the history page, which holds them too).
                sent = [secrets.token_hex(8) for _ in texts]
                for client_id, text in zip(sent, texts, strict=True):
                    await ana.send_frame(
                        {"type": "send", "conversation": conv, "text": text, "client_id": client_id}
                    )
                acks = [
                    await ana.wait_for(
                        lambda f, c=c: f["type"] == "ack" and f["client_id"] == c, timeout=WAIT
                    )
                    for c in sent
                ]
                turns = await _turns(events, len(texts))
            assert [t["messages"] for t in turns if t["messages"]] == [t["messages"] for t in turns]
            assert turns[-1]["pending"] == 0
            rows = (await ana.open(conv))["messages"]
            people = [(r["id"], r["text"]) for r in rows if r["role"] == "user"]
            assert people == [(a["message"]["id"], t) for a, t in zip(acks, texts, strict=True)]
            prompts = _channel_prompts(fake.requests)
            assert prompts == _expected(rows, [t["messages"] for t in turns])
            # Usually the process is still starting when all three arrive: one turn answers them.
            if len(turns) == 1:
                assert prompts == [[("user", "\n".join(f"[#{i}] (new) Ana: {t}" for i, t in people))]]


async def test_a_result_a_killed_process_left_unseen_is_seen_once(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: build it",
            tool_calls=[
                FakeToolCall("spawn_worker", {"task": "build the thing"}),
                FakeToolCall("reply", {"content": "Started."}),
            ],
        )
        fake.add(system=WORKER, user="build the thing", text="BUILD-OK")
        fake.add(user=r"finished \(success\)", tool_calls=[FakeToolCall("reply", {"content": "Passed."})])
        # The results' turn would start an hour after the result: only a new process starts it.
        async with ChatSystem(short_tmp, fake, channel={"retrigger_window": 3600.0}) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            async with _events(system, f"channel.{ids.channel('main', conv)}.") as events:
                mid = (await ana.send(conv, "build it"))["message"]["id"]
                finished = await events.wait_for(_notice("finished"), timeout=WAIT)
                assert isinstance(finished.body, Notice)
                worker = finished.body.fields["id"]
                os.kill(await system.channel_pid(conv), signal.SIGKILL)
                await events.wait_for(
                    lambda e: _notice("turn")(e) and e.body.fields["results"] == 1, timeout=WAIT
                )
            result = f"[worker {worker} — build the thing] (new) finished (success): BUILD-OK"
            assert _channel_prompts(fake.requests) == [
                [("user", f"[#{mid}] (new) Ana: build it")],
                [("user", f"[#{mid}] Ana: build it"), ("assistant", "Started."), ("user", result)],
            ]


# -- the transcript itself: one entry per stored message, whatever order things arrive in --------


def _row(mid: int, author: str, state: ReplyState, role: str = "user", at: float = 0.0) -> StoredMessage:
    return msgspec.convert(
        {
            "id": mid,
            "channel_id": "web:c",
            "platform_message_id": None,
            "author_id": author,
            "author_name": author,
            "role": role,
            "text": f"text {mid}",
            "attachments": [],
            "created_at": at or float(mid),
            "reply_state": state,
            "replied_at": None,
        },
        StoredMessage,
    )


def test_a_message_delivered_before_the_page_loads_is_kept_once() -> None:
    old = _row(1, "web:ana", ReplyState.ANSWERED)
    reply = _row(2, "agent:main", ReplyState.NONE, role="assistant")
    burst = [_row(mid, "web:ana", ReplyState.PENDING) for mid in (3, 4, 5)]
    transcript = Transcript("web:c")
    assert transcript.take(burst[0]) and transcript.take(burst[2])  # delivered before the page came
    assert not transcript.take(burst[0])  # delivered again: already there
    transcript.load([old, reply, *burst], burst)
    assert not transcript.take(burst[1])  # delivered after the page: already there
    assert [m.id for m in transcript.history] == [1, 2, 3, 4, 5]
    assert sorted(transcript.pending) == [3, 4, 5]
    messages = context.transcript(transcript.history, set(transcript.pending))
    assert messages == [
        UserMessage("[#1] web:ana: text 1"),
        AssistantMessage("text 2"),
        UserMessage("[#3] (new) web:ana: text 3\n[#4] (new) web:ana: text 4\n[#5] (new) web:ana: text 5"),
    ]


def test_a_result_stored_while_the_page_loads_is_kept_once() -> None:
    person = _row(1, "web:ana", ReplyState.PENDING)
    result = _row(2, "worker:w1", ReplyState.PENDING, role="system")
    transcript = Transcript("web:c")
    transcript.add_event(result)  # stored and shown by this process before its page arrived
    transcript.add_event(result)  # a retried report returns the same stored row
    transcript.load([person, result], [person, result])
    assert [m.id for m in transcript.history] == [1, 2]
    assert sorted(transcript.pending) == [1, 2]
    # A line that is not stored (negative id) is shown as it comes, and is not a message to react to.
    status = _row(-1, "worker:w1", ReplyState.NONE, role="system", at=3.0)
    transcript.add_event(status)
    assert [m.id for m in transcript.history] == [1, 2, -1] and -1 not in transcript.known
