"""``cortex:<agent>`` as a real process beside a real memory: the maintenance schedule and its
circuit, the knowledge block, zero idle spend, supervision of stuck work, process history."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from spacebot.ipc.bus import BusClient
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    CortexReport,
    CortexStatus,
    HistoryGet,
    Kind,
    KnowledgeBlock,
    KnowledgeGet,
    Memory,
    MemoryDraft,
    MemRecall,
    MemSave,
    Notice,
    Ping,
    ProcessExited,
    ProcessRun,
    RecallHit,
    RunsList,
)
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.testing import ChatSystem, SupervisorProcess, ctl_in_thread, fast_config, llm_table

CORTEX = "cortex:main"
MEM = "memory:main"
WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
TK = "spacebot.procs.testkit"

Start = Callable[..., Awaitable[tuple[SupervisorProcess, BusClient]]]


@pytest.fixture
async def start(short_tmp: Path) -> AsyncIterator[Start]:
    """Start a supervisor with agent ``main`` (memory + cortex); ``cortex`` and ``memory`` override
    those sections; the client joins the bus as ``ident``."""
    running: list[tuple[SupervisorProcess, BusClient]] = []

    async def go(
        cortex: dict[str, object] | None = None,
        memory: dict[str, object] | None = None,
        *,
        ident: str = "tester",
        extra: str = "",
    ) -> tuple[SupervisorProcess, BusClient]:
        sections: dict[str, dict[str, object]] = {"cortex": cortex or {}}
        if memory:
            sections["memory"] = memory
        text = fast_config(("main",), 4 * 1024 * 1024, sections=sections, memory={"ready_timeout": 60.0})
        sup = SupervisorProcess(
            short_tmp,
            config_text=text + extra,
            env={"SPACEBOT_LLM_BASE_URL": "", "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": ""},
        )
        await sup.start(timeout=120)
        client = BusClient(ident, sup.endpoints.bus)
        client.start()
        await client.request("supervisor", Ping())
        running.append((sup, client))
        return sup, client

    try:
        yield go
    finally:
        for sup, client in running:
            await client.close()
            await sup.stop()


async def _save(client: BusClient, *drafts: MemoryDraft) -> list[Memory]:
    return msgspec.convert(await client.request(MEM, MemSave(list(drafts)), timeout=30), list[Memory])


async def _cortex_status(client: BusClient) -> CortexReport:
    return await client.request(CORTEX, CortexStatus(), returns=CortexReport, timeout=30)


async def _wait_notice(events: EventStream, text: str) -> Notice:
    event = await events.wait_for(lambda e: isinstance(e.body, Notice) and e.body.text == text, timeout=WAIT)
    assert isinstance(event.body, Notice)
    return event.body


async def test_maintenance_runs_on_schedule_and_changes_recall(start: Start) -> None:
    fast = {
        name: 0.3 for name in ("decay_interval", "prune_interval", "merge_interval", "association_interval")
    }
    _sup, client = await start(cortex=fast, memory={"prune_floor": 0.4})
    events = await client.subscribe("cortex.main.maintenance")
    try:
        older, faint, _, newer = await _save(
            client,
            MemoryDraft(content="The staging database lives on host db-7 in Frankfurt.", type="fact"),
            MemoryDraft(content="Someone mentioned the weather was grey.", type="observation"),
            MemoryDraft(content="Ana prefers short answers.", type="preference"),
            MemoryDraft(content="The staging database lives on host db-7 in Frankfurt.", type="fact"),
        )
        before = msgspec.convert(
            await client.request(MEM, MemRecall(mode="recent", limit=10), timeout=30), list[RecallHit]
        )
        assert {older.id, faint.id, newer.id} <= {h.memory.id for h in before}

        ran = await _wait_notice(events, "ran")
        counts = ran.fields["counts"]
        assert set(ran.fields["ops"]) == {"decay", "prune", "merge", "associate"}
        assert counts["prune"]["changed"] >= 1  # the observation (0.3) is under the 0.4 floor
        assert counts["merge"]["changed"] >= 1  # the older duplicate folds into the newer

        after = msgspec.convert(
            await client.request(MEM, MemRecall(mode="recent", limit=10), timeout=30), list[RecallHit]
        )
        ids = {h.memory.id for h in after}
        assert newer.id in ids
        assert older.id not in ids and faint.id not in ids

        runs = msgspec.convert(
            await client.request(MEM, RunsList(kind="maintenance", proc_id=CORTEX), timeout=30),
            list[ProcessRun],
        )
        assert runs and runs[0].exit_code == 0
        assert runs[0].detail["ops"]["merge"]["changed"] >= 1

        # Nothing changed since: the following checks find nothing to do and run nothing.
        runs_now = (await _cortex_status(client)).runs
        await _wait_skips(client, 3)
        assert (await _cortex_status(client)).runs == runs_now
    finally:
        events.close()


async def _wait_skips(client: BusClient, more: int) -> CortexReport:
    """Wait until the cortex has found memory unchanged ``more`` more times."""
    first = (await _cortex_status(client)).skipped
    seen: dict[str, CortexReport] = {}

    async def poll() -> bool:
        seen["r"] = await _cortex_status(client)
        return seen["r"].skipped >= first + more

    await _until(poll)
    return seen["r"]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = WAIT) -> None:
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.1)


async def test_failing_maintenance_opens_the_circuit(start: Start) -> None:
    # A budget no run can meet: every run fails with "took longer than its budget".
    cortex = {
        "decay_interval": 0.2,
        "prune_interval": 0.2,
        "merge_interval": 0.2,
        "association_interval": 0.2,
        "run_budget": 1e-6,
        "circuit_threshold": 3,
        "circuit_open": 600.0,
    }
    sup, client = await start(cortex=cortex)
    await _save(client, MemoryDraft(content="The office closes at six.", type="fact"))

    async def opened() -> bool:
        return "maintenance circuit open until" in (await sup.info(CORTEX)).task

    await _until(opened)
    task = (await sup.info(CORTEX)).task
    assert "3 failures" in task and "budget" in task
    report = await _cortex_status(client)
    assert report.failures == 3 and report.circuit_open_until is not None
    runs = msgspec.convert(
        await client.request(MEM, RunsList(kind="maintenance"), timeout=30), list[ProcessRun]
    )
    assert len(runs) == 3 and all(r.exit_code == 1 and "budget" in r.detail["error"] for r in runs)


async def test_knowledge_block_changes_after_a_save_and_not_otherwise(start: Start) -> None:
    _sup, client = await start()
    empty = await client.request(CORTEX, KnowledgeGet(), returns=KnowledgeBlock, timeout=30)
    assert empty.text == "" and empty.version
    same = await client.request(CORTEX, KnowledgeGet(empty.version), returns=KnowledgeBlock, timeout=30)
    assert same.unchanged and same.version == empty.version

    await _save(
        client,
        MemoryDraft(content="The team ships releases on Thursdays.", type="decision"),
        MemoryDraft(content="Ana wants weekly summaries.", type="preference"),
    )
    block = await client.request(CORTEX, KnowledgeGet(empty.version), returns=KnowledgeBlock, timeout=30)
    assert not block.unchanged and block.version != empty.version
    assert "The team ships releases on Thursdays." in block.text
    assert "Ana wants weekly summaries." in block.text
    assert "shown 2 of 2" in block.text and block.shown == 2

    # Reads are not changes: the block stays as it is.
    await client.request(MEM, MemRecall(query="releases", limit=5), timeout=30)
    again = await client.request(CORTEX, KnowledgeGet(block.version), returns=KnowledgeBlock, timeout=30)
    assert again.unchanged and again.version == block.version


async def test_knowledge_block_reaches_the_conversation_prompt(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=[FakeToolCall("reply", {"content": "noted"})])
        async with ChatSystem(short_tmp, fake) as system:
            bus = BusClient("tester", system.sup.endpoints.bus)
            bus.start()
            try:
                await _save(bus, MemoryDraft(content="Deploys are frozen during December.", type="decision"))
            finally:
                await bus.close()
            ana = await system.client("Ana")
            conv = await ana.create("plans")
            await ana.open(conv)
            await ana.send(conv, "can we deploy on the 20th?")
            await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["role"] == "assistant", timeout=WAIT
            )
            body = fake.requests[-1].body
    system_text = next(m["content"] for m in body["messages"] if m["role"] == "system")
    assert "## What you remember (shown 1 of 1 memories" in system_text
    assert "- Deploys are frozen during December." in system_text


async def test_an_idle_agent_makes_no_model_calls(start: Start) -> None:
    fast = {
        "decay_interval": 0.1,
        "prune_interval": 0.1,
        "merge_interval": 0.1,
        "association_interval": 0.1,
        "supervise_interval": 0.1,
    }
    async with FakeLLM() as fake:
        fake.add(name="any", text="should never be asked")
        _sup, client = await start(cortex=fast, extra=llm_table(fake.openai_url))
        report = await _wait_skips(client, 20)  # 20 due checks that found memory unchanged
        assert report.runs == 0
        assert fake.requests == []


async def test_a_worker_stuck_after_its_outcome_is_ended(start: Start) -> None:
    # A conversation of agent main starts a worker and records its outcome; the worker never exits.
    channel = "channel:main:test:stuck"
    sup, client = await start(cortex={"outcome_grace": 0.5, "supervise_interval": 0.2})
    ended = await client.subscribe("cortex.main.supervision")
    delegated = await client.subscribe(f"channel.{channel}.delegate")
    try:
        await sup.spawn(f"{TK}:stuck_delegate", kind=Kind.CHANNEL, id=channel)
        worker = str((await _wait_notice(delegated, "finished")).fields["id"])
        assert (await sup.info(worker)).pid  # alive after its outcome
        notice = await _wait_notice(ended, "ended")
        assert notice.fields["id"] == worker
        assert "reported its outcome" in notice.fields["reason"]
        assert worker in notice.fields["killed"]

        async def gone() -> bool:
            return (await sup.info(worker)).pid == 0

        await _until(gone)
        assert (await sup.info(channel)).pid  # only the stuck worker was ended
        rows = await client.request(CORTEX, HistoryGet(kind="worker"), returns=list[ProcessRun], timeout=30)
        row = next(r for r in rows if r.proc_id == worker)
        assert row.detail["parent"] == channel
        assert "reported its outcome" in row.detail["ended_by_cortex"]
    finally:
        ended.close()
        delegated.close()


async def test_process_history_records_exits(start: Start) -> None:
    channel = "channel:main:test:history"
    sup, client = await start()
    exits = await client.subscribe("proc.branch.")
    try:
        await sup.spawn(f"{TK}:spawner", kind=Kind.CHANNEL, id=channel, args={"target": f"{TK}:crash_after"})
        event = await exits.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=WAIT)
    finally:
        exits.close()
    assert isinstance(event.body, ProcessExited)
    branch = event.body.id
    rows: list[ProcessRun] = []

    async def recorded() -> bool:
        get = HistoryGet(limit=5, proc_id=branch)
        rows[:] = await client.request(CORTEX, get, returns=list[ProcessRun], timeout=30)
        return any(r.proc_id == branch for r in rows)

    await _until(recorded)
    row = next(r for r in rows if r.proc_id == branch)
    assert row.kind == "branch" and row.exit_code == 4  # crash_after's code, after a second's run
    assert row.ended_at is not None and row.ended_at >= row.started_at
    assert row.detail["parent"] == channel

    # The operator's view: spacebotctl history, through the control socket and the cortex.
    code, out, err = await ctl_in_thread(
        "--runtime-dir", str(sup.endpoints.dir), "history", "--kind", "branch", "--json"
    )
    assert code == 0, err
    shown = msgspec.json.decode(out, type=list[ProcessRun])
    assert any(r.proc_id == branch and r.exit_code == 4 for r in shown)
    code, out, _ = await ctl_in_thread("--runtime-dir", str(sup.endpoints.dir), "history")
    assert code == 0 and branch in out
