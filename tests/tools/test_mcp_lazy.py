"""Lazy start of MCP servers: a cached ``tools/list`` answer in the agent's data directory lets a
worker offer a server's tools without starting it; the first call does. Real server processes
(the packaged fake), real cache files."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from spacebot import config as config_mod
from spacebot.config import McpServerSettings
from spacebot.tools.mcp_cache import FOLDER, Listed, ToolCache, cache_key
from spacebot.tools.mcp_session import McpServer
from tests.tools.test_mcp import FAKE, _fake, servers


def _servers_under(workspace: Path) -> list[int]:
    """Live fake MCP servers started by this process with ``workspace`` as their cwd."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            ours = "spacebot.tools.fakes.mcp_server" in child.cmdline() and child.cwd() == str(workspace)
            if ours and child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def _saved(data: Path, name: str = "fake") -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((data / FOLDER / f"{name}.json").read_text())
    return loaded


@pytest.fixture
async def worker(tmp_path: Path) -> AsyncIterator[Any]:
    """``await worker(settings..., data=...)``: the servers as a worker with that data directory has them."""
    async with servers(tmp_path, data=tmp_path / "data") as start:
        yield start


async def test_the_first_worker_starts_and_caches_the_next_starts_on_the_first_call(
    worker: Any, tmp_path: Path
) -> None:
    data, ws = tmp_path / "data", tmp_path / "ws"
    first = await worker(_fake())
    server = first.mcp.servers[0]
    assert server.pid is not None  # a miss: started to be listed
    saved = _saved(data)
    assert {t["name"] for t in saved["tools"]} >= {"add", "echo", "pid", "crash"}
    assert saved["key"] == server.cache_key()
    assert not list((data / FOLDER).glob(".*.tmp"))  # written through a renamed temporary file
    await first.mcp.aclose()

    second = await worker(_fake())
    lazy = second.mcp.servers[0]
    # The same tools, offered with the same schemas, and no server process yet.
    assert second.mcp.specs == first.mcp.specs
    assert lazy.pid is None and _servers_under(ws) == []
    assert await second.call("mcp_fake_add", a=2, b=40) == ("42", False)
    assert lazy.pid is not None and _servers_under(ws) == [lazy.pid]
    assert lazy.restarts == 0  # a first start, not a restart
    pid, _ = await second.call("mcp_fake_pid")
    assert int(pid) == lazy.pid  # the one started by the first call serves the next ones


async def test_changed_settings_are_a_miss(worker: Any, tmp_path: Path) -> None:
    await worker(_fake(tools=["add"]))
    again = await worker(_fake(tools=["add", "echo"]))  # another allow-list: listed afresh
    assert again.mcp.servers[0].pid is not None
    assert set(again.mcp.specs) == {"mcp_fake_add", "mcp_fake_echo"}
    assert _saved(tmp_path / "data")["key"] == again.mcp.servers[0].cache_key()
    env = await worker(_fake(tools=["add", "echo"], env={"LEVEL": "debug"}))
    assert env.mcp.servers[0].pid is not None


def test_the_key_covers_what_can_change_the_listing(tmp_path: Path) -> None:
    def key(entry: McpServerSettings, values: dict[str, str] | None = None, version: str = "1") -> str:
        return cache_key(entry, {"PATH": "/bin", **(values or {})}, version)

    base = McpServerSettings(name="s", command=["srv", "--a"])
    keys = {
        key(base),
        key(McpServerSettings(name="s", command=["srv", "--b"])),
        key(McpServerSettings(name="s", command=["srv", "--a"], cwd="sub")),
        key(McpServerSettings(name="s", command=["srv", "--a"], tools=["x"])),
        key(base, {"TOKEN": "one"}),
        key(base, {"TOKEN": "two"}),
        key(base, version="2"),
    }
    assert len(keys) == 7
    # The workspace (HOME, TMPDIR) is not part of it: `spacebot mcp list` uses a scratch one.
    assert key(base, {"HOME": "/a", "TMPDIR": "/a/.tmp"}) == key(base, {"HOME": "/b", "TMPDIR": "/b/.tmp"})
    remote = McpServerSettings(name="r", url="http://127.0.0.1:1/mcp")
    assert cache_key(remote, {"Authorization": "Bearer a"}, "1") != cache_key(
        remote, {"Authorization": "Bearer b"}, "1"
    )
    # Values are hashed: a secret is never written.
    assert "one" not in key(base, {"TOKEN": "one"})


async def test_a_corrupt_cache_is_a_miss(
    worker: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    (data / FOLDER).mkdir(parents=True)
    (data / FOLDER / "fake.json").write_bytes(b'{"format": 1, "key": "abc", "tools": [{"na')
    with caplog.at_level(logging.WARNING, logger="spacebot.tools.mcp"):
        h = await worker(_fake())
    assert h.mcp.servers[0].pid is not None
    assert "its tool cache" in caplog.text and "is corrupt" in caplog.text
    assert await h.call("mcp_fake_add", a=1, b=2) == ("3", False)
    assert _saved(data)["key"] == h.mcp.servers[0].cache_key()  # rewritten whole


async def test_a_cached_tool_the_server_no_longer_lists_is_a_clear_error(worker: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    await worker(_fake())
    path = data / FOLDER / "fake.json"
    stale = json.loads(path.read_text())
    stale["tools"].append({"name": "gone", "description": "A tool of an older version.", "input_schema": {}})
    path.write_text(json.dumps(stale))

    h = await worker(_fake())
    assert "mcp_fake_gone" in h.mcp.specs and h.mcp.servers[0].pid is None
    text, is_error = await h.call("mcp_fake_gone")
    assert is_error
    assert text == (
        "mcp_fake_gone: MCP server 'fake' no longer offers the tool 'gone' (its tools changed since "
        "they were cached; the next task is offered the new list). Do without it."
    )
    assert "gone" not in {t["name"] for t in _saved(data)["tools"]}  # refreshed from the live listing
    assert await h.call("mcp_fake_echo", text="still") == ("still", False)
    later = await worker(_fake())
    assert "mcp_fake_gone" not in later.mcp.specs and later.mcp.servers[0].pid is None


async def test_a_cached_server_that_no_longer_starts_fails_its_call_and_is_forgotten(
    worker: Any, tmp_path: Path
) -> None:
    data, entry = tmp_path / "data", _fake("bad", "--exit-at-start", "2")
    probe = McpServer(entry, tmp_path / "ws", {})
    ToolCache(data, "bad", probe.cache_key()).write([Listed("add", None, "Add.", {"type": "object"})])
    h = await worker(entry)
    assert "mcp_bad_add" in h.mcp.specs and h.mcp.servers[0].pid is None
    text, is_error = await h.call("mcp_bad_add")
    assert is_error
    assert text.startswith("mcp_bad_add: MCP server 'bad' could not be started: "), text
    assert not (data / FOLDER / "bad.json").exists()  # the next worker tries it at start, as without a cache
    later = await worker(entry)
    assert later.mcp.servers == []


async def test_without_a_data_directory_servers_start_at_once(worker: Any, tmp_path: Path) -> None:
    await worker(_fake())
    h = await worker(_fake(), data=None)
    assert h.mcp.servers[0].pid is not None


async def _serve(port: int = 0) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        *FAKE, "--http", str(port), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    assert proc.stdout is not None
    line = (await proc.stdout.readline()).decode()
    assert line.startswith("listening "), line
    return proc, line.split()[1]


async def test_a_cached_http_server_is_not_contacted_until_the_first_call(
    worker: Any, tmp_path: Path
) -> None:
    proc, url = await _serve()
    procs = [proc]
    try:
        entry = McpServerSettings(name="remote", url=url, tools=["add", "pid"])
        first = await worker(entry)
        assert set(first.mcp.specs) == {"mcp_remote_add", "mcp_remote_pid"}
        await first.mcp.aclose()
        proc.kill()
        await proc.wait()
        # The service is down: with the cache its tools are offered all the same (nothing was asked).
        h = await worker(entry)
        assert set(h.mcp.specs) == {"mcp_remote_add", "mcp_remote_pid"}
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        back, _ = await _serve(port)
        procs.append(back)
        assert await h.call("mcp_remote_add", a=20, b=22) == ("42", False)
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
            await p.wait()


async def test_mcp_list_refreshes_the_agents_caches(worker: Any, tmp_path: Path) -> None:
    from spacebot.cli.mcp_cmd import survey

    home = tmp_path / "home"
    data = home / "agents" / "main" / "data"
    data.mkdir(parents=True)
    entries = [
        {"name": "fake", "command": FAKE, "tools": ["add"]},
        {"name": "bad", "command": [*FAKE, "--exit-at-start", "1"]},
    ]
    (data / FOLDER).mkdir()
    (data / FOLDER / "bad.json").write_text("{}")
    cfg = config_mod.from_dict({"home": str(home), "tools": {"mcp": entries}}, {})
    found = await survey(cfg)
    assert [row["ok"] for row in found["servers"]] == [True, False]
    assert "add" in {t["name"] for t in _saved(data)["tools"]}
    assert not (data / FOLDER / "bad.json").exists()
    # A worker of that agent (its own workspace) finds the listing: no server until the first call.
    h = await worker(cfg.tools.mcp[0], data=data)
    assert h.mcp.servers[0].pid is None
    assert await h.call("mcp_fake_add", a=1, b=1) == ("2", False)
