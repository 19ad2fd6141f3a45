"""The whole service: a worker started by the channel offers an MCP server's tools and calls one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec
import psutil

from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import Conversation, FakeToolCall, Rule
from spacebot.testing import ChatSystem, eventually

WORKER = "You are a worker"


def _servers_in(workspace: Path) -> list[int]:
    """Live fake MCP servers whose working directory is ``workspace``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        cmdline = proc.info["cmdline"] or []
        alive = proc.info["status"] != psutil.STATUS_ZOMBIE
        if "spacebot.tools.fakes.mcp_server" in cmdline and alive and proc.info["cwd"] == str(workspace):
            found.append(proc.pid)
    return found


class EchoLLM(FakeLLM):
    """The fake model, whose worker answers with the text of the last tool result."""

    async def _answer(self, request: Any, protocol: str, conv: Conversation, rule: Rule) -> Any:
        if rule.name == "echo" and conv.tool_results:
            rule = msgspec.structs.replace(rule, text="tool said: " + conv.tool_results[-1][1])
        return await super()._answer(request, protocol, conv, rule)


async def test_a_worker_calls_an_mcp_tool_and_its_model_reads_the_result(short_tmp: Path) -> None:
    async with EchoLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: add",
            tool_calls=[
                FakeToolCall("spawn_worker", {"task": "add 20 and 22"}),
                FakeToolCall("reply", {"content": "On it."}),
            ],
        )
        fake.add(name="echo", system=WORKER, tool_result="mcp_calc_add")
        fake.add(system=WORKER, tool_calls=[FakeToolCall("mcp_calc_add", {"a": 20, "b": 22})])
        fake.add(user=r"finished \(success\)", tool_calls=[FakeToolCall("reply", {"content": "{last_user}"})])
        server = {
            "name": "calc",
            "command": [sys.executable, "-m", "spacebot.tools.fakes.mcp_server"],
            "tools": ["add", "echo"],
        }
        async with ChatSystem(short_tmp, fake, sections_extra={"tools": {"mcp": [server]}}) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "add please")

            def quoted(f: dict[str, Any]) -> bool:
                return f["type"] == "message" and "tool said:" in f["message"].get("text", "")

            frame = await ana.wait_for(quoted, timeout=60.0)
            # Its tools are cached in the agent's data directory (not the workspace the model writes).
            cache = system.sup.home / "agents" / "main" / "data" / "mcp-tools" / "calc.json"
            assert "add" in {t["name"] for t in json.loads(cache.read_text())["tools"]}
            # The worker has reported and ended: its server went with it.
            workspace = (system.sup.home / "agents" / "main" / "workspace").resolve()
            await eventually(
                lambda: not _servers_in(workspace), what=lambda: f"servers {_servers_in(workspace)}"
            )
        worker_requests = [r for r in fake.requests if WORKER in r.conversation.system]
    assert "tool said: 42" in frame["message"]["text"]
    # The worker's model was offered the allowed tools only, with the server's schema.
    tools = {t["function"]["name"]: t["function"] for t in worker_requests[0].body["tools"]}
    assert {"mcp_calc_add", "mcp_calc_echo", "shell"} <= set(tools)
    assert not any(name.startswith("mcp_calc_") for name in set(tools) - {"mcp_calc_add", "mcp_calc_echo"})
    assert tools["mcp_calc_add"]["parameters"]["required"] == ["a", "b"]
    # Its prompt says what its tools can do: commands, files, this MCP server; no search (not configured).
    system = worker_requests[0].conversation.system
    assert "tools of MCP servers: calc (mcp_calc_*)" in system
    assert "run programs in the workspace (shell, exec)" in system
    assert "web_search" not in system and "web_search" not in tools
    # What the worker's model read back: the server's answer.
    assert worker_requests[-1].conversation.tool_results[-1] == ("mcp_calc_add", "42")
