"""Run a real supervisor as a subprocess, for the test suite and the benchmarks.

It starts ``python -m spacebot.cli.main run`` with a private home and runtime directory, waits
until the control socket answers, and on exit stops it and SIGKILLs anything left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import tomli_w

from spacebot.config import SupervisorSection
from spacebot.ipc import ids
from spacebot.ipc.control_client import ControlClient
from spacebot.ipc.credentials import Credentials, operator_bus
from spacebot.ipc.messages import (
    Kind,
    ProcessInfo,
    ProcState,
    Spawned,
    SpawnSpec,
    StateChanged,
    StatusReply,
    StatusRequest,
)
from spacebot.messaging.ports import listening_port
from spacebot.paths import Endpoints

_FAST_BUDGETS: dict[str, object] = {
    "heartbeat_interval": 0.2,
    "heartbeat_miss_limit": 4,
    "grace": 1.0,
    "ready_timeout": 5.0,
    "flap_max_restarts": 2,
    "flap_window": 30.0,
    "backoff_initial": 0.1,
    "backoff_max_steps": 2,
}


def fast_config(
    agents: tuple[str, ...] = (),
    max_frame: int = 65536,
    *,
    sections: dict[str, dict[str, object]] | None = None,
    preload: list[str] | None = None,
    preload_first: list[str] | None = None,
    fast: bool = True,
    **kinds: dict[str, object],
) -> str:
    """A config with short budgets so tests see hangs and restarts quickly.

    ``fast=False`` keeps the production budgets and supervision interval instead (benchmarks of
    many processes: a heartbeat every 0.2 s from each of 1,000 processes is 5,000 messages a
    second that no deployment sends). ``kinds`` override budgets per kind, e.g.
    ``fast_config(memory={"ready_timeout": 60.0})``;
    ``sections`` adds top-level tables (``{"webchat": {"port": 0}}``; a ``supervisor`` entry is
    merged into the test supervisor settings). The web chat is off unless a ``webchat`` section is
    given.
    """
    sections = dict(sections or {})
    doc: dict[str, Any] = {
        "agents": list(agents),
        "runtime": {"log_level": "info", "max_frame_bytes": max_frame},
        "supervisor": {
            "preload": list(preload or ["msgspec", "zmq", "zmq.asyncio", "psutil"]),
            # Nothing heavy before the zygote's hello: a test's processes import what they run.
            "preload_first": list(preload_first or []),
            **({"monitor_interval": 0.1} if fast else {}),
            "shutdown_timeout": 10.0,
            "allow_test_targets": True,
            # One zygote is enough for most tests and halves their import work on a busy machine;
            # tests of the spare (and the chaos soak) turn it on.
            "spare_zygote": False,
            **sections.pop("supervisor", {}),
        },
        "processes": {
            kind.value: {**(_FAST_BUDGETS if fast else {}), **kinds.get(kind.value, {})} for kind in Kind
        },
        "webchat": {"enabled": False},
        **sections,
    }
    return tomli_w.dumps(doc)


FAST_CONFIG = fast_config()
"""The default test config: no agents (so no memory process), short budgets."""


def short_tempdir(prefix: str = "sb-") -> Path:
    """A temp dir under /tmp: ``ipc://`` paths must stay under 107 bytes."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class SupervisorProcess:
    """A ``spacebot run`` subprocess with a control client."""

    def __init__(
        self,
        root: Path,
        *,
        config_text: str = FAST_CONFIG,
        env: dict[str, str] | None = None,
        capture: bool = True,
        run_args: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.run_args = run_args
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.endpoints = Endpoints(root / "rt")
        self.config_file = self.home / "config.toml"
        self.config_file.write_text(config_text)
        self.log_file = root / "supervisor.log"
        self.env = {
            **os.environ,
            "SPACEBOT_HOME": str(self.home),
            "SPACEBOT_RUNTIME_DIR": str(self.endpoints.dir),
            "SPACEBOT_CONFIG": str(self.config_file),
            **(env or {}),
        }
        self.capture = capture
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: ControlClient | None = None
        self.seen_pids: set[int] = set()

    @property
    def pid(self) -> int:
        """The supervisor's pid."""
        assert self.proc is not None
        return self.proc.pid

    async def start(self, timeout: float = 60.0) -> None:
        """Start it (again, after a stop or a kill) and wait until the control socket answers."""
        if self.ctl is not None:  # a client of a previous run: left open, its context would block GC
            await self.ctl.close()
            self.ctl = None
        out = self.log_file.open("wb") if self.capture else None
        try:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns once forked
                [sys.executable, "-m", "spacebot.cli.main", "run", *self.run_args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
            )
        finally:
            if out is not None:
                out.close()  # the child has its own copy of the descriptor
        deadline = time.monotonic() + timeout
        probe: ControlClient | None = None
        key_seen: tuple[int, int] | None = None
        try:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"supervisor exited with {self.proc.returncode}: {self.log_tail()}")
                key = _file_id(self.endpoints.dir / "ctl.key")
                if self.endpoints.ctl_path.exists() and key is not None:
                    # After a killed run the old socket and key files stay until the new
                    # supervisor replaces them: a client made with the old key is dropped once
                    # the key file changes; otherwise the same client keeps trying (its
                    # connection and handshake may just be slow on a loaded machine).
                    if probe is None or key != key_seen:
                        if probe is not None:
                            await probe.close()
                        probe, key_seen = ControlClient(self.endpoints), key
                    try:
                        async with asyncio.timeout(10.0):
                            reply = await probe.call(StatusRequest(), returns=StatusReply, timeout=5.0)
                        if reply.ready:
                            self.ctl, probe = probe, None
                            return
                    except Exception:
                        pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"supervisor not ready within {timeout}s: {self.log_tail()}")
                await asyncio.sleep(0.05)
        finally:
            if probe is not None:
                await probe.close()

    def log_tail(self, lines: int = 40) -> str:
        """The last lines the supervisor wrote."""
        if not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def bus_credentials(self, ident: str) -> Credentials:
        """Credentials for a raw ZeroMQ socket joining the bus as ``ident`` (derived from the run's
        key, as :class:`~spacebot.ipc.bus.BusClient` does by itself)."""
        return operator_bus(self.endpoints.dir, ident)

    async def status(self) -> StatusReply:
        """``spacebotctl status`` as a struct; remembers every pid for cleanup."""
        assert self.ctl is not None
        reply = await self.ctl.call(StatusRequest(), returns=StatusReply)
        self.seen_pids.update(p.pid for p in reply.processes if p.pid and p.kind != "supervisor")
        return reply

    async def info(self, ident: str) -> ProcessInfo:
        """One row of the status table."""
        for row in (await self.status()).processes:
            if row.id == ident:
                return row
        raise KeyError(ident)

    async def wait_state(self, ident: str, state: ProcState, timeout: float) -> ProcessInfo:
        """The status row of ``ident`` once it is in ``state`` (already, or by a state event)."""
        assert self.ctl is not None
        events = await self.ctl.events(f"proc.{ident.partition(':')[0]}.{ident}.")
        try:
            if (await self.info(ident)).state is not state:
                await events.wait_for(
                    lambda e: isinstance(e.body, StateChanged) and e.body.new is state, timeout=timeout
                )
        finally:
            events.close()
        return await self.info(ident)

    async def spawn(
        self, target: str, *, kind: Kind = Kind.WORKER, timeout: float = 30.0, **kw: Any
    ) -> Spawned:
        """Spawn a child and wait until it is ready."""
        assert self.ctl is not None
        spawned = await self.ctl.call(
            SpawnSpec(kind=kind, target=target, **kw), returns=Spawned, timeout=timeout
        )
        self.seen_pids.add(spawned.pid)
        return spawned

    async def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL the supervisor and anything it left behind."""
        if self.ctl is not None:
            await self.ctl.close()
            self.ctl = None
        code = None
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    code = await asyncio.to_thread(self.proc.wait, timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    await asyncio.to_thread(self.proc.wait)
            else:
                code = self.proc.returncode
        for pid in self.seen_pids:
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        return code


class FakeLLMProcess:
    """``python -m spacebot.llm.fake`` in its own process (benchmarks: its work must not share the
    measuring loop), on a port it picks itself; ``url`` and ``openai_url`` once started."""

    def __init__(self, script: Path, ttft: float | None = None) -> None:
        self.script = script
        self.ttft = ttft
        self.proc: asyncio.subprocess.Process | None = None
        self.url = ""
        self.openai_url = ""

    async def start(self, timeout: float = 60.0) -> None:
        """Start it; ``RuntimeError`` with what it printed when it does not come up."""
        args = ["--port", "0", "--script", str(self.script)]
        if self.ttft is not None:
            args += ["--ttft", str(self.ttft)]
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "spacebot.llm.fake",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                line = (await self.proc.stdout.readline()).decode()
        except TimeoutError:
            line = ""
        # "fake-llm listening on http://host:port (OpenAI base_url: http://host:port/v1)"
        if "listening on " not in line or "OpenAI base_url: " not in line:
            err = (await self.proc.stderr.read()).decode() if self.proc.returncode is not None else ""
            await self.stop()
            raise RuntimeError(f"the fake model server did not start: {line.strip() or err.strip()!r}")
        self.url = line.split("listening on ")[1].split(" ")[0]
        self.openai_url = line.split("OpenAI base_url: ")[1].split(")")[0]

    async def stop(self) -> None:
        """Terminate it and wait."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()


def _file_id(path: Path) -> tuple[int, int] | None:
    """Inode and modification time of ``path`` (None when missing): tells a rewritten file."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def llm_table(openai_url: str) -> str:
    """An ``[llm]`` section sending every tier to one OpenAI-compatible server (the fake)."""
    tier = "fake/main"
    llm = {
        "profile": "balanced",
        "providers": {"fake": {"kind": "openai_compatible", "base_url": openai_url, "api_key": "k"}},
        "profiles": {"balanced": {"light": tier, "standard": tier, "strong": tier}},
        "retry": {"attempts_per_model": 1, "base_delay": 0.0, "max_delay": 0.1},
    }
    return "\n" + tomli_w.dumps({"llm": llm})


class ChatSystem:
    """A whole Spacebot (supervisor, memory, web chat) answering from a :class:`FakeLLM`.

    ``async with ChatSystem(root, fake) as system: chat = await system.client("Ana")``.
    ``channel`` overrides ``[channel]`` settings; ``model=False`` starts it with no model. The web
    chat binds port 0 (no port is picked in advance, so none can be taken by another test in the
    meantime); :attr:`port` and :attr:`url` are known once it has started.
    """

    def __init__(
        self,
        root: Path,
        fake: Any = None,
        *,
        channel: dict[str, object] | None = None,
        webchat: dict[str, object] | None = None,
        model: bool = True,
        sections_extra: dict[str, dict[str, object]] | None = None,
        run_args: tuple[str, ...] = (),
        fast: bool = True,
        **kinds: dict[str, object],
    ) -> None:
        self.fake = fake
        self.port = 0
        web = {"port": 0, **(webchat or {})}
        kinds.setdefault("memory", {"ready_timeout": 60.0})
        text = fast_config(
            ("main",),
            4 * 1024 * 1024,
            sections={"webchat": web, "channel": channel or {}, **(sections_extra or {})},
            preload=SupervisorSection().preload,  # the model SDKs, as in production
            preload_first=SupervisorSection().preload_first,
            fast=fast,
            **kinds,
        )
        if model and fake is not None:
            text += llm_table(fake.openai_url)
        self.sup = SupervisorProcess(
            root,
            config_text=text,
            env={"SPACEBOT_LLM_BASE_URL": "", "ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": ""},
            run_args=run_args,
        )
        self.clients: list[Any] = []

    @property
    def url(self) -> str:
        """The web chat's base URL."""
        assert self.port, "the web chat's port is known once the system has started"
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start (again, after a kill) and find the port the web chat listens on."""
        await self.sup.start()
        row = await self.sup.info(ids.gateway("web"))
        port = await asyncio.to_thread(listening_port, row.pid) if row.pid else 0
        if not port:  # the supervisor is ready only once its gateway is, so this is a failed start
            raise RuntimeError(f"the web chat is not listening ({row.state.value}): {self.sup.log_tail()}")
        self.use_port(port)

    def use_port(self, port: int) -> None:
        """Point this system and its clients at the web chat on ``port`` (a restarted gateway
        binds a new one; it announces it as ``gateway.<id>.listening``)."""
        self.port = port
        for client in self.clients:
            client.url = f"{self.url}/ws"

    async def __aenter__(self) -> ChatSystem:
        await self.start()
        return self

    async def __aexit__(self, exc_type: object, *_exc: object) -> None:
        try:
            for client in self.clients:
                await client.close()
        finally:
            await self.sup.stop()
        if exc_type is not None:  # what the processes said, for the test report
            print(self.sup.log_tail(120))

    async def client(self, name: str, **kw: Any) -> Any:
        """A connected :class:`~spacebot.messaging.webchat_client.ChatClient`."""
        from spacebot.messaging.webchat_client import ChatClient

        client = ChatClient(self.url, name=name, **kw)
        self.clients.append(client)
        await client.connect()
        return client

    async def channel_pid(self, conversation: str, agent: str = "main") -> int:
        """Pid of the conversation's process (0 when it is not running)."""
        try:
            return (await self.sup.info(ids.channel(agent, conversation))).pid
        except KeyError:
            return 0


async def eventually(
    predicate: Any, timeout: float = 20.0, interval: float = 0.05, *, what: Any = ""
) -> None:
    """Poll a cheap in-process condition (something a fake records) until it holds.

    At the deadline, ``TimeoutError`` says what was awaited: ``what`` (a string, or a function
    returning one, called then, so it can show the state seen last).
    """
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - polls state owned by another task, no event to wait on
                await asyncio.sleep(interval)
    except TimeoutError:
        detail = what() if callable(what) else what
        raise TimeoutError(f"condition still false after {timeout:g}s: {detail or predicate!r}") from None


MODEL_KEY_VARS = ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "CREDENTIALS_DIRECTORY", "RUNTIME_DIRECTORY")
"""Variables of the developer's environment a CLI test must not inherit (they change what loads)."""


class CliRun:
    """A finished ``spacebot`` command: exit code and output."""

    def __init__(self, proc: subprocess.CompletedProcess[str]) -> None:
        self.code = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out}--- stderr\n{self.err}"


def spacebot_cli(home: Path, *argv: str, stdin: str = "", **env: str) -> CliRun:
    """``python -m spacebot.cli.main ARGV`` with ``home`` as SPACEBOT_HOME, ``stdin`` piped in, and
    no ``SPACEBOT_*`` or model keys from the developer's environment (only those in ``env``)."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith("SPACEBOT_") and k not in MODEL_KEY_VARS
    }
    environ.update(SPACEBOT_HOME=str(home), SPACEBOT_RUNTIME_DIR=str(home / "run"), **env)
    proc = subprocess.run(
        [sys.executable, "-m", "spacebot.cli.main", *argv],
        env=environ,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return CliRun(proc)


async def ctl_in_thread(*argv: str) -> tuple[int, str, str]:
    """``spacebotctl ARGV`` run in-process on a thread (the loop stays free): exit code, stdout, stderr."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from spacebot.cli import ctl

    out, err = io.StringIO(), io.StringIO()

    def run() -> int:
        with redirect_stdout(out), redirect_stderr(err):
            return ctl.main(list(argv))

    code = await asyncio.to_thread(run)
    return code, out.getvalue(), err.getvalue()
