"""``spacebotctl``'s rough edges: what it says, and the exit code, when there is little to do."""

from __future__ import annotations

import argparse
import asyncio
import io
import socket
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import msgspec
import pytest

from spacebot.cli import ctl
from spacebot.ipc import ids
from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import (
    KillReport,
    Kind,
    MemForget,
    Memory,
    MemoryDraft,
    MemSave,
    ProcessExited,
    ProcState,
    SpawnSpec,
    StatusReply,
)
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.supervisor import introspect
from spacebot.supervisor.table import ProcessRecord
from spacebot.testing import ChatSystem, SupervisorProcess, ctl_in_thread, fast_config

TK = "spacebot.procs.testkit"
WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""

SPACEBOTCTL = Path(sys.executable).parent / "spacebotctl"
"""The installed console script (the real command a person types)."""


_ctl = ctl_in_thread


async def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run, [str(SPACEBOTCTL), *argv], capture_output=True, text=True, timeout=120
    )


def _row(out: str, ident: str) -> list[str]:
    """The columns of ``ident``'s row in ``status`` output (ID KIND PID STATE ...)."""
    for line in out.splitlines():
        if line.split()[:1] == [ident]:
            return line.split()
    raise AssertionError(f"no row for {ident!r} in:\n{out}")


# -- kill ------------------------------------------------------------------------------------------


async def test_kill_of_the_supervisor_or_an_exited_process(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    rt = str(supervisor.endpoints.dir)
    result = await _run("--runtime-dir", rt, "kill", "supervisor")
    assert result.returncode == 2
    assert "the supervisor is stopped with: spacebotctl stop" in result.stderr
    code, _, err = await _ctl("--runtime-dir", rt, "kill", "zygote")
    assert code == 2 and "spacebotctl stop" in err
    exits = await supervisor.ctl.events("proc.worker.worker:done.exit")
    await supervisor.spawn(
        f"{TK}:crash_after", id="worker:done", args={"seconds": 0.0, "code": 0}, wait_ready=False
    )
    exited = await exits.next(timeout=WAIT)
    exits.close()
    assert isinstance(exited.body, ProcessExited) and exited.body.restart_in is None
    result = await _run("--runtime-dir", rt, "kill", "worker:done")
    assert result.returncode == 1, result
    assert "worker:done: not running (exited)" in result.stderr and "process(es) ended" not in result.stdout
    # A process that is running is still killed, with its report.
    await supervisor.spawn(f"{TK}:idle", id="worker:alive")
    code, out, _ = await _ctl("--runtime-dir", rt, "kill", "worker:alive")
    assert code == 0 and "1 process(es) ended" in out
    code, _, err = await _ctl("--runtime-dir", rt, "kill", "worker:never-was")
    assert code == 1 and "no process 'worker:never-was'" in err


async def test_kill_of_a_process_that_ended_before_the_signal(
    short_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The supervisor still had a pid when the kill came, but nothing was left to end."""

    def call(self: ctl.Client, request: Any, *, returns: Any, timeout: float | None = None) -> Any:
        assert returns is KillReport
        return KillReport(request.id, [], [])

    monkeypatch.setattr(ctl.Client, "call", call)
    code, out, err = await _ctl("--runtime-dir", str(short_tmp), "kill", "worker:gone")
    assert code == 1 and out == "" and "worker:gone: not running" in err


# -- listen ----------------------------------------------------------------------------------------


async def test_listen_says_when_no_event_came(supervisor: SupervisorProcess) -> None:
    rt = str(supervisor.endpoints.dir)
    result = await _run("--runtime-dir", rt, "listen", "no.such.topic.", "--timeout", "0.5")
    assert result.returncode == 1
    assert "no events within 0.5 s" in result.stderr and result.stdout == ""


async def test_global_timeout_is_not_dropped_by_listen(short_tmp: Path) -> None:
    args = ctl.build_parser().parse_args(["--timeout", "7", "listen", "x.", "--timeout", "0.5"])
    assert (args.daemon_timeout, args.idle_timeout) == (7.0, 0.5)
    # A socket nobody answers on: the wait for the daemon is the global --timeout, not listen's.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_tmp / "ctl"))
    stale.close()
    code, _, err = await _ctl(
        "--runtime-dir", str(short_tmp), "--timeout", "0.5", "listen", "--timeout", "30"
    )
    assert code == 3 and "within 0.5s" in err


# -- help ------------------------------------------------------------------------------------------


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_every_option_has_help_and_help_lists_the_exit_codes() -> None:
    parsers = _parsers(ctl.build_parser())
    assert {p.prog.split()[-1] for p in parsers} >= {"kill", "listen", "spawn", "reload", "status"}
    missing = [
        f"{p.prog} {action.dest}"
        for p in parsers
        for action in p._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction) and not action.help
    ]
    assert missing == []
    for argv in (["--help"], ["kill", "--help"]):
        out = io.StringIO()
        with redirect_stdout(out):
            assert ctl.main(argv) == 0
        text = out.getvalue()
        assert "exit codes:" in text
        for code in (0, 1, 2, 3):
            assert f"\n  {code}  " in text, (argv, code)


# -- status ----------------------------------------------------------------------------------------


async def test_memory_row_counts_what_was_saved_and_forgotten(short_tmp: Path) -> None:
    sup = SupervisorProcess(short_tmp, config_text=fast_config(("main",), memory={"ready_timeout": 60.0}))
    await sup.start(timeout=120)
    client = BusClient("tester", sup.endpoints.bus)
    client.start()
    rt = str(sup.endpoints.dir)
    try:
        mem = ids.memory("main")
        assert "serving 0 memories" in (await sup.info(mem)).task
        drafts = [
            MemoryDraft(content="Ana likes green tea", type="preference"),
            MemoryDraft(content="Deploys are on Friday", type="fact"),
        ]
        saved = msgspec.convert(await client.request(mem, MemSave(drafts), timeout=60), list[Memory])
        code, out, _ = await _ctl("--runtime-dir", rt, "status")
        assert code == 0 and "serving 2 memories" in out, out
        await client.request(mem, MemForget([saved[0].id]), timeout=60)
        code, out, _ = await _ctl("--runtime-dir", rt, "status", "--json")
        row = next(p for p in msgspec.json.decode(out, type=StatusReply).processes if p.id == mem)
        assert row.task == "serving 1 memories"
    finally:
        await client.close()
        await sup.stop()


async def test_a_hibernated_conversation_says_hibernated_not_exited(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=[FakeToolCall("reply", {"content": "ok"})])
        async with ChatSystem(short_tmp, fake, channel={"idle_timeout": 1.0}) as system:
            assert system.sup.ctl is not None
            rt = str(system.sup.endpoints.dir)
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            channel = ids.channel("main", conv)
            exits = await system.sup.ctl.events(f"proc.channel.{channel}.exit")
            await ana.send(conv, "hello")
            exited = await exits.next(timeout=WAIT)  # the idle timeout ends it
            assert isinstance(exited.body, ProcessExited) and exited.body.exit_code == 0
            code, out, _ = await _ctl("--runtime-dir", rt, "status")
            assert code == 0 and _row(out, channel)[2:4] == ["-", "hibernated"]
            code, out, _ = await _ctl("--runtime-dir", rt, "tree")
            assert f"{channel} (pid 0, hibernated" in out
            code, _, err = await _ctl("--runtime-dir", rt, "kill", channel)
            assert code == 1 and f"{channel}: not running (hibernated)" in err
            exits.close()


def _record(kind: Kind, code: int | None, *, stopped: bool = False) -> ProcessRecord:
    rec = ProcessRecord(SpawnSpec(kind, "a.b:c", id=f"{kind.value}:x"), "supervisor", state=ProcState.EXITED)
    rec.exit_code, rec.stop_requested = code, stopped
    return rec


def test_only_a_conversation_that_ended_itself_counts_as_hibernated() -> None:
    assert introspect.hibernated(_record(Kind.CHANNEL, 0))
    assert not introspect.hibernated(_record(Kind.CHANNEL, 0, stopped=True))  # killed or shut down
    assert not introspect.hibernated(_record(Kind.CHANNEL, 1))  # crashed
    assert not introspect.hibernated(_record(Kind.CHANNEL, -9))  # killed by a signal
    assert not introspect.hibernated(_record(Kind.CHANNEL, None))  # no exit code known
    assert not introspect.hibernated(_record(Kind.WORKER, 0))  # finished work, not a conversation
    running = _record(Kind.CHANNEL, None)
    running.state = ProcState.IDLE
    assert not introspect.hibernated(running)
