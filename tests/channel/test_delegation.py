"""Branches and workers driven by scripted fake-model conversations, through the real web chat.

Every wait says what it waited for when it runs out (the frames and model requests seen last), and
a decision that is the absence of something (no turn, no hold) is read from the event the channel
publishes when it decides (``channel.<id>.turn``, ``channel.<id>.held``), never from a pause.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import psutil

from spacebot.ipc import ids
from spacebot.ipc.bus import BusClient
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import Event, MemoryDraft, MemoryType, MemSave, Notice
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import Conversation, FakeToolCall, Fault, Rule
from spacebot.testing import ChatSystem, eventually

BRANCH = "You are a branch"
WORKER = "You are a worker"
WAIT = 60.0
"""Deadline of a wait for something that is certain to come (only reached when it does not)."""


def _call(name: str, **args: Any) -> FakeToolCall:
    return FakeToolCall(name, args)


def _reply(text: str) -> FakeToolCall:
    return _call("reply", content=text)


class GatedLLM(FakeLLM):
    """The fake model, holding its answers to chosen rules until the test opens their gate: a
    turn stays "being answered" for exactly as long as the test needs, not for a guessed delay."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, asyncio.Event] = {}
        self.held: collections.Counter[str] = collections.Counter()
        self._arrived = asyncio.Condition()

    def gate(self, rule: str) -> asyncio.Event:
        """Hold answers of the rules named ``rule`` until the returned event is set."""
        return self.gates.setdefault(rule, asyncio.Event())

    async def reached(self, rule: str, count: int = 1) -> None:
        """Wait until ``count`` requests answered by ``rule`` are being held at its gate."""
        try:
            async with asyncio.timeout(WAIT), self._arrived:
                await self._arrived.wait_for(lambda: self.held[rule] >= count)
        except TimeoutError:
            asked = [f"{r.rule or '-'} <- {r.conversation.last_user[-100:]!r}" for r in self.requests[-6:]]
            raise AssertionError(
                f"{self.held[rule]} of {count} requests reached the {rule!r} gate; last requests: {asked}"
            ) from None

    async def _answer(self, request: Any, protocol: str, conv: Conversation, rule: Rule) -> Any:
        gate = self.gates.get(rule.name)
        if gate is not None and not gate.is_set():
            async with self._arrived:
                self.held[rule.name] += 1
                self._arrived.notify_all()
            await gate.wait()
        return await super()._answer(request, protocol, conv, rule)


def _seen(chat: Any, fake: FakeLLM) -> str:
    """What a failed wait shows: the last frames the client got and the last model requests."""
    frames = [
        f"{f['type']}: {str(f.get('message', {}).get('text', f.get('text', f.get('state', ''))))[:80]!r}"
        for f in chat.frames[-10:]
    ]
    asked = [f"{r.rule or '-'} <- {r.conversation.last_user[-100:]!r}" for r in fake.requests[-6:]]
    return (
        "\n  last frames:\n    "
        + "\n    ".join(frames)
        + "\n  last model requests:\n    "
        + ("\n    ".join(asked) or "(none)")
    )


async def _frame(
    chat: Any, fake: FakeLLM, pred: Callable[[dict], bool], what: str, timeout: float = WAIT
) -> dict:
    try:
        frame: dict = await chat.wait_for(pred, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"{chat.name} got no {what} within {timeout:g}s{_seen(chat, fake)}") from None
    return frame


async def _reply_with(chat: Any, fake: FakeLLM, conv: str, needle: str, timeout: float = WAIT) -> dict:
    frame = await _frame(
        chat,
        fake,
        lambda f: (
            f["type"] == "message"
            and f["conversation"] == conv
            and f["message"]["role"] == "assistant"
            and needle in f["message"]["text"]
        ),
        f"agent message containing {needle!r}",
        timeout,
    )
    return frame["message"]


async def _answer_after(chat: Any, fake: FakeLLM, conv: str, after: int) -> dict:
    """The first agent message stored after message ``after``."""
    frame = await _frame(
        chat,
        fake,
        lambda f: (
            f["type"] == "message"
            and f["conversation"] == conv
            and f["message"]["role"] == "assistant"
            and f["message"]["id"] > after
        ),
        f"agent message after message {after}",
    )
    return frame["message"]


async def _bus(system: ChatSystem) -> BusClient:
    bus = BusClient(f"tester:{id(system)}", system.sup.endpoints.bus)
    bus.start()
    return bus


async def _notice(
    events: EventStream, what: str, pred: Callable[[dict[str, Any]], bool] = lambda _: True
) -> tuple[Event, list[Event]]:
    """The next ``Notice`` called ``what`` whose fields satisfy ``pred``, and the events before it."""
    skipped: list[Event] = []
    try:
        async with asyncio.timeout(WAIT):
            while True:
                event = await events.next()
                if isinstance(event.body, Notice) and event.body.text == what and pred(event.body.fields):
                    return event, skipped
                skipped.append(event)
    except TimeoutError:
        seen = "\n    ".join(f"{e.topic} {e.body!r}"[:160] for e in skipped[-12:])
        raise AssertionError(f"no {what!r} notice within {WAIT:g}s; events seen:\n    {seen}") from None


def _texts(events: list[Event]) -> list[str]:
    return [e.body.text for e in events if isinstance(e.body, Notice)]


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
            await _reply_with(ana, fake, conv, "Let me think")
            await _reply_with(ana, fake, conv, "It is teal!")
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
        # The build runs until the test says so: Bob is answered while it is certainly still running.
        build = "until [ -e release-the-build ]; do sleep 0.05; done; echo BUILD-OK"
        fake.add(system=WORKER, tool_calls=[_call("shell", command=build)])
        fake.add(user=r"\(new\) Bob: hello", tool_calls=[_reply("Hi Bob!")])
        fake.add(user=r"finished \(success\): build passed", tool_calls=[_reply("The build passed.")])
        async with ChatSystem(short_tmp, fake, channel={"coalesce_debounce": 0.0}) as system:
            ana, bob = await system.client("Ana"), await system.client("Bob")
            conv = await ana.create()
            await ana.open(conv)
            await bob.open(conv)
            await ana.send(conv, "run the build please")
            await _reply_with(ana, fake, conv, "On it.")
            working = await _frame(
                ana, fake, lambda f: f["type"] == "typing" and f["state"] == "working", "'working' indicator"
            )
            assert "run the build" in working["detail"]
            await bob.send(conv, "hello everyone")
            hi = await _reply_with(bob, fake, conv, "Hi Bob!")
            assert not any("finished (success)" in r.conversation.last_user for r in fake.requests)
            (system.sup.home / "agents" / "main" / "workspace" / "release-the-build").touch()
            done = await _reply_with(ana, fake, conv, "The build passed.")
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
            await _reply_with(ana, fake, conv, "Which name should I write?")
            await ana.send(conv, "Zed")
            await _reply_with(ana, fake, conv, "Done: name.txt")
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
            workers: list[str] = []
            sleepers: list[psutil.Process] = []
            try:
                async with asyncio.timeout(WAIT):
                    # The worker's commands are OS processes, which publish nothing: poll the tree.
                    while len(sleepers) != 2:
                        await asyncio.sleep(0.05)
                        workers = await _worker_ids(system)
                        # Listed before its fork is reported, a worker has no pid yet (0).
                        pid = (await system.sup.info(workers[0])).pid if workers else 0
                        if pid:
                            proc = psutil.Process(pid)
                            sleepers = [p for p in proc.children(recursive=True) if p.name() == "sleep"]
            except TimeoutError:
                raise AssertionError(f"workers {workers}, sleepers {sleepers}{_seen(ana, fake)}") from None
            await ana.send(conv, f"stop {workers[0]}")
            await _reply_with(ana, fake, conv, "Cancelled the sleeper.")
            _gone, alive = await asyncio.to_thread(psutil.wait_procs, [proc, *sleepers], WAIT)
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
            await _reply_with(ana, fake, conv, "The worker timed out.")
            assert await _worker_ids(system) == [] or all(
                p.state in ("exited", "failed")
                for p in (await system.sup.status()).processes
                if p.kind == "worker"
            )


async def test_results_are_batched_and_retriggers_capped(short_tmp: Path) -> None:
    async with GatedLLM() as fake:
        tasks = [_call("spawn_worker", task=f"job {i}") for i in range(3)]
        fake.add(user=r"\(new\) Ana: three jobs", tool_calls=[*tasks, _reply("Started three jobs.")])
        for i in range(3):
            fake.add(name="job", system=WORKER, user=f"job {i}", text=f"job {i} done")
        jobs = fake.gate("job")  # the three finish together, well inside the window
        fake.add(
            user=r"finished \(success\): job",
            tool_calls=[_call("spawn_worker", task="follow-up job"), _reply("more")],
        )
        fake.add(system=WORKER, user="follow-up job", text="follow-up done")
        async with ChatSystem(
            short_tmp, fake, channel={"retrigger_window": 1.5, "retrigger_cap": 1}
        ) as system:
            bus = await _bus(system)
            try:
                ana = await system.client("Ana")
                conv = await ana.create()
                events = await bus.subscribe(f"channel.{ids.channel('main', conv)}.")
                await ana.open(conv)
                await ana.send(conv, "three jobs please")
                await _reply_with(ana, fake, conv, "Started three jobs.")
                first, _ = await _notice(events, "turn")
                assert first.body.fields["messages"] == 1
                await fake.reached("job", 3)
                jobs.set()
                # The three results arrive within the window: one turn sees them all...
                retrigger, _ = await _notice(events, "turn")
                assert retrigger.body.fields["messages"] == 0 and retrigger.body.fields["results"] == 3
                retriggers = [r for r in fake.requests if "finished (success)" in r.conversation.last_user]
                assert len(retriggers) == 1
                assert all(f"job {i} done" in retriggers[0].conversation.last_user for i in range(3))
                # ...and the follow-up's result, past the cap, is held for the next person's turn.
                held, between = await _notice(events, "held")
                assert held.body.fields == {"results": 1, "reason": "retrigger cap"}
                assert "turn" not in _texts(between)
                channel_turns = [r for r in fake.requests if WORKER not in r.conversation.system]
                assert len(channel_turns) == 2  # the first message and the one retrigger (cap 1)
            finally:
                await bus.close()


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
            await _reply_with(ana, fake, conv, "fixed")


async def test_burst_from_three_people_is_one_turn(short_tmp: Path) -> None:
    async with GatedLLM() as fake:
        fake.add(name="lone", user=r"\(new\) Cy: a lone question", tool_calls=[_reply("ok")])
        fake.add(name="floor", user=r"\(new\) Ana: hold the floor", tool_calls=[_reply("ok")])
        fake.add(tool_calls=[_reply("ok")])
        lone, floor = fake.gate("lone"), fake.gate("floor")
        settings = {"coalesce_debounce": 1.0, "coalesce_max_wait": 6.0}
        async with ChatSystem(short_tmp, fake, channel=settings) as system:
            bus = await _bus(system)
            try:
                people = [await system.client(n) for n in ("Ana", "Bob", "Cy")]
                ana, bob, cy = people
                conv = await ana.create()
                events = await bus.subscribe(f"channel.{ids.channel('main', conv)}.")
                for p in people:
                    await p.open(conv)

                async def delivered(*texts: str) -> None:
                    # The gateway hands a message to the channel right after showing it to the
                    # conversation's watchers; a round trip through the gateway after that (an
                    # `open`) is queued behind those hand-overs on its bus socket.
                    for text in texts:
                        await _frame(
                            ana,
                            fake,
                            lambda f, t=text: f["type"] == "message" and f["message"]["text"] == t,
                            f"message {text!r}",
                        )
                    await ana.open(conv)

                # A first exchange makes it a group conversation.
                for person, text in ((ana, "morning"), (bob, "morning Ana")):
                    ack = await person.send(conv, text)
                    await _answer_after(person, fake, conv, ack["message"]["id"])
                    await _notice(events, "turn")
                # A message that finds nothing unanswered is answered at once; the three that arrive
                # while it is being answered (its model call is held open) are one turn.
                ack = await cy.send(conv, "a lone question")
                await fake.reached("lone")
                before = len(fake.requests)
                burst = [f"burst from {p.name}" for p in people]
                await asyncio.gather(*(p.send(conv, text) for p, text in zip(people, burst, strict=True)))
                await delivered(*burst)
                lone.set()
                answer = await _answer_after(cy, fake, conv, ack["message"]["id"])
                assert (
                    answer["text"] == "ok" and "burst" not in fake.requests[before - 1].conversation.last_user
                )
                turn, _ = await _notice(events, "turn")
                assert (turn.body.fields["messages"], turn.body.fields["pending"]) == (1, 3)
                coalesced, _ = await _notice(events, "coalesced")
                assert coalesced.body.fields == {"messages": 3, "people": 3}
                turn, _ = await _notice(events, "turn")
                assert (turn.body.fields["messages"], turn.body.fields["pending"]) == (3, 0)
                turns = fake.requests[before:]
                assert len(turns) == 1
                assert all(text in turns[0].conversation.last_user for text in burst)
                history = await ana.open(conv)
                assert sum(1 for m in history["messages"] if m["text"].startswith("burst from")) == 3
                # A /command is never held back: arriving in a burst, it has the burst answered now.
                await ana.send(conv, "hold the floor")
                await fake.reached("floor")
                await bob.send(conv, "a burst of one")  # finds Ana's message unanswered: held
                ack = await cy.send(conv, "/help")
                await delivered("a burst of one", "/help")
                floor.set()
                turn, _ = await _notice(events, "turn")
                assert (turn.body.fields["messages"], turn.body.fields["pending"]) == (1, 2)
                turn, between = await _notice(events, "turn")
                assert (turn.body.fields["messages"], turn.body.fields["pending"]) == (2, 0)
                assert "coalesced" not in _texts(between)  # not held for the debounce: no burst
                await _answer_after(cy, fake, conv, ack["message"]["id"])
            finally:
                await bus.close()


def _is(e: Any, what: str) -> bool:
    return isinstance(e.body, Notice) and e.body.text == what


async def test_compactor_summarises_in_the_background_and_keeps_memories(short_tmp: Path) -> None:
    summary = msgspec.json.encode(
        {
            "summary": "Ana and the agent talked about tea.",
            "memories": [{"content": "Ana drinks green tea", "type": "preference"}],
        }
    ).decode()
    async with GatedLLM() as fake:
        fake.add(name="compact", system="You compact a chat transcript", text=summary)
        compaction = fake.gate("compact")
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
                    await _reply_with(ana, fake, conv, f"noted {i}")
                    if any(_is(e, "started") for e in seen):
                        break
                await eventually(
                    lambda: any(_is(e, "started") for e in seen), what=lambda: f"compaction start in {seen}"
                )
                started = next(e for e in seen if _is(e, "started"))
                assert started.body.fields["level"] in ("background", "aggressive")
                # The channel answers while the compaction runs (its model call is held open).
                await fake.reached("compact")
                await ana.send(conv, "quick question")
                await _reply_with(ana, fake, conv, "quick answer")
                assert not any(_is(e, "done") for e in seen)
                compaction.set()
                await eventually(
                    lambda: any(_is(e, "done") for e in seen), what=lambda: f"compaction end in {seen}"
                )
                done = next(e for e in seen if _is(e, "done"))
                assert done.body.fields["memories"] == 1
                found = await bus.request("memory:main", _recall("green tea"), timeout=30)
                assert any("green tea" in h["memory"]["content"] for h in found)
                # The next model call sees the summary instead of the oldest messages.
                ack = await ana.send(conv, "after the compaction")
                await _answer_after(ana, fake, conv, ack["message"]["id"])
                last = next(
                    r for r in fake.requests if "after the compaction" in r.conversation.last_user
                ).body["messages"]
                assert "Ana and the agent talked about tea" in str(last)
                assert "message 0 about tea" not in str(last)
            finally:
                collector.cancel()
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
        fake.add(system=BRANCH, fault=Fault(kind="hang"))  # never answers: only the budget ends it
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
            await _reply_with(ana, fake, conv, "I could not work it out.")


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
            await eventually(
                lambda: any(WORKER in r.conversation.system for r in fake.requests),
                WAIT,
                what=lambda: f"a worker's model request{_seen(ana, fake)}",
            )
            worker = (await _worker_ids(system))[0]
            proc = psutil.Process((await system.sup.info(worker)).pid)
            # Its command is running (the sandboxed shell and its sleep)...
            await eventually(
                lambda: any(p.name() == "sleep" for p in proc.children(recursive=True)),
                WAIT,
                what="the worker's sleep command",
            )
            command = proc.children(recursive=True)
            proc.kill()
            await _reply_with(ana, fake, conv, "It crashed.")
            # ...and does not outlive the crashed worker: the supervisor, which inherits what a
            # dead process leaves behind, kills it.
            _gone, alive = await asyncio.to_thread(psutil.wait_procs, command, WAIT)
            assert not alive, f"left running after the worker died: {alive}"


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
            await _reply_with(ana, fake, conv, "It is 42.")


async def test_a_branch_offers_only_the_worker_types_the_configuration_enables(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        refused = r"must be one of 'builtin', got 'opencode'"
        fake.add(system=BRANCH, tool_result_content=refused, text="OpenCode is not available here.")
        fake.add(system=BRANCH, tool_calls=[_call("spawn_worker", task="fix it", worker_type="opencode")])
        fake.add(user=r"finished \(success\): OpenCode is not available", tool_calls=[_reply("No OpenCode.")])
        fake.add(
            user=r"\(new\) Ana: code",
            tool_calls=[_call("branch", description="fix the code"), _reply("…")],
        )
        off = {"tools": {"opencode": {"enabled": False}}}
        async with ChatSystem(short_tmp, fake, sections_extra=off) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "code it please")
            await _reply_with(ana, fake, conv, "No OpenCode.")
            assert await _worker_ids(system) == []
    branch = [r for r in fake.requests if BRANCH in r.conversation.system]
    spawn = next(t["function"] for t in branch[0].body["tools"] if t["function"]["name"] == "spawn_worker")
    assert spawn["parameters"]["properties"]["worker_type"]["enum"] == ["builtin"]
    # Asking for the type anyway is a tool error the branch reads, not a crash.
    assert [name for name, _ in branch[-1].conversation.tool_results] == ["spawn_worker"]
    assert "must be one of 'builtin', got 'opencode'" in branch[-1].conversation.tool_results[0][1]


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
            shared = await _reply_with(ana, fake, conv, "the report")
            [attachment] = shared["attachments"]
            assert attachment["name"] == "report.bin" and attachment["size"] == len(payload)
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{system.url}/{attachment['url']}") as resp:
                    assert resp.status == 200 and await resp.read() == payload
                    assert "report.bin" in resp.headers["Content-Disposition"]
                async with http.get(f"{system.url}/attachments/{conv}/999999/0") as resp:
                    assert resp.status == 404
            await ana.send(conv, "escape please")
            await _reply_with(ana, fake, conv, "refused")
