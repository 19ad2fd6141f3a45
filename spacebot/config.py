"""Spacebot's configuration: one frozen struct, loaded from TOML and the environment, validated once.

Sources, later ones winning: built-in defaults → ``$SPACEBOT_HOME/config.toml`` (if present) →
environment variables (see :data:`ENV_VARS`). Every error names the key, the file and, where it
can, the line.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from spacebot.errors import ConfigError
from spacebot.ipc.messages import Kind, RestartPolicy
from spacebot.llm.config import LLMConfig, credentials_configure_llm
from spacebot.llm.errors import LLMConfigError
from spacebot.memory.config import MemoryConfig

LogLevel = Literal["debug", "info", "warning", "error"]


class ProcessPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Budgets and restart policy for one kind of process."""

    heartbeat_interval: float = 2.0
    """Seconds between heartbeats sent from the child's event loop."""
    heartbeat_miss_limit: int = 3
    """Heartbeats that may be missed before the process counts as hung and is killed."""
    wall_clock_limit: float = 0.0
    """Longest a process may live, in seconds; 0 = no limit."""
    progress_limit: float = 0.0
    """Longest a busy process may go without reporting progress, in seconds; 0 = no limit."""
    grace: float = 5.0
    """Seconds between SIGTERM and SIGKILL when stopping it."""
    ready_timeout: float = 10.0
    """Seconds a new process has to send ``Ready``."""
    restart: RestartPolicy = "on-failure"
    """When to restart it after it exits."""
    flap_max_restarts: int = 5
    """Restarts allowed within ``flap_window`` before back-off starts."""
    flap_window: float = 60.0
    """Window, in seconds, for counting restarts."""
    backoff_initial: float = 1.0
    """First back-off delay, doubled on each further restart inside the window."""
    backoff_max_steps: int = 4
    """Back-off steps before the process is declared ``failed`` (when ``give_up`` is true)."""
    backoff_max: float = 30.0
    """Longest wait between two restarts of a flapping process, in seconds."""
    give_up: bool = True
    """Declare a flapping process ``failed`` after ``backoff_max_steps``. False for the processes
    the agent cannot work without (memory, gateways, cortex): they back off but are always
    restarted, and a start that fails (e.g. while the zygote is being replaced) is tried again."""


_KIND_DEFAULTS: dict[Kind, dict[str, Any]] = {
    Kind.GATEWAY: {"restart": "always", "give_up": False},
    Kind.CHANNEL: {"restart": "on-failure"},
    Kind.BRANCH: {"restart": "never", "wall_clock_limit": 600.0, "progress_limit": 300.0},
    Kind.WORKER: {"restart": "never", "wall_clock_limit": 3600.0, "progress_limit": 900.0},
    Kind.MEMORY: {"restart": "always", "grace": 15.0, "ready_timeout": 120.0, "give_up": False},
    Kind.CORTEX: {"restart": "always", "give_up": False},
}


class RuntimeSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where things live and how the bus behaves."""

    runtime_dir: str = ""
    """Directory for the sockets (mode 0700). Empty: ``$RUNTIME_DIRECTORY``, ``$XDG_RUNTIME_DIR/spacebot``
    or ``/tmp/spacebot-<uid>``."""
    log_level: LogLevel = "info"
    """Log level of every process; changes on reload."""
    max_frame_bytes: int = 4 * 1024 * 1024
    """Largest accepted bus frame."""
    hwm: int = 10_000
    """High-water mark (queued messages) per bus socket."""


class SupervisorSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The supervisor and its zygote."""

    preload: list[str] = msgspec.field(
        default_factory=lambda: [
            "msgspec",
            "zmq",
            "zmq.asyncio",
            "psutil",
            "numpy",
            "spacebot.llm.providers.anthropic",
            "spacebot.llm.providers.openai",
        ]
    )
    """Modules the zygote imports once so forked children start warm. They are imported after
    ``preload_first``, once the zygote already forks: one at a time, between fork requests."""
    preload_first: list[str] = msgspec.field(
        default_factory=lambda: [
            "spacebot.procs.memory",
            "spacebot.procs.gateway",
            "spacebot.messaging.webchat",
        ]
    )
    """Modules the zygote imports before it says it can fork: what the processes a (re)started
    service needs first run (memory, the gateways), so they do not wait for the model SDKs."""
    spawn_mode: Literal["zygote", "cold"] = "zygote"
    """``zygote``: fork children from the warm fork server; ``cold``: a fresh interpreter each."""
    monitor_interval: float = 0.5
    """Seconds between liveness checks of every process."""
    zygote_start_timeout: float = 60.0
    """Seconds the zygote has to import ``preload`` and say it is ready."""
    spare_zygote: bool = True
    """Keep a second zygote warm, which takes over at once when the forking one dies (else every
    start waits out a new zygote's imports, seconds on a busy machine). Costs one idle process
    (see ``bench/README.md``); off for the smallest machines."""
    shutdown_timeout: float = 30.0
    """Longest a graceful shutdown may take before everything left is SIGKILLed."""
    fork_timeout: float = 10.0
    """Seconds a ready zygote has to report a fork before the request is sent again."""
    resume_interval: float = 60.0
    """Seconds between sweeps that wake conversations holding unanswered messages (besides the
    sweeps at start-up and after a memory restart); 0 turns the periodic sweep off."""
    allow_test_targets: bool = False
    """Let spawn requests name ``spacebot.procs.testkit:*`` (misbehaving test processes); only
    test configs set it (``spacebot.supervisor.targets``)."""


class ChannelSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Conversation processes (``channel:<agent>:<conversation>``)."""

    idle_timeout: float = 900.0
    """Seconds without activity after which a conversation process hibernates (exits; it is started
    again, with its history, by the next message). 0 = never."""
    max_turns: int = 6
    """Most model calls for one batch of inbound messages (tool loops stop there)."""
    history_messages: int = 60
    """Transcript messages loaded as context when a conversation process starts."""
    turn_timeout: float = 180.0
    """Longest one model call may take before the person sees an error."""
    max_reply_chars: int = 8000
    """Longest reply delivered; longer ones are cut with a note."""
    max_branches: int = 3
    """Branches one conversation may run at once."""
    max_workers: int = 5
    """Workers one conversation may run at once."""
    retrigger_window: float = 0.5
    """Seconds to gather finished branches/workers into one turn."""
    retrigger_cap: int = 3
    """Turns started by finished work per message from a person (stops cascades)."""
    coalesce_debounce: float = 1.5
    """In group conversations, a burst of messages closer than this (seconds) is answered as one turn."""
    coalesce_max_wait: float = 5.0
    """Longest a burst is waited for before answering."""
    coalesce_min_messages: int = 2
    """Messages that make a burst (a lone message is answered at once)."""
    context_window: int = 0
    """Tokens of context the compactor manages; 0 = the model's ``context_window`` from ``[llm.models]``
    (128000 when unknown)."""


class DelegateSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Branches and workers."""

    branch_max_turns: int = 8
    """Model calls a branch may make before it must conclude."""
    branch_timeout: float = 120.0
    """Seconds a branch may think before it returns "could not conclude"."""
    worker_max_turns: int = 40
    """Model calls a worker may make."""
    worker_timeout: float = 1800.0
    """Seconds a worker may run (then: ``timed_out`` with what it had)."""
    shell_timeout: float = 60.0
    """Default seconds for one shell/exec command."""
    output_bytes: int = 64_000
    """Output kept per stream of a command; more kills it."""
    cpu_seconds: int = 600
    """RLIMIT_CPU of a command."""
    address_space_mb: int = 4096
    """RLIMIT_AS of a command, MiB."""
    open_files: int = 256
    """RLIMIT_NOFILE of a command."""
    processes: int = 512
    """RLIMIT_NPROC of a command."""
    shell_timeout_max: float = 0.0
    """Longest ``timeout`` the model may ask for (0 = ``shell_timeout``); longer asks are clamped."""
    max_file_mb: int = 1024
    """RLIMIT_FSIZE of a command: the largest file it may write, MiB (0 = unlimited)."""
    workspace_max_mb: int = 4096
    """Size cap of an agent's workspace, MiB (0 = none); over it, writes are refused."""
    network: Literal["none", "loopback-deny", "open"] = "loopback-deny"
    """Outbound TCP of commands: none; public addresses only, through an egress proxy; or open."""
    allow_unsandboxed: bool = False
    """Run shell/exec even when the native sandbox with Landlock is not available (no isolation)."""

    def __post_init__(self) -> None:
        # Checked in the class: msgspec reports a ValueError here with the section's path.
        for name in ("shell_timeout", "branch_timeout", "worker_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("output_bytes", "worker_max_turns", "branch_max_turns"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        for name in (
            "shell_timeout_max",
            "cpu_seconds",
            "address_space_mb",
            "open_files",
            "processes",
            "max_file_mb",
            "workspace_max_mb",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.shell_timeout_max and self.shell_timeout_max < self.shell_timeout:
            raise ValueError("shell_timeout_max must be >= shell_timeout (or 0)")


_HOST_NAME = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"|\[[0-9A-Fa-f:.]+\]"
)
"""A ``webchat.public_hosts`` entry: a DNS name or IPv4 address, or an IPv6 address in brackets."""


class WebchatSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The embedded web chat gateway (see docs/webchat.md)."""

    enabled: bool = True
    """Start ``gateway:webchat`` with ``spacebot run``."""
    host: str = "127.0.0.1"
    """Bind address; a non-loopback address requires ``token``."""
    port: int = 8787
    """TCP port (0 = any free port)."""
    token: str = ""
    """Shared secret every WebSocket must present (``env:NAME`` reads it from the environment)."""
    agent: str = "main"
    """The agent that answers in the web chat."""
    max_message_bytes: int = 16_000
    """Largest message a person may send."""
    history_page: int = 50
    """Messages sent when a conversation is opened."""
    public_hosts: list[str] = msgspec.field(default_factory=list)
    """Host names (no port) the page may be reached by besides loopback, e.g. behind a reverse
    proxy; every other ``Host`` header is refused (DNS rebinding)."""
    hello_timeout: float = 10.0
    """Seconds a new WebSocket has to send ``hello`` before it is closed (code 4408)."""
    max_connections: int = 400
    """Open WebSockets in all; more are refused with HTTP 503."""
    max_connections_per_ip: int = 100
    """Open WebSockets from one address (behind a proxy: the proxy's); more get HTTP 503."""
    create_per_minute: int = 30
    """``create`` frames one socket may send per minute."""
    open_per_minute: int = 120
    """``open`` frames one socket may send per minute."""
    list_per_minute: int = 60
    """``list`` (and repeated ``hello``) frames one socket may send per minute."""


class Config(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The whole configuration. Children receive it as-is."""

    home: str = ""
    """``$SPACEBOT_HOME``: config, secrets and agent data (default ``~/.spacebot``)."""
    runtime: RuntimeSection = RuntimeSection()
    """Sockets, logging and bus limits."""
    supervisor: SupervisorSection = SupervisorSection()
    """Supervisor and zygote settings."""
    processes: dict[Kind, ProcessPolicy] = msgspec.field(default_factory=dict)
    """Budgets per kind; kinds left out use their defaults."""
    agents: list[str] = msgspec.field(default_factory=lambda: ["main"])
    """Agent ids; each gets its own ``memory:<agent>`` process at start-up."""
    memory: MemoryConfig = MemoryConfig()
    """Memory engine settings (shared by every agent's memory process)."""
    llm: LLMConfig = LLMConfig()
    """Providers, models, routing and prices; from ``[llm]``, else from the environment."""
    channel: ChannelSection = ChannelSection()
    """Conversation processes."""
    webchat: WebchatSection = WebchatSection()
    """The web chat gateway."""
    delegates: DelegateSection = DelegateSection()
    """Branches and workers: turn caps, time limits, command limits."""
    source: str = ""
    """The file this was loaded from (empty when none); set by the loader."""

    def policy(self, kind: Kind) -> ProcessPolicy:
        """Budgets and restart policy for ``kind``."""
        return self.processes[kind]


ENV_VARS: dict[str, str] = {
    "SPACEBOT_HOME": "home directory (default ~/.spacebot; /var/lib/spacebot under systemd)",
    "SPACEBOT_CONFIG": "config file path (default $SPACEBOT_HOME/config.toml)",
    "SPACEBOT_RUNTIME_DIR": (
        "socket directory (default $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR/spacebot, /tmp/spacebot-UID)"
    ),
    "SPACEBOT_LOG_LEVEL": "debug | info | warning | error",
}
"""Environment variables that configure Spacebot without a file."""


def default_home(environ: Mapping[str, str]) -> Path:
    """``$SPACEBOT_HOME`` or ``~/.spacebot``, resolved once: links the operator chose (``/home``
    on some systems) are followed here, so that a link found below it later (a workspace root
    that passes through one) can only have been planted there, and is refused."""
    return Path(environ.get("SPACEBOT_HOME") or Path.home() / ".spacebot").expanduser().resolve()


def config_path(environ: Mapping[str, str]) -> Path:
    """Where the config file is looked for."""
    explicit = environ.get("SPACEBOT_CONFIG")
    return Path(explicit).expanduser() if explicit else default_home(environ) / "config.toml"


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration; raise :class:`ConfigError` naming what is wrong."""
    env = os.environ if environ is None else environ
    path = path or config_path(env)
    raw: dict[str, Any] = {}
    text = ""
    if path.exists():
        try:
            text = path.read_text()
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    elif "SPACEBOT_CONFIG" in env:
        raise ConfigError(f"{path}: config file named by SPACEBOT_CONFIG does not exist")
    return from_dict(raw, env, source=str(path) if text else "", text=text)


def from_dict(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, *, source: str = "", text: str = ""
) -> Config:
    """Build a :class:`Config` from parsed TOML plus the environment."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    data.setdefault("home", str(default_home(env)))
    runtime = dict(data.get("runtime") or {})
    if env.get("SPACEBOT_RUNTIME_DIR"):
        runtime["runtime_dir"] = env["SPACEBOT_RUNTIME_DIR"]
    if env.get("SPACEBOT_LOG_LEVEL"):
        runtime["log_level"] = env["SPACEBOT_LOG_LEVEL"].lower()
    data["runtime"] = runtime
    processes = data.get("processes") or {}
    if not isinstance(processes, dict):
        raise ConfigError(_where("processes", source, text) + ": must be a table of kinds")
    unknown = sorted(set(processes) - {k.value for k in Kind})
    if unknown:
        kinds = ", ".join(k.value for k in Kind)
        raise ConfigError(
            _where(f"processes.{unknown[0]}", source, text) + f": unknown process kind (one of {kinds})"
        )
    merged: dict[str, ProcessPolicy] = {}
    for kind in Kind:
        table = {**_KIND_DEFAULTS[kind], **(processes.get(kind.value) or {})}
        try:
            merged[kind.value] = msgspec.convert(table, ProcessPolicy)
        except msgspec.ValidationError as exc:
            raise ConfigError(_explain(exc, source, text, prefix=f"processes.{kind.value}")) from None
    data["processes"] = merged
    data["llm"] = _llm(data.get("llm"), env, source, text)
    data["source"] = source
    try:
        config = msgspec.convert(data, Config, str_keys=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, source, text)) from None
    _check(config, source, text)
    return config


LLM_ENV_VARS = ("SPACEBOT_LLM_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")


def _llm(raw: object, env: Mapping[str, str], source: str, text: str) -> LLMConfig:
    """The ``[llm]`` table if there is one, else a setup from the environment, else nothing configured."""
    try:
        if raw is not None:
            if not isinstance(raw, dict):
                raise ConfigError(_where("llm", source, text) + ": must be a table")
            return LLMConfig.from_dict(raw)
        # A provider key may also come as a systemd credential (LoadCredential=).
        if any(env.get(name) for name in LLM_ENV_VARS) or credentials_configure_llm(env):
            return LLMConfig.from_env(env)
    except LLMConfigError as exc:
        key = re.search(r"`?(llm(?:\.[A-Za-z0-9_\-/]+)+)", str(exc))
        where = _where(key.group(1), source, text) if key else (source or "environment")
        raise ConfigError(f"{where}: {exc}") from None
    return LLMConfig()


def _check(config: Config, source: str, text: str) -> None:
    for kind, pol in config.processes.items():
        key = f"processes.{kind.value}"
        if pol.heartbeat_interval <= 0:
            raise ConfigError(_where(f"{key}.heartbeat_interval", source, text) + ": must be > 0")
        if pol.heartbeat_miss_limit < 1:
            raise ConfigError(_where(f"{key}.heartbeat_miss_limit", source, text) + ": must be >= 1")
        for name in ("wall_clock_limit", "progress_limit", "grace", "flap_window", "backoff_initial"):
            if getattr(pol, name) < 0:
                raise ConfigError(_where(f"{key}.{name}", source, text) + ": must be >= 0")
    if config.runtime.max_frame_bytes < 1024:
        raise ConfigError(_where("runtime.max_frame_bytes", source, text) + ": must be >= 1024")
    if config.runtime.hwm < 1:
        raise ConfigError(_where("runtime.hwm", source, text) + ": must be >= 1")
    ch = config.channel
    if ch.idle_timeout < 0:
        raise ConfigError(_where("channel.idle_timeout", source, text) + ": must be >= 0")
    if ch.max_turns < 1:
        raise ConfigError(_where("channel.max_turns", source, text) + ": must be >= 1")
    if ch.history_messages < 1:
        raise ConfigError(_where("channel.history_messages", source, text) + ": must be >= 1")
    wc = config.webchat
    if not 0 <= wc.port <= 65535:
        raise ConfigError(_where("webchat.port", source, text) + ": must be 0-65535")
    if wc.max_message_bytes < 1:
        raise ConfigError(_where("webchat.max_message_bytes", source, text) + ": must be >= 1")
    if wc.enabled and wc.agent not in config.agents:
        raise ConfigError(
            _where("webchat.agent", source, text) + f": {wc.agent!r} is not one of agents {config.agents}"
        )
    if wc.enabled and not _is_loopback(wc.host) and not wc.token:
        raise ConfigError(
            _where("webchat.host", source, text)
            + f": binding to {wc.host!r} (not loopback) requires webchat.token to be set"
        )
    # -- [webchat] limits and public_hosts (issue #11) --
    for host in wc.public_hosts:
        if not _HOST_NAME.fullmatch(host):
            raise ConfigError(
                _where("webchat.public_hosts", source, text)
                + f": {host!r} is not a host name (give names like 'chat.example.com', without port)"
            )
    if wc.hello_timeout <= 0:
        raise ConfigError(_where("webchat.hello_timeout", source, text) + ": must be > 0")
    for name in (
        "max_connections",
        "max_connections_per_ip",
        "create_per_minute",
        "open_per_minute",
        "list_per_minute",
    ):
        if getattr(wc, name) < 1:
            raise ConfigError(_where(f"webchat.{name}", source, text) + ": must be >= 1")
    # -- end [webchat] limits --
    for agent in config.agents:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", agent):
            raise ConfigError(
                _where("agents", source, text) + f": agent id {agent!r} must be 1-64 of A-Z a-z 0-9 _ -"
            )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


_PATH_RE = re.compile(r"`\$((?:\.[A-Za-z0-9_\-]+|\[\d+\])*)`")


_UNKNOWN_RE = re.compile(r"Object contains unknown field `([^`]+)`")


def _explain(exc: msgspec.ValidationError, source: str, text: str, prefix: str = "") -> str:
    message = str(exc)
    match = _PATH_RE.search(message)
    key = re.sub(r"\[\d+\]", "", match.group(1)).lstrip(".") if match else ""
    key = f"{prefix}.{key}".strip(".") if prefix else key
    unknown = _UNKNOWN_RE.search(message)
    if unknown:
        key = f"{key}.{unknown.group(1)}".lstrip(".")
        detail = "unknown key (see the commented config written by `spacebot init`)"
    else:
        detail = _PATH_RE.sub("", message).rstrip(" -")
    return f"{_where(key, source, text)}: {detail}" if key else f"{source or 'config'}: {detail}"


def _where(key: str, source: str, text: str) -> str:
    """``key`` (file:line) for an error message; the line is found by scanning TOML tables and keys."""
    where = f"config key {key!r}"
    if not source:
        return where + " (from defaults/environment)"
    line = _find_line(key, text)
    return f"{where} ({source}:{line})" if line else f"{where} ({source})"


def _find_line(key: str, text: str) -> int | None:
    parts = key.split(".")
    table: list[str] = []
    best: int | None = None
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if line.startswith("["):
            table = [p.strip().strip('"') for p in line.strip("[]").split(".")]
            if table == parts:
                best = number
            continue
        name = line.split("=", 1)[0].strip().strip('"') if "=" in line else ""
        if name:
            full = [*table, name]
            if full == parts:
                return number
            if parts[: len(full)] == full:
                best = best or number
    return best
