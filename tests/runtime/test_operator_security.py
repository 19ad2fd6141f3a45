"""What the operator's side must hold: keys from systemd credentials reach only the processes that
call a model (never a tool), the runtime directory is ours alone, and the config and the data are
private whatever the umask and whoever created ``SPACEBOT_HOME``."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import spacebot
from spacebot import config as config_mod
from spacebot.cli import main as spacebot_main
from spacebot.errors import ConfigError
from spacebot.llm.config import LLMConfig, ProviderConfig
from spacebot.llm.errors import LLMConfigError
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.paths import Endpoints
from spacebot.testing import ChatSystem, SupervisorProcess

WORKER = "You are a worker"
NOBODY = 65534
INIT_WITH_LOOSE_UMASK = (
    "import os, sys; os.umask(0o022); from spacebot.cli.main import main; sys.exit(main(['init']))"
)


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _private(path: Path) -> bool:
    return stat.S_IMODE(path.lstat().st_mode) & 0o077 == 0


# -- provider keys from systemd credentials --------------------------------------------------------


def _creds(tmp_path: Path, **keys: str) -> Path:
    directory = tmp_path / "credentials"
    directory.mkdir(mode=0o700)
    for name, value in keys.items():
        (directory / name).write_text(value + "\n")  # editors add a newline; it is not part of the key
    return directory


def test_env_key_falls_back_to_the_lower_case_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = _creds(tmp_path, anthropic_api_key="sk-ant-from-credential")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    # The zero-config setup sees the credential although no variable is set ...
    cfg = config_mod.load(
        tmp_path / "none.toml", {"SPACEBOT_HOME": str(tmp_path), "CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert cfg.llm.providers["anthropic"].api_key == "env:ANTHROPIC_API_KEY"
    # ... and the key is read from the file, newline stripped.
    assert cfg.llm.resolve_key("anthropic") == "sk-ant-from-credential"
    # A variable that is set still wins (the env file keeps working).
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    assert cfg.llm.resolve_key("anthropic") == "sk-ant-from-env"


def test_cred_scheme_reads_only_the_credential(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = _creds(tmp_path, relay="sk-relay")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    monkeypatch.setenv("relay", "not-this")
    llm = LLMConfig(providers={"r": ProviderConfig("openai", None, "cred:relay")})
    assert llm.resolve_key("r") == "sk-relay"


def test_missing_credential_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = _creds(tmp_path)
    (creds / "empty").write_text("\n")
    llm = LLMConfig(
        providers={
            "a": ProviderConfig("anthropic", None, "env:ANTHROPIC_API_KEY"),
            "b": ProviderConfig("openai", None, "cred:openai_api_key"),
            "c": ProviderConfig("openai", None, "cred:empty"),
            "d": ProviderConfig("openai", None, "cred:../../etc/shadow"),
        }
    )
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    with pytest.raises(LLMConfigError) as err:
        llm.resolve_key("a")
    assert "'ANTHROPIC_API_KEY'" in str(err.value) and str(creds / "anthropic_api_key") in str(err.value)
    with pytest.raises(LLMConfigError, match=re.escape(str(creds / "openai_api_key"))):
        llm.resolve_key("b")
    with pytest.raises(LLMConfigError, match="missing or empty"):
        llm.resolve_key("c")
    with pytest.raises(LLMConfigError, match="invalid credential name"):
        llm.resolve_key("d")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    with pytest.raises(
        LLMConfigError, match=r"CREDENTIALS_DIRECTORY is not set: add LoadCredential=openai_api_key"
    ):
        llm.resolve_key("b")


def _cred_dir_like_systemd() -> Path:
    """A directory where systemd puts a unit's credentials (``/run/credentials/<unit>``)."""
    if os.geteuid() != 0:
        pytest.skip("creating /run/credentials/<unit> as systemd does needs root (the CI runs as root)")
    base = Path("/run/credentials")
    base.mkdir(mode=0o755, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="spacebot-test-", suffix=".service", dir=base))


def _call(name: str, **args: Any) -> FakeToolCall:
    return FakeToolCall(name, args)


async def test_keys_reach_the_model_caller_but_never_a_tool(short_tmp: Path) -> None:
    """The key comes from ``$CREDENTIALS_DIRECTORY`` (no variable) and is sent to the provider; a
    worker's shell sees none of the supervisor's secret variables and cannot read the credential
    file; and everything the running system writes under an existing 0755 home is private."""
    creds = _cred_dir_like_systemd()
    cred_key = "sk-cred-" + secrets.token_hex(8)
    decoys = {
        "ANTHROPIC_API_KEY": "sk-ant-" + secrets.token_hex(8),
        "DISCORD_BOT_TOKEN": "discord-" + secrets.token_hex(8),
        "SPACEBOT_LLM_API_KEY": "",  # empty: the credential must be used
    }
    try:
        (creds / "spacebot_llm_api_key").write_text(cred_key + "\n")
        os.chmod(creds / "spacebot_llm_api_key", 0o400)
        probe = f"env; cat {creds}/spacebot_llm_api_key; echo CAT=$?"
        async with FakeLLM() as fake:
            fake.add(
                user=r"\(new\) Ana: probe",
                tool_calls=[
                    _call("spawn_worker", task="probe the environment"),
                    _call("reply", content="On it."),
                ],
            )
            fake.add(system=WORKER, tool_result="shell", text="probe done")
            fake.add(system=WORKER, tool_calls=[_call("shell", command=probe)])
            fake.add(user=r"finished \(success\): probe done", tool_calls=[_call("reply", content="Probed.")])
            system = ChatSystem(short_tmp, fake, channel={"coalesce_debounce": 0.0})
            text = system.sup.config_file.read_text()
            assert 'api_key = "k"' in text
            system.sup.config_file.write_text(
                text.replace('api_key = "k"', 'api_key = "env:SPACEBOT_LLM_API_KEY"')
            )
            system.sup.env.update(decoys, CREDENTIALS_DIRECTORY=str(creds))
            os.chmod(system.sup.home, 0o755)  # an existing, readable SPACEBOT_HOME
            with umask(0o022):  # a permissive shell umask, inherited by `spacebot run`
                async with system:
                    ana = await system.client("Ana")
                    conv = await ana.create()
                    await ana.open(conv)
                    await ana.send(conv, "probe please")
                    await ana.wait_for(
                        lambda f: f["type"] == "message" and "Probed." in f["message"]["text"], timeout=60
                    )
                    home = system.sup.home
        # The provider got the key from the credential file.
        auth = {r.headers.get("authorization") for r in fake.requests}
        assert f"Bearer {cred_key}" in auth, auth
        # The tool saw a clean environment and could not read the credential.
        results = [c for r in fake.requests for name, c in r.conversation.tool_results if name == "shell"]
        assert results, "the worker's shell result never reached the model"
        out = results[-1]
        assert "HOME=" in out and "CAT=1" in out, out
        for secret in (cred_key, *(v for v in decoys.values() if v)):
            assert secret not in out
        leaked = [
            line
            for line in out.splitlines()
            if re.match(r"[A-Z0-9_]*(_API_KEY|TOKEN|CREDENTIALS)[A-Z0-9_]*=", line)
        ]
        assert not leaked, leaked
        # Data, identity files and databases written at run time are private (umask 077 in `run`).
        created = [p for p in home.rglob("*") if p != system.sup.config_file]
        assert any(p.name == "SOUL.md" for p in created) and any(p.is_dir() for p in created)
        wide = [f"{p} {stat.S_IMODE(p.lstat().st_mode):04o}" for p in created if not _private(p)]
        assert not wide, wide
    finally:
        shutil.rmtree(creds, ignore_errors=True)


# -- the runtime directory --------------------------------------------------------------------------


def test_runtime_dir_is_created_private(short_tmp: Path) -> None:
    with umask(0o022):
        Endpoints(short_tmp / "a" / "rt").prepare()
    assert stat.S_IMODE((short_tmp / "a" / "rt").stat().st_mode) == 0o700


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("other_user", "owned by uid 65534"),
        ("world_writable", "mode 0777"),
        ("sticky_tmp_like", "mode 1777"),
        ("group_writable", "mode 0770"),
        ("symlink", "not a directory"),
        ("file", "not a directory"),
    ],
)
def test_unsafe_runtime_dir_is_refused(short_tmp: Path, setup: str, message: str) -> None:
    rt = short_tmp / "rt"
    target = short_tmp / "elsewhere"
    target.mkdir(mode=0o700)
    if setup == "symlink":
        rt.symlink_to(target)
    elif setup == "file":
        rt.write_text("")
    else:
        rt.mkdir()
        mode = {
            "other_user": 0o700,
            "world_writable": 0o777,
            "sticky_tmp_like": 0o1777,
            "group_writable": 0o770,
        }
        os.chmod(rt, mode[setup])
        if setup == "other_user":
            if os.geteuid() != 0:
                pytest.skip("giving a directory to another user (uid 65534) needs root")
            os.chown(rt, NOBODY, NOBODY)
    before = rt.lstat()
    with pytest.raises(ConfigError) as err:
        Endpoints(rt).prepare()
    assert message in str(err.value) and str(rt) in str(err.value)
    assert "SPACEBOT_RUNTIME_DIR" in str(err.value)  # the way out is named
    after = rt.lstat()
    assert (after.st_mode, after.st_uid) == (before.st_mode, before.st_uid)  # left as found


def test_readable_runtime_dir_of_ours_is_tightened(short_tmp: Path) -> None:
    rt = short_tmp / "rt"
    rt.mkdir()
    os.chmod(rt, 0o755)  # nobody else could have written into it
    Endpoints(rt).prepare()
    assert stat.S_IMODE(rt.stat().st_mode) == 0o700


async def test_spacebot_run_refuses_a_runtime_dir_of_another_user(short_tmp: Path) -> None:
    """The real start-up: a clear message and exit 1, no socket in the other user's directory."""
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user (uid 65534) needs root")
    rt = short_tmp / "rt"  # the runtime dir SupervisorProcess points SPACEBOT_RUNTIME_DIR at
    rt.mkdir(mode=0o700)
    os.chown(rt, NOBODY, NOBODY)
    sup = SupervisorProcess(short_tmp)
    try:
        with pytest.raises(RuntimeError, match="supervisor exited with 1") as err:
            await sup.start(timeout=60)
    finally:
        await sup.stop()
    assert f"runtime_dir {str(rt)!r} is owned by uid 65534" in str(err.value)
    assert "Traceback" not in str(err.value)
    assert list(rt.iterdir()) == [] and rt.stat().st_uid == NOBODY


# -- spacebot init ---------------------------------------------------------------------------------


def test_init_into_an_existing_home_is_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)
    os.chmod(home, 0o755)
    (home / "notes.txt").write_text("kept as is")
    with umask(0o022):
        assert spacebot_main.main(["--home", str(home), "init"]) == 0
    assert "private" in capsys.readouterr().out
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for rel in ("config.toml", "agents", "agents/main", "agents/main/SOUL.md", "agents/main/workspace"):
        assert _private(home / rel), f"{rel} is {stat.S_IMODE((home / rel).stat().st_mode):04o}"
    # --force over an older world-readable file leaves it private too.
    os.chmod(home / "config.toml", 0o644)
    assert spacebot_main.main(["--home", str(home), "init", "--force"]) == 0
    assert _private(home / "config.toml")


def _system_python() -> str:
    """An interpreter a non-root user can run: the test one may live under root's 0700 home."""
    for candidate in (sys.executable, "/usr/bin/python3"):
        probe = subprocess.run(
            ["runuser", "-u", "nobody", "--", candidate, "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if probe.returncode == 0 and probe.stdout.strip() == str(sys.version_info[:2]):
            return candidate
    pytest.skip(f"no Python {sys.version_info[:2]} that a non-root user may execute")


@pytest.fixture
def service_user() -> Iterator[str]:
    """A throwaway system user, as `useradd --system` in systemd/README.md makes it."""
    if os.geteuid() != 0 or shutil.which("useradd") is None or shutil.which("runuser") is None:
        pytest.skip("creating a throwaway service user needs root, useradd and runuser")
    name = "sbt" + secrets.token_hex(4)
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ],
        check=True,
        timeout=60,
    )
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, timeout=60)


def test_init_as_a_fresh_service_user(service_user: str) -> None:
    """README step 2 as a new operator runs it: the home exists (step 1), init as the user."""
    python = _system_python()
    base = Path(tempfile.mkdtemp(prefix="sb-user-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)  # like /var/lib: root's, traversable
        home = base / "spacebot"
        user = pwd.getpwnam(service_user)
        pythonpath = f"{sysconfig.get_paths()['purelib']}:{Path(spacebot.__file__).parents[1]}"

        def init() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [
                    "runuser",
                    "-u",
                    service_user,
                    "--",
                    "env",
                    f"SPACEBOT_HOME={home}",
                    f"PYTHONPATH={pythonpath}",
                    python,
                    "-c",
                    INIT_WITH_LOOSE_UMASK,
                ],
                capture_output=True,
                text=True,
                cwd="/",
                timeout=120,
            )

        # Skipping step 1 (no home): a clear message naming the fix, no traceback.
        failed = init()
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "Traceback" not in failed.stderr
        assert f"sudo install -d -o {service_user} -m 0700 {home}" in failed.stderr
        # Step 1 done: `install -d -o spacebot -g spacebot -m 0700 /var/lib/spacebot`.
        home.mkdir(mode=0o700)
        os.chown(home, user.pw_uid, user.pw_gid)
        done = init()
        assert done.returncode == 0, done.stdout + done.stderr
        for rel in ("config.toml", "agents/main", "agents/main/SOUL.md", "agents/main/data"):
            st = (home / rel).lstat()
            assert st.st_uid == user.pw_uid and stat.S_IMODE(st.st_mode) & 0o077 == 0, rel
        # The config it wrote is valid for that user.
        cfg = config_mod.load(home / "config.toml", {"SPACEBOT_HOME": str(home)})
        assert cfg.home == str(home)
    finally:
        shutil.rmtree(base, ignore_errors=True)
