"""The fake server itself: script files, matching, recording, the CLI in a real subprocess."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import openai
import pytest

from spacebot.llm import LLM, BadRequest, Request, SystemMessage, ToolSpec, UserMessage
from spacebot.llm.fake import FakeLLM, load_script

from .conftest import make_config

SCRIPT_TOML = """
ttft = 0.0
[default]
name = "fallback"
text = "I did not understand: {last_user}"

[[rules]]
name = "started"
tool_result = "spawn_worker"
text = "started"

[[rules]]
name = "deploy"
user = "(?i)deploy"
text = "on it"
[[rules.tool_calls]]
name = "spawn_worker"
arguments = { task = "deploy", kind = "coding" }

[[rules]]
name = "once"
user = "^limited$"
times = 1
text = "first time only"

[[rules]]
name = "pirate"
system = "pirate"
text = "arr"

[[rules]]
name = "schema"
tool_offered = "broken_tool"
fault = { kind = "status", status = 400, message = "tools.0.input_schema: bad 'type' (tool 'broken_tool')" }
"""


async def test_toml_script_drives_a_conversation(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(SCRIPT_TOML)
    async with FakeLLM(script=load_script(path)) as fake:
        llm = LLM(make_config(fake))
        spawn = ToolSpec("spawn_worker", "start a worker")
        res = await llm.complete(Request([UserMessage("please Deploy it")], tools=[spawn]), process="channel")
        assert res.text == "on it" and res.tool_calls[0].arguments == {"task": "deploy", "kind": "coding"}
        from spacebot.llm import AssistantMessage, ToolMessage

        call = res.tool_calls[0]
        convo = [
            UserMessage("please Deploy it"),
            AssistantMessage(res.text, [call]),
            ToolMessage(call.id, "ok"),
        ]
        assert (await llm.complete(Request(convo), process="channel")).text == "started"
        # a later user message is a new turn: the old tool result no longer matches
        convo.append(UserMessage("thanks"))
        assert (await llm.complete(Request(convo), process="channel")).text == "I did not understand: thanks"
        assert (
            await llm.complete(Request([UserMessage("limited")]), process="channel")
        ).text == "first time only"
        assert (await llm.complete(Request([UserMessage("limited")]), process="channel")).text.startswith(
            "I did not"
        )
        pirate = Request([SystemMessage("talk like a pirate"), UserMessage("hello")])
        assert (await llm.complete(pirate, process="channel")).text == "arr"
        with pytest.raises(BadRequest, match="broken_tool"):
            await llm.complete(
                Request([UserMessage("x")], tools=[ToolSpec("broken_tool", "d")]), process="channel"
            )
        assert [r.rule for r in fake.requests] == [
            "deploy", "started", "fallback", "once", "fallback", "pirate", "schema",
        ]  # fmt: skip
        await llm.aclose()


def test_script_errors_name_the_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"rules": [{"user": "("}]}))
    with pytest.raises(ValueError, match=r"bad\.json") as info:
        load_script(bad)
    assert "'user'" in str(info.value)
    bad.write_text(json.dumps({"rules": [{"txt": "typo"}]}))
    with pytest.raises(ValueError, match="txt"):
        load_script(bad)


async def test_cli_fake_llm_subprocess(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [{"user": "ping", "text": "pong"}]}))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spacebot.llm.fake", "--port", "0", "--script", str(script),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("fake-llm listening on http://127.0.0.1:")
        base = line.split("OpenAI base_url: ")[1].rstrip(")\n")
        client = openai.AsyncOpenAI(base_url=base, api_key="k", max_retries=0)
        r = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "ping"}])
        assert r.choices[0].message.content == "pong"
        await client.close()
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
