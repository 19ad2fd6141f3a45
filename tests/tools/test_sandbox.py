"""The sandboxed spawner behind shell/exec, in both modes (native C extension and Python fallback)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from spacebot.tools import sandbox
from spacebot.tools.errors import SandboxError
from spacebot.tools.sandbox import Limits

MODES = ["native", "python"]


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "native":
        if sandbox._native is None:
            if os.environ.get("CI"):
                pytest.fail("the native sandbox extension was not built (gcc and Python headers are needed)")
            pytest.skip("native sandbox extension not built")
        monkeypatch.delenv("SPACEBOT_SANDBOX", raising=False)
    else:
        monkeypatch.setenv("SPACEBOT_SANDBOX", "python")
    assert sandbox.mode() == request.param
    return str(request.param)


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def _dead(pid: int, timeout: float = 5.0) -> bool:
    """True once ``pid`` is gone or a zombie (SIGKILL delivery is not instantaneous)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.01)
    return False


async def sh(ws: Path, command: str, **limits: object) -> sandbox.RunResult:
    """Run ``command``; the python fallback is allowed here (refusing it is tested on its own)."""
    return await sandbox.run(
        ["/bin/sh", "-c", command],
        cwd=ws,
        workspace=ws,
        limits=Limits(**limits),  # type: ignore[arg-type]
        allow_unsandboxed=True,
    )


async def test_output_and_exit_codes(mode: str, ws: Path) -> None:
    r = await sh(ws, "echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.signal, r.stdout, r.stderr, r.mode) == (3, None, "out\n", "err\n", mode)
    r = await sh(ws, "kill -TERM $$")
    assert r.exit_code is None and r.signal == signal.SIGTERM


async def test_timeout_kills_the_whole_tree(mode: str, ws: Path) -> None:
    r = await sh(ws, "sleep 1000 & echo $!; sleep 1000", timeout=0.5)
    # The group is killed at once; a loaded machine may let the shell see its child's SIGKILL
    # (and exit 137) before its own arrives. Either way it ended by the kill, not by itself.
    assert r.timed_out and (r.signal == signal.SIGKILL or r.exit_code == 128 + signal.SIGKILL), r
    assert _dead(int(r.stdout.split()[0]))


async def test_setsid_escapee_dies_too(mode: str, ws: Path) -> None:
    r = await sh(ws, "setsid sleep 1000 & echo $!; sleep 1000", timeout=0.5)
    escaped = int(r.stdout.split()[0])
    assert r.timed_out
    assert _dead(escaped)


async def test_output_flood_is_cut(mode: str, ws: Path) -> None:
    r = await sh(ws, "yes flood", output_bytes=10_000, timeout=10)
    assert r.truncated and len(r.stdout) == 10_000 and not r.timed_out


async def test_rlimits_bite(mode: str, ws: Path) -> None:
    files = await sh(ws, 'python3 -c "import os; [open(os.devnull) for _ in range(100)]"', open_files=32)
    assert files.exit_code != 0 and "Too many open files" in files.stderr
    memory = await sh(ws, 'python3 -c "b = bytearray(1024 ** 3)"', address_space_mb=256)
    assert memory.exit_code != 0 and "MemoryError" in memory.stderr
    cpu = await sh(ws, 'python3 -c "while True: pass"', cpu_seconds=1, timeout=20)
    # the shell reports its killed child as 128 + signal
    assert cpu.exit_code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL) and not cpu.timed_out


async def test_nothing_inherited(mode: str, ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2")
    held = os.open(__file__, os.O_RDONLY)  # an inheritable descriptor held open by the parent
    os.set_inheritable(held, True)
    try:
        r = await sh(ws, "ls /proc/self/fd; env")
    finally:
        os.close(held)
    fds = [int(x) for x in r.stdout.split() if x.isdigit()]
    assert max(fds) <= 3  # 0, 1, 2 and the one ls opened to read the directory
    assert "hunter2" not in r.stdout and f"HOME={ws}" in r.stdout


async def test_refusals(mode: str, ws: Path, tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="outside the workspace"):
        await sandbox.run(["/bin/true"], cwd=tmp_path, workspace=ws, allow_unsandboxed=True)
    with pytest.raises(SandboxError, match="not found"):
        await sandbox.run(["no-such-program-xyz"], cwd=ws, workspace=ws, allow_unsandboxed=True)
    with pytest.raises(OSError, match="no-such"):
        await sandbox.run([str(ws / "no-such")], cwd=ws, workspace=ws, allow_unsandboxed=True)


async def test_cancelling_the_call_kills_the_program(mode: str, ws: Path) -> None:
    marker = ws / "pid"
    task = asyncio.ensure_future(sh(ws, f"echo $$ > {marker}; sleep 1000"))
    for _ in range(200):
        if marker.exists() and marker.read_text().strip():
            break
        await asyncio.sleep(0.02)
    pid = int(marker.read_text())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _dead(pid)


@pytest.mark.skipif(sandbox.landlock_abi() == 0, reason="the kernel has no Landlock")
async def test_landlock_confines_writes_to_the_workspace(
    ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SPACEBOT_SANDBOX", raising=False)
    info = sandbox.describe()
    assert (info["mode"], info["landlock_abi"], info["landlock"]) == ("native", sandbox.landlock_abi(), True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (ws / "link").symlink_to(outside)
    ok = await sh(
        ws, "echo hi > inside.txt && cat inside.txt && cat /etc/hostname >/dev/null && echo read-ok"
    )
    assert ok.exit_code == 0 and "read-ok" in ok.stdout
    for target in (outside / "x", Path("/tmp") / f"sb-escape-{os.getpid()}", ws / "link" / "y"):
        r = await sh(ws, f"echo no > {target}")
        assert r.exit_code != 0 and "Permission denied" in r.stderr, target
    assert list(outside.iterdir()) == []
