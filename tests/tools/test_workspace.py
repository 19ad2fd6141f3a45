"""File tools confined to the workspace: normal use, and every way out refused (and logged)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spacebot.llm.types import ToolCall
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools
from spacebot.tools.workspace import ToolError, Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws", max_read_bytes=1000, max_write_bytes=5000, max_list_entries=5)


def test_read_write_edit_list(ws: Workspace) -> None:
    assert ws.write("a/b/c.txt", "one\ntwo\nthree\n") == "wrote 14 bytes to a/b/c.txt"
    ws.write("a/b/c.txt", "four\n", append=True)
    assert ws.read("a/b/c.txt", offset=1, limit=2) == "two\nthree\n"
    assert "replaced 1" in ws.edit("a/b/c.txt", "two", "TWO")
    assert ws.read("a/b/c.txt").startswith("one\nTWO\n")
    with pytest.raises(ToolError, match="not found"):
        ws.edit("a/b/c.txt", "missing", "x")
    ws.write("a/b/d.txt", "x x x")
    with pytest.raises(ToolError, match="occurs 3 times"):
        ws.edit("a/b/d.txt", "x", "y")
    assert "replaced 3" in ws.edit("a/b/d.txt", "x", "y", count=-1)
    listing = ws.list(".", recursive=True)
    assert "dir" in listing and "a/b/c.txt" in listing
    assert ws.list("a/b", pattern="*.txt").count("file") == 2


def test_limits(ws: Workspace) -> None:
    with pytest.raises(ToolError, match="over the 5000-byte limit"):
        ws.write("big", "x" * 5001)
    ws.write("long.txt", "line\n" * 400)
    assert "cut at 1000 bytes" in ws.read("long.txt")
    (ws.root / "bin").write_bytes(b"\x00\x01binary")
    with pytest.raises(ToolError, match="binary"):
        ws.read("bin")
    for i in range(8):
        ws.write(f"many/{i}", "x")
    assert "cut at 5 entries" in ws.list("many")


@pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/passwd", "", "a\0b"])
def test_escapes_refused_and_logged(ws: Workspace, path: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="spacebot.tools"), pytest.raises(ToolError):
        ws.write(path, "x")
    assert "path refused" in caplog.text


def test_symlinks(ws: Workspace, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    sibling = tmp_path / "ws-evil"  # a string-prefix check would let this through
    sibling.mkdir()
    (ws.root / "to_file").symlink_to(outside / "secret")
    (ws.root / "to_dir").symlink_to(outside)
    (ws.root / "inner").mkdir()
    (ws.root / "inner_link").symlink_to(ws.root / "inner")
    for call in (
        lambda: ws.read("to_file"),
        lambda: ws.write("to_file", "x"),
        lambda: ws.write("to_dir/new", "x"),
        lambda: ws.list("to_dir"),
        lambda: ws.read(str(sibling / "f")),
    ):
        with pytest.raises(ToolError):
            call()
    assert ws.write("inner_link/ok.txt", "fine").endswith("inner/ok.txt")
    assert "outside workspace" in ws.list(".")
    assert (outside / "secret").read_text() == "s" and not (outside / "new").exists()


@given(st.lists(st.sampled_from(["a", "..", ".", "b/c", "", "x..y", "/"]), min_size=1, max_size=8))
def test_resolved_paths_stay_inside(tmp_path_factory: pytest.TempPathFactory, parts: list[str]) -> None:
    ws = Workspace(tmp_path_factory.mktemp("prop"))
    path = "/".join(parts)
    try:
        resolved = ws.resolve(path)
    except ToolError:
        return
    assert resolved.is_relative_to(ws.root)


async def test_tool_calls_report_bad_arguments(tmp_path: Path) -> None:
    tools = TaskTools(tmp_path / "ws", Limits(), lambda text, kind: None)
    text, err = await tools.call(ToolCall("1", "file_write", {"path": "x"}))
    assert err and "missing required argument 'content'" in text
    text, err = await tools.call(ToolCall("2", "shell", {"command": 3}))
    assert err and "'command' must be string" in text
    text, err = await tools.call(ToolCall("3", "file_read", {"path": "../../etc/passwd"}))
    assert err and "outside the workspace" in text
    text, err = await tools.call(ToolCall("4", "shell", {"command": "echo hi > f && cat f"}))
    assert not err and "exit code 0" in text and "hi" in text
    text, err = await tools.call(ToolCall("5", "exec", {"program": "printf", "args": ["%s-%s", "a b", "c"]}))
    assert not err and "a b-c" in text
