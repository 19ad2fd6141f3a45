"""A file whose ingestion keeps failing: back-off, a limit, ``failed/`` with a reason, counts that last."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spacebot.memory import MemoryDraft, MemoryEngine
from spacebot.memory.config import MemoryConfig
from spacebot.memory.ingest import ingest_folder
from spacebot.memory.ingest_retry import FAILED_DIR, IngestRetries, retry_delay


class Clock:
    """Wall-clock time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


class AlwaysFails:
    """An extractor whose model is never there."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, chunk: str, file_name: str, index: int) -> list[MemoryDraft]:
        self.calls += 1
        raise RuntimeError("model unavailable")


def test_back_off_doubles_from_the_base_up_to_the_cap() -> None:
    assert [retry_delay(n, 30.0, 3600.0) for n in range(1, 10)] == [
        30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 3600.0, 3600.0,
    ]  # fmt: skip
    assert retry_delay(1, 0.0, 0.0) == 0.0
    assert retry_delay(3, 5.0, 15.0) == 15.0


def test_config_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="ingest_max_attempts"):
        MemoryConfig(ingest_max_attempts=0)
    with pytest.raises(ValueError, match="ingest_retry_max_delay"):
        MemoryConfig(ingest_retry_delay=60.0, ingest_retry_max_delay=30.0)


def test_a_file_that_always_fails_waits_longer_each_time_then_moves_to_failed(
    tmp_path: Path, engine: MemoryEngine
) -> None:
    folder = tmp_path / "ingest"
    folder.mkdir()
    (folder / "notes.txt").write_text("fact: the staging database moved to Frankfurt\n")
    clock = Clock()
    ledger = tmp_path / "data" / IngestRetries.FILE_NAME

    def retries() -> IngestRetries:  # a fresh one reads the counts back: as after a restart
        return IngestRetries(ledger, max_attempts=3, base_delay=30.0, max_delay=45.0, clock=clock)

    extract = AlwaysFails()
    events: list[tuple[str, dict[str, Any]]] = []

    def run(r: IngestRetries, force: bool = False) -> list[Any]:
        notify = lambda event, fields: events.append((event, fields))  # noqa: E731
        return asyncio.run(ingest_folder(engine, folder, extract, retries=r, force=force, notify=notify))

    first = retries()
    (report,) = run(first)
    assert report.status == "failed" and "model unavailable" in (report.error or "")
    assert extract.calls == 1 and first.files["notes.txt"].attempts == 1
    assert events[-1] == (
        "ingest_retry",
        {"file": "notes.txt", "attempt": 1, "max_attempts": 3, "retry_in": 30.0, "error": report.error},
    )
    # Not yet due: a periodic pass leaves it alone and reports nothing.
    clock.now += 29.0
    assert not first.due(folder / "notes.txt") and run(first) == [] and extract.calls == 1
    clock.now += 1.0
    assert first.due(folder / "notes.txt")
    run(first)
    assert extract.calls == 2 and events[-1][1]["retry_in"] == 45.0  # 60 s, capped at 45 s
    # The count survives a restart: a new ledger reads it back and still waits.
    second = retries()
    assert second.files["notes.txt"].attempts == 2 and second.waiting() == 1
    assert run(second) == [] and extract.calls == 2
    clock.now += 45.0
    (last,) = run(second)
    assert extract.calls == 3
    moved = folder / FAILED_DIR / "notes.txt"
    assert not (folder / "notes.txt").exists() and moved.read_text().startswith("fact: the staging")
    reason = (folder / FAILED_DIR / "notes.txt.reason").read_text()
    assert "notes.txt was not ingested" in reason and "model unavailable" in reason
    assert "attempts: 3" in reason and "given up: " in reason and "UTC" in reason
    assert "gave up after 3 attempts: failed/notes.txt" in (last.error or "")
    event, fields = events[-1]
    assert event == "ingest_failed" and fields["attempts"] == 3 and fields["moved_to"] == "failed/notes.txt"
    assert json.loads(ledger.read_text()) == {}  # forgotten: moved back, it starts afresh
    # Nothing more is tried, even when asked.
    assert run(retries(), force=True) == [] and extract.calls == 3


def test_a_request_skips_the_wait_but_not_the_limit(tmp_path: Path, engine: MemoryEngine) -> None:
    folder = tmp_path / "ingest"
    folder.mkdir()
    (folder / "a.md").write_text("fact: one\n")
    extract = AlwaysFails()
    r = IngestRetries(tmp_path / "attempts.json", max_attempts=2, base_delay=600.0, clock=Clock())
    for _ in range(2):
        asyncio.run(ingest_folder(engine, folder, extract, retries=r, force=True))
    assert extract.calls == 2 and (folder / FAILED_DIR / "a.md").exists()


def test_a_changed_file_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_text("one\n")
    clock = Clock()
    r = IngestRetries(tmp_path / "attempts.json", max_attempts=5, base_delay=30.0, clock=clock)
    assert r.begin(path)[0] == "try"
    r.failed("a.md", "boom")
    assert r.begin(path)[0] == "wait"
    path.write_text("two, edited\n")
    decision, entry = r.begin(path)
    assert decision == "try" and entry.attempts == 1


_CRASHING_CHILD = """
import asyncio, os, signal, sys
from pathlib import Path
from spacebot.memory import MemoryEngine
from spacebot.memory.ingest import ingest_folder
from spacebot.memory.ingest_retry import IngestRetries

class NoEmbedder:  # the process dies before anything is embedded
    dim = 384

async def die(chunk, file_name, index):
    os.kill(os.getpid(), signal.SIGKILL)

data, folder = Path(sys.argv[1]), Path(sys.argv[2])
engine = MemoryEngine(data, embedder=NoEmbedder())
retries = IngestRetries(data / IngestRetries.FILE_NAME, max_attempts=2, base_delay=0.0, max_delay=0.0)
print([r.error for r in asyncio.run(ingest_folder(engine, folder, die, retries=retries))], flush=True)
"""


def test_a_process_that_dies_during_each_attempt_still_gives_up(tmp_path: Path) -> None:
    data, folder = tmp_path / "data", tmp_path / "ingest"
    folder.mkdir()
    (folder / "poison.txt").write_text("fact: this chunk kills the process\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    def child() -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-c", _CRASHING_CHILD, str(data), str(folder)]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120, check=False)

    for attempt in (1, 2):
        died = child()
        assert died.returncode == -9, died.stderr
        counts = json.loads((data / IngestRetries.FILE_NAME).read_text())
        assert counts["poison.txt"]["attempts"] == attempt and counts["poison.txt"]["running"]
    done = child()  # the third start finds the limit used up and does not call the model again
    assert done.returncode == 0, done.stderr
    assert "stopped during attempt 2" in done.stdout
    assert (folder / FAILED_DIR / "poison.txt").exists() and not (folder / "poison.txt").exists()
    assert "stopped during attempt 2" in (folder / FAILED_DIR / "poison.txt.reason").read_text()


async def test_the_memory_process_publishes_and_shows_a_file_it_gave_up_on(short_tmp: Path) -> None:
    import msgspec

    from spacebot.ipc.bus import BusClient
    from spacebot.ipc.messages import IngestReport, MemIngest, Notice
    from spacebot.llm.fake import FakeLLM
    from spacebot.testing import SupervisorProcess, fast_config, llm_table

    async with FakeLLM() as fake:
        fake.add(text="not json at all")
        config = fast_config(
            ("main",),
            sections={"memory": {"ingest_max_attempts": 1}},
            memory={"ready_timeout": 60.0, "heartbeat_interval": 0.5},
        ) + llm_table(fake.openai_url)
        sup = SupervisorProcess(short_tmp, config_text=config)
        ingest = sup.home / "agents" / "main" / "ingest"
        ingest.mkdir(parents=True)
        (ingest / "broken.md").write_text("this chunk gets a malformed answer\n")
        await sup.start(timeout=120)
        client = BusClient("tester", sup.endpoints.bus)
        client.start()
        try:
            events = await client.subscribe("memory.main.ingest")
            reply = await client.request("memory:main", MemIngest(), timeout=60)
            (report,) = msgspec.convert(reply, list[IngestReport])
            assert report.status == "failed" and "gave up after 1 attempt: failed/broken.md" in (
                report.error or ""
            )
            assert (ingest / "failed" / "broken.md").exists() and not (ingest / "broken.md").exists()
            assert "JSON" in (ingest / "failed" / "broken.md.reason").read_text()
            event = await events.next(timeout=30)
            while not (isinstance(event.body, Notice) and event.body.text == "ingest_failed"):
                event = await events.next(timeout=30)
            assert event.topic == "memory.main.ingest"
            assert (
                event.body.fields["file"] == "broken.md"
                and event.body.fields["moved_to"] == "failed/broken.md"
            )
            # What `spacebotctl status` shows for the process (sent with the heartbeat after the pass).
            shown = "ingest: 1 failed (see ingest/failed/)"
            async with asyncio.timeout(30):
                # The supervisor's view can only be asked for, not waited on.
                while shown not in (task := (await sup.info("memory:main")).task):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert task.startswith("serving 0 memories; ")
            events.close()
        finally:
            await client.close()
            await sup.stop()
