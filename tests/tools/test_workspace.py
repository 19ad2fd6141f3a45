"""File tools confined to the workspace: normal use, limits, argument checks, and every way out
refused (and logged)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spacebot.llm.toolcall import finish_tool_call
from spacebot.llm.types import ToolCall
from spacebot.tools.errors import ToolError
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools
from spacebot.tools.workspace import TOOL_SPECS, Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws", max_read_bytes=100, max_write_bytes=1000, max_list_entries=5)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the workspace, with a file the model must never reach."""
    out = tmp_path / "outside"
    out.mkdir()
    (out / "secret").write_text("s")
    return out


def _files_under(path: Path) -> set[str]:
    return {p.relative_to(path).as_posix() for p in path.rglob("*")}


# -- normal use --------------------------------------------------------------------------------


def test_root_created_and_a_root_through_a_link_refused(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "new" / "ws")
    assert ws.root == (tmp_path / "new" / "ws").resolve() and ws.root.is_dir()
    (tmp_path / "real").mkdir()
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    with pytest.raises(ToolError, match="symbolic link"):
        Workspace(tmp_path / "alias" / "new" / "ws")
    assert not (tmp_path / "real" / "new").exists()  # refused, not resolved and created


def test_write_creates_parents_and_reports_the_relative_path(ws: Workspace) -> None:
    assert ws.write("a/b/c.txt", "one\ntwo\n") == "wrote 8 bytes to a/b/c.txt"
    assert (ws.root / "a/b/c.txt").read_text() == "one\ntwo\n"
    assert ws.write("./a//b/../b/c.txt", "new") == "wrote 3 bytes to a/b/c.txt"
    assert (ws.root / "a/b/c.txt").read_text() == "new"
    assert ws.write("é.txt", "é") == "wrote 2 bytes to é.txt"  # bytes, not characters


def test_append(ws: Workspace) -> None:
    ws.write("log", "a\n")
    assert ws.write("log", "b\n", append=True) == "wrote 2 bytes to log (appended; the file is now 4 bytes)"
    ws.write("fresh/log", "x", append=True)
    assert ws.read("log") == "a\nb\n" and ws.read("fresh/log") == "x"


def test_read_offset_and_limit_count_lines(ws: Workspace) -> None:
    ws.write("f", "".join(f"line{i}\n" for i in range(10)))
    assert ws.read("f", offset=2, limit=3) == "line2\nline3\nline4\n"
    assert ws.read("f", 8) == "line8\nline9\n"
    assert ws.read("f", 9, 100) == "line9\n"
    assert "past the end: the file has 10 lines" in ws.read("f", 10)
    ws.write("no-newline", "a\nb")
    assert ws.read("no-newline", 1) == "b"
    assert "has 2 lines" in ws.read("no-newline", 5)
    ws.write("empty", "")
    assert ws.read("empty") == "(empty file)"


def test_read_is_cut_with_a_note_saying_how_to_continue(ws: Workspace) -> None:
    text = "".join(f"line number {i:03}\n" for i in range(40))  # 16 bytes a line, 640 in all
    ws.write("long", text)
    first = ws.read("long")
    assert first.startswith("line number 000\n")
    assert "[cut at 100 bytes (lines 0-5 shown); read further with offset=6]" in first
    # Following the notes gives back the whole file, exactly.
    got, offset = "", 0
    for _ in range(20):
        chunk = ws.read("long", offset)
        body, _, note = chunk.partition("[cut at")
        got += body
        if not note:
            break
        offset = int(note.rsplit("offset=", 1)[1].rstrip("]"))
    assert got == text


def test_a_line_longer_than_the_cap_is_cut_on_a_character_boundary(ws: Workspace) -> None:
    ws.write("wide", "é" * 80 + "\nnext\n")  # 160 bytes on the first line
    out = ws.read("wide")
    first = out.split("\n")[0]
    assert first == "é" * 50 and "\ufffd" not in out
    assert "longer than 100 bytes" in out and "offset=1" in out
    assert ws.read("wide", 1) == "next\n"


def test_binary_and_non_files_refused(ws: Workspace) -> None:
    (ws.root / "bin").write_bytes(b"\x7fELF\x00\x01\x02")
    with pytest.raises(ToolError, match="binary file"):
        ws.read("bin")
    (ws.root / "noise").write_bytes(bytes(range(1, 32)) * 20)
    with pytest.raises(ToolError, match="binary file"):
        ws.read("noise")
    with pytest.raises(ToolError, match="binary"):
        ws.edit("bin", "ELF", "x")
    (ws.root / "latin1").write_bytes("café crème\n".encode("latin-1"))
    assert ws.read("latin1").startswith("caf")  # mostly text: shown, odd bytes replaced
    with pytest.raises(ToolError, match="not UTF-8"):
        ws.edit("latin1", "caf", "x")
    (ws.root / "d").mkdir()
    with pytest.raises(ToolError, match="directory"):
        ws.read("d")
    with pytest.raises(ToolError, match="directory"):
        ws.write("d", "x")
    with pytest.raises(ToolError, match="no such file"):
        ws.read("missing")
    with pytest.raises(ToolError, match="root"):
        ws.read(".")
    os.mkfifo(ws.root / "fifo")
    with pytest.raises(ToolError, match="not a regular file"):
        ws.read("fifo")  # and does not block
    with pytest.raises(ToolError):
        ws.write("fifo", "x")


def test_write_size_cap(ws: Workspace, caplog: pytest.LogCaptureFixture) -> None:
    assert ws.write("max", "x" * 1000) == "wrote 1000 bytes to max"
    with (
        caplog.at_level(logging.WARNING, logger="spacebot.tools"),
        pytest.raises(ToolError, match="1001 bytes"),
    ):
        ws.write("big", "x" * 1001)
    with pytest.raises(ToolError, match="over the 1000-byte limit"):
        ws.write("big", "é" * 501)  # 1002 bytes
    assert not (ws.root / "big").exists()
    assert "path='big'" in caplog.text


def test_edit(ws: Workspace) -> None:
    ws.write("f.py", "a = 1\nb = 1\nc = 2\n")
    assert ws.edit("f.py", "c = 2", "c = 3") == "replaced 1 occurrence in f.py (1 match found)"
    with pytest.raises(ToolError, match="0 matches"):
        ws.edit("f.py", "d = 4", "x")
    with pytest.raises(ToolError, match="2 matches but count=1"):
        ws.edit("f.py", "= 1", "= 5")
    assert ws.read("f.py") == "a = 1\nb = 1\nc = 3\n"  # a refused edit changes nothing
    assert ws.edit("f.py", "= 1", "= 5", count=2) == "replaced 2 occurrences in f.py (2 matches found)"
    assert ws.edit("f.py", " = ", "=", count=-1) == "replaced 3 occurrences in f.py (3 matches found)"
    assert ws.read("f.py") == "a=5\nb=5\nc=3\n"
    assert "replaced 1 occurrence" in ws.edit("f.py", "a=5", "a=5", count=4)  # fewer than count is fine
    with pytest.raises(ToolError, match="non-empty"):
        ws.edit("f.py", "", "x")
    with pytest.raises(ToolError, match="count must be"):
        ws.edit("f.py", "a", "b", count=0)
    with pytest.raises(ToolError, match="no such file"):
        ws.edit("nope.py", "a", "b")


def test_edit_hints(ws: Workspace) -> None:
    ws.write("win.txt", "one\r\ntwo\r\n")
    with pytest.raises(ToolError, match="Windows line endings"):
        ws.edit("win.txt", "one\ntwo", "x")
    ws.write("sp.txt", "def f():\n    pass\n")
    with pytest.raises(ToolError, match="without the leading/trailing whitespace"):
        ws.edit("sp.txt", "pass  \n\n", "x")


def test_edit_size_caps(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", max_write_bytes=20)
    (ws.root / "big").write_text("x" * 21)
    with pytest.raises(ToolError, match="21 bytes, over the 20-byte edit limit"):
        ws.edit("big", "x", "y")
    ws.write("f", "abc")
    with pytest.raises(ToolError, match="the result would be"):
        ws.edit("f", "b", "b" * 30)
    assert ws.read("f") == "abc"


def test_list(ws: Workspace) -> None:
    ws.write("b.txt", "12345")
    ws.write("a/x.py", "x")
    ws.write("a/sub/y.py", "yy")
    assert ws.list().splitlines() == [
        "dir           -  a/",
        "file          5  b.txt",
    ]
    assert [line.split()[-1] for line in ws.list(".", recursive=True).splitlines()] == [
        "a/",
        "a/sub/",
        "a/sub/y.py",
        "a/x.py",
        "b.txt",
    ]
    assert [line.split()[-1] for line in ws.list(recursive=True, pattern="*.py").splitlines()] == [
        "a/sub/y.py",
        "a/x.py",
    ]
    assert ws.list("a", pattern="*.py").split() == ["file", "1", "a/x.py"]
    assert ws.list(recursive=True, pattern="a/sub/*").split()[-1] == "a/sub/y.py"  # a '/' matches paths
    assert ws.list(pattern="*.rs") == "(no entries match '*.rs')"
    assert ws.list("a/x.py").split() == ["file", "1", "a/x.py"]
    (ws.root / "empty").mkdir()
    assert ws.list("empty") == "(empty directory)"
    with pytest.raises(ToolError, match="does not exist"):
        ws.list("missing")


def test_list_is_capped(ws: Workspace) -> None:
    for i in range(8):
        ws.write(f"many/{i}", "x")
    out = ws.list("many").splitlines()
    assert len(out) == 6 and out[-1].startswith("[listing cut at 5 entries")
    assert [line.split()[-1] for line in out[:5]] == [f"many/{i}" for i in range(5)]
    for i in range(3, 8):
        (ws.root / f"many/{i}").unlink()
    assert "cut" not in ws.list("many")  # exactly at the cap: nothing to say


# -- confinement -------------------------------------------------------------------------------


TOOLS: dict[str, Callable[[Workspace, str], object]] = {
    "read": lambda ws, p: ws.read(p),
    "write": lambda ws, p: ws.write(p, "pwned"),
    "append": lambda ws, p: ws.write(p, "pwned", append=True),
    "edit": lambda ws, p: ws.edit(p, "s", "pwned"),
    "list": lambda ws, p: ws.list(p, recursive=True),
    "resolve": lambda ws, p: ws.resolve(p),
}


@pytest.mark.parametrize("tool", TOOLS)
@pytest.mark.parametrize(
    "path",
    [
        "../outside/secret",
        "a/../../outside/secret",
        "a/b/../../../outside/secret",
        "../ws/secret",  # climbs out even though it would come back
        "..",
        "{tmp}/outside/secret",  # absolute, elsewhere
        "{tmp}/ws-evil/secret",  # sibling sharing the root's name as a prefix
        "{tmp}/ws/../outside/secret",
        "/etc/passwd",
        "/",
        "//",
        "",
        "a\0b",
    ],
)
def test_escapes_refused_and_logged(
    ws: Workspace, outside: Path, tool: str, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    tmp = ws.root.parent
    (tmp / "ws-evil").mkdir()
    (tmp / "ws-evil" / "secret").write_text("s")
    (ws.root / "a" / "b").mkdir(parents=True)
    path = path.replace("{tmp}", str(tmp))
    with caplog.at_level(logging.WARNING, logger="spacebot.tools"), pytest.raises(ToolError) as err:
        TOOLS[tool](ws, path)
    if path and "\0" not in path:
        assert "outside the workspace" in str(err.value)
    assert (outside / "secret").read_text() == "s"
    assert (tmp / "ws-evil" / "secret").read_text() == "s"
    assert _files_under(tmp) == {
        "ws", "ws/a", "ws/a/b", "outside", "outside/secret", "ws-evil", "ws-evil/secret"
    }  # fmt: skip
    [record] = [r for r in caplog.records if r.name == "spacebot.tools"]
    assert record.levelno == logging.WARNING
    assert f"path={path!r}" in record.getMessage() and "reason=" in record.getMessage()


def test_absolute_paths_inside_are_accepted(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "real")
    assert ws.write(str(ws.root / "a.txt"), "x") == "wrote 1 bytes to a.txt"
    assert ws.read(str(tmp_path / "real" / "a.txt")) == "x"
    assert ws.resolve(str(ws.root)) == ws.root
    assert ws.list(str(ws.root)).split()[-1] == "a.txt"


@pytest.mark.parametrize("tool", ["read", "write", "append", "edit", "list"])
def test_symlink_to_an_outside_file_refused(ws: Workspace, outside: Path, tool: str) -> None:
    (ws.root / "link").symlink_to(outside / "secret")
    with pytest.raises(ToolError, match=r"outside the workspace.*symbolic link"):
        TOOLS[tool](ws, "link")
    assert (outside / "secret").read_text() == "s"


@pytest.mark.parametrize("tool", ["read", "write", "append", "edit", "list"])
def test_symlink_to_an_outside_dir_refused_as_a_parent(ws: Workspace, outside: Path, tool: str) -> None:
    (ws.root / "out").symlink_to(outside)
    for path in ("out", "out/secret", "out/new", "out/deep/new"):
        with pytest.raises(ToolError, match="outside the workspace"):
            TOOLS[tool](ws, path)
    assert _files_under(outside) == {"secret"} and (outside / "secret").read_text() == "s"


def test_dangling_link_to_outside_and_link_chains_refused(ws: Workspace, outside: Path) -> None:
    (ws.root / "dangling").symlink_to(outside / "not-yet")
    (ws.root / "hop2").symlink_to(outside)
    (ws.root / "hop1").symlink_to("hop2")  # relative, inside -> inside -> outside
    (ws.root / "rel").symlink_to("../outside/secret")
    (ws.root / "evil").symlink_to("../ws-evil")  # a string-prefix check would let this through
    (ws.root.parent / "ws-evil").mkdir()
    for path in ("dangling", "hop1/new", "hop1/secret", "rel", "evil/x"):
        with pytest.raises(ToolError, match="outside the workspace"):
            ws.write(path, "pwned")
    assert not (outside / "not-yet").exists() and _files_under(outside) == {"secret"}
    assert _files_under(ws.root.parent / "ws-evil") == set()


def test_a_symlink_loop_does_not_hide_a_link_out(ws: Workspace, outside: Path) -> None:
    """realpath gives up at a loop and joins the rest unresolved: 'loop/../out' came back as 'ws/out'."""
    (ws.root / "loop").symlink_to("loop")
    (ws.root / "out").symlink_to(outside)
    for path in ("loop/../out/secret", "loop/../out", "loop", "loop/x"):
        for tool in ("resolve", "read", "write", "list"):
            with pytest.raises(ToolError, match="symbolic link"):
                TOOLS[tool](ws, path)
    assert _files_under(outside) == {"secret"} and (outside / "secret").read_text() == "s"


def test_symlinks_inside_the_workspace_are_fine(ws: Workspace) -> None:
    ws.write("real/f.txt", "abc\n")
    (ws.root / "dirlink").symlink_to("real")
    (ws.root / "filelink").symlink_to(ws.root / "real" / "f.txt")
    (ws.root / "later").symlink_to("real/not-yet")
    assert ws.read("dirlink/f.txt") == "abc\n" and ws.read("filelink") == "abc\n"
    assert ws.write("dirlink/g.txt", "g") == "wrote 1 bytes to real/g.txt"
    assert ws.write("filelink", "new\n") == "wrote 4 bytes to real/f.txt"
    assert (ws.root / "filelink").is_symlink()  # written through, not replaced
    assert "replaced 1" in ws.edit("filelink", "new", "NEW")
    assert ws.read("real/f.txt") == "NEW\n"
    assert ws.write("later", "l") == "wrote 1 bytes to real/not-yet"
    assert ws.list("dirlink").split("\n")[0].endswith("real/f.txt")
    assert ws.resolve("dirlink/../real/g.txt") == ws.root / "real" / "g.txt"


def test_list_shows_links_and_never_follows_them(ws: Workspace, outside: Path) -> None:
    ws.write("real/f.txt", "abc")
    (ws.root / "in").symlink_to("real")
    (ws.root / "out").symlink_to(outside)
    (ws.root / "real" / "up").symlink_to("..")  # a loop, if it were followed
    lines = ws.list(recursive=True).splitlines()
    assert "link          -  in -> real" in lines
    assert f"link          -  out -> {outside} (outside workspace)" in lines
    assert "link          -  real/up -> .." in lines
    assert not any("secret" in line for line in lines)


def test_a_parent_swapped_for_a_symlink_after_the_check_is_not_followed(
    ws: Workspace, outside: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The race the dir_fd walk closes: the check passes, then a directory becomes a symlink."""
    ws.write("sub/f", "x")
    check = ws._resolve

    def check_then_swap(op: str, path: str, *, for_write: bool = False) -> Path:
        resolved = check(op, path, for_write=for_write)
        shutil.rmtree(ws.root / "sub")
        (ws.root / "sub").symlink_to(outside)
        return resolved

    monkeypatch.setattr(ws, "_resolve", check_then_swap)
    with caplog.at_level(logging.WARNING, logger="spacebot.tools"), pytest.raises(ToolError, match="link"):
        ws.write("sub/secret", "pwned")
    assert (outside / "secret").read_text() == "s"
    assert "path='sub/secret'" in caplog.text


@pytest.mark.parametrize("tool", ["read", "write", "append", "edit"])
def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(
    ws: Workspace, outside: Path, monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    ws.write("f", "s")
    check = ws._resolve

    def check_then_swap(op: str, path: str, *, for_write: bool = False) -> Path:
        resolved = check(op, path, for_write=for_write)
        (ws.root / "f").unlink()
        (ws.root / "f").symlink_to(outside / "secret")
        return resolved

    monkeypatch.setattr(ws, "_resolve", check_then_swap)
    with pytest.raises(ToolError, match="symbolic link"):
        TOOLS[tool](ws, "f")
    assert (outside / "secret").read_text() == "s"


def test_a_file_in_the_way_of_a_directory(ws: Workspace) -> None:
    ws.write("a", "x")
    with pytest.raises(ToolError, match="'a' is a file, not a directory"):
        ws.write("a/b/c", "y")
    with pytest.raises(ToolError, match="ends with '/'"):
        ws.write("new/", "y")
    with pytest.raises(ToolError, match="workspace root"):
        ws.write(".", "y")


# -- property tests ----------------------------------------------------------------------------

SEGMENTS = ["a", "..", ".", "b/c", "//", "", "x..y", "in_link", "out_link", "evil", "loop"]


@pytest.fixture(scope="module")
def layout() -> Iterator[Path]:
    """A workspace with links inside, outside, to a prefix sibling, and a loop; shared by examples."""
    base = Path(tempfile.mkdtemp())
    root = base / "ws"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (base / "outside").mkdir()
    (base / "ws-evil").mkdir()
    (root / "in_link").symlink_to("a/b")
    (root / "a" / "in_link").symlink_to("..")
    (root / "out_link").symlink_to(base / "outside")
    (root / "evil").symlink_to("../ws-evil")
    (root / "loop").symlink_to("loop")
    yield base
    shutil.rmtree(base)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=8), st.booleans())
def test_resolved_paths_stay_inside(layout: Path, parts: list[str], absolute: bool) -> None:
    ws = Workspace(layout / "ws")
    path = "/".join(parts)
    if absolute:
        path = f"{ws.root}/{path}"
    try:
        resolved = ws.resolve(path)
    except ToolError:
        return
    assert resolved.is_relative_to(ws.root)
    assert Path(os.path.realpath(resolved)).is_relative_to(ws.root)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(["a", ".", "b/c", "//", "", "x..y", "new"]), min_size=1, max_size=8))
def test_plain_relative_paths_resolve_lexically(layout: Path, parts: list[str]) -> None:
    """Without '..', links or a leading '/', a path is never refused and means what it says."""
    ws = Workspace(layout / "ws")
    path = "/".join(parts).lstrip("/") or "."
    assert ws.resolve(path) == ws.root / os.path.normpath(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=6))
def test_writes_never_land_outside(layout: Path, parts: list[str]) -> None:
    ws = Workspace(layout / "ws")
    path = "/".join(parts)
    try:
        out = ws.write(path, "x")
    except ToolError:
        pass
    else:
        written = ws.root / out.rsplit(" to ", 1)[1]
        assert written.is_relative_to(ws.root) and written.read_text() == "x"
    assert _files_under(layout / "outside") == set() and _files_under(layout / "ws-evil") == set()


# -- the tool surface: what a worker runs (TaskTools.call -> schema.check -> Workspace) ---------


@pytest.fixture
def tools(tmp_path: Path) -> TaskTools:
    return TaskTools(tmp_path / "ws", Limits(), lambda text, kind: None)


async def _call(tools: TaskTools, name: str, args: object) -> tuple[str, bool]:
    """One call as a worker runs it; ``args`` as decoded from the model's JSON."""
    return await tools.call(ToolCall("1", name, args, json.dumps(args)))  # type: ignore[arg-type]


async def _ok(tools: TaskTools, name: str, args: dict[str, object]) -> str:
    text, err = await _call(tools, name, args)
    assert not err, text
    return text


def test_tool_specs() -> None:
    assert [s["name"] for s in TOOL_SPECS] == ["file_read", "file_write", "file_edit", "file_list"]
    for spec in TOOL_SPECS:
        params = spec["parameters"]
        assert spec["description"] and params["type"] == "object"
        assert set(params["required"]) <= set(params["properties"])
        assert all(p["type"] in ("string", "integer", "boolean") for p in params["properties"].values())


async def test_call_dispatches(tools: TaskTools) -> None:
    assert await _ok(tools, "file_write", {"path": "d/f", "content": "one\ntwo\n"}) == "wrote 8 bytes to d/f"
    wrote = await _ok(tools, "file_write", {"path": "d/f", "content": "3\n", "append": True})
    assert wrote.startswith("wrote 2")
    assert await _ok(tools, "file_read", {"path": "d/f", "offset": 1, "limit": 1}) == "two\n"
    assert await _ok(tools, "file_read", {"path": "d/f", "offset": None, "limit": None}) == "one\ntwo\n3\n"
    assert "replaced 1" in await _ok(tools, "file_edit", {"path": "d/f", "old": "two", "new": "2"})
    edit_all = {"path": "d/f", "old": "\n", "new": ";", "count": -1}
    assert "replaced 3" in await _ok(tools, "file_edit", edit_all)
    assert (await _ok(tools, "file_list", {})).split()[-1] == "d/"
    listed = await _ok(tools, "file_list", {"path": "d", "recursive": True, "pattern": "f"})
    assert listed.split()[-1] == "d/f"


async def test_null_means_absent_for_an_optional_argument(tools: TaskTools) -> None:
    """Models send ``null`` for "not given": the tool's default applies, it is not an error."""
    await _ok(tools, "file_write", {"path": "f", "content": "a\nb\n"})
    replaced = await _ok(tools, "file_write", {"path": "f", "content": "c\n", "append": None})
    assert replaced == "wrote 2 bytes to f"
    assert await _ok(tools, "file_read", {"path": "f", "offset": None}) == "c\n"  # append=null replaced
    assert "replaced 1" in await _ok(tools, "file_edit", {"path": "f", "old": "c", "new": "d", "count": None})
    listing = await _ok(tools, "file_list", {"path": None, "recursive": None, "pattern": None})
    assert listing.split() == ["file", "2", "f"]
    shell = await _ok(tools, "shell", {"command": "cat f", "cwd": None, "timeout": None})
    assert shell == "exit code 0\nstdout:\nd\n"  # no note about a clamped timeout
    program = {"program": "cat", "args": ["f"], "env": None, "cwd": None, "timeout": None}
    assert await _ok(tools, "exec", program) == "exit code 0\nstdout:\nd\n"


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        (
            "file_read",
            {"path": None},
            "file_read: argument 'path' must be a string, got null (it is required)",
        ),
        ("file_write", {"path": "x", "content": None}, "argument 'content' must be a string, got null"),
        ("file_edit", {"path": "x", "old": None, "new": "b"}, "argument 'old' must be a string, got null"),
        ("shell", {"command": None, "timeout": None}, "shell: argument 'command' must be a string, got null"),
        ("exec", {"program": None}, "exec: argument 'program' must be a string, got null"),
    ],
)
async def test_null_for_a_required_argument_is_refused(
    tools: TaskTools, name: str, args: dict[str, object], message: str
) -> None:
    text, err = await _call(tools, name, args)
    assert err and message in text
    assert _files_under(tools.files.root) == set()


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("file_write", {"path": "x"}, "file_write: missing required argument 'content' (a string)"),
        ("file_read", {}, "file_read: missing required argument 'path' (a string)"),
        ("file_read", {"path": None}, "file_read: argument 'path' must be a string, got null"),
        ("file_read", {"path": 3}, "file_read: argument 'path' must be a string, got integer"),
        ("file_read", {"path": "x", "offset": "2"}, "argument 'offset' must be an integer, got string"),
        ("file_read", {"path": "x", "offset": True}, "argument 'offset' must be an integer, got boolean"),
        ("file_read", {"path": "x", "offset": 1.5}, "argument 'offset' must be an integer, got number"),
        ("file_read", {"path": "x", "offset": -1}, "argument 'offset' must be >= 0, got -1"),
        ("file_read", {"path": "x", "limit": 0}, "argument 'limit' must be >= 1, got 0"),
        ("file_write", {"path": "x", "content": ["a"]}, "argument 'content' must be a string, got array"),
        ("file_write", {"path": "x", "content": "a", "append": "yes"}, "'append' must be a boolean"),
        ("file_edit", {"path": "x", "old": "a"}, "missing required argument 'new'"),
        ("file_edit", {"path": "x", "old": "a", "new": "b", "count": -2}, "'count' must be >= -1"),
        ("file_list", {"recursive": 1}, "argument 'recursive' must be a boolean, got integer"),
        ("file_list", {"pattern": {}}, "argument 'pattern' must be a string, got object"),
        ("file_read", {"path": "x", "lines": 3}, "unknown argument 'lines' (arguments: path, offset, limit)"),
        ("file_read", ["x"], "the arguments must be a JSON object, got array"),
        (
            "file_delete",
            {"path": "x"},
            "unknown tool 'file_delete' (tools: shell, exec, file_read, file_write, file_edit, file_list, "
            "set_status)",
        ),
    ],
)
async def test_call_checks_arguments(
    tools: TaskTools, name: str, args: object, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="spacebot.tools"):
        text, err = await _call(tools, name, args)
    assert err
    assert message in text
    assert "refused" in caplog.text and "path=" in caplog.text
    assert _files_under(tools.files.root) == set()


async def test_arguments_that_are_not_a_json_object_as_they_arrive(tools: TaskTools) -> None:
    """What a provider stream hands the worker when the model's arguments are not an object."""
    for raw in ('["x"]', '{"path": "x"'):
        text, err = await tools.call(finish_tool_call("1", "file_read", raw))
        assert err and text.startswith("file_read: the arguments are not a JSON object")
        assert "call it again with one JSON object" in text


async def test_call_refusals_are_tool_errors(tools: TaskTools) -> None:
    text, err = await _call(tools, "file_read", {"path": "../../etc/passwd"})
    assert err and "outside the workspace" in text
    text, err = await _call(tools, "file_edit", {"path": "x", "old": "a", "new": "b", "count": 0})
    assert err and "count must be" in text


async def test_tool_calls_report_bad_arguments(tools: TaskTools) -> None:
    text, err = await tools.call(ToolCall("1", "file_write", {"path": "x"}))
    assert err and "missing required argument 'content'" in text
    text, err = await tools.call(ToolCall("2", "shell", {"command": 3}))
    assert err and "shell: argument 'command' must be a string, got integer" in text
    text, err = await tools.call(ToolCall("3", "file_read", {"path": "../../etc/passwd"}))
    assert err and "outside the workspace" in text
    text, err = await tools.call(ToolCall("4", "shell", {"command": "echo hi > f && cat f"}))
    assert not err and "exit code 0" in text and "hi" in text
    text, err = await tools.call(ToolCall("5", "exec", {"program": "printf", "args": ["%s-%s", "a b", "c"]}))
    assert not err and "a b-c" in text


def test_read_bytes_never_follows_a_link_swapped_in_while_in_use(ws: Workspace, outside: Path) -> None:
    """``send_file`` reads through this: a worker swapping a file for a link to a secret (the
    config) between the check and the read gets a refusal, never the secret."""
    import threading

    secret = (outside / "secret").read_bytes()
    target = ws.root / "r.txt"
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                target.unlink()
                target.write_bytes(b"harmless")
            with contextlib.suppress(OSError):
                target.unlink()
                target.symlink_to(outside / "secret")

    swapper = threading.Thread(target=swap)
    swapper.start()
    got: list[bytes] = []
    refused = 0
    try:
        for _ in range(400):
            try:
                got.append(ws.read_bytes("r.txt", 1_000_000)[1])
            except ToolError:
                refused += 1
    finally:
        stop.set()
        swapper.join()
    assert secret not in got, f"read the secret through a link ({refused} refusals)"
