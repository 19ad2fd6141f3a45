"""Cron with real processes: the supervisor, memory, the cortex (which runs the scheduler), a
fresh conversation process per run, the web chat, and the fake model.

Jobs that must already be due when the service starts ("missed while it was down") are written
into the agent's DuckDB before the supervisor starts; everything else goes through the control
socket, the CLI or the ``cron`` tool. Every wait is for an event (``cron.main.*`` notices, web chat
frames, gates of the fake model), never for a clock.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path
from typing import Any

import pytest

from spacebot.cron.store import CronStore
from spacebot.ipc.bus import BusClient
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    CronCmdAdd,
    CronCmdHistory,
    CronCmdList,
    CronCmdRunNow,
    CronJob,
    CronJobSpec,
    CronRequest,
    CronRun,
    Event,
    KillRequest,
    Notice,
    StoredMessage,
    TranscriptPage,
)
from spacebot.ipc.replies import retry_transient
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import Conversation, FakeToolCall, Rule
from spacebot.memory.store import Store
from spacebot.testing import ChatSystem, spacebot_cli

WAIT = 60.0
FAR = "0 0 1 1 *"
"""A schedule that does not fire during a test (runs come from ``run-now`` or a seeded cursor)."""


class GatedLLM(FakeLLM):
    """The fake model, holding answers of chosen rules until the test opens their gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gates: dict[str, asyncio.Event] = {}
        self.held: collections.Counter[str] = collections.Counter()
        self._arrived = asyncio.Condition()

    def gate(self, rule: str) -> asyncio.Event:
        return self.gates.setdefault(rule, asyncio.Event())

    async def reached(self, rule: str, count: int = 1) -> None:
        async with asyncio.timeout(WAIT), self._arrived:
            await self._arrived.wait_for(lambda: self.held[rule] >= count)

    async def _answer(self, request: Any, protocol: str, conv: Conversation, rule: Rule) -> Any:
        gate = self.gates.get(rule.name)
        if gate is not None and not gate.is_set():
            async with self._arrived:
                self.held[rule.name] += 1
                self._arrived.notify_all()
            await gate.wait()
        return await super()._answer(request, protocol, conv, rule)


def _system(root: Path, fake: FakeLLM, **sections: Any) -> ChatSystem:
    return ChatSystem(root, fake, sections_extra=sections or None, cortex={"ready_timeout": 60.0})


async def _cron(system: ChatSystem, command: Any, returns: Any) -> Any:
    """A cron command through the control socket (retried while the cortex loads its jobs)."""
    ctl = system.sup.ctl
    assert ctl is not None
    return await retry_transient(
        lambda: ctl.call(CronRequest("main", command), returns=returns, timeout=30.0),
        deadline=time.monotonic() + WAIT,
        what="cron command",
        max_delay=0.5,
    )


async def _events(system: ChatSystem) -> EventStream:
    assert system.sup.ctl is not None
    return await system.sup.ctl.events("cron.main.")


async def _notice(events: EventStream, what: str, pred: Any = lambda _f: True) -> dict[str, Any]:
    seen: list[Event] = []
    try:
        async with asyncio.timeout(WAIT):
            while True:
                event = await events.next()
                if isinstance(event.body, Notice) and event.body.text == what and pred(event.body.fields):
                    return dict(event.body.fields)
                seen.append(event)
    except TimeoutError:
        raise AssertionError(f"no cron {what!r} event; saw {[e.body for e in seen][-8:]}") from None


async def _page(system: ChatSystem, conversation: str) -> list[StoredMessage]:
    bus = BusClient(f"tester:{id(system)}", system.sup.endpoints.bus)
    bus.start()
    try:
        return await bus.request(
            "memory:main", TranscriptPage(conversation, limit=100), returns=list[StoredMessage], timeout=30
        )
    finally:
        await bus.close()


def _seed(system: ChatSystem, *jobs: CronJob) -> None:
    """Write jobs into the agent's database before the service starts (as a previous run left them)."""
    store = Store(system.sup.home / "agents" / "main" / "data" / "agent.duckdb")
    try:
        for job in jobs:
            CronStore(store).put(job)
    finally:
        store.close()


async def test_a_run_asks_in_a_fresh_conversation_and_its_answer_reaches_the_web_chat(
    short_tmp: Path,
) -> None:
    async with FakeLLM() as fake:
        fake.add(user="Summarise the overnight alerts", text="All quiet: 0 alerts overnight.")
        async with _system(short_tmp, fake) as system:
            events = await _events(system)
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            spec = CronJobSpec(
                id="alerts", prompt="Summarise the overnight alerts", cron=FAR, deliver_to=conv
            )
            job = await _cron(system, CronCmdAdd(spec), CronJob)
            assert job.enabled and job.next_run_at is not None and job.next_run_at > time.time()
            run = await _cron(system, CronCmdRunNow("alerts"), CronRun)
            assert run.conversation == f"cron:alerts.{run.id}"
            frame = await ana.wait_for(
                lambda f: f["type"] == "message" and f["conversation"] == conv, timeout=WAIT
            )
            assert frame["message"]["text"] == "All quiet: 0 alerts overnight."
            assert frame["message"]["role"] == "assistant"
            done = await _notice(events, "run", lambda f: f["run"] == run.id)
            assert done["outcome"] == "success" and done["delivered"] is True
            # The execution log row, and the run's own conversation: the prompt, then the answer.
            (logged,) = await _cron(system, CronCmdHistory("alerts"), list[CronRun])
            assert (logged.outcome, logged.delivered, logged.message_id) == (
                "success",
                True,
                frame["message"]["id"],
            )
            assert logged.ended_at is not None and logged.ended_at >= logged.started_at
            own = await _page(system, run.conversation)
            assert [(m.role, m.text) for m in own] == [
                ("user", "Summarise the overnight alerts"),
                ("assistant", "All quiet: 0 alerts overnight."),
            ]
            # The web conversation holds it too: it is there for whoever opens it later.
            assert [m.text for m in await _page(system, conv)] == ["All quiet: 0 alerts overnight."]
            # The cursor did not move: a manual run is outside the schedule.
            (listed,) = await _cron(system, CronCmdList(), list[CronJob])
            assert listed.next_run_at == job.next_run_at


async def test_missed_runs_fast_forward_and_run_once_never_runs_twice(short_tmp: Path) -> None:
    now = time.time()
    async with FakeLLM() as fake:
        fake.add(user="Check the backups", text="Backups are fine.")
        fake.add(user="One-off reminder", text="Reminder sent.")
        system = _system(short_tmp, fake)
        _seed(
            system,
            # Due every 10 minutes, last due two hours ago: twelve missed fires.
            CronJob(
                id="backups", prompt="Check the backups", every=600, timezone="UTC", next_run_at=now - 7200
            ),
            CronJob(id="once", prompt="One-off reminder", cron=FAR, run_once=True, next_run_at=now - 60),
        )
        async with system:
            events = await _events(system)
            ended = {}
            while len(ended) < 2:
                fields = await _notice(events, "run")
                ended[fields["job"]] = fields
            assert {j: f["outcome"] for j, f in ended.items()} == {"backups": "success", "once": "success"}
            jobs = {j.id: j for j in await _cron(system, CronCmdList(), list[CronJob])}
            assert jobs["backups"].next_run_at is not None and jobs["backups"].next_run_at > now + 60
            assert jobs["once"].next_run_at is None and jobs["once"].last_run_at is not None
            history = await _cron(system, CronCmdHistory(None, 50), list[CronRun])
            assert sorted(r.job_id for r in history) == ["backups", "once"]  # one catch-up, not twelve
            # A restart: nothing is due, the run_once job is over, nothing runs again.
            await system.sup.stop()
            await system.start()
            events = await _events(system)
            await _cron(system, CronCmdList(), list[CronJob])  # the cortex has loaded
            again = await _cron(system, CronCmdHistory(None, 50), list[CronRun])
            assert sorted(r.id for r in again) == sorted(r.id for r in history)
            jobs = {j.id: j for j in await _cron(system, CronCmdList(), list[CronJob])}
            assert jobs["once"].next_run_at is None


@pytest.mark.parametrize("victim", ["cortex", "conversation"])
async def test_a_process_killed_mid_run_does_not_deliver_twice(short_tmp: Path, victim: str) -> None:
    """SIGKILL of the cortex (it restarts and resumes the run) or of the run's conversation process
    (the supervisor restarts it and it answers its pending prompt) while the model is answering."""
    fake = GatedLLM()
    async with fake:
        fake.add(name="digest", user="Write the weekly digest", text="Digest: three releases shipped.")
        gate = fake.gate("digest")
        system = _system(short_tmp, fake)
        async with system:
            events = await _events(system)
            ana = await system.client("Ana")
            conv = await ana.create()
            spec = CronJobSpec(
                id="digest", prompt="Write the weekly digest", cron=FAR, run_once=True, deliver_to=conv
            )
            await _cron(system, CronCmdAdd(spec), CronJob)
            run = await _cron(system, CronCmdRunNow("digest"), CronRun)
            await fake.reached("digest")  # the run's conversation is waiting for the model
            assert system.sup.ctl is not None
            target = "cortex:main" if victim == "cortex" else f"channel:main:{run.conversation}"
            await system.sup.ctl.call(KillRequest(target, signal="KILL", restart=True), timeout=30)
            if victim == "cortex":
                # The first start's "ready" (resumed 0) may still be queued: wait for the restart's.
                await _notice(events, "ready", lambda f: f["resumed"] == 1)
            else:
                await fake.reached("digest", 2)  # the restarted conversation asks again
            gate.set()
            done = await _notice(events, "run", lambda f: f["run"] == run.id)
            assert done["outcome"] == "success" and done["delivered"] is True
            history = await _cron(system, CronCmdHistory("digest"), list[CronRun])
            assert [(r.id, r.outcome) for r in history] == [(run.id, "success")]
            delivered = [m for m in await _page(system, conv) if m.role == "assistant"]
            assert [m.text for m in delivered] == ["Digest: three releases shipped."]


async def test_three_failures_disable_a_job_and_the_cli_enables_it(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(user="Query the broken API", fault={"kind": "status", "status": 400, "error": "auto"})
        async with _system(short_tmp, fake) as system:
            events = await _events(system)
            spec = CronJobSpec(id="broken", prompt="Query the broken API", every=3600)
            await _cron(system, CronCmdAdd(spec), CronJob)
            for attempt in range(3):
                run = await _cron(system, CronCmdRunNow("broken"), CronRun)
                done = await _notice(events, "run", lambda f, rid=run.id: f["run"] == rid)
                assert done["outcome"] == "failed", (attempt, done)
            disabled = await _notice(events, "disabled")
            assert disabled["job"] == "broken" and "3 consecutive failures" in disabled["reason"]
            rt = ("--runtime-dir", str(system.sup.endpoints.dir))
            env = {"SPACEBOT_CONFIG": str(system.sup.config_file)}
            listed = await asyncio.to_thread(spacebot_cli, system.sup.home, *rt, "cron", "list", **env)
            assert listed.code == 0, listed
            assert "DISABLED (3 consecutive failures" in listed.out
            enabled = await asyncio.to_thread(
                spacebot_cli, system.sup.home, *rt, "cron", "enable", "broken", **env
            )
            assert enabled.code == 0, enabled
            (job,) = await _cron(system, CronCmdList(), list[CronJob])
            assert job.enabled and job.failures == 0 and job.next_run_at is not None
            missing = await asyncio.to_thread(spacebot_cli, system.sup.home, *rt, "cron", "rm", "nope", **env)
            assert missing.code == 1 and "no cron job 'nope'" in missing.err


async def test_the_cron_tool_creates_lists_and_deletes_jobs_from_a_conversation(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        create = FakeToolCall(
            "cron",
            {
                "action": "create",
                "id": "standup",
                "prompt": "Post the standup agenda",
                "cron": "0 9 * * 1-5",
                "timezone": "Europe/Berlin",
            },
        )
        # Rules are tried in order: the answers after a tool result come first.
        fake.add(tool_result="cron", user="remind us of standup", text="Done: {last_user}")
        fake.add(tool_result="cron", user="cancel the standup reminder", text="Cancelled.")
        fake.add(user="remind us of standup", tool_calls=[create])
        fake.add(
            user="cancel the standup reminder",
            tool_calls=[FakeToolCall("cron", {"action": "delete", "id": "standup"})],
        )
        async with _system(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "remind us of standup every weekday at 9")
            await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["role"] == "assistant", timeout=WAIT
            )
            (job,) = await _cron(system, CronCmdList(), list[CronJob])
            assert (job.id, job.source, job.created_by, job.deliver_to) == (
                "standup",
                "conversation",
                conv,
                conv,
            )
            assert job.timezone == "Europe/Berlin" and job.next_run_at is not None
            tool_results = [r for r in fake.requests if "scheduled standup" in str(r.body)]
            assert tool_results, "the model was told the job was scheduled"
            mark = len(ana.frames)
            await ana.send(conv, "cancel the standup reminder")
            await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["text"] == "Cancelled.",
                since=mark,
                timeout=WAIT,
            )
            assert await _cron(system, CronCmdList(), list[CronJob]) == []
