"""memory:<agent> as a real process behind the bus: requests, errors, and a kill -9 mid-batch."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import msgspec
import pytest

from spacebot.ipc.bus import BusClient, BusError
from spacebot.ipc.messages import (
    Association,
    Card,
    CardField,
    ChannelList,
    ChannelUpsert,
    ConversationInfo,
    ErrorCode,
    MemAssociate,
    MemAssociations,
    MemGet,
    Memory,
    MemoryDraft,
    MemRecall,
    MemSave,
    MessageHit,
    Ping,
    ProcessExited,
    ProcState,
    RecallHit,
    ReplyState,
    Shown,
    StateChanged,
    StoredMessage,
    TranscriptAppend,
    TranscriptMarkReply,
    TranscriptPage,
    TranscriptSearch,
    TranscriptUnanswered,
)
from spacebot.llm.types import ToolCall
from spacebot.runtime.memory_link import MemoryLink
from spacebot.testing import SupervisorProcess, fast_config
from spacebot.tools.memory_tools import MemoryTools

MEM = "memory:main"


@pytest.fixture
async def with_memory(short_tmp: Path) -> AsyncIterator[tuple[SupervisorProcess, BusClient]]:
    config = fast_config(
        ("main",), memory={"ready_timeout": 60.0, "restart": "always", "heartbeat_interval": 0.5}
    )
    sup = SupervisorProcess(short_tmp, config_text=config)
    await sup.start(timeout=120)
    client = BusClient("tester", sup.endpoints.bus)
    client.start()
    await client.request("supervisor", Ping())
    try:
        yield sup, client
    finally:
        await client.close()
        await sup.stop()


async def test_memory_requests_round_trip(with_memory: tuple[SupervisorProcess, BusClient]) -> None:
    sup, client = with_memory
    assert (await sup.info(MEM)).state in (ProcState.READY, ProcState.IDLE)
    saved = msgspec.convert(
        await client.request(
            MEM,
            MemSave(
                [
                    MemoryDraft(content="Alice prefers tea over coffee", type="preference"),
                    MemoryDraft(content="The deploy happens every Friday at noon", type="fact"),
                ]
            ),
            timeout=30,
        ),
        list[Memory],
    )
    assert [m.type for m in saved] == ["preference", "fact"]
    hits = msgspec.convert(
        await client.request(MEM, MemRecall("what does Alice drink?", limit=2)), list[RecallHit]
    )
    assert hits and hits[0].memory.id == saved[0].id
    edge = msgspec.convert(
        await client.request(MEM, MemAssociate(saved[0].id, saved[1].id, "related_to", 0.5)), Association
    )
    assert edge.relation == "related_to"
    edges = msgspec.convert(await client.request(MEM, MemAssociations(saved[0].id)), list[Association])
    assert any(e.target_id == saved[1].id for e in edges)
    # Transcripts and channels.
    await client.request(MEM, ChannelUpsert("web:1", "webchat", "General"))
    inbound = msgspec.convert(
        await client.request(
            MEM,
            TranscriptAppend(
                "web:1",
                "is the deploy on friday?",
                "u1",
                "Bob",
                platform_message_id="m1",
                reply_state=ReplyState.PENDING,
            ),
        ),
        StoredMessage,
    )
    again = msgspec.convert(
        await client.request(
            MEM,
            TranscriptAppend(
                "web:1",
                "is the deploy on friday?",
                "u1",
                "Bob",
                platform_message_id="m1",
                reply_state=ReplyState.PENDING,
            ),
        ),
        StoredMessage,
    )
    assert again.id == inbound.id  # idempotent on the platform message id
    pending = msgspec.convert(await client.request(MEM, TranscriptUnanswered("web:1")), list[StoredMessage])
    assert [m.id for m in pending] == [inbound.id]
    await client.request(MEM, TranscriptMarkReply(inbound.id, ReplyState.ANSWERED))
    assert (
        msgspec.convert(await client.request(MEM, TranscriptUnanswered("web:1")), list[StoredMessage]) == []
    )
    page = msgspec.convert(await client.request(MEM, TranscriptPage("web:1")), list[StoredMessage])
    assert [m.text for m in page] == ["is the deploy on friday?"]
    found = msgspec.convert(await client.request(MEM, TranscriptSearch("deploy")), list[MessageHit])
    assert found and found[0].message.channel_id == "web:1"
    channels = msgspec.convert(await client.request(MEM, ChannelList()), list[ConversationInfo])
    assert [c.display_name for c in channels] == ["General"]
    # A reply's card and thread are stored with it, and come back with it.
    shown = Shown(
        card=Card(title="Friday", fields=[CardField("at", "noon")]), thread_name="Deploy", thread_on=1
    )
    reply = msgspec.convert(
        await client.request(
            MEM,
            TranscriptAppend(
                "web:1", "yes, at noon", "agent:main", "Spacebot", role="assistant", shown=shown
            ),
        ),
        StoredMessage,
    )
    assert reply.shown == shown
    page = msgspec.convert(await client.request(MEM, TranscriptPage("web:1")), list[StoredMessage])
    assert [(m.text, m.shown) for m in page] == [("is the deploy on friday?", None), ("yes, at noon", shown)]


async def test_memory_bad_input_is_a_clear_error(with_memory: tuple[SupervisorProcess, BusClient]) -> None:
    _sup, client = with_memory
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemSave([MemoryDraft(content="")]))
    assert err.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemSave([MemoryDraft(content="x" * 60_000)]))
    assert err.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemGet(999_999))
    assert err.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemAssociate(1, 999_999, "related_to"))
    assert err.value.code in (ErrorCode.BAD_REQUEST, ErrorCode.NOT_FOUND)
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemRecall("x", mode="psychic"))
    assert err.value.code is ErrorCode.BAD_REQUEST
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemRecall("x", queries=["a", "b", "c", "d", "e"]))
    assert err.value.code is ErrorCode.BAD_REQUEST and "at most 4 further queries" in err.value.message
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemRecall("x", queries=["a", " "]))
    assert "queries[1] is empty" in err.value.message
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemRecall(mode="recent", queries=["a"]))
    assert "hybrid" in err.value.message
    # Still serving.
    assert await client.request(MEM, Ping(b"ok")) == b"ok"


class _Link:
    """What a branch's ``MemoryLink`` does, over the test's bus client."""

    def __init__(self, client: BusClient) -> None:
        self.client = client

    async def request(self, body: object, *, returns: Any) -> Any:
        return msgspec.convert(await self.client.request(MEM, body, timeout=30), returns)


async def test_branch_tools_save_people_and_recall_with_several_queries(
    with_memory: tuple[SupervisorProcess, BusClient],
) -> None:
    """``memory_save`` with ``about``/``aliases`` and ``memory_recall`` with ``queries``, as a
    branch's model calls them, against the real memory process."""
    _sup, client = with_memory
    tools = MemoryTools(cast(MemoryLink, _Link(client)), conversation="c1", source="branch")

    async def call(name: str, **args: Any) -> tuple[str, bool]:
        return await tools.call(ToolCall("t", name, args))

    saved = [
        await call("memory_save", content="Ana made a lopsided bowl at her pottery class", about=["Ana"]),
        await call("memory_save", content="Ana plans to go camping by the lake", about=["Ana"]),
        await call("memory_save", content="Ben repaired his bike on Sunday", about=["Ben"]),
        await call(
            "memory_save",
            content="Ana is potterqueen on Discord",
            type="identity",
            about=["Ana"],
            aliases=["potterqueen"],
        ),
    ]
    assert all(not err and text.startswith("saved memory") for text, err in saved)
    asked = MemRecall("what does potterqueen do for fun", queries=["pottery", "camping trip"])
    hits = msgspec.convert(await client.request(MEM, asked, timeout=30), list[RecallHit])
    by_text = {h.memory.content: h for h in hits}
    bowl = by_text["Ana made a lopsided bowl at her pottery class"]
    assert {"person_vector", "query_1", "query_2", "query_3"} <= set(bowl.ranks)
    assert "person_vector" not in by_text["Ben repaired his bike on Sunday"].ranks
    assert bowl.memory.metadata == {"people": ["Ana"]}
    text, err = await call("memory_recall", query="what does potterqueen do", queries=["camping"], limit=2)
    assert not err and "camping by the lake" in text
    # Bad arguments are refused with the argument named, and nothing is saved.
    text, err = await call("memory_save", content="x", about=["Ana", "Ben"], aliases=["ab"])
    assert err and "'aliases'" in text and "exactly that person" in text
    text, err = await call("memory_save", content="Ana is everyone", about=["Ana"], aliases=["Ana B", "the"])
    assert err and "alias 'the' is a common word" in text
    text, err = await call("memory_recall", query="x", queries=["a"] * 5)
    assert err and "at most 4" in text
    text, err = await call("memory_recall", query="x", queries=["ok", ""])
    assert err and "'queries'" in text
    assert (await call("memory_recall", query="x", mode="recent", queries=["a"]))[1]


async def test_kill_9_mid_batch_loses_no_acknowledged_save(
    with_memory: tuple[SupervisorProcess, BusClient],
) -> None:
    sup, client = with_memory
    assert sup.ctl is not None
    pid = (await sup.info(MEM)).pid
    events = await client.subscribe(f"proc.memory.{MEM}.")
    acknowledged: list[int] = []
    twenty = asyncio.Event()

    async def writer() -> None:
        for i in range(10_000):
            try:
                saved = await client.request(
                    MEM, MemSave([MemoryDraft(content=f"note number {i} about topic {i % 7}")]), timeout=30
                )
            except BusError:
                return
            acknowledged.append(msgspec.convert(saved, list[Memory])[0].id)
            if len(acknowledged) == 20:
                twenty.set()

    task = asyncio.ensure_future(writer())
    async with asyncio.timeout(60):
        await twenty.wait()
    os.kill(pid, signal.SIGKILL)
    await task
    exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=60)
    assert isinstance(exited.body, ProcessExited) and exited.body.restart_in is not None
    await events.wait_for(
        lambda e: isinstance(e.body, StateChanged) and e.body.new is ProcState.READY, timeout=90
    )
    for memory_id in acknowledged:
        memory = msgspec.convert(await client.request(MEM, MemGet(memory_id), timeout=60), Memory)
        assert memory.id == memory_id
    hits = msgspec.convert(
        await client.request(MEM, MemRecall("note number 3 topic", limit=5), timeout=60), list[RecallHit]
    )
    assert hits
    events.close()


async def test_ingest_folder_through_the_fake_llm(short_tmp: Path) -> None:
    from spacebot.ipc.messages import IngestReport, MemIngest
    from spacebot.llm.fake import FakeLLM

    async with FakeLLM() as fake:
        answer = (
            '{"memories": [{"content": "The staging database moved to Frankfurt in May", "type": "event"}]}'
        )
        fake.add(user="malformed answer", text="not json at all")  # first match wins
        fake.add(user="turn a chunk of a document into memories", text=answer)
        llm = f"""
[llm]
[llm.providers.oa]
kind = "openai_compatible"
base_url = "{fake.openai_url}"
api_key = "k"
[llm.profiles.balanced]
light = "oa/extract"
standard = "oa/extract"
strong = "oa/extract"
"""
        config = fast_config(("main",), memory={"ready_timeout": 60.0, "heartbeat_interval": 0.5}) + llm
        sup = SupervisorProcess(short_tmp, config_text=config)
        ingest = sup.home / "agents" / "main" / "ingest"
        ingest.mkdir(parents=True)
        (ingest / "notes.md").write_text("# Infra notes\n\nStaging DB: moved to Frankfurt (May).\n")
        (ingest / "broken.md").write_text("this chunk gets a malformed answer\n")
        await sup.start(timeout=120)
        client = BusClient("tester", sup.endpoints.bus)
        client.start()
        try:
            progress = await client.subscribe("memory.main.ingest")
            reports = msgspec.convert(await client.request(MEM, MemIngest(), timeout=60), list[IngestReport])
            by_name = {r.file_name: r for r in reports}
            assert by_name["notes.md"].status == "done" and by_name["notes.md"].memories_created == 1
            assert by_name["broken.md"].status == "failed" and "JSON" in (by_name["broken.md"].error or "")
            assert not (ingest / "notes.md").exists()  # done: removed
            assert (ingest / "broken.md").exists()  # failed: kept, with the reason in the report
            event = await progress.next(timeout=60)
            assert event.topic == "memory.main.ingest"
            hits = msgspec.convert(
                await client.request(MEM, MemRecall("where is the staging database?")), list[RecallHit]
            )
            assert hits and "Frankfurt" in hits[0].memory.content
            assert hits[0].memory.source == "ingest:notes.md"
            progress.close()
        finally:
            await client.close()
            await sup.stop()


async def test_ingest_without_a_model_says_what_to_set(
    with_memory: tuple[SupervisorProcess, BusClient],
) -> None:
    from spacebot.ipc.messages import MemIngest

    _sup, client = with_memory
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemIngest())
    assert err.value.code is ErrorCode.CONFIG and "ANTHROPIC_API_KEY" in err.value.message


async def test_reads_and_maintenance_are_served_during_a_long_write(short_tmp: Path) -> None:

    config = fast_config(("main",), max_frame=8 * 1024 * 1024, memory={"ready_timeout": 60.0})
    sup = SupervisorProcess(short_tmp, config_text=config)
    await sup.start(timeout=120)
    client = BusClient("tester", sup.endpoints.bus, max_frame=8 * 1024 * 1024)
    client.start()
    try:
        await _long_write_body(client)
    finally:
        await client.close()
        await sup.stop()


async def _long_write_body(client: BusClient) -> None:
    from spacebot.ipc.messages import MaintenanceReport, MemForget, MemMaintain
    from spacebot.memory import MemoryConfig

    first = msgspec.convert(
        await client.request(MEM, MemSave([MemoryDraft(content="the wiki lives at wiki.internal")])),
        list[Memory],
    )
    day = 86_400.0
    untouched = MemoryDraft(
        content="the office plants were repotted", importance=0.6, created_at=time.time() - 60 * day
    )
    [old] = msgspec.convert(await client.request(MEM, MemSave([untouched])), list[Memory])
    finished: list[str] = []

    async def long_write() -> None:
        drafts = [
            MemoryDraft(content=f"ticket {i}: rotate the {i % 13} credentials before release")
            for i in range(600)
        ]
        await client.request(MEM, MemSave(drafts), timeout=120)
        finished.append("write")

    async def read() -> None:
        # No pause needed for the write to be under way: gather starts long_write first, each
        # request is sent before its coroutine first waits, and the memory process hands requests
        # to its thread pool in the order they arrive. The write of 600 is already running.
        hits = msgspec.convert(
            await client.request(MEM, MemRecall("where is the wiki?", limit=1), timeout=60), list[RecallHit]
        )
        assert hits and hits[0].memory.id == first[0].id
        assert await client.request(MEM, Ping(b"alive")) == b"alive"
        finished.append("read")

    await asyncio.gather(long_write(), read())
    assert finished == ["read", "write"]
    report = msgspec.convert(await client.request(MEM, MemMaintain("decay"), timeout=60), MaintenanceReport)
    # Every memory has aged since it was saved or last recalled; the untouched one by 60 days.
    assert report.examined == report.changed == 602
    decayed = msgspec.convert(await client.request(MEM, MemGet(old.id)), Memory)
    half_life = MemoryConfig().decay_half_life_days
    assert decayed.importance == pytest.approx(0.6 * 0.5 ** (60 / half_life), rel=1e-4)
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemMaintain("defragment"))
    assert err.value.code is ErrorCode.BAD_REQUEST and "defragment" in err.value.message
    assert await client.request(MEM, MemForget([first[0].id])) == 1
    hits = msgspec.convert(
        await client.request(MEM, MemRecall("where is the wiki?", limit=5), timeout=60), list[RecallHit]
    )
    assert all(h.memory.id != first[0].id for h in hits)


async def test_an_oversized_reply_becomes_an_error(with_memory: tuple[SupervisorProcess, BusClient]) -> None:
    _sup, client = with_memory
    drafts = [MemoryDraft(content=f"note {i} about the quarterly planning offsite") for i in range(400)]
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemSave(drafts), timeout=60)  # 400 memories do not fit a 64 KiB frame
    assert err.value.code is ErrorCode.OVERLOADED and "frame cap" in err.value.message
    with pytest.raises(BusError) as err:
        await client.request(MEM, MemSave([MemoryDraft(content="x" * 40_000)] * 3))
    assert err.value.code is ErrorCode.BAD_REQUEST and "frame cap" in err.value.message
    assert await client.request(MEM, Ping(b"still serving")) == b"still serving"


def test_dates_are_resolved_in_the_default_timezone_unless_memory_names_one() -> None:
    from spacebot import config as config_mod
    from spacebot.procs.memory import memory_config

    def cfg(**sections: Any) -> Any:
        return memory_config(config_mod.from_dict({"agents": ["main"], **sections}, environ={}))

    assert cfg().date_timezone == ""
    assert cfg(defaults={"timezone": "Europe/Berlin"}).date_timezone == "Europe/Berlin"
    own = cfg(defaults={"timezone": "Europe/Berlin"}, memory={"date_timezone": "Asia/Tokyo"})
    assert own.date_timezone == "Asia/Tokyo"
