"""``spacebot secrets``, run as an operator runs it: a real process, its exit code and output."""

from __future__ import annotations

import os
import select
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from spacebot import config as config_mod
from spacebot.secrets.store import KEY_FILE, STORE_FILE, SecretStore
from spacebot.testing import MODEL_KEY_VARS
from spacebot.testing import spacebot_cli as spacebot

KEY_HEX = bytes(range(32)).hex()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


def test_set_from_stdin_list_and_rm(home: Path) -> None:
    run = spacebot(home, "secrets", "set", "OPENAI", stdin="sk-from-stdin-1\n", SPACEBOT_MASTER_KEY=KEY_HEX)
    assert run.code == 0, run
    assert "stored secret 'OPENAI' (system)" in run.out and "sk-from-stdin-1" not in run.out + run.err
    run = spacebot(
        home, "secrets", "set", "GH", "--category", "tool", stdin="ghp-value-2", SPACEBOT_MASTER_KEY=KEY_HEX
    )
    assert run.code == 0, run
    store = SecretStore.open(home, {"SPACEBOT_MASTER_KEY": KEY_HEX})
    assert store.values() == {"GH": "ghp-value-2", "OPENAI": "sk-from-stdin-1"}  # newline stripped
    assert store.names() == [("GH", "tool"), ("OPENAI", "system")]

    run = spacebot(home, "secrets", "list", SPACEBOT_MASTER_KEY=KEY_HEX)
    assert run.code == 0, run
    assert [line.split() for line in run.out.splitlines()] == [["GH", "tool"], ["OPENAI", "system"]]
    assert "sk-from-stdin-1" not in run.out + run.err and "ghp-value-2" not in run.out + run.err

    run = spacebot(home, "secrets", "rm", "GH", SPACEBOT_MASTER_KEY=KEY_HEX)
    assert run.code == 0 and "removed secret 'GH'" in run.out, run
    run = spacebot(home, "secrets", "rm", "GH", SPACEBOT_MASTER_KEY=KEY_HEX)
    assert run.code == 1 and f"no secret 'GH' in {home / STORE_FILE}" in run.err, run
    assert SecretStore.open(home, {"SPACEBOT_MASTER_KEY": KEY_HEX}).names() == [("OPENAI", "system")]


def test_a_value_is_never_taken_from_the_command_line(home: Path) -> None:
    run = spacebot(home, "secrets", "set", "OPENAI", "sk-on-argv", SPACEBOT_MASTER_KEY=KEY_HEX)
    assert run.code == 2, run
    assert not (home / STORE_FILE).exists()
    run = spacebot(home, "secrets", "set", "OPENAI", stdin="", SPACEBOT_MASTER_KEY=KEY_HEX)
    assert run.code == 1 and "the value is empty" in run.err, run
    run = spacebot(home, "secrets", "set", "bad-name", stdin="value-1", SPACEBOT_MASTER_KEY=KEY_HEX)
    assert run.code == 1 and "invalid secret name 'bad-name'" in run.err, run


def test_first_set_without_a_key_creates_the_key_file(home: Path) -> None:
    run = spacebot(home, "secrets", "set", "OPENAI", stdin="sk-value-1")
    assert run.code == 0, run
    key_file = home / KEY_FILE
    assert f"created the master key file {key_file}" in run.err
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretStore.open(home, {}).get("OPENAI") == "sk-value-1"
    # A wrong key is reported with its source, and nothing is written.
    before = (home / STORE_FILE).read_bytes()
    run = spacebot(home, "secrets", "set", "OTHER", stdin="v-2-value", SPACEBOT_MASTER_KEY="f" * 64)
    assert run.code == 1, run
    assert f"master key from SPACEBOT_MASTER_KEY does not open {home / STORE_FILE}" in run.err
    assert (home / STORE_FILE).read_bytes() == before


CONFIG = """\
# Providers; keys below.
[llm]
profile = "balanced"

[llm.providers.an]
kind = "anthropic"
api_key   =   'sk-ant-literal-0001'   # pasted here in a hurry
[llm.providers.oa]
kind = "openai"
api_key = "env:OPENAI_KEY_VAR"
[llm.providers.ref]
kind = "openai"
api_key = "secret:ALREADY"
[llm.providers.local]
kind = "openai_compatible"
base_url = "http://127.0.0.1:9/v1"
[llm.providers]
inline = { kind = "openai", api_key = "sk-inline-literal-0002" }

[llm.profiles.balanced]
light = "an/haiku"
standard = "an/sonnet"
strong = "inline/gpt-4.1"

[webchat]
token = "webchat-literal-token-0003"
"""


def test_migrate_moves_literals_and_keeps_every_other_byte(home: Path) -> None:
    config = home / "config.toml"
    config.write_text(CONFIG)
    config.chmod(0o640)
    env = {"SPACEBOT_MASTER_KEY": KEY_HEX}
    run = spacebot(home, "secrets", "migrate", **env)
    assert run.code == 0, run
    literals = ("sk-ant-literal-0001", "sk-inline-literal-0002", "webchat-literal-token-0003")
    assert not any(value in run.out + run.err for value in literals)
    assert "llm.providers.an.api_key -> secret:AN_API_KEY" in run.out
    assert "config.toml.bak" in run.out

    backup = home / "config.toml.bak"
    assert backup.read_text() == CONFIG
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    after = config.read_text()
    assert not any(value in after for value in literals)
    changed = {
        7: 'api_key   =   "secret:AN_API_KEY"   # pasted here in a hurry',
        18: 'inline = { kind = "openai", api_key = "secret:INLINE_API_KEY" }',
        26: 'token = "secret:WEBCHAT_TOKEN"',
    }
    old_lines, new_lines = CONFIG.splitlines(), after.splitlines()
    assert len(old_lines) == len(new_lines)
    for number, (old, new) in enumerate(zip(old_lines, new_lines, strict=True), start=1):
        assert new == changed.get(number, old), number
    assert after.endswith("\n")

    store = SecretStore.open(home, env)
    assert store.values("system") == {
        "AN_API_KEY": "sk-ant-literal-0001",
        "INLINE_API_KEY": "sk-inline-literal-0002",
        "WEBCHAT_TOKEN": "webchat-literal-token-0003",
    }
    loaded = config_mod.load(config, {})
    assert loaded.llm.providers["an"].api_key == "secret:AN_API_KEY"
    assert loaded.llm.providers["oa"].api_key == "env:OPENAI_KEY_VAR"
    assert loaded.llm.providers["ref"].api_key == "secret:ALREADY"
    assert loaded.webchat.token == "secret:WEBCHAT_TOKEN"

    # Nothing left to move: the file and its backup stay as they are.
    run = spacebot(home, "secrets", "migrate", **env)
    assert run.code == 0 and "nothing to migrate" in run.out, run
    assert config.read_text() == after and backup.read_text() == CONFIG


def test_migrate_never_overwrites_a_different_secret(home: Path) -> None:
    env = {"SPACEBOT_MASTER_KEY": KEY_HEX}
    SecretStore.open(home, env).set("AN_API_KEY", "some-other-key")
    (home / "config.toml").write_text(CONFIG)
    run = spacebot(home, "secrets", "migrate", **env)
    assert run.code == 0, run
    assert 'api_key   =   "secret:AN_API_KEY_2"' in (home / "config.toml").read_text()
    store = SecretStore.open(home, env)
    assert store.get("AN_API_KEY") == "some-other-key"
    assert store.get("AN_API_KEY_2") == "sk-ant-literal-0001"


def test_migrate_with_a_wrong_key_changes_nothing(home: Path) -> None:
    SecretStore.open(home, {"SPACEBOT_MASTER_KEY": KEY_HEX}).set("X_KEY", "value-1")
    (home / "config.toml").write_text(CONFIG)
    run = spacebot(home, "secrets", "migrate", SPACEBOT_MASTER_KEY="e" * 64)
    assert run.code == 1 and "does not open" in run.err, run
    assert (home / "config.toml").read_text() == CONFIG
    assert not (home / "config.toml.bak").exists()


def _read_until(fd: int, text: str, seen: bytearray) -> None:
    """Read ``fd`` into ``seen`` until ``text`` appears (a deadline, not a sleep: fail if it never does)."""
    while text.encode() not in seen:
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, f"no {text!r} within 30 s; got {bytes(seen)!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"closed before {text!r}; got {bytes(seen)!r}"
        seen += chunk


def _set_on_a_terminal(home: Path, name: str, first: str, second: str) -> tuple[int, str, bytes]:
    """``secrets set NAME`` with a terminal on stdin; the value typed twice at the hidden prompts."""
    master, slave = os.openpty()
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("SPACEBOT_") and k not in MODEL_KEY_VARS
    }
    environ.update(SPACEBOT_HOME=str(home), SPACEBOT_MASTER_KEY=KEY_HEX)
    proc = subprocess.Popen(
        [sys.executable, "-m", "spacebot.cli.main", "secrets", "set", name],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environ,
        start_new_session=True,  # no controlling terminal: getpass prompts on stderr, reads stdin
    )
    os.close(slave)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        err = bytearray()
        _read_until(proc.stderr.fileno(), f"value of {name}: ", err)
        os.write(master, first.encode() + b"\n")
        _read_until(proc.stderr.fileno(), f"value of {name} (again): ", err)
        os.write(master, second.encode() + b"\n")
        out, rest = proc.communicate(timeout=60)
        echoed = b""
        while select.select([master], [], [], 0)[0]:  # whatever the terminal echoed back, if anything
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            echoed += chunk
        return proc.returncode, (out + bytes(err) + rest).decode(), echoed
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_set_on_a_terminal_asks_twice_without_echo(home: Path) -> None:
    code, output, echoed = _set_on_a_terminal(home, "OPENAI", "sk-typed-value-1", "sk-typed-value-1")
    assert code == 0, output
    assert "sk-typed-value-1" not in output and b"sk-typed-value-1" not in echoed
    assert SecretStore.open(home, {"SPACEBOT_MASTER_KEY": KEY_HEX}).get("OPENAI") == "sk-typed-value-1"
    code, output, _echoed = _set_on_a_terminal(home, "OPENAI", "sk-typed-value-2", "sk-typo-value-2")
    assert code == 1 and "the two values typed differ" in output, output
    assert SecretStore.open(home, {"SPACEBOT_MASTER_KEY": KEY_HEX}).get("OPENAI") == "sk-typed-value-1"
