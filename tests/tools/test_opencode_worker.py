"""The ``opencode`` worker type: OpenCode (``opencode serve``) edits a file in a scratch git repository of
the workspace, its model being the fake LLM Spacebot's routing chose; its progress arrives as status
lines and its final answer as the worker's result; nothing of it outlives the worker."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil
import pytest

from spacebot import config as config_mod
from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import (
    DelegateResult,
    DelegateStatus,
    Envelope,
    KillReport,
    KillRequest,
    Ok,
    Ping,
)
from spacebot.ipc.replies import Reply
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall, Fault
from spacebot.testing import ChatSystem, eventually
from spacebot.tools import opencode, opencode_session, sandbox
from spacebot.tools.conversation import spawn_worker_tool
from spacebot.tools.errors import ToolArgumentError

pytestmark = pytest.mark.timeout(240)

TESTED = "1.18.33"
OPENCODE = r"You are opencode"
"""OpenCode's system prompt (the fake answers its requests by it)."""
BRANCH = "You are a branch"


def _require_opencode() -> None:
    """Skip when OpenCode is not installed; under ``CI=1`` that is a failure (CI installs it)."""
    if shutil.which("opencode") is not None:
        return
    why = f"OpenCode is not installed (npm install -g opencode-ai@{TESTED})"
    if os.environ.get("CI") == "1":
        pytest.fail(why)
    pytest.skip(why)


def _scratch_repo(root: Path) -> Path:
    """A git repository with one committed file, ``greet.py``."""
    root.mkdir(parents=True)
    (root / "greet.py").write_text("print('hello')\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    for argv in (["init", "-q"], ["add", "greet.py"], ["commit", "-q", "-m", "start"]):
        subprocess.run(["git", *argv], cwd=root, env=env, check=True)
    return root


def _script_opencode(fake: FakeLLM, target: Path) -> None:
    """OpenCode's model reads ``target``, edits it, then answers."""
    fake.add(name="oc-done", system=OPENCODE, tool_result="edit", text="Changed the greeting to goodbye.")
    edit = {"filePath": str(target), "oldString": "hello", "newString": "goodbye"}
    fake.add(name="oc-edit", system=OPENCODE, tool_result="read", tool_calls=[FakeToolCall("edit", edit)])
    fake.add(name="oc-read", system=OPENCODE, tool_calls=[FakeToolCall("read", {"filePath": str(target)})])


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None
    return port


def _servers_in(directory: Path) -> list[int]:
    """Live ``opencode serve`` processes working in ``directory``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        cmdline = proc.info["cmdline"] or []
        alive = proc.info["status"] != psutil.STATUS_ZOMBIE
        if alive and "serve" in cmdline and proc.info["cwd"] == str(directory):
            found.append(proc.pid)
    return found


class Parent:
    """The test in a conversation's place: it starts an opencode worker and hears its status lines
    and its result."""

    def __init__(self, system: ChatSystem) -> None:
        self.system = system
        self.statuses: list[str] = []
        self.results: asyncio.Queue[DelegateResult] = asyncio.Queue()
        self.bus = BusClient("tester:opencode", system.sup.endpoints.bus)
        self.bus.on_message(self._on_message)

    def _on_message(self, env: Envelope) -> Reply | None:
        if isinstance(env.body, DelegateStatus):
            self.statuses.append(env.body.text)
            return None
        if isinstance(env.body, DelegateResult):
            self.results.put_nowait(env.body)
        return Ok()

    async def __aenter__(self) -> Parent:
        self.bus.start()
        await self.bus.request("supervisor", Ping())  # the broker routes to this client from now on
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.bus.close()

    async def spawn(self, task: str, directory: str) -> str:
        args = {"agent": "main", "report_to": self.bus.ident, "task": task, "directory": directory}
        spawned = await self.system.sup.spawn(
            "spacebot.procs.opencode_worker:serve", args=args, task=task, wait_ready=False
        )
        return spawned.id


async def test_an_opencode_worker_edits_a_file_and_reports_its_progress_and_answer(short_tmp: Path) -> None:
    _require_opencode()
    async with FakeLLM() as fake, ChatSystem(short_tmp, fake) as system:
        workspace = (system.sup.home / "agents" / "main" / "workspace").resolve()
        repo = await asyncio.to_thread(_scratch_repo, workspace / "repo")
        _script_opencode(fake, repo / "greet.py")
        async with Parent(system) as parent:
            worker = await parent.spawn("say goodbye", "repo")
            result = await asyncio.wait_for(parent.results.get(), timeout=180)
        statuses = parent.statuses
        # The server and all it started went with the worker.
        await eventually(lambda: not _servers_in(repo), what=lambda: f"servers {_servers_in(repo)}")
    assert (result.id, result.outcome) == (worker, "success"), result.text
    assert result.text == "Changed the greeting to goodbye."
    assert (repo / "greet.py").read_text() == "print('goodbye')\n"
    assert "starting OpenCode in repo" in statuses
    assert any(s.startswith("opencode edit done") and "greet.py" in s for s in statuses), statuses
    # OpenCode's model was the one Spacebot routes the coding task type to, with its key.
    used = [r for r in fake.requests if r.rule.startswith("oc-")]
    assert [r.rule for r in used] == ["oc-read", "oc-edit", "oc-done"]
    assert {r.model for r in used} == {"main"}
    assert used[0].headers["authorization"] == "Bearer k"


async def _ask_for_the_fix(system: ChatSystem, fake: FakeLLM, answer: str) -> tuple[Path, dict[str, Any]]:
    """A scratch repo in the agent's workspace with OpenCode scripted to fix its greeting; Ana asks
    for the fix. Returns the repo and the first message she sees containing ``answer``."""
    workspace = (system.sup.home / "agents" / "main" / "workspace").resolve()
    repo = await asyncio.to_thread(_scratch_repo, workspace / "repo")
    _script_opencode(fake, repo / "greet.py")
    ana = await system.client("Ana")
    conv = await ana.create()
    await ana.open(conv)
    await ana.send(conv, "fix the greeting please")

    def seen(f: dict[str, Any]) -> bool:
        return f["type"] == "message" and answer in f["message"].get("text", "")

    return repo, await ana.wait_for(seen, timeout=180.0)


async def test_the_channel_starts_an_opencode_worker_from_a_web_chat(short_tmp: Path) -> None:
    _require_opencode()
    async with FakeLLM() as fake:
        task = "Change the greeting in greet.py to goodbye"
        fake.add(
            user=r"\(new\) Ana: fix the greeting",
            tool_calls=[
                FakeToolCall("spawn_worker", {"task": task, "worker_type": "opencode", "directory": "repo"}),
                FakeToolCall("reply", {"content": "OpenCode is on it."}),
            ],
        )
        fake.add(user=r"finished \(success\)", tool_calls=[FakeToolCall("reply", {"content": "{last_user}"})])
        async with ChatSystem(short_tmp, fake) as system:
            repo, frame = await _ask_for_the_fix(system, fake, "Changed the greeting")
        offered = next(
            r for r in fake.requests if r.rule != "default" and "spawn_worker" in r.conversation.tools
        )
    assert "finished (success): Changed the greeting to goodbye." in frame["message"]["text"]
    assert (repo / "greet.py").read_text() == "print('goodbye')\n"
    spawn = next(t["function"] for t in offered.body["tools"] if t["function"]["name"] == "spawn_worker")
    assert spawn["parameters"]["properties"]["worker_type"]["enum"] == ["builtin", "opencode"]


async def test_a_branch_puts_an_opencode_worker_to_work_and_hears_its_answer(short_tmp: Path) -> None:
    _require_opencode()
    async with FakeLLM() as fake:
        task = "Change the greeting in greet.py to goodbye"
        done = r"finished \(success\): Changed the greeting to goodbye\."
        fake.add(system=BRANCH, tool_result_content=done, text="OpenCode changed the greeting.")
        # A directory that is not there is a tool error the branch reads; then it names the right one.
        spawn = {"task": task, "worker_type": "opencode"}
        again = [FakeToolCall("spawn_worker", {**spawn, "directory": "repo"})]
        fake.add(system=BRANCH, tool_result_content="not a directory", tool_calls=again)
        first = [FakeToolCall("spawn_worker", {**spawn, "directory": "missing"})]
        fake.add(system=BRANCH, tool_calls=first)
        fake.add(
            user=r"finished \(success\): OpenCode changed",
            tool_calls=[FakeToolCall("reply", {"content": "{last_user}"})],
        )
        fake.add(
            user=r"\(new\) Ana: fix the greeting",
            tool_calls=[
                FakeToolCall("branch", {"description": "get the greeting fixed"}),
                FakeToolCall("reply", {"content": "Looking into it."}),
            ],
        )
        async with ChatSystem(short_tmp, fake) as system:
            repo, frame = await _ask_for_the_fix(system, fake, "OpenCode changed")
            await eventually(lambda: not _servers_in(repo), what=lambda: f"servers {_servers_in(repo)}")
    assert "finished (success): OpenCode changed the greeting." in frame["message"]["text"]
    assert (repo / "greet.py").read_text() == "print('goodbye')\n"
    branch = [r for r in fake.requests if BRANCH in r.conversation.system]
    offered = next(t["function"] for t in branch[0].body["tools"] if t["function"]["name"] == "spawn_worker")
    assert offered["parameters"]["properties"]["worker_type"]["enum"] == ["builtin", "opencode"]
    # The worker reported to the branch (its result is the branch's tool result), not to the channel.
    results = [text for _, text in branch[-1].conversation.tool_results]
    assert len(results) == 2 and "directory 'missing' is not a directory" in results[0], results
    assert re.fullmatch(
        r"worker worker:\S+ finished \(success\): Changed the greeting to goodbye\.", results[1]
    )
    channel = [r for r in fake.requests if "reply" in r.conversation.tools]
    assert channel and not any("Changed the greeting to goodbye" in str(r.body) for r in channel)
    assert [r.rule for r in fake.requests if r.rule.startswith("oc-")] == ["oc-read", "oc-edit", "oc-done"]


async def test_a_branch_that_runs_out_of_time_stops_its_opencode_worker(short_tmp: Path) -> None:
    _require_opencode()
    async with FakeLLM() as fake:
        fake.add(name="oc-hang", system=OPENCODE, fault=Fault(kind="hang"))
        spawn = {"task": "say goodbye", "worker_type": "opencode", "directory": "repo"}
        fake.add(system=BRANCH, tool_calls=[FakeToolCall("spawn_worker", spawn)])
        fake.add(
            user=r"finished \(timed_out\): could not conclude",
            tool_calls=[FakeToolCall("reply", {"content": "Gave up."})],
        )
        fake.add(
            user=r"\(new\) Ana: fix",
            tool_calls=[FakeToolCall("branch", {"description": "get it fixed"})],
        )
        budget: dict[str, dict[str, object]] = {"delegates": {"branch_timeout": 20.0}}
        async with ChatSystem(short_tmp, fake, sections_extra=budget) as system:
            workspace = (system.sup.home / "agents" / "main" / "workspace").resolve()
            repo = await asyncio.to_thread(_scratch_repo, workspace / "repo")
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "fix it please")

            async def the_worker() -> Any:
                # Seen as soon as it runs (not when OpenCode gets to its model: on a loaded machine
                # that may come after the branch's 20 s, and the test is about the branch's end).
                while True:
                    found = [p for p in (await system.sup.status()).processes if p.kind == "worker"]
                    if found:
                        return found
                    await asyncio.sleep(0.05)

            workers = await asyncio.wait_for(the_worker(), timeout=120)
            assert len(workers) == 1
            worker = psutil.Process(workers[0].pid)

            def gave_up(f: dict[str, Any]) -> bool:
                return f["type"] == "message" and "Gave up." in f["message"].get("text", "")

            await ana.wait_for(gave_up, timeout=120.0)
            # The branch stopped its worker before it reported: it is dead (or dying, not yet reaped).
            await eventually(
                lambda: not worker.is_running() or worker.status() == psutil.STATUS_ZOMBIE,
                what=f"{workers[0].id} stopped",
            )
            await eventually(lambda: not _servers_in(repo), what=lambda: f"servers {_servers_in(repo)}")


def _config(
    home: Path, fake_url: str = "http://127.0.0.1:8/v1", **opencode_settings: Any
) -> config_mod.Config:
    raw = {
        "home": str(home),
        "agents": ["main"],
        "tools": {"opencode": opencode_settings},
        "llm": {
            "providers": {
                "claude": {"kind": "anthropic", "base_url": "http://127.0.0.1:9/", "api_key": "secret:KEY"},
                "fake": {"kind": "openai_compatible", "base_url": fake_url, "api_key": "k"},
            },
            "profiles": {
                "balanced": {"light": "fake/small", "standard": "fake/main", "strong": "claude/big"}
            },
            "scorer": {"enabled": False},
        },
    }
    return config_mod.from_dict(raw, environ={})


def test_spawn_spec_refuses_a_directory_outside_the_workspace(tmp_path: Path) -> None:
    _require_opencode()
    config = _config(tmp_path)
    (tmp_path / "agents" / "main" / "workspace" / "repo").mkdir(parents=True)
    (tmp_path / "agents" / "main" / "secret").mkdir()
    base = {"task": "fix it", "worker_type": "opencode"}
    for directory in ("../secret", str(tmp_path / "agents" / "main" / "secret"), "missing"):
        with pytest.raises(ToolArgumentError) as err:
            opencode.spawn_spec(config, "main", "channel:x", {**base, "directory": directory})
        assert "outside the workspace" in str(err.value) or "not a directory" in str(err.value), directory
    spec = opencode.spawn_spec(config, "main", "channel:x", {**base, "directory": "repo/"})
    assert spec.target == "spacebot.procs.opencode_worker:serve"
    assert spec.args["directory"] == "repo"
    with pytest.raises(ToolArgumentError, match="not interactive"):
        opencode.spawn_spec(config, "main", "channel:x", {**base, "interactive": True})
    with pytest.raises(ToolArgumentError, match="the task is empty"):
        opencode.spawn_spec(config, "main", "branch:x", {**base, "task": " \n"})
    offered = spawn_worker_tool(config.tools.opencode).parameters["properties"]["worker_type"]
    assert offered["enum"] == ["builtin", "opencode"]


def test_a_missing_opencode_is_a_tool_error_naming_the_npm_command(tmp_path: Path) -> None:
    config = _config(tmp_path, command="opencode-is-not-installed")
    (tmp_path / "agents" / "main" / "workspace").mkdir(parents=True)
    with pytest.raises(ToolArgumentError, match=r"npm install -g opencode-ai"):
        opencode.spawn_spec(config, "main", "channel:x", {"task": "fix it", "worker_type": "opencode"})
    assert opencode.worker_types(config.tools.opencode) == ["builtin"]
    off = _config(tmp_path, enabled=False)
    assert opencode.worker_types(off.tools.opencode) == ["builtin"]
    # The spawn_worker a conversation and a branch offer lists only what can start here.
    for settings in (config.tools.opencode, off.tools.opencode):
        assert spawn_worker_tool(settings).parameters["properties"]["worker_type"]["enum"] == ["builtin"]
    with pytest.raises(ToolArgumentError, match="switched off"):
        opencode.spawn_spec(off, "main", "channel:x", {"task": "fix it", "worker_type": "opencode"})


def test_opencode_gets_the_model_routed_for_coding_with_its_key(tmp_path: Path) -> None:
    config = _config(tmp_path)
    # coding → the strong tier → an Anthropic model: the AI SDK's base URL has /v1, the key is resolved.
    anthropic = opencode.model_config(config, "fix the bug", "coding", {"KEY": "sk-ant"}.get)
    provider = anthropic["provider"][opencode.PROVIDER_ID]
    assert anthropic["model"] == "spacebot/big"
    assert provider["npm"] == "@ai-sdk/anthropic"
    assert provider["options"] == {"baseURL": "http://127.0.0.1:9/v1", "apiKey": "sk-ant"}
    # Another task type routes elsewhere: the standard tier's OpenAI-compatible server.
    plain = opencode.model_config(config, "fix the bug", "ops", {}.get)
    provider = plain["provider"][opencode.PROVIDER_ID]
    assert plain["model"] == "spacebot/main"
    assert provider["npm"] == "@ai-sdk/openai-compatible"
    assert provider["options"] == {"baseURL": "http://127.0.0.1:8/v1", "apiKey": "k"}
    # [delegates] network = "none": OpenCode's own web tools are refused too.
    assert plain["permission"]["webfetch"] == "allow"
    offline = opencode.model_config(config, "fix the bug", "ops", {}.get, allow_web=False)
    assert offline["permission"]["webfetch"] == offline["permission"]["websearch"] == "deny"


async def test_the_pool_restarts_a_dead_server_and_kills_its_servers_when_closed(short_tmp: Path) -> None:
    _require_opencode()
    fake = FakeLLM()
    fake.fail(401, error="auth", times=None)
    await fake.start()
    config = _config(short_tmp / "home", fake.openai_url)
    settings = opencode.model_config(config, "t", "ops", {}.get)
    pool = opencode.ServerPool(
        "opencode", settings, short_tmp / "state", workspace=short_tmp, reach=[_port(fake.openai_url)]
    )
    repo = await asyncio.to_thread(_scratch_repo, short_tmp / "repo")
    try:
        first = await pool.get(repo)
        assert await pool.get(repo) is first  # healthy: the same server
        async with pool.http.get(f"{first.url}/global/health") as resp:
            assert resp.status == 401  # only with this server's password
        first.proc.kill()
        await first.proc.wait()
        second = await pool.get(repo)
        assert second.pid != first.pid
        assert await second.healthy(pool.http)
        assert _servers_in(repo.resolve()) == [second.pid]
        # A session that fails (the provider refuses the key) is an error with the provider's words.
        with pytest.raises(opencode.OpenCodeError, match="Incorrect API key"):
            await opencode_session.run_task(pool, repo, "say goodbye", lambda _text: None)
        assert fake.requests and fake.requests[0].model == "main"
    finally:
        await pool.aclose()
        await fake.stop()
    assert not _servers_in(repo.resolve())


@pytest.mark.skipif(sandbox.landlock_abi() == 0, reason="the kernel has no Landlock")
async def test_opencode_and_the_commands_it_runs_reach_only_the_workspace(short_tmp: Path) -> None:
    """A prompt-injected OpenCode runs a command that reads the agent's data and writes beside the
    workspace: the sandbox refuses both, and the command's words reach the model, not the secret."""
    _require_opencode()
    workspace = short_tmp / "agent" / "workspace"
    data = short_tmp / "agent" / "data"
    await asyncio.to_thread(data.mkdir, parents=True)
    await asyncio.to_thread((data / "canary.txt").write_text, "CANARY-7f3e")
    repo = await asyncio.to_thread(_scratch_repo, workspace / "repo")
    # A path inside a Python string: OpenCode's own check of the paths a command names does not see
    # it, so the sandbox is what stops it.
    secret, outside = str(data / "canary.txt"), str(short_tmp / "agent" / "escaped.txt")
    # Its own config directory: what it left there would be read by every later OpenCode start.
    planted = str(short_tmp / "agent" / "opencode" / "config" / "opencode" / "opencode.json")
    probe = (
        "import pathlib\n"
        f"for what, act in (('read', lambda: pathlib.Path({secret!r}).read_text()),\n"
        f"                  ('write', lambda: pathlib.Path({outside!r}).write_text('x')),\n"
        f"                  ('plant', lambda: pathlib.Path({planted!r}).write_text('{{}}'))):\n"
        "    try:\n"
        "        print(what, 'done', act())\n"
        "    except OSError as e:\n"
        "        print(what, 'refused', e.strerror)\n"
        "pathlib.Path('inside.txt').write_text('fine')\n"
        "import os, socket\n"
        "print('key in my environment:', any('sk-canary-91' in v for v in os.environ.values()))\n"
        "for what, act in (('connect', lambda: socket.create_connection(('127.0.0.1', PORT), 10).close()),\n"
        "                  ('listen', lambda: socket.socket().bind(('127.0.0.1', 0)))):\n"
        "    try:\n"
        "        act(); print(what, 'done')\n"
        "    except OSError as e:\n"
        "        print(what, 'refused', e.strerror)\n"
    )
    script = workspace / "probe.py"
    async with FakeLLM() as fake:
        fake.add(name="oc-seen", system=OPENCODE, tool_result="bash", text="Checked.")
        bash = {"command": f"python3 {script}", "description": "check the files"}
        fake.add(name="oc-bash", system=OPENCODE, tool_calls=[FakeToolCall("bash", bash)])
        settings = opencode.model_config(_config(short_tmp / "home", fake.openai_url), "t", "ops", {}.get)
        settings["provider"][opencode.PROVIDER_ID]["options"]["apiKey"] = "sk-canary-91"
        state = short_tmp / "agent" / "opencode"
        # The provider itself listens on loopback: OpenCode's commands may not connect to it.
        await asyncio.to_thread(script.write_text, probe.replace("PORT", str(_port(fake.openai_url))))
        async with opencode.model_relay(settings) as relay:
            relayed = opencode.through(settings, relay)
            pool = opencode.ServerPool(
                "opencode",
                relayed,
                state,
                workspace=workspace,
                network=sandbox.Network("none"),
                reach=[relay.port],
            )
            try:
                answer = await opencode_session.run_task(pool, repo, "check the files", lambda _text: None)
            finally:
                await pool.aclose()
    assert answer == "Checked."
    assert [r.rule for r in fake.requests] == ["oc-bash", "oc-seen"]
    seen = str(fake.requests[-1].body)
    assert "read refused Permission denied" in seen, seen
    assert "write refused Permission denied" in seen, seen
    assert "plant refused Permission denied" in seen, seen
    assert not any("CANARY-7f3e" in str(r.body) for r in fake.requests)
    # The model's key reached the provider, through the relay, and never OpenCode's environment.
    assert "key in my environment: False" in seen, seen
    assert {r.headers.get("authorization") for r in fake.requests} == {"Bearer sk-canary-91"}
    assert relay.relayed == len(fake.requests)
    if sandbox.landlock_abi() >= sandbox.ABI_NETWORK:  # TCP: the relay and its own port only
        assert "connect refused Permission denied" in seen, seen
        assert "listen refused Permission denied" in seen, seen
    assert not (short_tmp / "agent" / "escaped.txt").exists()
    assert (repo / "inside.txt").read_text() == "fine"


async def test_a_cancelled_opencode_worker_takes_its_server_along(short_tmp: Path) -> None:
    _require_opencode()
    async with FakeLLM() as fake, ChatSystem(short_tmp, fake) as system:
        workspace = (system.sup.home / "agents" / "main" / "workspace").resolve()
        repo = await asyncio.to_thread(_scratch_repo, workspace / "repo")
        fake.fail(kind="hang", times=None, model="main")
        async with Parent(system) as parent:
            worker = await parent.spawn("say goodbye", "repo")
            await eventually(lambda: fake.requests, timeout=120, what="OpenCode's first model call")
            assert _servers_in(repo)
            assert system.sup.ctl is not None
            await system.sup.ctl.call(KillRequest(worker), returns=KillReport, timeout=60)  # `cancel`
            result = await asyncio.wait_for(parent.results.get(), timeout=60)
            await eventually(lambda: not _servers_in(repo), what=lambda: f"servers {_servers_in(repo)}")
    assert (result.id, result.outcome) == (worker, "cancelled"), result.text


async def test_a_permission_opencode_would_wait_on_is_refused(short_tmp: Path) -> None:
    _require_opencode()
    async with FakeLLM() as fake:
        bash = {"command": "touch ran.txt", "description": "make a file"}
        fake.add(name="oc-bash", system=OPENCODE, tool_calls=[FakeToolCall("bash", bash)])
        settings = opencode.model_config(_config(short_tmp / "home", fake.openai_url), "t", "ops", {}.get)
        settings["permission"]["bash"] = "ask"  # as a user's setting might say
        pool = opencode.ServerPool(
            "opencode", settings, short_tmp / "state", workspace=short_tmp, reach=[_port(fake.openai_url)]
        )
        repo = await asyncio.to_thread(_scratch_repo, short_tmp / "repo")
        statuses: list[str] = []
        try:
            with pytest.raises(opencode.OpenCodeError, match="asked for bash, which nobody can grant"):
                await opencode_session.run_task(pool, repo, "make a file", statuses.append)
        finally:
            await pool.aclose()
    assert "opencode asked for bash: refused (nobody can grant it)" in statuses
    assert not (repo / "ran.txt").exists()
    assert [r.rule for r in fake.requests] == ["oc-bash"]


async def test_without_file_confinement_opencode_is_refused_unless_the_operator_allows_it(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _require_opencode()
    monkeypatch.setenv("SPACEBOT_SANDBOX", "python")  # the fallback spawner: no Landlock
    settings = opencode.model_config(_config(short_tmp / "home"), "t", "ops", {}.get)
    repo = await asyncio.to_thread(_scratch_repo, short_tmp / "repo")
    pool = opencode.ServerPool("opencode", settings, short_tmp / "state", workspace=short_tmp)
    try:
        with pytest.raises(opencode.OpenCodeError, match=r"allow_unsandboxed = true"):
            await pool.get(repo)
    finally:
        await pool.aclose()
    assert not _servers_in(repo.resolve())
    allowed = opencode.ServerPool(
        "opencode", settings, short_tmp / "state", workspace=short_tmp, allow_unsandboxed=True
    )
    try:
        server = await allowed.get(repo)
        assert await server.healthy(allowed.http)
    finally:
        await allowed.aclose()
    assert not _servers_in(repo.resolve())


def test_an_installation_outside_the_system_directories_is_made_readable(tmp_path: Path) -> None:
    """An npm prefix in a home directory: the sandbox must let OpenCode read its package, and its
    commands find it on PATH."""
    package = tmp_path / "npm" / "lib" / "node_modules" / "opencode-ai" / "bin"
    package.mkdir(parents=True)
    program = package / "opencode"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    (tmp_path / "npm" / "bin").mkdir()
    (tmp_path / "npm" / "bin" / "opencode").symlink_to(program)
    found = opencode.installation(str(tmp_path / "npm" / "bin" / "opencode"))
    assert found.program == str(tmp_path / "npm" / "bin" / "opencode")
    assert str(tmp_path / "npm" / "lib" / "node_modules") in found.roots
    assert found.bin_dirs[0] == str(tmp_path / "npm" / "bin")


async def test_a_taken_port_is_tried_again_with_another(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker picks OpenCode's port before OpenCode binds it; someone else may take it between."""
    _require_opencode()
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen()
    taken = squatter.getsockname()[1]
    ports = iter([taken])
    free = opencode._free_port
    monkeypatch.setattr(opencode, "_free_port", lambda: next(ports, None) or free())
    settings = opencode.model_config(_config(short_tmp / "home"), "t", "ops", {}.get)
    repo = await asyncio.to_thread(_scratch_repo, short_tmp / "repo")
    pool = opencode.ServerPool("opencode", settings, short_tmp / "state", workspace=short_tmp)
    try:
        server = await pool.get(repo)
        assert _port(server.url) != taken
        assert await server.healthy(pool.http)
    finally:
        await pool.aclose()
        squatter.close()
