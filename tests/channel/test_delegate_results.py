"""A branch's or worker's result is stored before it is acknowledged, so a conversation process
killed before its next turn does not lose it: its next process answers it."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from spacebot.ipc import ids
from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import Notice, TranscriptUnanswered
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.testing import ChatSystem

WORKER = "You are a worker"
WAIT = 60.0


def _notice(what: str, **fields: Any) -> Any:
    def match(event: Any) -> bool:
        body = event.body
        return (
            isinstance(body, Notice)
            and body.text == what
            and all(body.fields.get(k) == v for k, v in fields.items())
        )

    return match


async def test_a_result_stored_before_a_channel_kill_is_answered_by_the_next_process(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: build it",
            tool_calls=[
                FakeToolCall("spawn_worker", {"task": "build the thing"}),
                FakeToolCall("reply", {"content": "Started."}),
            ],
        )
        fake.add(system=WORKER, user="build the thing", text="BUILD-OK")
        fake.add(
            user=r"finished \(success\): BUILD-OK",
            tool_calls=[FakeToolCall("reply", {"content": "The build passed."})],
        )
        # The results' turn would start an hour after the result: only a new process starts it.
        async with ChatSystem(short_tmp, fake, channel={"retrigger_window": 3600.0}) as system:
            bus = BusClient(f"tester:{os.getpid()}", system.sup.endpoints.bus)
            bus.start()
            try:
                ana = await system.client("Ana")
                conv = await ana.create()
                await ana.open(conv)
                channel = ids.channel("main", conv)
                events = await bus.subscribe(f"channel.{channel}.")
                await ana.send(conv, "build it")
                await events.wait_for(_notice("finished"), timeout=WAIT)
                before = await system.channel_pid(conv)
                os.kill(before, signal.SIGKILL)
                # The next process finds the stored result and runs the turn it was owed.
                turn = await events.wait_for(_notice("turn", messages=0, results=1), timeout=WAIT)
                assert isinstance(turn.body, Notice) and turn.body.fields["unseen"] == 0
                assert await system.channel_pid(conv) not in (0, before)
                await ana.wait_for(
                    lambda f: f["type"] == "message" and f["message"]["text"] == "The build passed.",
                    timeout=WAIT,
                )
                assert [m["text"] for m in ana.replies(conv)] == ["Started.", "The build passed."]
                asked = [
                    r.conversation.last_user for r in fake.requests if WORKER not in r.conversation.system
                ]
                assert sum("BUILD-OK" in u for u in asked) == 1  # seen once, by the new process
                # Seen, so no longer owed: nothing of this conversation is pending in storage.
                left = await bus.request(
                    ids.memory("main"), TranscriptUnanswered(conv, limit=10), timeout=10.0
                )
                assert left == []
                # People never see the result line itself, only the agent's answer.
                history = await ana.open(conv)
                assert [m["role"] for m in history["messages"]] == ["user", "assistant", "assistant"]
                events.close()
            finally:
                await bus.close()
