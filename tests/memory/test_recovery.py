from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine, SchemaVersionError
from spacebot.memory.embedder import Embedder

NOTES = [
    "The staging cluster lives in Helsinki",
    "Backups run at 02:00 UTC every night",
    "Karim is the on-call engineer this week",
]


def _make(path: Path, embedder: Embedder) -> list[int]:
    with MemoryEngine(path, embedder=embedder) as eng:
        return [eng.save(MemoryDraft(content=c)).id for c in NOTES]


def _check(path: Path, embedder: Embedder, ids: list[int]) -> None:
    with MemoryEngine(path, embedder=embedder) as eng:
        assert eng.vectors.search(embedder.embed_one(NOTES[1]), 1)[0][0] == ids[1]
        assert eng.text.num_docs() == len(ids)
        hits = eng.recall("who is on call", limit=1, sources=("bm25",))
        assert hits[0].memory.id == ids[2]
        hits = eng.recall("where is staging", limit=1, sources=("vector",))
        assert hits[0].memory.id == ids[0]


def test_missing_indexes_are_rebuilt(tmp_path: Path, embedder: Embedder) -> None:
    ids = _make(tmp_path, embedder)
    (tmp_path / "vectors.hnsw").unlink()
    shutil.rmtree(tmp_path / "text")
    stages: list[tuple[str, int, int]] = []
    with MemoryEngine(tmp_path, embedder=embedder, progress=lambda *a: stages.append(a)):
        pass
    assert ("vectors", 3, 3) in stages and ("text", 3, 3) in stages
    _check(tmp_path, embedder, ids)


def test_corrupt_indexes_are_rebuilt(
    tmp_path: Path, embedder: Embedder, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _make(tmp_path, embedder)
    data = bytearray((tmp_path / "vectors.hnsw").read_bytes())
    data[100:200] = b"\xff" * 100
    (tmp_path / "vectors.hnsw").write_bytes(bytes(data))
    for f in (tmp_path / "text").iterdir():
        if f.name.endswith(".json"):
            f.write_text("{not json")
    with caplog.at_level("WARNING"), MemoryEngine(tmp_path, embedder=embedder):
        pass
    assert "vector index corrupt" in caplog.text
    assert "text index unreadable" in caplog.text
    _check(tmp_path, embedder, ids)


def test_stale_index_catches_up(tmp_path: Path, embedder: Embedder) -> None:
    ids = _make(tmp_path, embedder)
    # Rows written to DuckDB by a process that died before touching the indexes.
    eng = MemoryEngine(tmp_path, embedder=embedder)
    vec = embedder.embed_one("The release train leaves on Thursdays")
    with eng.store.transaction() as cur:
        new_id = eng.store.next_memory_ids(cur, 1)[0]
        eng.store.insert_memories(
            cur,
            {
                "id": [new_id], "content": ["The release train leaves on Thursdays"], "type": ["fact"],
                "importance": [0.6], "created_at": [1.0], "updated_at": [1.0], "last_accessed_at": [1.0],
                "embedding": [vec.tobytes()],
            },
        )  # fmt: skip
        cur.execute("UPDATE memories SET forgotten = TRUE WHERE id = ?", [ids[0]])
    eng.store.close()  # no index flush: simulates the crash
    with MemoryEngine(tmp_path, embedder=embedder) as again:
        assert again.text.num_docs() == 3 and len(again.vectors) == 3
        hits = again.recall("release train", limit=1)
        assert hits[0].memory.id == new_id
        assert ids[0] not in [h.memory.id for h in again.recall("staging cluster Helsinki", limit=5)]


def test_newer_schema_is_refused_untouched(tmp_path: Path, embedder: Embedder) -> None:
    _make(tmp_path, embedder)
    db = tmp_path / "agent.duckdb"
    conn = duckdb.connect(str(db))
    conn.execute("INSERT INTO schema_version VALUES (99, 0)")
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with pytest.raises(SchemaVersionError, match="schema version 99"):
        MemoryEngine(tmp_path, embedder=embedder)
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_sigkill_mid_batch_loses_nothing_acknowledged(tmp_path: Path, embedder: Embedder) -> None:
    child = Path(__file__).with_name("crash_child.py")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, str(child), str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env
    )
    acked: list[int] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 40:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert len(acked) >= 40
    with MemoryEngine(tmp_path, MemoryConfig(), embedder=embedder) as eng:
        stored = eng.store.get_memories(acked)
        assert set(stored) == set(acked)
        assert len(eng.vectors) == eng.count() >= len(acked)
        assert eng.text.num_docs() == eng.count()
        last = stored[acked[-1]]
        hits = eng.recall(last.content, limit=3)
        assert last.id in [h.memory.id for h in hits]
