"""spacebotctl against a real daemon; reload; sd_notify."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

from spacebot.ipc.messages import ConfigReloaded, Notice
from spacebot.testing import FAST_CONFIG, SupervisorProcess, ctl_in_thread, fast_config

TK = "spacebot.procs.testkit"
WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""


_ctl = ctl_in_thread


async def test_exit_codes_without_a_daemon(short_tmp: Path) -> None:
    code, _, err = await _ctl("--runtime-dir", str(short_tmp), "status")
    assert code == 3
    assert str(short_tmp / "ctl") in err and "hint" in err
    # A socket file nobody listens on: still "not reachable", after the timeout.
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(short_tmp / "ctl"))
    stale.close()
    code, _, err = await _ctl("--runtime-dir", str(short_tmp), "--timeout", "0.5", "status")
    assert code == 3 and "no answer" in err
    code, _, _ = await _ctl("--runtime-dir", str(short_tmp), "no-such-command")
    assert code == 2
    code, _, _ = await _ctl("kill")  # missing ID
    assert code == 2


async def test_ctl_commands_against_a_daemon(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    rt = str(supervisor.endpoints.dir)
    started = await supervisor.ctl.events("testkit.worker:g.")
    code, out, _ = await _ctl(
        "--runtime-dir", rt, "spawn", f"{TK}:idle", "--kind", "channel", "--id", "channel:a"
    )
    assert code == 0 and "channel:a" in out
    code, out, _ = await _ctl(
        "--runtime-dir",
        rt,
        "spawn",
        f"{TK}:grandchildren",
        "--id",
        "worker:g",
        "--arg",
        "count=2",
        "--arg",
        "own_group=0",
        "--json",
    )
    assert code == 0 and json.loads(out)["id"] == "worker:g"
    # Ready comes before its commands run; it says when they have started.
    note = await started.wait_for(
        lambda e: isinstance(e.body, Notice) and e.body.text == "pids", timeout=WAIT
    )
    started.close()
    assert isinstance(note.body, Notice) and len(note.body.fields["pids"]) == 2
    code, out, _ = await _ctl("--runtime-dir", rt, "status")
    assert code == 0
    header = out.splitlines()[0].split()
    assert header[:4] == ["ID", "KIND", "PID", "STATE"] and "USS_MB" in header and "HB_AGE" in header
    assert "channel:a" in out and "zygote" in out
    assert "tool sandbox: native (landlock ABI" in out or "tool sandbox: python" in out
    code, out, _ = await _ctl("--runtime-dir", rt, "tree")
    assert code == 0 and "worker:g" in out and "sleep 1000" in out
    code, out, _ = await _ctl("--runtime-dir", rt, "kill", "worker:g", "--grace", "2")
    assert code == 0 and "3 process(es) ended" in out
    code, _, err = await _ctl("--runtime-dir", rt, "kill", "worker:nope")
    assert code == 1 and "worker:nope" in err
    code, _, err = await _ctl("--runtime-dir", rt, "kill", "channel:a", "--signal", "BOGUS")
    assert code == 1 and "BOGUS" in err
    code, _, err = await _ctl("--runtime-dir", rt, "spawn", "not-a-dotted-path")
    assert code == 1 and "not-a-dotted-path" in err
    code, _, err = await _ctl("--runtime-dir", rt, "spawn", f"{TK}:no_such_function", "--id", "worker:bad")
    assert code == 1 and "worker:bad" in err


async def test_listen_streams_events(supervisor: SupervisorProcess) -> None:
    rt = str(supervisor.endpoints.dir)
    listener = asyncio.ensure_future(
        _ctl(
            "--runtime-dir",
            rt,
            "listen",
            "proc.worker.worker:l.",
            "--json",
            "--count",
            "2",
            "--timeout",
            "20",
        )
    )
    # `listen` confirms its subscription before it prints; spawn until it has seen two events.
    while not listener.done():
        await supervisor.spawn(
            f"{TK}:crash_after", id="worker:l", args={"seconds": 0.0, "code": 0}, wait_ready=False
        )
        await asyncio.wait({listener}, timeout=0.5)
    code, out, _ = listener.result()
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 2 and all(e["topic"].startswith("proc.worker.worker:l.") for e in events)


async def test_reload_applies_and_refuses_bad_config(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None and supervisor.proc is not None
    events = await supervisor.ctl.events("sys.reload")
    supervisor.config_file.write_text(FAST_CONFIG.replace('log_level = "info"', 'log_level = "debug"'))
    supervisor.proc.send_signal(signal.SIGHUP)
    ok = await events.next(timeout=WAIT)
    assert isinstance(ok.body, ConfigReloaded) and ok.body.ok
    supervisor.config_file.write_text(fast_config(worker={"heartbeat_interval": -1}))
    code, _, err = await _ctl("--runtime-dir", str(supervisor.endpoints.dir), "reload")
    assert code == 1 and "heartbeat_interval" in err
    bad = await events.next(timeout=WAIT)
    assert isinstance(bad.body, ConfigReloaded) and not bad.body.ok
    # The broken file is named, and the daemon keeps serving with the old config.
    supervisor.config_file.write_text("[runtime]\nlog_level = 'loud'\n")
    code, _, err = await _ctl("--runtime-dir", str(supervisor.endpoints.dir), "reload")
    assert code == 1 and "runtime.log_level" in err and str(supervisor.config_file) in err
    await supervisor.spawn(f"{TK}:idle", id="worker:after-reload")
    events.close()


async def test_sd_notify_ready_then_watchdog(short_tmp: Path) -> None:
    sock_path = short_tmp / "notify"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(sock_path))
    listener.setblocking(False)
    sup = SupervisorProcess(short_tmp, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})
    loop = asyncio.get_running_loop()
    try:
        await sup.start()
        messages: list[str] = []
        async with asyncio.timeout(WAIT):
            while not any("WATCHDOG=1" in m for m in messages):
                messages.append((await loop.sock_recv(listener, 4096)).decode())
        ready = next(i for i, m in enumerate(messages) if "READY=1" in m)
        watchdog = next(i for i, m in enumerate(messages) if "WATCHDOG=1" in m)
        assert ready < watchdog
        assert "STATUS=" in messages[ready] and f"MAINPID={sup.pid}" in messages[ready]
        await sup.stop()
        async with asyncio.timeout(WAIT):
            while "STOPPING=1" not in messages[-1]:
                messages.append((await loop.sock_recv(listener, 4096)).decode())
    finally:
        await sup.stop()
        listener.close()


async def test_second_supervisor_is_refused(supervisor: SupervisorProcess) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "spacebot.cli.main", "run"],
        env=supervisor.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "already running" in result.stderr and str(supervisor.endpoints.ctl_path) in result.stderr
    # The first one is unharmed.
    await supervisor.spawn(f"{TK}:idle", id="worker:still-fine")
