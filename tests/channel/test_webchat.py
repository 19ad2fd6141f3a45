"""The main job end to end over real WebSockets: gateway → supervisor → channel → fake model → reply."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

from spacebot.ipc import ids
from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import KillRequest, Notice, ProcessExited
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.testing import ChatSystem

WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""


def _reply(content: str) -> list[FakeToolCall]:
    return [FakeToolCall("reply", {"content": content})]


async def _answered(chat, conv: str, n: int = 1, timeout: float = WAIT) -> list[dict]:
    """Wait until ``chat`` has received ``n`` agent messages in ``conv``."""
    count = 0

    def nth(frame: dict) -> bool:
        nonlocal count
        if (
            frame["type"] == "message"
            and frame["conversation"] == conv
            and frame["message"]["role"] == "assistant"
        ):
            count += 1
        return count >= n

    await chat.wait_for(nth, timeout=timeout)
    return chat.replies(conv)


async def test_message_streams_a_reply_with_a_reaction_and_history_survives(short_tmp: Path) -> None:
    async with FakeLLM(token_latency=0.01) as fake:
        fake.add(
            user="thanks",
            tool_calls=[FakeToolCall("react", {"emoji": "🎉"}), *_reply("You are welcome, {last_user}")],
        )
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            assert ana.welcome["model"]["configured"] is True
            conv = await ana.create("planning")
            assert (await ana.open(conv))["messages"] == []
            ack = await ana.send(conv, "thanks for the help")
            assert ack["type"] == "ack" and ack["message"]["author_name"] == "Ana"
            final = await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["role"] == "assistant"
            )
            deltas = [f for f in ana.frames if f["type"] == "delta"]
            assert deltas and all(d["reply_id"] == final["message"]["reply_id"] for d in deltas)
            assert "".join(d["text"] for d in deltas) == final["message"]["text"]
            assert final["message"]["text"].startswith("You are welcome, [#")
            reaction = await ana.wait_for(lambda f: f["type"] == "reaction")
            assert reaction["emoji"] == "🎉" and reaction["message_id"] == ack["message"]["id"]
            await ana.wait_for(lambda f: f["type"] == "typing" and f["state"] == "idle")
            # The system prompt carries the identity files written at start-up.
            assert "Your name is Spacebot" in fake.requests[-1].conversation.system
            # A new socket (a reload) sees the whole history, reaction included.
            bob = await system.client("Bob")
            history = await bob.open(conv)
            texts = [(m["role"], m["text"]) for m in history["messages"]]
            assert texts[0] == ("user", "thanks for the help") and texts[1][0] == "assistant"
            assert history["messages"][0]["reactions"] == ["🎉"]
            assert history["messages"][1]["author_name"] == "Spacebot"


async def test_two_people_share_a_conversation(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=_reply("noted"))
        async with ChatSystem(short_tmp, fake) as system:
            ana, bob = await system.client("Ana"), await system.client("Bob")
            conv = await ana.create()
            await bob.wait_for(
                lambda f: f["type"] == "conversations" and any(c["id"] == conv for c in f["items"])
            )
            await ana.open(conv)
            await bob.open(conv)
            await ana.send(conv, "hi from ana")
            await bob.wait_for(lambda f: f["type"] == "message" and f["message"]["text"] == "hi from ana")
            last = (await bob.send(conv, "hi from bob"))["message"]["id"]
            await ana.wait_for(lambda f: f["type"] == "message" and f["message"]["text"] == "hi from bob")
            for chat in (ana, bob):  # both see the answer that came after Bob's message
                await chat.wait_for(
                    lambda f: (
                        f["type"] == "message"
                        and f["message"]["role"] == "assistant"
                        and f["message"]["id"] > last
                    )
                )
            history = await ana.open(conv)
            people = [m["author_name"] for m in history["messages"] if m["role"] == "user"]
            assert people == ["Ana", "Bob"]


async def test_plain_text_answer_is_delivered_once(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(user="plain", text="just text, no tool")
        fake.add(user="both", text="thinking out loud", tool_calls=_reply("the real answer"))
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "plain please")
            await _answered(ana, conv, 1)
            await ana.send(conv, "both please")
            replies = await _answered(ana, conv, 2)
            assert [r["text"] for r in replies] == ["just text, no tool", "the real answer"]
            # The provisional text stream of the second answer was withdrawn when the tool call came.
            aborted = {f["reply_id"] for f in ana.frames if f["type"] == "abort"}
            shown = {f["reply_id"] for f in ana.frames if f["type"] == "delta" and f["text"] == "thinking "}
            assert shown and shown <= aborted
            history = await ana.open(conv)
            assert [m["text"] for m in history["messages"] if m["role"] == "assistant"] == [
                "just text, no tool",
                "the real answer",
            ]


async def test_bad_input_gets_clear_errors_and_nothing_breaks(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        # Rules look at the new messages only (older lines of the transcript are in the prompt too).
        fake.add(user=r"\(new\) Ana: boom", tool_calls=[FakeToolCall("reply", raw_arguments='{"content": ')])
        fake.add(user=r"\(new\) Ana: hang", fault={"kind": "hang"})
        fake.add(tool_calls=_reply("fine"))
        async with ChatSystem(short_tmp, fake, channel={"turn_timeout": 2.0, "max_turns": 2}) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            too_big = await ana.send(conv, "x" * 16_001)
            assert too_big["code"] == "too_large" and "16000" in too_big["message"]
            assert (await ana.send(conv, "   "))["code"] == "empty"
            assert (await ana.send("web:nope", "hi"))["code"] == "unknown_conversation"
            assert (await ana.open("web:nope"))["code"] == "unknown_conversation"
            mark = len(ana.frames)
            await ana.send_frame({"type": "send", "conversation": conv})  # type: ignore[dict-item]
            bad = await ana.wait_for(lambda f: f["type"] == "error", since=mark)
            assert bad["code"] == "bad_frame" and "text" in bad["message"]
            await ana._ws.send_str("{not json")  # type: ignore[union-attr]
            assert (await ana.wait_for(lambda f: f["type"] == "error", since=mark + 1))["code"] == "bad_frame"
            # A model that hangs: the person sees a model error, the message stays in the history.
            await ana.send(conv, "hang on")
            err = await ana.wait_for(lambda f: f["type"] == "error" and f["code"] == "model", timeout=20)
            assert "in time" in err["message"]
            # Malformed tool arguments: the model is told, retries within its turn cap, then a notice.
            await ana.send(conv, "boom")
            err = await ana.wait_for(lambda f: f["type"] == "error" and "steps" in f["message"], timeout=20)
            # ... and the conversation keeps working.
            await ana.send(conv, "all good?")
            replies = await _answered(ana, conv, 1)
            assert replies[-1]["text"] == "fine"
            history = await ana.open(conv)
            users = [m["text"] for m in history["messages"] if m["role"] == "user"]
            assert users == ["hang on", "boom", "all good?"]
            assert sum(1 for m in history["messages"] if m["role"] == "system") == 2
            # A frame before hello is refused on a fresh socket.
            fresh = await system.client("Cy")
            await fresh.close()


async def test_no_model_configured_tells_people_what_to_set(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False) as system:
        ana = await system.client("Ana")
        model = ana.welcome["model"]
        assert model["configured"] is False and "ANTHROPIC_API_KEY" in model["hint"]
        conv = await ana.create()
        await ana.open(conv)
        await ana.send(conv, "hello?")
        err = await ana.wait_for(lambda f: f["type"] == "error" and f["code"] == "model")
        assert "OPENAI_API_KEY" in err["message"] and "SPACEBOT_LLM_BASE_URL" in err["message"]


async def test_twenty_conversations_three_clients_each(short_tmp: Path) -> None:
    async with FakeLLM(ttft=0.05) as fake:
        fake.add(tool_calls=_reply("answer to {last_user}"))
        async with ChatSystem(short_tmp, fake) as system:
            owner = await system.client("Owner")
            convs = [await owner.create(f"c{i}") for i in range(20)]
            clients = [await system.client(f"P{i}") for i in range(60)]
            for i, chat in enumerate(clients):
                await chat.open(convs[i % 20])

            async def talk(i: int, chat) -> None:
                ack = await chat.send(convs[i % 20], f"question {i}")
                assert ack["type"] == "ack"

            await asyncio.gather(*(talk(i, c) for i, c in enumerate(clients)))
            for i, chat in enumerate(clients):
                conv = convs[i % 20]
                await chat.wait_for(
                    lambda f, q=f"question {i}", c=conv: (
                        f["type"] == "message"
                        and f["conversation"] == c
                        and f["message"]["role"] == "assistant"
                        and q in f["message"]["text"]
                    ),
                    timeout=60,
                )
            # Every question answered exactly once in the stored transcripts.
            for conv in convs:
                history = await owner.open(conv)
                users = [m for m in history["messages"] if m["role"] == "user"]
                bots = [m for m in history["messages"] if m["role"] == "assistant"]
                assert len(users) == 3
                answered = [q for q in ("question",) for b in bots for u in users if u["text"] in b["text"]]
                assert len(answered) == 3, history["messages"]


async def test_channel_killed_mid_reply_answers_exactly_once(short_tmp: Path) -> None:
    async with FakeLLM(token_latency=0.05) as fake:
        fake.add(tool_calls=_reply("a long answer " * 30))
        async with ChatSystem(short_tmp, fake) as system:
            bus = BusClient("tester", system.sup.endpoints.bus)
            bus.start()
            try:
                await _killed_mid_reply(system, fake, bus)
            finally:
                await bus.close()


async def _killed_mid_reply(system: ChatSystem, fake: FakeLLM, bus: BusClient) -> None:
    ana = await system.client("Ana")
    conv = await ana.create()
    turns = await bus.subscribe(f"channel.{ids.channel('main', conv)}.turn")
    try:
        await ana.open(conv)
        await ana.send(conv, "tell me everything")
        first = await ana.wait_for(lambda f: f["type"] == "delta")
        pid = await system.channel_pid(conv)
        assert pid
        os.kill(pid, signal.SIGKILL)
        aborted = await ana.wait_for(lambda f: f["type"] == "abort" and f["reply_id"] == first["reply_id"])
        assert aborted["reason"] == "restarting"
        replies = await _answered(ana, conv, 1)
        assert await system.channel_pid(conv) not in (0, pid)
        # The new process says when it has nothing left to answer (the killed one said nothing).
        done = await turns.wait_for(
            lambda e: (
                isinstance(e.body, Notice) and e.body.fields["pending"] == 0 and e.body.fields["unseen"] == 0
            ),
            timeout=WAIT,
        )
        assert isinstance(done.body, Notice) and done.body.fields["messages"] == 1
        assert len(fake.requests) == 2  # the cut answer and the one delivered
        # Stored before that turn ended; shown to Ana before this later answer of the gateway.
        history = await ana.open(conv)
        assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
        assert history["messages"][1]["id"] == replies[0]["id"]
        assert len(ana.replies(conv)) == 1  # no second answer
    finally:
        turns.close()


async def test_gateway_restart_clients_reconnect_and_see_history(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=_reply("still here"))
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "before the restart")
            await _answered(ana, conv, 1)
            mark = len(ana.frames)
            assert system.sup.ctl is not None
            bus = BusClient("tester", system.sup.endpoints.bus)
            bus.start()
            try:
                listening = await bus.subscribe("gateway.")
                await system.sup.ctl.call(KillRequest("gateway:webchat", restart=True), timeout=WAIT)
                # Tests bind port 0, so the new gateway listens elsewhere: follow its announcement.
                moved = await listening.wait_for(
                    lambda e: isinstance(e.body, Notice) and e.body.text == "listening", timeout=WAIT
                )
            finally:
                await bus.close()
            assert isinstance(moved.body, Notice)
            system.use_port(moved.body.fields["port"])
            history = await ana.wait_for(lambda f: f["type"] == "history", since=mark, timeout=WAIT)
            assert ana.reconnects >= 1
            assert [m["text"] for m in history["messages"]] == ["before the restart", "still here"]
            await ana.send(conv, "after the restart")
            await _answered(ana, conv, 2)


async def test_idle_conversation_hibernates_and_wakes_with_its_history(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=_reply("ok"))
        async with ChatSystem(short_tmp, fake, channel={"idle_timeout": 1.0}) as system:
            bus = BusClient("tester", system.sup.endpoints.bus)
            bus.start()
            try:
                events = await bus.subscribe("proc.channel.")
                ana = await system.client("Ana")
                conv = await ana.create()
                await ana.open(conv)
                await ana.send(conv, "remember the word pineapple")
                await _answered(ana, conv, 1)
                exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=15)
                assert isinstance(exited.body, ProcessExited) and exited.body.exit_code == 0
                assert exited.body.restart_in is None
                await ana.send(conv, "what was the word?")
                await _answered(ana, conv, 2)
                # The woken process read the history back: the model saw the first exchange.
                last = fake.requests[-1].body["messages"]
                assert any("pineapple" in str(m.get("content")) for m in last)
                events.close()
            finally:
                await bus.close()


async def test_a_socket_dropped_mid_stream_loses_nothing(short_tmp: Path) -> None:
    async with FakeLLM(token_latency=0.05) as fake:
        fake.add(tool_calls=_reply("a reply that takes a while to stream " * 4))
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana", reconnect=False)
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "start streaming")
            await ana.wait_for(lambda f: f["type"] == "delta")
            await ana._ws.close()  # the tab goes away mid-reply
            again = await system.client("Ana again")
            history = await again.open(conv)
            if not any(m["role"] == "assistant" for m in history["messages"]):
                # Still streaming: the rest of the reply arrives on the new socket.
                assert history["pending"] is True
                await _answered(again, conv, 1)
                history = await again.open(conv)
            assert [m["role"] for m in history["messages"]] == ["user", "assistant"]
            assert system.sup.proc is not None and system.sup.proc.poll() is None
