"""MCP servers as worker tools: the ``mcp`` SDK's client against the packaged fake server, over stdio.

Every test starts real server processes (``python -m spacebot.tools.fakes.mcp_server``) and calls
them the way the worker does, through ``TaskTools.call``.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from spacebot import config as config_mod
from spacebot.config import McpServerSettings
from spacebot.errors import ConfigError
from spacebot.llm.types import ToolCall
from spacebot.tools import sandbox
from spacebot.tools.mcp_session import MESSAGE_BYTES, RESULT_CHARS
from spacebot.tools.mcp_tools import (
    DESCRIPTION_CHARS,
    MAX_TOOLS,
    McpTools,
    resolve_env,
    start_servers,
    tool_name,
    trim_schema,
)
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools, ToolSecrets

FAKE = [sys.executable, "-m", "spacebot.tools.fakes.mcp_server"]


def _fake(name: str = "fake", *args: str, **over: Any) -> McpServerSettings:
    return McpServerSettings(name=name, command=[*FAKE, *args], **over)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


class Harness:
    """Started servers and the worker's task tools over them."""

    def __init__(self, mcp: McpTools, tools: TaskTools) -> None:
        self.mcp = mcp
        self.tools = tools

    async def call(self, name: str, **args: Any) -> tuple[str, bool]:
        return await self.tools.call(ToolCall("c1", name, args))


@contextlib.asynccontextmanager
async def servers(tmp_path: Path, **defaults: Any) -> AsyncIterator[Callable[..., Awaitable[Harness]]]:
    """``await start(settings..., **start_servers_kwargs)``: servers started with a workspace under
    ``tmp_path`` (``defaults`` for every start); all stopped, and checked gone, at the end."""
    made: list[McpTools] = []

    async def start(*settings: McpServerSettings, **kwargs: Any) -> Harness:
        mcp = await start_servers(list(settings), tmp_path / "ws", **{**defaults, **kwargs})
        made.append(mcp)
        tools = TaskTools(
            tmp_path / "ws", Limits(), lambda *_: None, secrets=ToolSecrets(known=mcp.known), mcp=mcp
        )
        return Harness(mcp, tools)

    yield start
    for mcp in made:
        pids = [s.pid for s in mcp.servers if s.pid is not None]
        await mcp.aclose()
        assert all(_gone(pid) for pid in pids), "a server outlived aclose()"


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[Any]:
    """``await started(settings..., environ=...)``: servers with a workspace under ``tmp_path``."""
    async with servers(tmp_path) as start:
        yield start


async def test_tools_are_listed_with_prefixed_names_and_trimmed_schemas(started: Any) -> None:
    h = await started(_fake())
    names = set(h.mcp.specs)
    assert {"mcp_fake_add", "mcp_fake_echo", "mcp_fake_hang", "mcp_fake_crash", "mcp_fake_environ"} <= names
    add = h.mcp.specs["mcp_fake_add"]
    assert add.description == "[MCP fake] Add two integers."
    # pydantic's titles are dropped; types and required stay.
    assert add.parameters == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    }
    # The worker offers them next to its own tools.
    assert {"shell", "mcp_fake_add"} <= set(h.tools.specs)


async def test_a_call_returns_the_text_and_notes_for_other_content(started: Any) -> None:
    h = await started(_fake())
    assert await h.call("mcp_fake_add", a=2, b=40) == ("42", False)
    assert await h.call("mcp_fake_echo", text="héllo\nworld") == ("héllo\nworld", False)
    text, is_error = await h.call("mcp_fake_picture")
    assert not is_error
    assert text.splitlines() == [
        "a red dot",
        "[image image/png, 69 bytes: not shown]",
        "[resource file:///dot.txt (text/plain, 3 characters): not shown]",
    ]


async def test_arguments_are_checked_before_the_server_is_asked(started: Any) -> None:
    h = await started(_fake())
    text, is_error = await h.call("mcp_fake_add", a="two", b=1)
    assert is_error
    assert text == "mcp_fake_add: argument 'a' must be an integer, got string"
    text, is_error = await h.call("mcp_fake_add", a=1, b=2, c=3)
    assert is_error and "unknown argument 'c'" in text


async def test_tool_errors_and_protocol_errors_name_the_server_and_the_tool(started: Any) -> None:
    h = await started(_fake())
    text, is_error = await h.call("mcp_fake_fail", message="disk on fire")
    assert is_error
    assert text.startswith("mcp_fake_fail: the tool 'fail' of MCP server 'fake' failed:")
    assert "disk on fire" in text
    text, is_error = await h.call("mcp_fake_reject", message="not allowed today")
    assert is_error
    assert (
        text == "mcp_fake_reject: MCP server 'fake' answered with an error: not allowed today (code -32001)"
    )
    assert await h.call("mcp_fake_add", a=1, b=1) == ("2", False)  # the server is still fine


async def test_a_call_past_the_timeout_is_abandoned_and_the_server_goes_on(started: Any) -> None:
    h = await started(_fake(timeout=1.0))
    pid = h.mcp.servers[0].pid
    text, is_error = await h.call("mcp_fake_hang")
    assert is_error
    assert text == (
        "mcp_fake_hang: MCP server 'fake' did not answer within 1 s; the call was abandoned "
        "(the server keeps running)"
    )
    assert await h.call("mcp_fake_echo", text="still here") == ("still here", False)
    assert h.mcp.servers[0].pid == pid


async def test_a_crashed_server_is_restarted_once_on_the_next_call(started: Any) -> None:
    h = await started(_fake())
    first, _ = await h.call("mcp_fake_pid")
    text, is_error = await h.call("mcp_fake_crash", code=3)
    assert is_error
    assert text.startswith("mcp_fake_crash: MCP server 'fake' stopped during the call (exit code 3;")
    assert "fake mcp server crashing with code 3" in text  # the end of its stderr
    assert text.endswith("it will be started again on the next call")
    assert _gone(int(first))
    second, is_error = await h.call("mcp_fake_pid")
    assert not is_error and second != first
    # A second crash: no second restart.
    text, is_error = await h.call("mcp_fake_crash", code=4)
    assert is_error and "exit code 4" in text and "already restarted once" in text
    text, is_error = await h.call("mcp_fake_echo", text="x")
    assert is_error
    assert text.startswith("mcp_fake_echo: MCP server 'fake' stopped again (exit code 4;")


async def test_the_server_sees_only_the_named_variables_and_secrets_are_scrubbed(
    started: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    token = "tok-" + "7f3a9c2e5b1d"
    monkeypatch.setenv("SPACEBOT_TEST_LEAK", "leaked")
    monkeypatch.setenv("MCP_TEST_TOKEN", token)
    h = await started(
        _fake(env={"GREETING": "hello", "API_TOKEN": "env:MCP_TEST_TOKEN", "GONE": "env:MCP_UNSET_VAR"})
    )
    text, is_error = await h.call("mcp_fake_environ")
    assert not is_error
    seen = dict(line.split("=", 1) for line in text.splitlines())
    assert set(seen) == {"PATH", "HOME", "LANG", "TERM", "TMPDIR", "GREETING", "API_TOKEN"}
    assert seen["GREETING"] == "hello"
    assert seen["HOME"] == str(tmp_path / "ws")
    pid = h.mcp.servers[0].pid
    assert pid is not None and psutil.Process(pid).cwd() == str(tmp_path / "ws")  # the default cwd
    # The value reached the server, but the model reads it redacted.
    assert token not in text
    assert seen["API_TOKEN"] == "[REDACTED:tools.mcp.fake.env.API_TOKEN]"
    assert h.mcp.known == {"tools.mcp.fake.env.API_TOKEN": token}


def test_env_values_come_from_literals_variables_and_granted_secrets() -> None:
    entry = McpServerSettings(
        name="s",
        command=["x"],
        env={"A": "lit", "B": "env:SRC", "C": "secret:GH", "D": "secret:NOPE", "E": ""},
    )
    env, known, problems = resolve_env(entry, {"GH": "ghp-value"}, {"SRC": "from-env"})
    assert env == {"A": "lit", "B": "from-env", "C": "ghp-value", "E": ""}
    assert known == {"tools.mcp.s.env.B": "from-env", "tools.mcp.s.env.C": "ghp-value"}
    assert problems == ["D: secret 'NOPE' was not granted by the supervisor"]


async def test_the_allow_list_limits_what_is_offered(started: Any) -> None:
    h = await started(_fake(tools=["echo", "add", "no_such_tool"]))
    assert set(h.mcp.specs) == {"mcp_fake_echo", "mcp_fake_add"}
    text, is_error = await h.call("mcp_fake_crash")
    assert is_error and text.startswith("unknown tool 'mcp_fake_crash'")


async def test_results_are_capped_and_an_oversized_message_stops_the_server(started: Any) -> None:
    h = await started(_fake("big", "--noise"))  # a stray non-JSON line on stdout is skipped
    text, is_error = await h.call("mcp_big_big", size=RESULT_CHARS + 10)
    assert not is_error
    assert (
        text == "x" * RESULT_CHARS + f"\n[truncated: showed {RESULT_CHARS} of {RESULT_CHARS + 10} characters]"
    )
    text, is_error = await h.call("mcp_big_big", size=MESSAGE_BYTES + 10)
    assert is_error
    assert text.startswith("mcp_big_big: MCP server 'big' stopped during the call (killed by signal 9;")
    assert f"(sent a message over {MESSAGE_BYTES} bytes)" in text


async def test_a_flooding_server_is_bounded(started: Any) -> None:
    h = await started(_fake("flood", "--flood", "60"))
    specs = list(h.mcp.specs.values())
    assert len(specs) == MAX_TOOLS
    assert all(re.fullmatch(r"mcp_flood_[a-z0-9_]+", s.name) and len(s.name) <= 64 for s in specs)
    assert all(len(s.description) <= len("[MCP flood] ") + DESCRIPTION_CHARS for s in specs)
    assert "mcp_flood_tool_0" in h.mcp.specs  # "Tool #0!"
    assert await h.call("mcp_flood_tool_0") == ("flood 0", False)


async def test_a_server_that_cannot_start_is_left_out(started: Any) -> None:
    h = await started(_fake("bad", "--exit-at-start", "2"), _fake("good"), _fake("off", enabled=False))
    assert [s.name for s in h.mcp.servers] == ["good"]
    assert all(name.startswith("mcp_good_") for name in h.mcp.specs)


async def test_servers_die_with_the_worker(started: Any) -> None:
    h = await started(_fake())
    pid = h.mcp.servers[0].pid
    assert pid is not None and not _gone(pid)
    sandbox.kill_all()  # what a worker does on its way out
    await h.mcp.servers[0].wait_stopped()
    assert _gone(pid)
    # Killed from outside, it counts as a crash: the next call gets a new server.
    assert await h.call("mcp_fake_echo", text="back") == ("back", False)
    assert h.mcp.servers[0].restarts == 1 and h.mcp.servers[0].pid not in (None, pid)


def test_names_are_sanitised_bounded_and_unique() -> None:
    assert tool_name("fs", "read_file") == "mcp_fs_read_file"
    assert tool_name("fs", "Read File!") == "mcp_fs_read_file"
    assert tool_name("fs", "read.file-v2") == "mcp_fs_read_file_v2"
    assert tool_name("fs", "read_file", {"mcp_fs_read_file"}) == "mcp_fs_read_file_2"
    long = tool_name("fs", "x" * 100)
    assert len(long) == 64 and re.fullmatch(r"[a-z0-9_]+", long)
    assert tool_name("fs", "x" * 100, {long}).endswith("_2")
    assert len(tool_name("fs", "x" * 100, {long})) == 64


def test_schemas_are_trimmed_to_what_the_checker_knows() -> None:
    schema = {
        "type": "object",
        "title": "Args",
        "$defs": {"X": {"type": "string"}},
        "properties": {
            "path": {"type": "string", "pattern": "^(a+)+$", "minLength": 1, "description": "d" * 1000},
            "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None},
            "mode": {"type": ["string", "null"], "enum": ["r", "w"]},
            "tags": {"type": "array", "items": {"type": "string", "title": "Tag"}},
            "ref": {"$ref": "#/$defs/X"},
        },
        "required": ["path", "missing"],
        "additionalProperties": False,
    }
    out = trim_schema(schema)
    assert out["required"] == ["path"]
    props = out["properties"]
    assert props["path"]["type"] == "string" and "pattern" not in props["path"]
    assert len(props["path"]["description"]) == 200
    assert props["limit"] == {"type": "integer", "minimum": 1}
    assert props["mode"] == {"type": "string", "enum": ["r", "w"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["ref"] == {}
    assert set(out) == {"type", "properties", "required"}
    assert trim_schema({"type": "string"}) == {"type": "object", "properties": {}, "required": []}
    huge = {
        "type": "object",
        "properties": {
            f"p{i}": {
                "type": "object",
                "properties": {f"q{j}": {"type": "string", "description": "y" * 200} for j in range(5)},
            }
            for i in range(10)
        },
    }
    with pytest.raises(ValueError, match="characters after trimming"):
        trim_schema(huge)


def test_config_refuses_bad_entries(tmp_path: Path) -> None:
    raw = {
        "home": str(tmp_path),
        "tools": {
            "mcp": [
                {"name": "fs", "command": []},
                {"name": "fs", "command": ["x"], "timeout": 0},
                {"name": "Bad Name", "command": [" "], "env": {"NOT-A-VAR": "x"}},
            ]
        },
    }
    with pytest.raises(ConfigError) as err:
        config_mod.from_dict(raw, {})
    text = str(err.value)
    assert "entry 1 ('fs'): command is empty" in text
    assert "entry 2 ('fs'): name 'fs' appears twice" in text
    assert "entry 2 ('fs'): timeout must be > 0" in text
    assert "entry 3 ('Bad Name'): name must be 1-24 of a-z 0-9 _" in text
    assert "entry 3 ('Bad Name'): command is empty" in text
    assert "env name 'NOT-A-VAR' is not a variable name" in text
    good = config_mod.from_dict(
        {
            "home": str(tmp_path),
            "tools": {"mcp": [{"name": "fs", "command": ["npx", "server"], "tools": ["read"]}]},
        },
        {},
    )
    assert good.tools.mcp[0].command == ["npx", "server"] and good.tools.mcp[0].timeout == 60.0


def test_a_secret_in_a_servers_env_is_a_tool_secret_for_workers(tmp_path: Path) -> None:
    from spacebot.ipc.messages import Kind
    from spacebot.supervisor.secrets_service import secret_uses

    servers = [
        {"name": "gh", "command": ["gh-mcp"], "env": {"GITHUB_TOKEN": "secret:GH"}},
        {"name": "off", "command": ["x"], "env": {"K": "secret:OFF"}, "enabled": False},
    ]
    cfg = config_mod.from_dict({"home": str(tmp_path), "tools": {"mcp": servers}}, {})
    uses = secret_uses(cfg)
    (use,) = uses["GH"]
    assert (use.where, use.category, use.kinds) == (
        "tools.mcp[gh].env.GITHUB_TOKEN",
        "tool",
        frozenset({Kind.WORKER}),
    )
    assert "OFF" not in uses  # a disabled server reads nothing
