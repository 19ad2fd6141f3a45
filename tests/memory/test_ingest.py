from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from spacebot.memory import MemoryConfig, MemoryDraft, MemoryEngine, MemoryType
from spacebot.memory.embedder import Embedder
from spacebot.memory.ingest import (
    ExtractionError,
    build_extraction_prompt,
    chunk_lines,
    file_text,
    ingest_folder,
    llm_extractor,
    parse_extraction,
)


class LineExtractor:
    """Deterministic extractor: every line ``type: text`` becomes a memory; can fail on one chunk."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, chunk: str, file_name: str, index: int) -> list[MemoryDraft]:
        self.calls.append((file_name, index))
        if index == self.fail_on:
            raise RuntimeError("model unavailable")
        drafts = []
        for line in chunk.splitlines():
            kind, _, text = line.partition(": ")
            if text:
                drafts.append(MemoryDraft(content=text, type=MemoryType(kind)))
        return drafts


def _notes(n: int) -> str:
    return "".join(f"fact: Server number {i} sits in rack {i % 7} of hall {i % 3}\n" for i in range(n))


def test_chunks_end_at_line_boundaries() -> None:
    text = _notes(100)
    chunks = chunk_lines(text, 400)
    assert "".join(chunks) == text
    assert all(c.endswith("\n") and len(c) <= 400 for c in chunks)
    long = chunk_lines("a" * 1000 + "\nshort\n", 400)
    assert [len(c) for c in long] == [400, 400, 207]


def test_html_is_reduced_to_text() -> None:
    html = b"<html><style>p{}</style><body><h1>Title</h1><p>Hello <b>world</b></p><script>x()</script></body>"
    text = file_text(Path("a.html"), html)
    assert "Hello world" in text and "x()" not in text and "p{}" not in text


def test_ingest_resumes_after_interruption(tmp_path: Path, embedder: Embedder) -> None:
    cfg = MemoryConfig(ingest_chunk_chars=300, link_threshold=1.1, duplicate_threshold=1.1)
    folder = tmp_path / "ingest"
    folder.mkdir()
    (folder / "servers.txt").write_text(_notes(40))
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    total = len(chunk_lines(_notes(40), 300))
    assert total >= 5
    seen: list[tuple[str, int, int]] = []
    with MemoryEngine(tmp_path / "data", cfg, embedder=embedder) as eng:
        broken = LineExtractor(fail_on=3)
        (report,) = asyncio.run(ingest_folder(eng, folder, broken, lambda *a: seen.append(a)))
        assert (
            report.status == "failed"
            and "chunk 3" in (report.error or "")
            and "model unavailable" in report.error
        )
        assert report.chunks_done == 3 and (folder / "servers.txt").exists()
        assert seen == [("servers.txt", 1, total), ("servers.txt", 2, total), ("servers.txt", 3, total)]
        first = eng.count()
    with MemoryEngine(tmp_path / "data", cfg, embedder=embedder) as eng:
        assert eng.count() == first
        good = LineExtractor()
        (report,) = asyncio.run(ingest_folder(eng, folder, good))
        assert report.status == "done" and report.chunks_done == total
        assert [i for _, i in good.calls] == list(range(3, total))
        assert not (folder / "servers.txt").exists() and (folder / "ignored.bin").exists()
        assert eng.count() == 40
        hit = eng.recall("which rack holds server number 17", limit=1)[0].memory
        assert hit.content.startswith("Server number 17 ") and hit.source == "ingest:servers.txt"
        assert hit.metadata["file"] == "servers.txt"


def test_extraction_prompt_and_parser() -> None:
    prompt = build_extraction_prompt("Ana joined in May.", "team.md", 2)
    assert "team.md (chunk 3)" in prompt and "Ana joined in May." in prompt
    answer = (
        '```json\n{"memories": [{"content": "Ana joined in May", "type": "event", "importance": 0.4}]}\n```'
    )
    (draft,) = parse_extraction(answer, source="ingest:team.md")
    assert draft.type is MemoryType.EVENT and draft.importance == 0.4 and draft.source == "ingest:team.md"
    assert parse_extraction('[{"content": "x"}]')[0].type is MemoryType.FACT
    assert parse_extraction('{"memories": []}') == []
    for bad, needle in [
        ("not json", "not JSON"),
        ('{"items": 3}', "must be"),
        ('{"memories": ["x"]}', "not an object"),
        ('{"memories": [{"content": ""}]}', "no content"),
        ('{"memories": [{"content": "x", "type": "rumour"}]}', "unknown type 'rumour'"),
        ('{"memories": [{"content": "x", "importance": 7}]}', "importance 7"),
    ]:
        with pytest.raises(ExtractionError, match=needle):
            parse_extraction(bad)


def test_llm_extractor_wires_prompt_to_parser() -> None:
    prompts: list[str] = []

    async def complete(prompt: str) -> str:
        prompts.append(prompt)
        return json.dumps({"memories": [{"content": "The wiki moved to Notion", "type": "decision"}]})

    drafts = asyncio.run(llm_extractor(complete)("We moved the wiki to Notion.", "notes.md", 0))
    assert drafts[0].type is MemoryType.DECISION and drafts[0].source == "ingest:notes.md"
    assert "We moved the wiki to Notion." in prompts[0]
