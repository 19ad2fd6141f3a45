"""OpenCode as a worker type: ``opencode serve`` per workspace directory, driven over its HTTP API.

A :class:`ServerPool` keeps one ``opencode serve`` per directory on 127.0.0.1 (its port chosen by
OpenCode and read from its first line of output), started on demand, health-checked
(``GET /global/health``) before each use and restarted when it died, and killed with every process
it started when the pool closes. Each server has its own random password (HTTP basic auth), so no
other local process can drive it.

OpenCode's model is Spacebot's: :func:`model_config` routes the task type (``coding`` unless
configured otherwise) through ``[llm]`` and names the chosen model's provider; the worker hands
OpenCode a :class:`~spacebot.tools.model_relay.ModelRelay` of its own in place of the provider's
URL and key (:func:`through`), written into the ``OPENCODE_CONFIG_CONTENT`` the server starts with:
the commands OpenCode runs inherit its environment, so the key never enters it. Everything OpenCode
would fetch at run time (models.dev, updates, language servers, its plugin package) is switched
off, so it works without network access beyond the model's endpoint.

Each server runs in the tool sandbox (:func:`spacebot.tools.sandbox.start`): OpenCode and every
command it runs may write only the agent's workspace and OpenCode's state directory.

:mod:`spacebot.tools.opencode_session` drives a session on a server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import signal
import socket
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil

from spacebot.agent.identity import agent_dir
from spacebot.config import Config, OpenCodeSettings
from spacebot.ipc.messages import Kind, SpawnSpec
from spacebot.llm.config import SecretResolver
from spacebot.llm.routing import Router
from spacebot.llm.types import Request, UserMessage
from spacebot.tools import sandbox
from spacebot.tools.errors import SandboxError, ToolArgumentError, ToolError
from spacebot.tools.model_relay import ModelRelay
from spacebot.tools.workspace import Workspace

log = logging.getLogger("spacebot.opencode")

NPM_PACKAGE = "opencode-ai"
INSTALL = f"npm install -g {NPM_PACKAGE}"
"""How to install OpenCode (Node.js and npm first: ``apt-get install nodejs npm``)."""
PROVIDER_ID = "spacebot"
"""The name Spacebot's model goes by in OpenCode's config."""
USERNAME = "opencode"
"""OpenCode's basic-auth user name."""

OFFLINE_ENV = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",  # models.dev: the one model it needs is in the config
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_PROJECT_CONFIG": "1",  # a config file in the repo must not change the model
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
    "OPENCODE_PURE": "1",
}
"""Switches of everything OpenCode would download or read from outside its task at run time."""

_LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:(\d+))")


class OpenCodeError(ToolError):
    """OpenCode is missing, would not start, or its session failed; the message says which."""


def find_command(settings: OpenCodeSettings) -> str | None:
    """The OpenCode program's path, or None when it is not installed."""
    return shutil.which(settings.command)


def require(settings: OpenCodeSettings) -> str:
    """The OpenCode program's path; :class:`OpenCodeError` naming the install command when missing."""
    if not settings.enabled:
        raise OpenCodeError("the opencode worker type is switched off ([tools.opencode] enabled = false)")
    found = find_command(settings)
    if found is not None:
        return found
    node = "" if shutil.which("node") else "Node.js is not installed either (apt-get install nodejs npm); "
    raise OpenCodeError(
        f"OpenCode ({settings.command!r}) is not installed: {node}install it with `{INSTALL}` "
        "(or set [tools.opencode] command to its path)"
    )


def worker_types(settings: OpenCodeSettings) -> list[str]:
    """The worker types ``spawn_worker`` can start here: ``builtin``, and ``opencode`` when it is
    enabled and installed."""
    return ["builtin", "opencode"] if settings.enabled and find_command(settings) else ["builtin"]


def spawn_spec(config: Config, agent: str, report_to: str, args: dict[str, Any]) -> SpawnSpec:
    """The spawn request of an ``opencode`` worker for ``spawn_worker``'s ``args``, checked here so
    that the model hears at once what is wrong (a blocking call: run it in a thread).

    Raises :class:`ToolArgumentError` for another worker type, an empty or interactive task,
    OpenCode not installed, or a ``directory`` that is not a directory inside the agent's workspace.
    A conversation and a branch both start their ``opencode`` workers with it."""
    kind = args.get("worker_type")
    if kind != "opencode":
        raise ToolArgumentError(f"spawn_worker: worker_type {kind!r} is not one of 'builtin', 'opencode'")
    if not args["task"].strip():
        raise ToolArgumentError("spawn_worker: the task is empty")
    if args.get("interactive"):
        raise ToolArgumentError(
            "spawn_worker: an opencode worker is not interactive (give it the whole task at once)"
        )
    try:
        require(config.tools.opencode)
        workspace = Workspace(agent_dir(config.home, agent) / "workspace")
        where = workspace.resolve(args.get("directory") or ".")
    except ToolError as exc:
        raise ToolArgumentError(f"spawn_worker: {exc}") from None
    if not where.is_dir():
        raise ToolArgumentError(
            f"spawn_worker: directory {args.get('directory')!r} is not a directory in the workspace"
        )
    task = args["task"].strip()
    worker = {
        "agent": agent,
        "report_to": report_to,
        "task": task,
        "task_type": args.get("task_type", ""),
        "directory": workspace.relative(where),
    }
    return SpawnSpec(
        Kind.WORKER, "spacebot.procs.opencode_worker:serve", args=worker, task=task[:120], wait_ready=False
    )


# -- the model -------------------------------------------------------------------------------------


def model_config(
    config: Config,
    task: str,
    task_type: str,
    resolver: SecretResolver,
    *,
    max_steps: int = 40,
    allow_web: bool = True,
) -> dict[str, Any]:
    """OpenCode's config: Spacebot's routed model for ``task_type`` as its only provider and model,
    at most ``max_steps`` model calls per task (past them OpenCode asks the model for its answer),
    and its web tools allowed or not.

    Raises ``LLMConfigError`` when no model is configured or its key cannot be resolved."""
    llm = config.llm
    decision = Router(llm).decide(Request([UserMessage(task)]), process="worker", task=task_type)
    provider, _, model = decision.chain[0].partition("/")
    endpoint = llm.providers[provider]
    key = llm.resolve_key(provider, resolver)
    facts = llm.models.get(decision.chain[0])
    limit = {"context": facts.context_window if facts else 128_000, "output": 8192}
    web = "allow" if allow_web else "deny"
    if endpoint.kind == "anthropic":
        # Spacebot's Anthropic base URL is the SDK's (no /v1); the AI SDK's includes it.
        base = (endpoint.base_url or "https://api.anthropic.com").rstrip("/") + "/v1"
        npm = "@ai-sdk/anthropic"
    else:
        base = (endpoint.base_url or "https://api.openai.com/v1").rstrip("/")
        npm = "@ai-sdk/openai-compatible"
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "provider": {
            PROVIDER_ID: {
                "npm": npm,
                "name": "Spacebot",
                "options": {"baseURL": base, "apiKey": key or "none"},
                "models": {model: {"name": model, "limit": limit, "tool_call": True}},
            }
        },
        "enabled_providers": [PROVIDER_ID],
        "model": f"{PROVIDER_ID}/{model}",
        "small_model": f"{PROVIDER_ID}/{model}",
        "agent": {"build": {"steps": max_steps}},
        # Nobody can answer a permission prompt: what is not allowed is refused.
        "permission": {
            "edit": "allow",
            "bash": "allow",
            "webfetch": web,
            "websearch": web,
            "external_directory": "deny",
        },
    }


def model_relay(opencode_config: dict[str, Any]) -> ModelRelay:
    """A relay (not yet started) for the model of ``opencode_config`` (:func:`model_config`), so
    that OpenCode never holds the key: see :mod:`spacebot.tools.model_relay` and :func:`through`."""
    provider = opencode_config["provider"][PROVIDER_ID]
    key = provider["options"]["apiKey"]
    return ModelRelay(
        provider["options"]["baseURL"],
        None if key == "none" else key,
        anthropic=provider["npm"] == "@ai-sdk/anthropic",
    )


def through(opencode_config: dict[str, Any], relay: ModelRelay) -> dict[str, Any]:
    """``opencode_config`` with the model reached through the started ``relay``: its address and
    token in place of the provider's base URL and key."""
    changed = copy.deepcopy(opencode_config)
    changed["provider"][PROVIDER_ID]["options"] = {"baseURL": relay.url, "apiKey": relay.token}
    return changed


# -- servers ---------------------------------------------------------------------------------------


SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")
"""Where OpenCode's commands find programs (as the tool sandbox's ``PATH``): the worker's own
``PATH`` may name directories the sandbox does not let them read (a virtualenv, say)."""


class Installation(msgspec.Struct, frozen=True):
    """Where OpenCode is installed, as the sandbox needs to know it."""

    program: str
    """The program to run (``command`` found on the worker's ``PATH``)."""
    roots: list[str]
    """Directories to read besides the system's: the ``node_modules`` directory its package is
    installed in (a global npm prefix under a home directory, say), or else its program's
    directory, and the same for ``node`` (its launcher may be a Node script)."""
    bin_dirs: list[str]
    """Directories of ``opencode`` and ``node`` outside the system ``PATH``."""


def installation(command: str) -> Installation:
    """Where ``command`` (and ``node``) are installed (blocking: looks at the file system)."""
    program = shutil.which(command) or command
    roots: list[str] = []
    bin_dirs: list[str] = []
    for found in (program, shutil.which("node")):
        if not found or "/" not in found:
            continue
        where = str(Path(found).parent)
        if where not in SYSTEM_PATH:
            bin_dirs.append(where)
        real = Path(found).resolve()
        packages = [p for p in real.parents if p.name == "node_modules"]
        root = str(packages[-1] if packages else real.parent)
        if not any(root == s or root.startswith(s + "/") for s in sandbox.READ_ONLY_SYSTEM):
            roots.append(root)
    return Installation(program, sorted(set(roots)), list(dict.fromkeys(bin_dirs)))


def _prepare_state(state: Path) -> dict[str, str]:
    """OpenCode's own directories under ``state`` (never the operator's ``~/.config``), as XDG
    variables.

    The config directory is made anew each time (OpenCode cannot write it, but an older version
    of it ran unconfined): nothing in it but what is written here. OpenCode installs its plugin
    package into it in the background unless its lock file already lists it; an empty install is
    recorded so that it never reaches for the npm registry (Spacebot gives it no plugins)."""
    config = state / "config" / "opencode"
    shutil.rmtree(state / "config", ignore_errors=True)  # symlinks in it are removed, not followed
    (config / "node_modules").mkdir(parents=True)
    deps = {"@opencode-ai/plugin": "*"}
    (config / "package.json").write_text(json.dumps({"dependencies": deps}))
    lock = config / "package-lock.json"
    lock.write_text(json.dumps({"lockfileVersion": 3, "packages": {"": {"dependencies": deps}}}))
    dirs = {"XDG_CONFIG_HOME": "config", "XDG_DATA_HOME": "data", "XDG_CACHE_HOME": "cache"}
    dirs["XDG_STATE_HOME"] = "state"
    for sub in dirs.values():
        (state / sub).mkdir(parents=True, exist_ok=True)
    return {name: str(state / sub) for name, sub in dirs.items()}


class Server:
    """One running ``opencode serve``: its process, address and credentials."""

    def __init__(self, directory: Path, proc: sandbox.Program, url: str, password: str) -> None:
        self.directory = directory
        self.proc = proc
        self.url = url
        token = base64.b64encode(f"{USERNAME}:{password}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}
        """The headers that authenticate a request to this server."""
        self.drain: asyncio.Task[None] | None = None
        """Reads the server's output into the log."""

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def healthy(self, http: aiohttp.ClientSession, timeout: float = 5.0) -> bool:
        """The process runs and answers ``/global/health`` with ``healthy: true``."""
        if self.proc.returncode is not None:
            return False
        try:
            async with http.get(
                f"{self.url}/global/health", headers=self.auth, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                return resp.status == 200 and bool((await resp.json()).get("healthy"))
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return False

    async def kill(self) -> None:
        """SIGKILL the server, its process group and every process it started, and reap it.

        Only this server's tree: what left it (``setsid`` and a parent that exited) is caught by the
        worker's sweep at its end (:func:`spacebot.tools.sandbox.kill_all`)."""
        if self.proc.returncode is None:  # once reaped, its pid may belong to another process
            await asyncio.to_thread(_kill_tree, self.proc.pid)
        with contextlib.suppress(ProcessLookupError):
            await self.proc.wait()
        if self.drain is not None:
            self.drain.cancel()


WRITABLE_STATE = ("data", "cache", "state", "home", "tmp")
"""OpenCode's state directories it may write (its XDG data, cache and state, ``HOME``, ``TMPDIR``)."""

START_ATTEMPTS = 3
"""Starts of ``opencode serve`` tried when it exits before listening."""


class _ExitedEarly(OpenCodeError):
    """``opencode serve`` ended before it said where it listens."""


def _free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another program could take it before OpenCode
    does; it then fails to start and says so)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid``, its process group and its descendants (a blocking /proc walk)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # its own session and group (start_new_session)
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


class ServerPool:
    """One ``opencode serve`` per directory, for as long as the pool is open.

    ``command`` is the program, ``opencode_config`` the JSON config every server starts with,
    ``state`` where OpenCode keeps its database and caches. Each server runs in the tool sandbox
    (:func:`spacebot.tools.sandbox.start`): it, and every command its model runs, may write only
    ``workspace`` and ``state``'s :data:`WRITABLE_STATE` directories and read only those (and its
    config), the system directories and OpenCode's own
    installation — never the agent's data, Spacebot's configuration, secrets or runtime directory.
    Where files cannot be confined it is refused unless ``allow_unsandboxed``."""

    def __init__(
        self,
        command: str,
        opencode_config: dict[str, Any],
        state: Path,
        *,
        workspace: Path,
        network: sandbox.Network | None = None,
        reach: list[int] | None = None,
        start_timeout: float = 60.0,
        allow_unsandboxed: bool = False,
    ) -> None:
        self.command = command
        self.opencode_config = opencode_config
        self.state = state
        self.workspace = workspace
        self.network = network or sandbox.Network("none")
        """TCP for OpenCode and its commands, as ``[delegates] network`` says for tools: ``none``
        (only the ports below), ``loopback-deny`` (public addresses through the worker's egress
        proxy) or ``open``."""
        self.reach = list(reach or [])
        """Loopback ports it may connect to besides its own (the worker's model relay)."""
        self.start_timeout = start_timeout
        self.allow_unsandboxed = allow_unsandboxed
        self.servers: dict[Path, Server] = {}
        self.http = aiohttp.ClientSession()
        self._lock = asyncio.Lock()

    async def get(self, directory: Path) -> Server:
        """The healthy server of ``directory``, started (or restarted) when there is none."""
        directory = await asyncio.to_thread(directory.resolve)
        async with self._lock:
            server = self.servers.get(directory)
            if server is not None and await server.healthy(self.http):
                return server
            if server is not None:
                log.warning("opencode server pid=%d of %s is not healthy: restarting", server.pid, directory)
                await server.kill()
            attempt = 1
            while True:
                try:
                    started = await self._start(directory)
                    break
                except _ExitedEarly as exc:
                    if attempt == START_ATTEMPTS:
                        raise OpenCodeError(str(exc)) from None
                    # Most likely its port was taken between our choosing it and its listening.
                    log.warning("opencode serve exited before listening (attempt %d): %s", attempt, exc)
                    attempt += 1
            self.servers[directory] = started
            return started

    async def _start(self, directory: Path) -> Server:
        password = secrets.token_urlsafe(24)
        digest = hashlib.sha256(str(directory).encode()).hexdigest()[:16]
        installed = await asyncio.to_thread(installation, self.command)
        env = {
            # The system's programs (what the sandbox lets it run) and OpenCode's own.
            "PATH": ":".join(dict.fromkeys([*installed.bin_dirs, *SYSTEM_PATH])),
            "HOME": str(self.state / "home"),
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "TERM": "dumb",
            **await asyncio.to_thread(_prepare_state, self.state),
            **OFFLINE_ENV,
            "OPENCODE_CONFIG_CONTENT": json.dumps(self.opencode_config),
            "OPENCODE_SERVER_PASSWORD": password,
            "OPENCODE_DB": f"opencode-{digest}.db",  # one database per directory: no shared lock
            "TMPDIR": str(self.state / "tmp"),  # /tmp is not writable in the sandbox
        }
        env |= sandbox.proxy_env(self.network, direct="127.0.0.1,localhost")  # the relay directly
        # Its own port, chosen here: where TCP is restricted it may listen on that one port only.
        port = await asyncio.to_thread(_free_port)
        for sub in ("home", "tmp"):
            await asyncio.to_thread((self.state / sub).mkdir, parents=True, exist_ok=True)
        try:
            proc = await sandbox.start(
                [installed.program, "serve", "--hostname", "127.0.0.1", "--port", str(port)],
                cwd=directory,
                # Not its config directory: what OpenCode wrote there it would read on every later
                # start (a planted opencode.json), and this worker writes files there itself.
                writable=[self.workspace, *(self.state / sub for sub in WRITABLE_STATE)],
                env=env,
                read_only=[*sandbox.READ_ONLY_SYSTEM, *installed.roots],
                network=self.network,
                listen=port,
                reach=self.reach,
                allow_unsandboxed=self.allow_unsandboxed,
            )
        except (SandboxError, OSError) as exc:
            raise OpenCodeError(f"cannot start opencode serve in {directory}: {exc}") from None
        lines: list[str] = []
        try:
            async with asyncio.timeout(self.start_timeout):
                url = await _read_address(proc, lines)
                server = Server(directory, proc, url, password)
                if not await server.healthy(self.http, timeout=self.start_timeout):
                    raise OpenCodeError("does not answer its health check")
        except (TimeoutError, OpenCodeError) as exc:
            await Server(directory, proc, "", password).kill()
            said = " | ".join(lines[-5:]) or "nothing"
            why = f"did not start within {self.start_timeout:.0f} s" if isinstance(exc, TimeoutError) else exc
            kind = _ExitedEarly if isinstance(exc, _ExitedEarly) else OpenCodeError
            raise kind(f"opencode serve in {directory} {why} (it said: {said})") from None
        server.drain = asyncio.get_running_loop().create_task(_drain(proc), name=f"opencode-{proc.pid}")
        log.info("opencode serve pid=%d dir=%s url=%s", proc.pid, directory, url)
        return server

    async def aclose(self) -> None:
        """Kill every server (and all they started) and close the HTTP client."""
        servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            await server.kill()
        await self.http.close()


async def _read_address(proc: sandbox.Program, lines: list[str]) -> str:
    """The URL the server prints once it listens (its earlier lines kept in ``lines``)."""
    assert proc.stdout is not None
    while True:
        raw = await proc.stdout.readline()
        if not raw:
            raise _ExitedEarly(f"exited with code {await proc.wait()}")
        line = raw.decode(errors="replace").strip()
        lines.append(line)
        found = _LISTENING.search(line)
        if found:
            return found.group(1)


async def _drain(proc: sandbox.Program) -> None:
    """Read the server's output to the log, so its pipe never fills."""
    assert proc.stdout is not None
    with contextlib.suppress(Exception):
        while raw := await proc.stdout.read(65536):  # chunks, not lines: a long line must not stop it
            log.debug("opencode[%d]: %s", proc.pid, raw.decode(errors="replace").rstrip())
