"""Branches and workers driven by scripted fake-model conversations, through the real web chat."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import msgspec
import psutil

from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import MemSave, Notice
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.memory.types import MemoryDraft, MemoryType
from spacebot.testing import ChatSystem, eventually

BRANCH = "You are a branch"
WORKER = "You are a worker"


def _call(name: str, **args: Any) -> FakeToolCall:
    return FakeToolCall(name, args)


def _reply(text: str) -> FakeToolCall:
    return _call("reply", content=text)


async def _reply_with(chat: Any, conv: str, needle: str, timeout: float = 30.0) -> dict:
    frame = await chat.wait_for(
        lambda f: (
            f["type"] == "message"
            and f["conversation"] == conv
            and f["message"]["role"] == "assistant"
            and needle in f["message"]["text"]
        ),
        timeout=timeout,
    )
    return frame["message"]


async def _answer_after(chat: Any, conv: str, after: int, timeout: float = 30.0) -> dict:
    """The first agent message stored after message ``after``."""
    frame = await chat.wait_for(
        lambda f: (
            f["type"] == "message"
            and f["conversation"] == conv
            and f["message"]["role"] == "assistant"
            and f["message"]["id"] > after
        ),
        timeout=timeout,
    )
    return frame["message"]


async def _bus(system: ChatSystem) -> BusClient:
    bus = BusClient(f"tester:{id(system)}", system.sup.endpoints.bus)
    bus.start()
    return bus


async def _worker_ids(system: ChatSystem) -> list[str]:
    return [p.id for p in (await system.sup.status()).processes if p.kind == "worker"]


async def test_branch_recalls_concludes_and_the_channel_replies(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: what is my favourite colour",
            tool_calls=[_call("branch", description="find Ana's favourite colour"), _reply("Let me think…")],
        )
        fake.add(
            system=BRANCH, tool_result="memory_recall", tool_result_content="teal", text="Ana likes teal."
        )
        fake.add(system=BRANCH, tool_calls=[_call("memory_recall", query="Ana favourite colour")])
        fake.add(user=r"\(new\) finished \(success\): Ana likes teal", tool_calls=[_reply("It is teal!")])
        async with ChatSystem(short_tmp, fake) as system:
            bus = await _bus(system)
            try:
                draft = MemoryDraft(content="Ana's favourite colour is teal", type=MemoryType.PREFERENCE)
                await bus.request("memory:main", MemSave([draft]), timeout=30)
            finally:
                await bus.close()
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "what is my favourite colour?")
            await _reply_with(ana, conv, "Let me think")
            await _reply_with(ana, conv, "It is teal!")
            # The branch's working never reached the channel: only its conclusion did.
            channel_calls = [r for r in fake.requests if BRANCH not in r.conversation.system]
            assert not any("memory_recall" in str(r.body["messages"]) for r in channel_calls)
            # The channel's later turns show the finished branch in the status block.
            assert "Recently finished" in channel_calls[-1].conversation.system


async def test_worker_runs_a_shell_command_while_the_channel_answers_someone_else(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: run the build",
            tool_calls=[
                _call("spawn_worker", task="run the build script", task_type="coding"),
                _reply("On it."),
            ],
        )
        fake.add(
            system=WORKER, tool_result="shell", tool_result_content="BUILD-OK", text="build passed: BUILD-OK"
        )
        fake.add(system=WORKER, tool_calls=[_call("shell", command="sleep 2 && echo BUILD-OK")])
        fake.add(user=r"\(new\) Bob: hello", tool_calls=[_reply("Hi Bob!")])
        fake.add(user=r"finished \(success\): build passed", tool_calls=[_reply("The build passed.")])
        async with ChatSystem(short_tmp, fake, channel={"coalesce_debounce": 0.0}) as system:
            ana, bob = await system.client("Ana"), await system.client("Bob")
            conv = await ana.create()
            await ana.open(conv)
            await bob.open(conv)
            await ana.send(conv, "run the build please")
            await _reply_with(ana, conv, "On it.")
            working = await ana.wait_for(lambda f: f["type"] == "typing" and f["state"] == "working")
            assert "run the build" in working["detail"]
            await bob.send(conv, "hello everyone")
            hi = await _reply_with(bob, conv, "Hi Bob!")
            done = await _reply_with(ana, conv, "The build passed.")
            assert hi["id"] < done["id"]  # Bob was answered while the worker was still running
            worker = next(r for r in fake.requests if WORKER in r.conversation.system)
            assert worker.body["model"] == "main"  # task-type routing went through the LLM layer


async def test_interactive_worker_takes_a_follow_up_via_route(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: make a name file",
            tool_calls=[
                _call("spawn_worker", task="write a name the person gives into name.txt", interactive=True)
            ],
        )
        fake.add(
            system=WORKER, tool_result="file_write", tool_calls=[_call("finish", result="wrote name.txt")]
        )
        fake.add(
            system=WORKER,
            user="^Zed$",
            tool_calls=[_call("file_write", path="notes/name.txt", content="Zed")],
        )
        fake.add(system=WORKER, text="Which name should I write?")
        fake.add(
            user=r"\(new\) is waiting for input: Which name",
            tool_calls=[_reply("Which name should I write?")],
        )
        fake.add(user=r"\(new\) Ana: (Zed)", tool_calls=[_call("route", message="{user_group}")])
        fake.add(user=r"finished \(success\): wrote name.txt", tool_calls=[_reply("Done: name.txt")])
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "make a name file")
            await _reply_with(ana, conv, "Which name should I write?")
            await ana.send(conv, "Zed")
            await _reply_with(ana, conv, "Done: name.txt")
            written = system.sup.home / "agents" / "main" / "workspace" / "notes" / "name.txt"
            assert written.read_text() == "Zed"


async def test_cancel_kills_a_worker_and_its_commands(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: sleep",
            tool_calls=[_call("spawn_worker", task="sleep for a long time"), _reply("ok")],
        )
        fake.add(system=WORKER, tool_calls=[_call("shell", command="sleep 1000 & sleep 1000", timeout=3600)])
        fake.add(
            user=r"\(new\) Ana: stop (worker:\w+)",
            tool_calls=[_call("cancel", process_id="{user_group}"), _reply("stopping")],
        )
        fake.add(user=r"finished \(cancelled\)", tool_calls=[_reply("Cancelled the sleeper.")])
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "sleep please")
            async with asyncio.timeout(20):
                while True:
                    workers = await _worker_ids(system)
                    sleepers = []
                    if workers:
                        info = await system.sup.info(workers[0])
                        proc = psutil.Process(info.pid)
                        sleepers = [p for p in proc.children(recursive=True) if p.name() == "sleep"]
                    if len(sleepers) == 2:
                        break
                    await asyncio.sleep(0.05)
            await ana.send(conv, f"stop {workers[0]}")
            await _reply_with(ana, conv, "Cancelled the sleeper.")
            _gone, alive = psutil.wait_procs([proc, *sleepers], timeout=5)
            assert not alive


async def test_hung_worker_is_killed_at_its_budget_and_reported(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: go",
            tool_calls=[_call("spawn_worker", task="wait forever"), _reply("Started.")],
        )
        fake.add(system=WORKER, tool_calls=[_call("shell", command="sleep 1000", timeout=3600)])
        fake.add(user=r"finished \(timed_out\)", tool_calls=[_reply("The worker timed out.")])
        async with ChatSystem(short_tmp, fake, worker={"wall_clock_limit": 2.0}) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "go")
            await _reply_with(ana, conv, "The worker timed out.", timeout=40)
            assert await _worker_ids(system) == [] or all(
                p.state in ("exited", "failed")
                for p in (await system.sup.status()).processes
                if p.kind == "worker"
            )


async def test_results_are_batched_and_retriggers_capped(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        tasks = [_call("spawn_worker", task=f"job {i}") for i in range(3)]
        fake.add(user=r"\(new\) Ana: three jobs", tool_calls=[*tasks, _reply("Started three jobs.")])
        fake.add(system=WORKER, user="job 0", text="job 0 done")
        fake.add(system=WORKER, user="job 1", text="job 1 done")
        fake.add(system=WORKER, user="job 2", text="job 2 done")
        fake.add(
            user=r"finished \(success\): job",
            tool_calls=[_call("spawn_worker", task="follow-up job"), _reply("more")],
        )
        fake.add(system=WORKER, user="follow-up job", text="follow-up done")
        async with ChatSystem(
            short_tmp, fake, channel={"retrigger_window": 1.5, "retrigger_cap": 1}
        ) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "three jobs please")
            await _reply_with(ana, conv, "Started three jobs.")
            # Wait until the follow-up job finished too (it is in the workers' requests).
            await eventually(lambda: any("follow-up" in r.conversation.last_user for r in fake.requests), 30)
            retriggers = [r for r in fake.requests if "finished (success)" in r.conversation.last_user]
            assert len(retriggers) == 1  # the three results arrived within the window: one turn
            assert all(f"job {i} done" in retriggers[0].conversation.last_user for i in range(3))
            await asyncio.sleep(2.5)  # past the window: the follow-up's result must not start a turn
            channel_turns = [r for r in fake.requests if WORKER not in r.conversation.system]
            assert len(channel_turns) == 2  # the first message and the one retrigger (cap 1)


async def test_wrong_tool_arguments_come_back_as_readable_errors(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            tool_result="spawn_worker",
            tool_result_content="missing required argument 'task'",
            tool_calls=[_reply("fixed")],
        )
        fake.add(user=r"\(new\) Ana: oops", tool_calls=[_call("spawn_worker", interactive="yes")])
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "oops")
            await _reply_with(ana, conv, "fixed")


async def test_burst_from_three_people_is_one_turn(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(user=r"\(new\) Cy: a lone question", tool_calls=[_reply("ok")], delay=1.0)
        fake.add(tool_calls=[_reply("ok")])
        settings = {"coalesce_debounce": 1.0, "coalesce_max_wait": 6.0}
        async with ChatSystem(short_tmp, fake, channel=settings) as system:
            bus = await _bus(system)
            try:
                events = await bus.subscribe("channel.")
                people = [await system.client(n) for n in ("Ana", "Bob", "Cy")]
                conv = await people[0].create()
                for p in people:
                    await p.open(conv)
                # A first exchange makes it a group conversation.
                for person, text in ((people[0], "morning"), (people[1], "morning Ana")):
                    ack = await person.send(conv, text)
                    await _answer_after(person, conv, ack["message"]["id"])
                # A message that finds nothing unanswered is answered at once (its model call takes
                # 1 s)... and the three that arrive while it is being answered are one turn.
                ack = await people[2].send(conv, "a lone question")
                before = len(fake.requests) + 1
                await asyncio.gather(*(p.send(conv, f"burst from {p.name}") for p in people))
                lone = await _answer_after(people[2], conv, ack["message"]["id"])
                assert (
                    lone["text"] == "ok" and "burst" not in fake.requests[before - 1].conversation.last_user
                )
                event = await events.wait_for(
                    lambda e: isinstance(e.body, Notice) and e.body.text == "coalesced", timeout=15
                )
                assert isinstance(event.body, Notice) and event.body.fields == {"messages": 3, "people": 3}
                await asyncio.sleep(0.5)
                turns = fake.requests[before:]
                assert len(turns) == 1
                assert all(f"burst from {n}" in turns[0].conversation.last_user for n in ("Ana", "Bob", "Cy"))
                history = await people[0].open(conv)
                assert sum(1 for m in history["messages"] if m["text"].startswith("burst from")) == 3
                # A /command is answered at once, never held back.
                before = len(fake.requests)
                ack = await people[1].send(conv, "/help")
                await _answer_after(people[1], conv, ack["message"]["id"], timeout=0.9)
                events.close()
            finally:
                await bus.close()


def _notice(e: Any, what: str) -> bool:
    return isinstance(e.body, Notice) and e.body.text == what


async def test_compactor_summarises_in_the_background_and_keeps_memories(short_tmp: Path) -> None:
    summary = msgspec.json.encode(
        {
            "summary": "Ana and the agent talked about tea.",
            "memories": [{"content": "Ana drinks green tea", "type": "preference"}],
        }
    ).decode()
    async with FakeLLM() as fake:
        fake.add(system="You compact a chat transcript", text=summary, delay=4.0)
        fake.add(user=r"\(new\) Ana: quick", tool_calls=[_reply("quick answer")])
        fake.add(user=r"\(new\) Ana: message (\d+)", tool_calls=[_reply("noted {user_group} " + "x" * 40)])
        fake.add(tool_calls=[_reply("noted")])
        async with ChatSystem(short_tmp, fake, channel={"context_window": 900}) as system:
            bus = await _bus(system)
            seen: list[Any] = []
            try:
                events = await bus.subscribe("channel.")
                collector = asyncio.get_running_loop().create_task(_collect(events, seen))
                ana = await system.client("Ana")
                conv = await ana.create()
                await ana.open(conv)
                for i in range(10):
                    await ana.send(conv, f"message {i} about tea " + "y" * 120)
                    await _reply_with(ana, conv, f"noted {i}")
                    if any(_notice(e, "started") for e in seen):
                        break
                started = next(e for e in seen if _notice(e, "started"))
                assert started.body.fields["level"] in ("background", "aggressive")
                # The channel answers while the compaction runs (its model call takes 4 s).
                await ana.send(conv, "quick question")
                await _reply_with(ana, conv, "quick answer", timeout=3.5)
                await eventually(lambda: any(_notice(e, "done") for e in seen))
                done = next(e for e in seen if _notice(e, "done"))
                assert done.body.fields["memories"] == 1
                found = await bus.request("memory:main", _recall("green tea"), timeout=30)
                assert any("green tea" in h["memory"]["content"] for h in found)
                # The next model call sees the summary instead of the oldest messages.
                ack = await ana.send(conv, "after the compaction")
                await _answer_after(ana, conv, ack["message"]["id"])
                last = next(
                    r for r in fake.requests if "after the compaction" in r.conversation.last_user
                ).body["messages"]
                assert "Ana and the agent talked about tea" in str(last)
                assert "message 0 about tea" not in str(last)
                collector.cancel()
                events.close()
            finally:
                await bus.close()


async def _collect(events: Any, into: list[Any]) -> None:
    async for event in events:
        into.append(event)


def _recall(query: str) -> Any:
    from spacebot.ipc.messages import MemRecall

    return MemRecall(query=query, limit=5)


async def test_a_branch_that_runs_out_of_time_could_not_conclude(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: ponder",
            tool_calls=[_call("branch", description="ponder"), _reply("thinking")],
        )
        fake.add(system=BRANCH, text="too late", delay=3.0)
        fake.add(
            user=r"finished \(timed_out\): could not conclude",
            tool_calls=[_reply("I could not work it out.")],
        )
        async with ChatSystem(
            short_tmp, fake, sections_extra={"delegates": {"branch_timeout": 1.0}}
        ) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "ponder this")
            await _reply_with(ana, conv, "I could not work it out.")


async def test_a_killed_worker_reports_failed(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(user=r"\(new\) Ana: work", tool_calls=[_call("spawn_worker", task="long job"), _reply("ok")])
        fake.add(system=WORKER, tool_calls=[_call("shell", command="sleep 1000", timeout=3600)])
        fake.add(
            user=r"finished \(failed\): the process ended without a result",
            tool_calls=[_reply("It crashed.")],
        )
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "work")
            await eventually(lambda: any(WORKER in r.conversation.system for r in fake.requests))
            worker = (await _worker_ids(system))[0]
            pid = (await system.sup.info(worker)).pid
            psutil.Process(pid).kill()
            await _reply_with(ana, conv, "It crashed.")


async def test_a_branch_can_put_a_worker_to_work(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            system=BRANCH,
            tool_result="spawn_worker",
            tool_result_content="WORKER-42",
            text="the answer is 42",
        )
        fake.add(system=BRANCH, tool_calls=[_call("spawn_worker", task="print the number")])
        fake.add(system=WORKER, tool_result="shell", text="{last_user} -> WORKER-42")
        fake.add(system=WORKER, tool_calls=[_call("shell", command="echo WORKER-$((40 + 2))")])
        fake.add(user=r"finished \(success\): the answer is 42", tool_calls=[_reply("It is 42.")])
        fake.add(
            user=r"\(new\) Ana: number",
            tool_calls=[_call("branch", description="find the number"), _reply("…")],
        )
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "number?")
            await _reply_with(ana, conv, "It is 42.")


async def test_send_file_shares_a_workspace_file_people_can_download(short_tmp: Path) -> None:
    import aiohttp

    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: share",
            tool_calls=[_call("send_file", path="out/report.bin", caption="the report"), _reply("shared")],
        )
        fake.add(
            tool_result="send_file",
            tool_result_content="outside the workspace",
            tool_calls=[_reply("refused")],
        )
        fake.add(user=r"\(new\) Ana: escape", tool_calls=[_call("send_file", path="../../config.toml")])
        async with ChatSystem(short_tmp, fake) as system:
            payload = bytes(range(256)) * 4
            target = system.sup.home / "agents" / "main" / "workspace" / "out"
            target.mkdir(parents=True, exist_ok=True)
            (target / "report.bin").write_bytes(payload)
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "share the report")
            shared = await _reply_with(ana, conv, "the report")
            [attachment] = shared["attachments"]
            assert attachment["name"] == "report.bin" and attachment["size"] == len(payload)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{system.url}/{attachment['url']}") as resp:
                    assert resp.status == 200 and await resp.read() == payload
                    assert "report.bin" in resp.headers["Content-Disposition"]
                async with http.get(f"{system.url}/attachments/{conv}/999999/0") as resp:
                    assert resp.status == 404
            await ana.send(conv, "escape please")
            await _reply_with(ana, conv, "refused")
