"""The secrets store in the running service: who gets which secret, tool programs, scrubbing.

The end-to-end tests run a real ``spacebot run`` (supervisor, zygote, memory, web chat, channel,
worker) answering from the fake model server, which records every request's headers and body.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from spacebot import config as config_mod
from spacebot.config import Config
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    Err,
    ErrorCode,
    Kind,
    Ok,
    ProcessExited,
    ProcState,
    ReloadReport,
    ReloadRequest,
    StateChanged,
)
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import Conversation, FakeToolCall, Rule
from spacebot.llm.types import ToolCall
from spacebot.secrets import SecretStore
from spacebot.secrets.store import STORE_FILE
from spacebot.supervisor.secrets_service import MODEL_CALLERS, SecretsService
from spacebot.testing import ChatSystem, SupervisorProcess, fast_config
from spacebot.tools import sandbox
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import Policy, TaskTools, ToolSecrets

WORKER = "You are a worker"
WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
MASTER = bytes(range(32)).hex()
MASTER_ENV = {"SPACEBOT_MASTER_KEY": MASTER}


def _values() -> dict[str, str]:
    """Fresh values per test: a hit in a log can only come from this test."""
    return {
        "MODEL_KEY": "sk-model-" + secrets.token_hex(12),
        "WEB_TOKEN": "web-" + secrets.token_hex(12),
        "GITHUB_TOKEN": "ghs-" + secrets.token_hex(12),
    }


def _fill_store(home: Path, values: dict[str, str], **extra: tuple[str, str]) -> None:
    store = SecretStore.open(home, MASTER_ENV)
    store.set("MODEL_KEY", values["MODEL_KEY"], "system")
    store.set("WEB_TOKEN", values["WEB_TOKEN"], "system")
    store.set("GITHUB_TOKEN", values["GITHUB_TOKEN"], "tool")
    for name, (value, category) in extra.items():
        store.set(name, value, category)  # type: ignore[arg-type]


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def _llm(base_url: str, api_key: str = "secret:MODEL_KEY") -> dict[str, Any]:
    tier = "fake/main"
    return {
        "providers": {"fake": {"kind": "openai_compatible", "base_url": base_url, "api_key": api_key}},
        "profiles": {"balanced": {"light": tier, "standard": tier, "strong": tier}},
        "retry": {"attempts_per_model": 1, "base_delay": 0.0, "max_delay": 0.1},
    }


def _config(home: Path, **sections: Any) -> Config:
    return config_mod.from_dict({"home": str(home), **sections}, {"SPACEBOT_HOME": str(home)})


# -- the policy, over a real store ---------------------------------------------------------------


async def test_each_kind_of_process_gets_only_the_secrets_it_uses(tmp_path: Path) -> None:
    values = _values()
    _fill_store(tmp_path, values, UNUSED=("unused-system-value", "system"), SPARE=("spare-tool-v", "tool"))
    service = await SecretsService.open(tmp_path, MASTER_ENV)
    cfg = _config(
        tmp_path,
        llm=_llm("http://127.0.0.1:9/v1"),
        webchat={"token": "secret:WEB_TOKEN"},
        delegates={"secrets": ["GITHUB_TOKEN"]},
    )

    def ask(kind: Kind | None, *names: str) -> Ok | Err:
        reply = service.answer(cfg, kind, f"{kind or 'tester'}:x", list(names))
        assert isinstance(reply, Ok | Err)
        return reply

    for caller in MODEL_CALLERS:  # every process that calls a model gets the model key
        assert ask(caller, "MODEL_KEY") == Ok({"MODEL_KEY": values["MODEL_KEY"]})
    assert ask(Kind.GATEWAY, "WEB_TOKEN") == Ok({"WEB_TOKEN": values["WEB_TOKEN"]})
    assert ask(Kind.WORKER, "MODEL_KEY", "GITHUB_TOKEN") == Ok(
        {"MODEL_KEY": values["MODEL_KEY"], "GITHUB_TOKEN": values["GITHUB_TOKEN"]}
    )
    refused: dict[tuple[Kind | None, str], str] = {
        (Kind.GATEWAY, "GITHUB_TOKEN"): "delegates.secrets is read by worker processes, not gateway",
        (Kind.CHANNEL, "GITHUB_TOKEN"): "delegates.secrets is read by worker processes, not channel",
        (Kind.MEMORY, "GITHUB_TOKEN"): "not memory",
        (Kind.GATEWAY, "MODEL_KEY"): "llm.providers.fake.api_key is read by branch, channel, cortex, memory",
        (Kind.CHANNEL, "WEB_TOKEN"): "webchat.token is read by gateway processes, not channel",
        (Kind.WORKER, "SPARE"): "tool secret 'SPARE' is not used by the configuration",
        (Kind.CHANNEL, "UNUSED"): "system secret 'UNUSED' is not used by the configuration",
        (None, "MODEL_KEY"): "'tester:x' is not a process of this supervisor",
    }
    for (kind, name), why in refused.items():
        reply = ask(kind, name)
        assert isinstance(reply, Err) and reply.code is ErrorCode.BAD_REQUEST, (kind, name, reply)
        assert why in reply.message, (kind, name, reply.message)
        assert not any(value in reply.message for value in values.values())
    # One refused name refuses the whole request: nothing is handed out alongside it.
    mixed = ask(Kind.GATEWAY, "WEB_TOKEN", "GITHUB_TOKEN")
    assert isinstance(mixed, Err) and values["WEB_TOKEN"] not in mixed.message
    unknown = ask(Kind.WORKER, "NOPE")
    assert isinstance(unknown, Err) and unknown.code is ErrorCode.NOT_FOUND
    assert f"no secret 'NOPE' in {tmp_path / STORE_FILE}" in unknown.message
    # A reference whose secret has the other category is refused with the fix.
    swapped = _config(
        tmp_path, webchat={"token": "secret:GITHUB_TOKEN"}, delegates={"secrets": ["GITHUB_TOKEN"]}
    )
    wrong = service.answer(swapped, Kind.GATEWAY, "gateway:web", ["GITHUB_TOKEN"])
    assert isinstance(wrong, Err)
    assert "webchat.token takes a system secret and 'GITHUB_TOKEN' is a tool secret" in wrong.message
    assert "--category system" in wrong.message


# -- tool programs -------------------------------------------------------------------------------


async def test_programs_get_the_tool_secrets_and_their_output_is_scrubbed(tmp_path: Path) -> None:
    values = _values()
    token = values["GITHUB_TOKEN"]
    ws = tmp_path / "ws"
    ws.mkdir()
    secrets_ = ToolSecrets({"GITHUB_TOKEN": token}, known={"MODEL_KEY": values["MODEL_KEY"]})
    tools = TaskTools(ws, Limits(), lambda *_: None, Policy(network=sandbox.Network("none")), secrets_)
    command = 'printf "%s\\n" "$GITHUB_TOKEN"; printf %s "$GITHUB_TOKEN" | base64; env | sort'
    text, error = await tools.call(ToolCall("c1", "shell", {"command": command}))
    assert not error, text
    assert text.count("[REDACTED:GITHUB_TOKEN]") == 3, text  # the value, its base64, the env line
    assert "GITHUB_TOKEN=[REDACTED:GITHUB_TOKEN]" in text
    assert token not in text and _b64(token).rstrip("=") not in text
    # The model key is known (scrubbed) but never handed to a program.
    assert "MODEL_KEY" not in text and values["MODEL_KEY"] not in text
    # exec gets them too; a file written with the value is scrubbed when read back.
    text, error = await tools.call(
        ToolCall("c2", "exec", {"program": "sh", "args": ["-c", 'printf %s "$GITHUB_TOKEN" > t.txt']})
    )
    assert not error, text
    assert (ws / "t.txt").read_text() == token  # the program really had it
    text, error = await tools.call(ToolCall("c3", "file_read", {"path": "t.txt"}))
    assert not error and "[REDACTED:GITHUB_TOKEN]" in text and token not in text, text


async def test_the_output_cap_never_cuts_a_value_in_half(tmp_path: Path) -> None:
    token = _values()["GITHUB_TOKEN"]
    ws = tmp_path / "ws"
    ws.mkdir()
    cap = 1000
    tools = TaskTools(
        ws,
        Limits(output_bytes=cap),
        lambda *_: None,
        Policy(network=sandbox.Network("none")),
        ToolSecrets({"GITHUB_TOKEN": token}),
    )
    # The value starts 5 bytes before the cap: cut as the program printed it, its first five
    # characters would be shown.
    command = f'head -c {cap - 5} /dev/zero | tr "\\0" x; printf %s "$GITHUB_TOKEN"; head -c 4000 /dev/zero'
    text, _error = await tools.call(ToolCall("c1", "shell", {"command": command}))
    assert "output over the limit" in text, text
    stdout = text.split("stdout:\n", 1)[1]
    xs = len(stdout) - len(stdout.lstrip("x"))
    assert xs >= cap // 2, stdout  # what came before the value is there
    # Then at most the start of the marker (the tail a value could hide in is dropped at a cut).
    assert "[REDACTED:GITHUB_TOKEN]".startswith(stdout[xs:]), stdout[xs:]
    assert token[:3] not in stdout


def test_a_value_split_between_reads_is_still_found() -> None:
    from spacebot.secrets import Scrubber

    token = _values()["GITHUB_TOKEN"]
    scrubber = Scrubber({"GITHUB_TOKEN": token})
    for cut in range(1, len(token)):
        read_fd, write_fd = os.pipe()
        stream = sandbox._Stream(read_fd, 10_000, asyncio.Event(), scrubber.stream())
        try:
            for piece in ("before " + token[:cut], token[cut:] + " after"):
                os.write(write_fd, piece.encode())
                stream.drain()  # each write is its own read
        finally:
            os.close(write_fd)
        out = stream.close().decode()
        assert out == "before [REDACTED:GITHUB_TOKEN] after", (cut, out)


# -- the whole service ---------------------------------------------------------------------------


class EchoLLM(FakeLLM):
    """The fake model, whose worker answers with what its tool printed (as a real model might
    quote it): whatever the tool output held reaches the result, the channel and the transcript."""

    async def _answer(self, request: Any, protocol: str, conv: Conversation, rule: Rule) -> Any:
        if rule.name == "echo" and conv.tool_results:
            rule = msgspec.structs.replace(rule, text="tool said: " + conv.tool_results[-1][1])
        return await super()._answer(request, protocol, conv, rule)


def _call(name: str, **args: Any) -> FakeToolCall:
    return FakeToolCall(name, args)


def _system(root: Path, fake: FakeLLM, **sections: Any) -> ChatSystem:
    system = ChatSystem(
        root,
        fake,
        model=False,
        webchat={"token": "secret:WEB_TOKEN"},
        sections_extra={
            "llm": _llm(fake.openai_url),
            "delegates": {"secrets": ["GITHUB_TOKEN"]},
            # Debug: every line a process can write is in the log the test searches.
            "runtime": {"log_level": "debug", "max_frame_bytes": 4 * 1024 * 1024},
            **sections,
        },
    )
    system.sup.env["SPACEBOT_MASTER_KEY"] = MASTER
    return system


async def _assistant(chat: Any, conv: str, needle: str) -> dict[str, Any]:
    def found(f: dict[str, Any]) -> bool:
        return (
            f["type"] == "message"
            and f["conversation"] == conv
            and f["message"]["role"] == "assistant"
            and needle in f["message"]["text"]
        )

    try:
        frame: dict[str, Any] = await chat.wait_for(found, timeout=WAIT)
    except TimeoutError:
        raise AssertionError(f"no agent message with {needle!r}; frames: {chat.frames[-8:]}") from None
    return frame["message"]


async def test_a_worker_uses_a_tool_secret_that_no_model_transcript_or_log_sees(short_tmp: Path) -> None:
    values = _values()
    token = values["GITHUB_TOKEN"]
    async with EchoLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: use the token",
            tool_calls=[_call("spawn_worker", task="print the token"), _call("reply", content="On it.")],
        )
        fake.add(name="echo", system=WORKER, tool_result="shell")
        command = 'printf "%s\\n" "$GITHUB_TOKEN"; printf %s "$GITHUB_TOKEN" | base64'
        fake.add(system=WORKER, tool_calls=[_call("shell", command=command)])
        fake.add(user=r"finished \(success\)", tool_calls=[_call("reply", content="{last_user}")])
        system = _system(short_tmp, fake)
        _fill_store(system.sup.home, values)
        async with system:
            # The web chat's token came from the store: a client without it is turned away.
            with pytest.raises((ConnectionError, aiohttp.ClientError)):
                await system.client("Eve", token="not-the-token")
            ana = await system.client("Ana", token=values["WEB_TOKEN"])
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "use the token please")
            await _assistant(ana, conv, "On it.")
            quoted = await _assistant(ana, conv, "tool said:")
            assert "[REDACTED:GITHUB_TOKEN]" in quoted["text"], quoted
            # A model key given as secret:NAME reached the provider, in every call.
            assert len(fake.requests) >= 4
            assert {r.headers.get("authorization") for r in fake.requests} == {
                f"Bearer {values['MODEL_KEY']}"
            }
            # What the worker's model was given: the value and its base64, both redacted.
            outputs = [
                content
                for r in fake.requests
                if WORKER in r.conversation.system
                for tool, content in r.conversation.tool_results
                if tool == "shell"
            ]
            assert outputs and outputs[0].count("[REDACTED:GITHUB_TOKEN]") == 2, outputs
            # The transcript, as a newcomer opening the conversation is served it.
            bob = await system.client("Bob", token=values["WEB_TOKEN"])
            history = await bob.open(conv)
            assert "[REDACTED:GITHUB_TOKEN]" in json.dumps(history)
            seen = {
                "model requests": json.dumps([r.body for r in fake.requests]),
                "transcript": json.dumps(history) + json.dumps(ana.frames),
            }
        log = seen["supervisor log"] = await asyncio.to_thread(
            system.sup.log_file.read_text, errors="replace"
        )  # all processes
        assert "secrets granted to=worker:" in log and "names=GITHUB_TOKEN" in log  # debug, names only
        for where, text in seen.items():
            for form in (token, _b64(token), _b64(token).rstrip("=")):
                assert form not in text, f"{form!r} in the {where}"
        for name in ("MODEL_KEY", "WEB_TOKEN"):
            assert values[name] not in log, f"{name} in the supervisor log"
        assert MASTER not in log


@pytest.mark.skipif(os.geteuid() != 0, reason="PR_SET_DUMPABLE 0 makes /proc/<pid>/environ root's")
async def test_no_process_environment_holds_a_secret(short_tmp: Path) -> None:
    values = _values()
    async with FakeLLM() as fake:
        fake.add(user=r"\(new\) Ana: hello", tool_calls=[_call("reply", content="Hi Ana!")])
        system = _system(short_tmp, fake)
        _fill_store(system.sup.home, values)
        async with system:
            ana = await system.client("Ana", token=values["WEB_TOKEN"])
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "hello")
            await _assistant(ana, conv, "Hi Ana!")  # the channel called the model with the key
            status = await system.sup.status()
            pids = {p.id: p.pid for p in status.processes if p.pid}
            zygotes = [p.pid for p in status.processes if p.kind == "zygote" and p.pid]
            assert zygotes, status.processes
            checked = {
                "channel": await system.channel_pid(conv),
                "memory": pids[ids.memory("main")],
                "gateway": pids[ids.gateway("web")],
                **{f"zygote {pid}": pid for pid in zygotes},
            }
            for what, pid in checked.items():
                assert pid, what
                environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
                assert b"SPACEBOT_HOME=" in environ, what  # it is the environment indeed
                for value in (*values.values(), MASTER):
                    assert value.encode() not in environ, f"a secret in the environment of the {what}"
                assert b"SPACEBOT_MASTER_KEY" not in environ, what


async def test_a_gateway_is_refused_a_tool_secret(short_tmp: Path) -> None:
    # The web chat's token names a tool secret: the gateway asks, the supervisor says no, and the
    # web chat does not start (it restarts with back-off, failing the same way each time).
    values = _values()
    text = fast_config(
        ("main",),
        sections={
            "webchat": {"port": 0, "token": "secret:GITHUB_TOKEN"},
            "delegates": {"secrets": ["GITHUB_TOKEN"]},
        },
        memory={"ready_timeout": 60.0},
    )
    sup = SupervisorProcess(short_tmp, config_text=text, env={"SPACEBOT_MASTER_KEY": MASTER})
    _fill_store(sup.home, values)
    await sup.start()
    try:
        assert sup.ctl is not None
        events = await sup.ctl.events(f"proc.gateway.{ids.gateway('web')}.exit")
        exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=WAIT)
        events.close()
        assert isinstance(exited.body, ProcessExited) and exited.body.exit_code == 1
        log = sup.log_tail(400)
        assert f"secret 'GITHUB_TOKEN' refused to gateway process {ids.gateway('web')!r}" in log, log
        assert "delegates.secrets is read by worker processes, not gateway" in log
        assert values["GITHUB_TOKEN"] not in log
    finally:
        await sup.stop()


async def test_a_secret_set_while_running_is_served_after_a_reload(short_tmp: Path) -> None:
    # The web chat's token is not in the store yet: the gateway cannot start. The operator adds it
    # (`spacebot secrets set`) and reloads; the gateway's next start gets it.
    values = _values()
    text = fast_config(
        ("main",), sections={"webchat": {"port": 0, "token": "secret:LATE"}}, memory={"ready_timeout": 60.0}
    )
    sup = SupervisorProcess(short_tmp, config_text=text, env={"SPACEBOT_MASTER_KEY": MASTER})
    _fill_store(sup.home, values)
    await sup.start()
    try:
        assert sup.ctl is not None
        web = ids.gateway("web")
        assert (await sup.info(web)).state is not ProcState.READY
        assert "no secret 'LATE'" in sup.log_tail(400)
        events = await sup.ctl.events(f"proc.gateway.{web}.")
        await asyncio.to_thread(SecretStore.open(sup.home, MASTER_ENV).set, "LATE", "late-token-value")
        await sup.ctl.call(ReloadRequest(), returns=ReloadReport)
        ready = await events.wait_for(
            lambda e: isinstance(e.body, StateChanged) and e.body.new is ProcState.READY, timeout=WAIT
        )
        events.close()
        assert isinstance(ready.body, StateChanged) and ready.body.id == web
        assert "late-token-value" not in sup.log_tail(400)
    finally:
        await sup.stop()


def test_a_wrong_master_key_stops_the_start(short_tmp: Path) -> None:
    home, runtime = short_tmp / "home", short_tmp / "rt"
    home.mkdir()
    _fill_store(home, _values())
    (home / "config.toml").write_text(fast_config(("main",)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPACEBOT_")}
    wrong = bytes(range(1, 33)).hex()
    env.update(SPACEBOT_HOME=str(home), SPACEBOT_RUNTIME_DIR=str(runtime), SPACEBOT_MASTER_KEY=wrong)
    run = subprocess.run(
        [sys.executable, "-m", "spacebot.cli.main", "run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 1, run
    assert f"master key from SPACEBOT_MASTER_KEY does not open {home / STORE_FILE}" in run.stderr, run
    assert "Traceback" not in run.stderr
    assert "ready" not in run.stdout
    assert not (runtime / "bus").exists() and not (runtime / "ctl").exists()  # nothing started


# -- the command line ----------------------------------------------------------------------------


def test_config_check_says_where_each_secret_reference_stands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from spacebot.cli.check import report

    values = _values()
    _fill_store(tmp_path, values)
    monkeypatch.setenv("SPACEBOT_MASTER_KEY", MASTER)
    cfg = _config(
        tmp_path,
        llm={
            **_llm("http://127.0.0.1:9/v1"),
            "providers": {
                "a": {"kind": "openai", "api_key": "secret:MODEL_KEY"},
                "b": {"kind": "openai", "api_key": "secret:ABSENT"},
                "c": {"kind": "openai", "api_key": "secret:GITHUB_TOKEN"},
            },
            "profiles": {"balanced": {"light": "a/m", "standard": "a/m", "strong": "a/m"}},
        },
        webchat={"token": "secret:WEB_TOKEN"},
        delegates={"secrets": ["GITHUB_TOKEN", "MODEL_KEY"]},
    )
    assert report(cfg, strict=True) == 1
    out = capsys.readouterr().out
    store = re.escape(str(tmp_path / STORE_FILE))

    def row(key: str, reference: str, status: str) -> bool:
        return re.search(rf"^  {re.escape(key)} +{re.escape(reference)} +{status}$", out, re.M) is not None

    assert row("llm.providers.a.api_key", "secret:MODEL_KEY", f"resolves: system secret in {store}"), out
    assert row(
        "llm.providers.b.api_key", "secret:ABSENT", rf"MISSING: no secret 'ABSENT' in {store} \(spacebot .*"
    )
    assert row(
        "llm.providers.c.api_key",
        "secret:GITHUB_TOKEN",
        "MISSING: .* is a tool secret; this takes a system .*",
    )
    assert row("webchat.token", "secret:WEB_TOKEN", f"resolves: system secret in {store}")
    assert row("delegates.secrets", "GITHUB_TOKEN", f"resolves: tool secret in {store}")
    assert row(
        "delegates.secrets", "MODEL_KEY", "MISSING: .* is a system secret; this takes a tool secret .*"
    )
    assert not any(value in out for value in values.values())
    # A key that does not open the store: each reference says so, still no value.
    monkeypatch.setenv("SPACEBOT_MASTER_KEY", bytes(range(1, 33)).hex())
    assert report(cfg) == 0
    out = capsys.readouterr().out
    assert "MISSING: the secrets store does not open: master key from SPACEBOT_MASTER_KEY" in out


def test_init_creates_a_key_file_once_and_says_what_it_protects(tmp_path: Path) -> None:
    from spacebot.cli.starter import write_starter

    home = tmp_path / "home"
    lines = write_starter(home, environ={})
    key = home / "master.key"
    assert f"wrote   {key} (the secrets store's master key)" in lines
    assert any("protects only against a copy of secrets.enc" in line for line in lines), lines
    assert key.stat().st_mode & 0o777 == 0o600
    first = key.read_bytes()
    # The key opens a store the service can then use; --force never replaces it.
    SecretStore.open(home, {}).set("X_TOKEN", "value-123456")
    lines = write_starter(home, force=True, environ={})
    assert key.read_bytes() == first
    assert f"kept    master key from key file {key} (the secrets store's key)" in lines
    assert SecretStore.open(home, {}).get("X_TOKEN") == "value-123456"
    # Another key source present (a variable): no key file is made.
    other = tmp_path / "other"
    lines = write_starter(other, environ=MASTER_ENV)
    assert not (other / "master.key").exists()
    assert "kept    master key from SPACEBOT_MASTER_KEY (the secrets store's key)" in lines
