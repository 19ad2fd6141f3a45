"""The newcomer's path, as the README gives it: init, check, run with the fake model, one message,
status, stop — every exit code and the key lines of output; and what trips a first run up."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from spacebot import config as config_mod
from spacebot.cli.starter import CONFIG_TOML
from spacebot.messaging.webchat_client import ChatClient

BIN = Path(sys.executable).parent


def _env(home: Path, runtime: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPACEBOT_", "ANTHROPIC_", "OPENAI_"))}
    env.update(SPACEBOT_HOME=str(home), SPACEBOT_RUNTIME_DIR=str(runtime))
    return env


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "spacebot"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ctl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "spacebotctl"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _blocks(text: str) -> dict[str, str]:
    """The commented ``[llm]`` examples of the starter config, each uncommented."""
    blocks: dict[str, str] = {}
    for m in re.finditer(r"^# -- (.+?) --\n((?:# .*\n)+)", text, flags=re.M):
        blocks[m.group(1)] = "".join(line[2:] + "\n" for line in m.group(2).splitlines())
    return blocks


def test_every_model_example_of_the_starter_config_loads(tmp_path: Path) -> None:
    blocks = _blocks(CONFIG_TOML)
    assert len(blocks) == 3, blocks.keys()
    for name, block in blocks.items():
        path = tmp_path / f"{len(name)}.toml"
        path.write_text(block)
        cfg = config_mod.load(path, {})
        assert len(cfg.llm.providers) == 1, name
        assert cfg.llm.profile in cfg.llm.profiles, name


def test_no_arguments_prints_the_whole_help(tmp_path: Path) -> None:
    done = _run(env=_env(tmp_path / "home", tmp_path / "rt"))
    assert done.returncode == 2
    assert "usage: spacebot" in done.stderr
    for command in ("run", "init", "config"):
        assert command in done.stderr
    assert "arguments are required" not in done.stderr


def test_a_taken_web_chat_port_is_said_in_one_line_and_run_fails(short_tmp: Path) -> None:
    home = short_tmp / "home"
    home.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (home / "config.toml").write_text(f"[webchat]\nport = {port}\n")
        done = _run("run", "--fake-llm", env=_env(home, short_tmp / "rt"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"web chat: port {port} is in use (by pid {os.getpid()}" in done.stderr
    assert "set [webchat] port" in done.stderr
    assert "Traceback" not in done.stderr
    assert "ready" not in done.stdout


async def test_newcomer_path(short_tmp: Path) -> None:
    home, runtime = short_tmp / "home", short_tmp / "rt"
    env = _env(home, runtime)
    init = await asyncio.to_thread(_run, "init", env=env)
    assert init.returncode == 0, init.stderr
    assert "config.toml" in init.stdout
    config = home / "config.toml"
    text = await asyncio.to_thread(config.read_text)
    assert "# port = 8787" in text
    # Any free port: tests run in parallel.
    await asyncio.to_thread(config.write_text, text.replace("# port = 8787", "port = 0", 1))
    check = await asyncio.to_thread(_run, "config", "check", env=env)
    assert check.returncode == 0, check.stderr
    assert f"config ok: {config}" in check.stdout

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "spacebot.cli.main",
        "run",
        "--fake-llm",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    out: list[str] = []
    url = ""
    try:
        async with asyncio.timeout(120):
            while not url:
                line = (await proc.stdout.readline()).decode()
                assert line, "spacebot run ended early:\n" + "".join(out)
                out.append(line)
                if m := re.search(r"web chat: (http://127\.0\.0\.1:(\d+)/)", line):
                    assert m.group(2) != "0"
                    url = m.group(1)
        banner = "".join(out)
        assert "ready; control socket" in banner
        assert re.search(r"try: \S*spacebotctl --runtime-dir \S+ status", banner)
        ctl_cmd = re.search(r"try: (\S*spacebotctl)", banner)
        assert ctl_cmd is not None
        assert ctl_cmd.group(1) == "spacebotctl" or os.access(ctl_cmd.group(1), os.X_OK)
        drain = asyncio.get_running_loop().create_task(proc.stdout.read())

        async with ChatClient(url, name="Ana") as chat:
            conv = await chat.create("first")
            await chat.open(conv)
            ack = await chat.send(conv, "hello there")
            assert ack["type"] == "ack"
            reply = await chat.wait_for(
                lambda f: (
                    f["type"] == "message"
                    and f["conversation"] == conv
                    and f["message"]["role"] == "assistant"
                ),
                timeout=60,
            )
            assert "hello there" in reply["message"]["text"]  # the fake model echoes what it was asked

        status = await asyncio.to_thread(_ctl, "status", env=env)
        assert status.returncode == 0, status.stderr
        for ident in ("memory:main", "gateway:webchat"):
            assert ident in status.stdout
        stop = await asyncio.to_thread(_ctl, "stop", env=env)
        assert stop.returncode == 0, stop.stderr
        async with asyncio.timeout(60):
            code = await proc.wait()
        assert code == 0
        rest = (await drain).decode()
        assert "Traceback" not in banner + rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def test_ctl_status_without_a_running_service_says_so(tmp_path: Path) -> None:
    done = _ctl("status", env=_env(tmp_path / "home", tmp_path / "rt"))
    assert done.returncode == 3  # "the daemon is not running", as `spacebotctl --help` lists
    assert "memory:main" not in done.stdout
    assert "tried " + str(tmp_path / "rt" / "ctl") in done.stderr


async def test_a_port_taken_later_is_one_clear_error_for_every_listener() -> None:
    from aiohttp import web

    from spacebot.errors import ConfigError
    from spacebot.messaging.ports import start_site

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runner = web.AppRunner(web.Application())
        await runner.setup()
        try:
            await start_site(runner, "127.0.0.1", port, what="metrics", section="metrics")
        except ConfigError as exc:
            text = str(exc)
        else:
            raise AssertionError("a taken port was listened on")
    assert f"metrics cannot listen on 127.0.0.1:{port}: port {port} is in use (by pid {os.getpid()}" in text
    assert "set [metrics] port (0 = any free port)" in text
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site, free = await start_site(runner, "127.0.0.1", 0, what="metrics", section="metrics")
    assert free != 0
    await site.stop()
    await runner.cleanup()


def test_spacebot_run_lifts_its_soft_open_files_limit_to_the_hard_one() -> None:
    """Under a soft limit of 1,024 (a login shell's), the supervisor would run out of descriptors
    at a few hundred live conversations: ``spacebot run`` lifts it before it starts anything."""
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(1024, hard)

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))

    code = (
        "import resource; from spacebot.cli.main import _raise_open_files; "
        "before = resource.getrlimit(resource.RLIMIT_NOFILE)[0]; _raise_open_files(); "
        "print(before, resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True
    )
    before, after = map(int, out.stdout.split())
    assert before == low
    assert after == (hard if hard != resource.RLIM_INFINITY else max(low, 1 << 20))
