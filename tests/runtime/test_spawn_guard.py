"""Spawn requests name registered process types only, with arguments checked against the config."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from spacebot.cli import ctl
from spacebot.ipc.bus import BusClient, BusError
from spacebot.ipc.messages import ErrorCode, Kind, SpawnSpec
from spacebot.testing import SupervisorProcess, fast_config
from spacebot.tools.errors import ToolError
from spacebot.tools.workspace import Workspace

pytestmark = pytest.mark.timeout(180)

WORKER = "spacebot.procs.worker:serve"
REPO = str(Path(__file__).resolve().parents[2])
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable


async def _ctl(*argv: str) -> tuple[int, str]:
    """Run ``spacebotctl`` in a thread (it blocks); returns the exit code and stderr."""
    import contextlib
    import io

    err = io.StringIO()

    def run() -> int:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            return ctl.main(list(argv))

    code = await asyncio.to_thread(run)
    return code, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["os:system", "--arg", "command=id"], "'os:system' is not a registered process type"),
        (["spacebot.supervisor.zygote:main"], "is not a registered process type"),
        (
            [WORKER, "--arg", "agent=main/workspace/esc", "--arg", "report_to=worker:x", "--arg", "task=t"],
            "agent 'main/workspace/esc' is not an agent id",
        ),
        (
            [WORKER, "--arg", "agent=../x", "--arg", "report_to=worker:x", "--arg", "task=t"],
            "agent '../x' is not an agent id",
        ),
        (
            [WORKER, "--arg", "agent=other", "--arg", "report_to=worker:x", "--arg", "task=t"],
            "agent 'other' is not configured",
        ),
        ([WORKER, "--arg", "agent=main", "--arg", "shell=/bin/sh"], "bad arguments for"),
        ([WORKER, "--kind", "memory"], "runs as kind worker, not 'memory'"),
        (["spacebot.procs.testkit:idle", "--id", "memory:main"], "must start with its kind 'worker:'"),
    ],
)
async def test_ctl_refuses_bad_spawns(supervisor: SupervisorProcess, argv: list[str], reason: str) -> None:
    before = {p.id for p in (await supervisor.status()).processes}
    code, err = await _ctl("--runtime-dir", str(supervisor.endpoints.dir), "spawn", *argv)
    assert code == ctl.EXIT_FAILED, err
    assert "bad_request" in err and reason in err, err
    assert {p.id for p in (await supervisor.status()).processes} == before


async def test_spawns_over_the_bus_are_checked_too(supervisor: SupervisorProcess) -> None:
    client = BusClient("tester", supervisor.endpoints.bus)
    client.start()
    try:
        spec = SpawnSpec(
            kind=Kind.WORKER,
            target=WORKER,
            args={"agent": "main/workspace/esc", "report_to": "worker:x", "task": "t"},
        )
        with pytest.raises(BusError) as err:
            await client.request("supervisor", spec, timeout=30)
        assert err.value.code is ErrorCode.BAD_REQUEST
        assert "agent 'main/workspace/esc' is not an agent id" in err.value.message
        # A registered test target still starts (fast_config allows them).
        await client.request(
            "supervisor", SpawnSpec(kind=Kind.WORKER, target="spacebot.procs.testkit:idle"), timeout=30
        )
    finally:
        await client.close(linger=0)


async def test_test_targets_need_the_config_flag(short_tmp: Path) -> None:
    text = fast_config(sections={"supervisor": {"allow_test_targets": False}})
    sup = SupervisorProcess(short_tmp, config_text=text)
    await sup.start()
    try:
        code, err = await _ctl(
            "--runtime-dir", str(sup.endpoints.dir), "spawn", "spacebot.procs.testkit:idle"
        )
        assert code == ctl.EXIT_FAILED
        assert "allow_test_targets = true" in err, err
    finally:
        await sup.stop()


def test_a_symlinked_workspace_root_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret").write_text("x")
    ws = tmp_path / "agents" / "main" / "workspace"
    ws.mkdir(parents=True)
    (ws / "esc").symlink_to(home)
    with pytest.raises(ToolError, match="symbolic link"):
        Workspace(ws / "esc")  # the root itself is a link
    with pytest.raises(ToolError, match="symbolic link"):
        Workspace(ws / "esc" / "workspace")  # a link on the way (and nothing is created through it)
    assert not (home / "workspace").exists()
    # A real directory is fine, and what a real root holds is reachable.
    real = Workspace(ws / "real")
    assert real.root == (ws / "real").resolve()


async def test_spacebotctl_without_permission_exits_3(supervisor: SupervisorProcess) -> None:
    """Another user (here: nobody) gets one clear line and exit code 3, not a traceback."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run spacebotctl as another user")
    site = next(p for p in sys.path if p.endswith("site-packages"))
    code = (
        f"import sys; sys.path[:0] = [{REPO!r}, {site!r}]; from spacebot.cli.ctl import main; "
        f"sys.exit(main(['--runtime-dir', {str(supervisor.endpoints.dir)!r}, 'status']))"
    )
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-c",
        code,
        user=65534,
        group=65534,
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _out, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == ctl.EXIT_UNREACHABLE, err.decode()
    assert len(lines) == 1 and "permission denied" in lines[0] and "Traceback" not in err.decode(), lines
