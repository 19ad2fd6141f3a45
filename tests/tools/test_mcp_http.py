"""MCP servers over streamable HTTP (``[[tools.mcp]] url``): the SDK's client against the packaged
fake server run as a real HTTP service on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from spacebot import config as config_mod
from spacebot.config import ConfigError, McpServerSettings
from spacebot.llm.types import ToolCall
from spacebot.tools.errors import ToolError
from spacebot.tools.mcp_http import McpHttpServer
from spacebot.tools.mcp_tools import McpTools, start_servers
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools, ToolSecrets

FAKE = [sys.executable, "-m", "spacebot.tools.fakes.mcp_server"]
TOKEN = "s3cret-token-value"

Serve = Callable[..., Awaitable[str]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """``await serve(port=0, token="")``: a fake MCP HTTP server; returns its URL. Killed after the test."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(port: int = 0, token: str = "") -> str:
        args = ["--http", str(port)] + (["--token", token] if token else [])
        proc = await asyncio.create_subprocess_exec(
            *FAKE, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = (await proc.stdout.readline()).decode()
        assert line.startswith("listening "), line
        return line.split()[1]

    yield start
    for proc in procs:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


def _entry(url: str, **over: Any) -> McpServerSettings:
    return McpServerSettings(name="remote", url=url, **over)


async def _call(mcp: McpTools, name: str, **args: Any) -> tuple[str, bool]:
    tools = TaskTools(
        Path("/nonexistent"), Limits(), lambda *_: None, secrets=ToolSecrets(known=mcp.known), mcp=mcp
    )
    return await tools.call(ToolCall("c1", name, args))


async def test_tools_are_listed_and_called_with_the_configured_header(serve: Serve, tmp_path: Path) -> None:
    url = await serve(token=TOKEN)
    entry = _entry(url, headers={"Authorization": "Bearer env:REMOTE_MCP_TOKEN"})
    mcp = await start_servers([entry], tmp_path, environ={"REMOTE_MCP_TOKEN": TOKEN})
    try:
        assert [s.name for s in mcp.servers] == ["remote"]
        assert {"mcp_remote_add", "mcp_remote_echo"} <= set(mcp.specs)
        assert mcp.specs["mcp_remote_add"].description.startswith("[MCP remote]")
        assert await _call(mcp, "mcp_remote_add", a=20, b=22) == ("42", False)
        # The token is a secret of the worker: scrubbed from whatever comes back.
        text, is_error = await _call(mcp, "mcp_remote_echo", text=f"token is {TOKEN}")
        assert not is_error and TOKEN not in text
        assert mcp.known == {"tools.mcp.remote.headers.Authorization": TOKEN}
    finally:
        await mcp.aclose()


async def test_a_refused_token_is_a_clear_error_and_the_server_is_left_out(
    serve: Serve, tmp_path: Path
) -> None:
    url = await serve(token=TOKEN)
    server = McpHttpServer(_entry(url), tmp_path, {"Authorization": "Bearer wrong"})
    with pytest.raises(ToolError, match="HTTP 401"):
        await server.start()
    mcp = await start_servers([_entry(url, headers={"Authorization": "Bearer wrong"})], tmp_path)
    assert mcp.servers == [] and mcp.specs == {}


async def test_an_unreachable_url_is_a_clear_error(tmp_path: Path) -> None:
    server = McpHttpServer(_entry("http://127.0.0.1:9/mcp"), tmp_path, {})
    with pytest.raises(ToolError, match=r"could not connect to http://127\.0\.0\.1:9/mcp: ConnectError"):
        await server.start()


async def test_a_lost_server_is_an_error_and_the_next_call_reconnects(serve: Serve, tmp_path: Path) -> None:
    url = await serve()
    mcp = await start_servers([_entry(url)], tmp_path)
    try:
        first, _ = await _call(mcp, "mcp_remote_pid")
        # The service crashes during a call: that call fails naming the server and the tool.
        text, is_error = await _call(mcp, "mcp_remote_crash", code=3)
        assert is_error and "mcp_remote_crash" in text and "'remote'" in text, text
        # While it is down, calls say it is unreachable (and nothing hangs).
        text, is_error = await _call(mcp, "mcp_remote_pid")
        assert is_error and "'remote'" in text and "ConnectError" in text, text
        text, is_error = await _call(mcp, "mcp_remote_pid")
        assert is_error and "'remote' is unreachable" in text and "ConnectError" in text, text
        # It comes back on the same port (as a systemd service would): the next call connects again.
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        await serve(port=port)
        second, is_error = await _call(mcp, "mcp_remote_pid")
        assert not is_error and second != first
    finally:
        await mcp.aclose()


def test_config_wants_exactly_one_of_command_and_url(tmp_path: Path) -> None:
    raw = {
        "home": str(tmp_path),
        "tools": {
            "mcp": [
                {"name": "a", "command": ["srv"], "url": "http://127.0.0.1:1/mcp"},
                {"name": "b", "url": "ftp://host/mcp"},
                {"name": "c"},
                {"name": "d", "url": "http://h/mcp", "headers": {"Bad Header": "x"}},
            ]
        },
    }
    with pytest.raises(ConfigError) as err:
        config_mod.from_dict(raw, {})
    text = str(err.value)
    assert "entry 1 ('a'): give either command (stdio) or url (HTTP), not both" in text
    assert "entry 2 ('b'): url 'ftp://host/mcp' is not an http:// or https:// address" in text
    assert "entry 3 ('c'): command is empty" in text
    assert "entry 4 ('d'): header name 'Bad Header' is not valid" in text
    good = config_mod.from_dict(
        {"home": str(tmp_path), "tools": {"mcp": [{"name": "r", "url": "https://mcp.example/mcp"}]}}, {}
    )
    assert good.tools.mcp[0].url == "https://mcp.example/mcp" and good.tools.mcp[0].command == []


async def test_mcp_list_starts_each_server_and_shows_the_offered_tools(serve: Serve, tmp_path: Path) -> None:
    url = await serve(token=TOKEN)
    command = json.dumps(FAKE)
    (tmp_path / "config.toml").write_text(
        f'[[tools.mcp]]\nname = "local"\ncommand = {command}\ntools = ["add", "echo"]\n\n'
        f'[[tools.mcp]]\nname = "remote"\nurl = "{url}"\n'
        'headers = { Authorization = "Bearer env:REMOTE_MCP_TOKEN" }\n\n'
        '[[tools.mcp]]\nname = "down"\nurl = "http://127.0.0.1:9/mcp"\n'
    )
    env = {**os.environ, "REMOTE_MCP_TOKEN": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spacebot.cli.main",
        "--home",
        str(tmp_path),
        "mcp",
        "list",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 1, err.decode()  # one server is down
    rows = {row["name"]: row for row in json.loads(out.decode().splitlines()[-1])["servers"]}
    assert rows["local"]["ok"] and [t["name"] for t in rows["local"]["tools"]] == [
        "mcp_local_add",
        "mcp_local_echo",
    ]
    assert rows["remote"]["ok"] and "mcp_remote_pid" in {t["name"] for t in rows["remote"]["tools"]}
    assert not rows["down"]["ok"] and "could not connect to http://127.0.0.1:9/mcp" in rows["down"]["error"]
    assert TOKEN not in out.decode()
