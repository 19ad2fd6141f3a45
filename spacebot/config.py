"""Spacebot's configuration: one frozen struct, loaded from TOML and the environment, validated once.

Sources, later ones winning: built-in defaults → the config file (``--config``, else
``$SPACEBOT_CONFIG``, else ``$SPACEBOT_HOME/config.toml``, the only one that may be absent) →
environment variables (see :data:`ENV_VARS`). Every problem is reported, not only the first, each
naming the key, the file and the line (or the environment variable it came from).
"""

from __future__ import annotations

import enum
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

from spacebot.errors import ConfigError
from spacebot.ipc.messages import Kind, RestartPolicy
from spacebot.llm.config import FieldProblems, Key, LLMConfig, credentials_configure_llm, dotted_key
from spacebot.llm.errors import LLMConfigError
from spacebot.logs import LogFormat
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
    log_format: LogFormat = "text"
    """``text``, or ``json``: one JSON object per line (``ts``, ``level``, ``process``, ``logger``,
    ``msg``, ``exc``)."""
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
            "spacebot.procs.cortex",
            "spacebot.procs.gateway",
            "spacebot.messaging.webchat",
            "spacebot.messaging.gateway_core",
        ]
    )
    """Modules the zygote imports before it says it can fork: what the processes a (re)started
    service needs first run (memory, its cortex, the gateways), so they do not wait for the model
    SDKs."""
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
    save_attachments: bool = False
    """Also save every file people attach on a platform in ``agents/<id>/workspace/saved/`` (where
    workers can open it). Images shown to the model are kept in ``agents/<id>/attachments/`` either
    way."""
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
    secrets: list[str] = []
    """Tool secrets (``spacebot secrets set NAME --category tool``) put in the environment of every
    shell/exec program, each as the variable ``NAME``; only workers receive them."""

    def __post_init__(self) -> None:
        # Checked in the class, all at once: the loader reports each at its own key.
        found: list[tuple[Key, str]] = []
        for name in ("shell_timeout", "branch_timeout", "worker_timeout"):
            if getattr(self, name) <= 0:
                found.append(((name,), "must be > 0"))
        for name in ("output_bytes", "worker_max_turns", "branch_max_turns"):
            if getattr(self, name) < 1:
                found.append(((name,), "must be >= 1"))
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
                found.append(((name,), "must be >= 0"))
        if self.shell_timeout_max and self.shell_timeout_max < self.shell_timeout:
            found.append((("shell_timeout_max",), "must be >= shell_timeout (or 0)"))
        for name in self.secrets:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", name):
                found.append((("secrets",), f"invalid secret name {name!r} (A-Z a-z 0-9 _, 64 at most)"))
        if found:
            raise FieldProblems(found)


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


class MetricsSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The Prometheus endpoint ``GET /metrics`` (see docs/metrics.md)."""

    enabled: bool = False
    """Start ``gateway:metrics`` with ``spacebot run``."""
    host: str = "127.0.0.1"
    """Bind address; a non-loopback address requires ``allow_remote``."""
    port: int = 9464
    """TCP port (0 = any free port)."""
    allow_remote: bool = False
    """Allow a non-loopback ``host``: the endpoint has no authentication, so whoever reaches the
    port reads model names, costs and process counts."""


class WebSearchSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[tools.web_search]``: the ``web_search`` worker tool."""

    provider: Literal["", "brave", "searxng"] = ""
    """``brave`` (Brave Search API, needs ``api_key``), ``searxng`` (self-hosted, needs
    ``base_url``), or empty: the tool is not offered."""
    api_key: str = ""
    """Brave's subscription token: literal, ``env:NAME`` or ``secret:NAME``."""
    base_url: str = ""
    """The provider's address (empty: Brave's public API; required for SearXNG)."""
    timeout: float = 10.0
    """Seconds per search request."""


class WebFetchSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[tools.web_fetch]``: the ``web_fetch`` worker tool."""

    enabled: bool = True
    """Offer ``web_fetch`` to workers."""
    allow_private: bool = False
    """Allow loopback and private addresses (checked after DNS and after every redirect)."""
    max_bytes: int = 5_000_000
    """Largest response body read."""
    max_chars: int = 20_000
    """Default cap of the text returned to the model (the call may ask for less)."""
    timeout: float = 20.0
    """Seconds for the whole fetch, redirects included."""
    max_redirects: int = 5


class McpServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[tools.mcp]]`` entry: an MCP server whose tools workers offer, either a program each
    worker starts and speaks to over stdio (``command``) or a running server reached over
    streamable HTTP (``url``)."""

    name: str
    """Server name: 1-24 of a-z 0-9 _; its tools are offered as ``mcp_<name>_<tool>``."""
    command: list[str] = msgspec.field(default_factory=list)
    """The program and its arguments (no shell); give this or ``url``."""
    url: str = ""
    """The endpoint of a server speaking streamable HTTP (``http(s)://host:port/mcp``), shared by
    every worker; give this or ``command``."""
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    """HTTP headers sent to a ``url`` server (e.g. ``Authorization``): name → literal,
    ``env:NAME`` or ``secret:NAME``."""
    env: dict[str, str] = msgspec.field(default_factory=dict)
    """The server's variables beyond PATH, HOME, LANG, TERM and TMPDIR: name → literal,
    ``env:NAME`` or ``secret:NAME``."""
    cwd: str = ""
    """Working directory (relative: to the worker's workspace; empty: the workspace)."""
    timeout: float = 60.0
    """Seconds for start-up and for each tool call."""
    enabled: bool = True
    """Start it with each worker."""
    tools: list[str] = msgspec.field(default_factory=list)
    """The server's tools to offer, by the server's names (empty: all)."""


class BrowserSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[tools.browser]``: the ``browser_*`` worker tools (headless Chromium through Playwright)."""

    enabled: bool = True
    """Offer the browser tools to workers (only when ``executable`` exists and Playwright is
    installed)."""
    executable: str = "/usr/bin/chromium"
    """The Chromium (or Chrome) program; a browser is never downloaded."""
    allow_private: bool = False
    """Let the browser reach loopback and private addresses (else every request goes through an
    egress proxy that refuses them)."""
    evaluate: bool = False
    """Offer ``browser_evaluate`` (the model runs JavaScript in the page)."""
    navigation_timeout: float = 30.0
    """Seconds a navigation may take before the call fails."""
    action_timeout: float = 10.0
    """Seconds a click, typing or a snapshot may take."""
    max_chars: int = 20_000
    """Most characters of a snapshot (or of any other result) returned to the model."""


class OpenCodeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[tools.opencode]``: the ``opencode`` worker type (``spawn_worker(worker_type="opencode")``)."""

    enabled: bool = True
    """Offer the worker type (only when ``command`` is installed: ``npm install -g opencode-ai``)."""
    command: str = "opencode"
    """The OpenCode program (a name looked up in PATH, or a path)."""
    task_type: str = "coding"
    """The task type whose routed model OpenCode uses (``[llm] task_tiers``)."""
    start_timeout: float = 60.0
    """Seconds ``opencode serve`` may take to start and answer its health check."""


class ToolsSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[tools.*]``: settings of the worker tools that reach outside (docs/tools.md)."""

    web_search: WebSearchSettings = WebSearchSettings()
    web_fetch: WebFetchSettings = WebFetchSettings()
    browser: BrowserSettings = BrowserSettings()
    opencode: OpenCodeSettings = OpenCodeSettings()
    mcp: list[McpServerSettings] = msgspec.field(default_factory=list)
    """``[[tools.mcp]]``: MCP servers started with each worker (docs/tools.md)."""


class ApiSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The operator's HTTP API under ``/api/`` (see docs/api.md)."""

    enabled: bool = False
    """Start ``gateway:api`` with ``spacebot run``."""
    host: str = "127.0.0.1"
    """Bind address; a non-loopback address requires ``token``."""
    port: int = 8788
    """TCP port (0 = any free port)."""
    token: str = ""
    """Bearer token every request must present (``env:NAME`` from the environment, ``secret:NAME``
    from the secrets store); empty: none asked (loopback only)."""
    public_hosts: list[str] = msgspec.field(default_factory=list)
    """Host names (no port) the API may be reached by besides loopback; every other ``Host``
    header is refused (DNS rebinding)."""


class CortexSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[cortex]``: each agent's ``cortex:<agent>`` (memory upkeep, knowledge block, supervision;
    docs/cortex.md). Nothing periodic runs while memory is unchanged."""

    decay_interval: float = 3600.0
    """Seconds between decay passes (each only if memory changed since the previous one)."""
    prune_interval: float = 21600.0
    """Seconds between prune passes."""
    merge_interval: float = 21600.0
    """Seconds between near-duplicate merge passes."""
    association_interval: float = 600.0
    """Seconds between association passes (new memories linked to near neighbours)."""
    association_batch: int = 200
    """Most new memories one association pass examines (the rest wait for the next)."""
    association_threshold: float = 0.6
    """Cosine from which an association pass links two memories (``related_to``)."""
    run_budget: float = 120.0
    """Longest one maintenance run may take, in seconds; a run over it counts as failed."""
    circuit_threshold: int = 3
    """Maintenance failures in a row that open the circuit (no runs until it closes)."""
    circuit_open: float = 1800.0
    """Seconds the circuit stays open before maintenance is tried again."""
    knowledge_words: int = 400
    """Word budget of the knowledge block in channel and branch system prompts (0: no block)."""
    knowledge_per_type: int = 12
    """Most memories of one type considered for the block."""
    synthesis: bool = False
    """Also write a model-made summary of the block (not built yet: the block stays model-free)."""
    supervise_interval: float = 10.0
    """Seconds between supervision checks of the agent's conversations, branches and workers
    (skipped while none runs)."""
    outcome_grace: float = 30.0
    """Seconds a branch or worker may live on after its channel recorded its outcome."""
    branch_grace: float = 60.0
    """Seconds past ``[delegates] branch_timeout`` (``worker_timeout`` for workers) after which a
    branch or worker that did not end itself is stopped."""
    turn_stall: float = 600.0
    """Seconds a busy conversation may go without progress before it is restarted (0: never)."""
    max_kills_per_tick: int = 3
    """Most processes supervision ends in one check (the rest wait for the next)."""
    history_keep: int = 5000
    """Process runs kept per agent in ``process_runs`` (older ones are removed; 0: keep all)."""


PLATFORMS = ("discord", "slack", "telegram", "twitch", "webhook")
CREDENTIAL_FIELDS = ("token", "app_token", "bot_token", "refresh_token", "client_secret", "api_hash")
"""The ``[[messaging.<platform>]]`` settings that hold credentials (``env:NAME``/``secret:NAME``)."""
"""Platforms a ``[[bindings]]`` entry may name."""
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Instance names: letters, digits, ``-`` and ``_`` (they appear in process names and logs)."""


class PlatformInstance(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[messaging.<platform>]]`` entry: one bot account on one platform (docs/platforms.md)."""

    name: str = "main"
    """The instance's name, unique per platform; bindings name it in ``instance``."""
    enabled: bool = True
    """Start this instance's gateway with ``spacebot run``."""
    token: str = ""
    """Discord's bot token (and Telegram's; the webhook's bearer token): literal, ``env:NAME`` or
    ``secret:NAME``."""
    app_token: str = ""
    """Slack's app-level token (``xapp-``, for Socket Mode): literal, ``env:NAME`` or ``secret:NAME``."""
    bot_token: str = ""
    """Slack's bot token (``xoxb-``): literal, ``env:NAME`` or ``secret:NAME``."""
    api_base: str = ""
    """REST base URL override (tests, proxies); empty: the platform's."""
    gateway_url: str = ""
    """Gateway/WebSocket URL override; empty: the platform's."""
    dm_allowed_users: list[str] = msgspec.field(default_factory=list)
    """Platform user ids allowed to send the bot direct messages; empty: no direct messages."""
    require_mention: bool = True
    """In group channels, answer only messages that mention the bot or reply to it (a binding
    may override it)."""
    allow_bots: bool = False
    """Accept messages from other bots (dropped otherwise)."""
    authority: list[str] = msgspec.field(default_factory=list)
    """Platform user ids allowed to use ``/commands``."""
    history_backfill: int = 50
    """Platform messages loaded into a new conversation's history."""
    stream_edit_interval: float = 1.0
    """Seconds between two edits of a reply being streamed."""
    guild_ready_timeout: float = 2.0
    """Discord: seconds discord.py waits for more servers (``GUILD_CREATE``) after ``READY`` before
    the gateway counts as connected (discord.py's own default)."""
    channels: list[str] = msgspec.field(default_factory=list)
    """Twitch: the channels (broadcaster logins, without ``#``) the bot joins."""
    bot_name: str = ""
    """Twitch: the bot account's login, sent as ``NICK`` and matched in ``@mentions``."""
    trigger_prefix: str = ""
    """Twitch: a message starting with it (``!ask``) counts as addressed to the bot, as an
    ``@bot_name`` mention does; empty: only mentions."""
    refresh_token: str = ""
    """Twitch: OAuth refresh token (with ``client_id``/``client_secret``) to renew ``token``:
    literal, ``env:NAME`` or ``secret:NAME``; empty: no renewal."""
    client_id: str = ""
    """Twitch: the application's client id (for token renewal)."""
    client_secret: str = ""
    """Twitch: the application's client secret: literal, ``env:NAME`` or ``secret:NAME``."""
    host: str = "127.0.0.1"
    """Webhook: the address its HTTP listener binds; beyond loopback ``token`` is required."""
    port: int = 0
    """Webhook: the port its HTTP listener binds (0: any free port)."""
    callback_url: str = ""
    """Webhook: an http(s) URL every reply is POSTed to (a ``/send`` may set its own per
    conversation); empty: replies are only polled."""
    api_id: int = 0
    """Telegram: the application's api_id (my.telegram.org; MTProto needs one besides the bot token)."""
    api_hash: str = ""
    """Telegram: the application's api_hash: literal, ``env:NAME`` or ``secret:NAME``."""


class MessagingSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[messaging]``: the chat platforms' bot accounts (docs/platforms.md)."""

    discord: list[PlatformInstance] = msgspec.field(default_factory=list)
    """``[[messaging.discord]]`` instances."""
    slack: list[PlatformInstance] = msgspec.field(default_factory=list)
    """``[[messaging.slack]]`` instances."""
    webhook: list[PlatformInstance] = msgspec.field(default_factory=list)
    """``[[messaging.webhook]]`` instances (docs/webhook.md)."""
    twitch: list[PlatformInstance] = msgspec.field(default_factory=list)
    """``[[messaging.twitch]]`` instances (chat over IRC)."""
    telegram: list[PlatformInstance] = msgspec.field(default_factory=list)
    """``[[messaging.telegram]]`` instances (a bot account over MTProto)."""
    default_agent: str = ""
    """The agent for messages no binding matches; empty: such messages are dropped (and counted)."""

    def instances(self) -> list[tuple[str, PlatformInstance]]:
        """``(platform, instance)`` for every enabled instance, in config order."""
        return [
            (platform, inst) for platform in PLATFORMS for inst in getattr(self, platform) if inst.enabled
        ]


class Binding(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[bindings]]`` entry: which agent answers where (docs/platforms.md). The first entry
    that matches a message wins."""

    agent: str
    """The agent that answers what this binding matches."""
    platform: str
    """``discord``, ``slack``, ``telegram``, ``twitch`` or ``webhook``."""
    instance: str = ""
    """The ``[[messaging.<platform>]]`` instance name; empty: any instance of the platform."""
    guild: str = ""
    """Discord guild id or Slack team id; empty: any."""
    channels: list[str] = msgspec.field(default_factory=list)
    """Channel ids; empty: every channel (of ``guild``, when set). A thread matches by its own id
    or its parent channel's."""
    dms: bool = False
    """Take direct messages (still only from the instance's ``dm_allowed_users``). With neither
    ``guild`` nor ``channels`` the binding takes direct messages only."""
    require_mention: bool | None = None
    """Overrides the instance's ``require_mention`` for what this binding matches."""


class DefaultsSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[defaults]``: values jobs use when they do not set their own."""

    timezone: str = ""
    """IANA zone of cron jobs without one (``Europe/Berlin``); empty: the host's (``$TZ``,
    ``/etc/localtime``)."""
    cron_timeout: float = 600.0
    """Seconds a cron run may take when its job sets no ``timeout``."""
    cron_max_concurrent: int = 8
    """Cron runs of one agent that may run at the same time; more due at once wait their turn."""


class CronJobConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One ``[[cron]]`` entry: a job defined in config.toml (it wins over the same id defined by
    ``spacebot cron add`` or a conversation; docs/cron.md)."""

    id: str
    """Job id: 1-64 of A-Z a-z 0-9 _ -."""
    prompt: str
    """What the agent is asked to do at each run."""
    agent: str = "main"
    """The agent that runs it (one of ``agents``)."""
    cron: str = ""
    """A 5-field cron expression; exactly one of ``cron`` and ``every``."""
    every: float = 0.0
    """An interval in seconds (at least 60)."""
    timezone: str = ""
    """IANA zone; empty: ``[defaults] timezone``."""
    active_hours: str = ""
    """``HH:MM-HH:MM`` in the job's zone; may wrap past midnight."""
    run_once: bool = False
    """Run at the first due time only."""
    deliver_to: str = ""
    """Conversation id the answer is posted to (``web:<id>``, ``discord:<guild>:<channel>`` …)."""
    timeout: float = 0.0
    """Seconds a run may take (0: ``[defaults] cron_timeout``)."""
    enabled: bool = True
    """Schedule it."""


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
    metrics: MetricsSection = MetricsSection()
    """The Prometheus metrics endpoint."""
    api: ApiSection = ApiSection()
    tools: ToolsSection = ToolsSection()
    """The operator's HTTP API."""
    delegates: DelegateSection = DelegateSection()
    """Branches and workers: turn caps, time limits, command limits."""
    cortex: CortexSection = CortexSection()
    """Each agent's cortex: memory upkeep schedule, knowledge block, supervision."""
    messaging: MessagingSection = MessagingSection()
    """Chat platform instances (Discord, Slack) and the fallback agent."""
    bindings: list[Binding] = msgspec.field(default_factory=list)
    """Which agent answers on which platform, guild and channel; first match wins."""
    defaults: DefaultsSection = DefaultsSection()
    """Defaults of cron jobs (time zone, run time limit, concurrency)."""
    cron: list[CronJobConfig] = msgspec.field(default_factory=list)
    """Scheduled jobs (``[[cron]]``), each for one agent; upserted by its cortex at start (docs/cron.md)."""
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
    "SPACEBOT_LOG_FORMAT": "text | json (one JSON object per line)",
}
"""Environment variables that configure Spacebot without a file."""


def default_home(environ: Mapping[str, str]) -> Path:
    """``$SPACEBOT_HOME`` or ``~/.spacebot``, resolved once: links the operator chose (``/home``
    on some systems) are followed here, so that a link found below it later (a workspace root
    that passes through one) can only have been planted there, and is refused."""
    return Path(environ.get("SPACEBOT_HOME") or Path.home() / ".spacebot").expanduser().resolve()


def locate(explicit: str | Path | None, environ: Mapping[str, str]) -> tuple[Path, str]:
    """The config file to read and what named it: ``"--config"``, ``"SPACEBOT_CONFIG"``, or ``""`` for
    the default ``$SPACEBOT_HOME/config.toml``, the only one that may be absent."""
    if explicit:
        return Path(explicit).expanduser(), "--config"
    if environ.get("SPACEBOT_CONFIG"):
        return Path(environ["SPACEBOT_CONFIG"]).expanduser(), "SPACEBOT_CONFIG"
    return default_home(environ) / "config.toml", ""


def config_path(environ: Mapping[str, str]) -> Path:
    """Where the config file is looked for when no ``--config`` is given."""
    return locate(None, environ)[0]


def load(path: Path | None = None, environ: Mapping[str, str] | None = None, *, named_by: str = "") -> Config:
    """Load and validate the configuration; raise :class:`ConfigError` naming what is wrong.

    Args:
        path: the file; default :func:`locate`'s choice.
        environ: the environment (default ``os.environ``).
        named_by: who named ``path`` (``--config``, ``SPACEBOT_CONFIG``): such a file must exist. Only
            the default file may be absent, which means built-in defaults and the environment.

    Raises:
        ConfigProblems: every problem found, each naming its key, file and line.
        ConfigError: the file is missing (when named), unreadable or not TOML.
    """
    env = os.environ if environ is None else environ
    if path is None:
        path, named_by = locate(None, env)
    elif not named_by and env.get("SPACEBOT_CONFIG") and Path(env["SPACEBOT_CONFIG"]).expanduser() == path:
        named_by = "SPACEBOT_CONFIG"
    if not path.exists():
        if named_by:
            raise ConfigError(f"{path}: config file named by {named_by} does not exist")
        return from_dict({}, env)
    try:
        text = path.read_text(encoding="utf-8")
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return from_dict(raw, env, source=str(path), text=text)


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with the configuration."""

    key: str
    """The key, as TOML writes it (``processes.worker.grace``)."""
    where: str
    """``file:line``, ``file``, ``environment NAME`` or ``defaults and environment``."""
    message: str
    """What is wrong, and for a choice the valid values."""

    def __str__(self) -> str:
        return f"config key {self.key!r} ({self.where}): {self.message}"


class ConfigProblems(ConfigError):
    """Every problem found in one configuration; ``str()`` lists them one per line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        """The problems, in file order where known."""
        super().__init__("\n".join(str(p) for p in problems))


Found = list[tuple[Key, str]]
"""Problems collected while loading: (key, message)."""


def from_dict(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, *, source: str = "", text: str = ""
) -> Config:
    """Build a :class:`Config` from parsed TOML plus the environment; raise :class:`ConfigProblems`
    listing everything wrong (not only the first problem)."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = dict(raw)
    data.setdefault("home", str(default_home(env)))
    from_env: dict[Key, str] = {}
    runtime = data.get("runtime", {})
    if isinstance(runtime, dict):
        runtime = dict(runtime)
        for name, var in (
            ("runtime_dir", "SPACEBOT_RUNTIME_DIR"),
            ("log_level", "SPACEBOT_LOG_LEVEL"),
            ("log_format", "SPACEBOT_LOG_FORMAT"),
        ):
            if env.get(var):
                runtime[name] = env[var] if name == "runtime_dir" else env[var].lower()
                from_env["runtime", name] = f"environment {var}"
        data["runtime"] = runtime
    found: Found = []
    llm = _llm(data.pop("llm", None), env, found, from_env)
    processes = _clean(data.pop("processes", {}), dict[Kind, ProcessPolicy], ("processes",), found)
    data = _clean(data, Config, (), found)
    merged: dict[str, ProcessPolicy] = {}
    for kind in Kind:
        table = processes.get(kind.value, {}) if isinstance(processes, dict) else {}
        merged[kind.value] = msgspec.convert({**_KIND_DEFAULTS[kind], **table}, ProcessPolicy)
    config = msgspec.convert(
        {**(data if isinstance(data, dict) else {}), "processes": merged, "llm": llm, "source": source},
        Config,
        str_keys=True,
    )
    _check(config, found)
    if found:
        lines = _key_lines(text)
        found.sort(key=lambda problem: _line(problem[0], lines) or len(text))  # file order
        problems = [Problem(_key_text(key), _where(key, source, lines, from_env), msg) for key, msg in found]
        raise ConfigProblems(problems)
    return config


LLM_ENV_VARS = ("SPACEBOT_LLM_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY")
_LLM_ENV_HINT = "ANTHROPIC_API_KEY, OPENAI_API_KEY, or SPACEBOT_LLM_BASE_URL with SPACEBOT_LLM_MODEL"


def _llm(raw: object, env: Mapping[str, str], found: Found, from_env: dict[Key, str]) -> LLMConfig:
    """``[llm]`` laid over the zero-config setup from the environment (when the table names no
    providers), or that setup alone, or nothing configured (no table, no environment)."""
    # A provider key may also come as a systemd credential (LoadCredential=).
    env_llm = any(env.get(name) for name in LLM_ENV_VARS) or credentials_configure_llm(env)
    base = LLMConfig()
    if env_llm and not (isinstance(raw, dict) and "providers" in raw):
        try:
            base = LLMConfig.from_env(env)
        except LLMConfigError as exc:
            found.append((("llm",), str(exc)))
            from_env["llm",] = "environment"
            return LLMConfig()
    if raw is None:
        return base
    if not isinstance(raw, dict):
        found.append((("llm",), "must be a table"))
        return LLMConfig()
    table = dict(raw)
    if base.providers:
        table.setdefault("providers", msgspec.to_builtins(base.providers))
        for name in ("profiles", "fallbacks"):
            if name not in table:
                table[name] = getattr(base, name)
                from_env["llm", name] = "environment"
        from_env["llm", "providers"] = "environment"
    cleaned = _clean(table, LLMConfig, ("llm",), found)
    if cleaned is _DROP:
        return LLMConfig()
    llm = msgspec.convert(cleaned, LLMConfig)
    key: Key = ("llm", "profile") if "profile" in raw else ("llm",)
    if not llm.providers:
        found.append(
            (
                key,
                f"profile {llm.profile!r} has nothing to route to: no [llm.providers.<name>] table "
                f"and no model in the environment ({_LLM_ENV_HINT})",
            )
        )
    elif not llm.profiles:
        found.append(
            (
                key,
                f"profile {llm.profile!r} has nothing to route to: no [llm.profiles.{llm.profile}] table "
                "mapping light, standard and strong to 'provider/model' ids",
            )
        )
    return llm


_DROP: Any = object()
"""What :func:`_clean` returns for a value that is wrong: the parent leaves it out (default)."""


def _clean(value: Any, tp: Any, key: Key, found: Found) -> Any:
    """``value`` checked against type ``tp`` one key at a time, every problem added to ``found``.

    Wrong entries are left out (so the default applies) and checking goes on: one
    ``msgspec.convert`` of the whole file would stop at the first problem and, inside a table of
    tables, could not say which entry was wrong. Returns the cleaned value or :data:`_DROP`.
    """
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        if not isinstance(value, dict):
            found.append((key, f"must be a table, got {_toml_type(value)}"))
            return _DROP
        fields = {f.encode_name: f.type for f in msgspec.structs.fields(tp)}
        table: dict[str, Any] = {}
        for name, item in value.items():
            if name not in fields:
                found.append(((*key, name), "unknown key (see the commented config `spacebot init` writes)"))
            elif (item := _clean(item, fields[name], (*key, name), found)) is not _DROP:
                table[name] = item
        try:
            msgspec.convert(table, tp, str_keys=True)  # missing fields and __post_init__ checks
        except msgspec.ValidationError as exc:
            if isinstance(exc.__cause__, FieldProblems):
                found.extend(((*key, *sub), message) for sub, message in exc.__cause__.problems)
            else:
                found.append((key, _detail(exc, value, tp)))
            return _DROP
        return table
    if origin is dict:
        if not isinstance(value, dict):
            found.append((key, f"must be a table, got {_toml_type(value)}"))
            return _DROP
        key_type, item_type = typing.get_args(tp)
        entries: dict[str, Any] = {}
        for name, item in value.items():
            if _choices(key_type) and name not in _choices(key_type):
                found.append(((*key, name), f"unknown name {name!r} (expected one of: {_listed(key_type)})"))
            elif (item := _clean(item, item_type, (*key, name), found)) is not _DROP:
                entries[name] = item
        return entries
    if origin is list and isinstance(value, list):
        (item_type,) = typing.get_args(tp)
        if isinstance(item_type, type) and issubclass(item_type, msgspec.Struct):
            # An array of tables: each entry's problems at its own key (``bindings[1].agent``).
            items = [_clean(item, item_type, (*key, f"[{n}]"), found) for n, item in enumerate(value)]
            return _DROP if _DROP in items else items
        items = [_clean(item, item_type, key, []) for item in value]
        for number, (item, got) in enumerate(zip(value, items, strict=True), start=1):
            if got is _DROP:
                found.append((key, f"item {number} ({item!r}): " + _detail(None, item, item_type)))
        return _DROP if _DROP in items else items
    try:
        msgspec.convert(value, tp, str_keys=True)
    except msgspec.ValidationError as exc:
        found.append((key, _detail(exc, value, tp)))
        return _DROP
    return value


def _choices(tp: Any) -> list[Any]:
    """The values a Literal, an Enum or a union of them allows (empty for other types)."""
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return [member.value for member in tp]
    if typing.get_origin(tp) is Literal:
        return list(typing.get_args(tp))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [choice for arg in typing.get_args(tp) for choice in _choices(arg)]
    return []


def _listed(tp: Any) -> str:
    return ", ".join(repr(choice) for choice in _choices(tp))


_MSGSPEC_TYPES = {"object": "table", "array": "array", "str": "string", "int": "integer", "bool": "boolean"}


def _toml_type(value: Any) -> str:
    names = {dict: "a table", list: "an array", str: "a string", bool: "a boolean", int: "an integer"}
    return names.get(type(value), f"a {type(value).__name__}")


def _detail(exc: msgspec.ValidationError | None, value: Any, tp: Any) -> str:
    """msgspec's message in the words of a TOML file, with the valid values of a choice."""
    choices = _choices(tp)
    if choices and isinstance(value, str):
        return f"invalid value {value!r} (expected one of: {_listed(tp)})"
    if exc is None:
        return f"got {_toml_type(value)}"
    message = re.sub(r"\s*-\s*at\s*`\$[^`]*`", "", str(exc))
    message = re.sub(r"`([a-z]+)`", lambda m: _MSGSPEC_TYPES.get(m.group(1), m.group(1)), message)
    return message[:1].lower() + message[1:]


def _check(config: Config, found: Found) -> None:
    """Range and cross-field checks on the converted config."""
    for kind, pol in config.processes.items():
        key = ("processes", kind.value)
        if pol.heartbeat_interval <= 0:
            found.append(((*key, "heartbeat_interval"), "must be > 0"))
        if pol.heartbeat_miss_limit < 1:
            found.append(((*key, "heartbeat_miss_limit"), "must be >= 1"))
        for name in ("wall_clock_limit", "progress_limit", "grace", "flap_window", "backoff_initial"):
            if getattr(pol, name) < 0:
                found.append(((*key, name), "must be >= 0"))
    if config.runtime.max_frame_bytes < 1024:
        found.append((("runtime", "max_frame_bytes"), "must be >= 1024"))
    if config.runtime.hwm < 1:
        found.append((("runtime", "hwm"), "must be >= 1"))
    ch = config.channel
    if ch.idle_timeout < 0:
        found.append((("channel", "idle_timeout"), "must be >= 0"))
    if ch.max_turns < 1:
        found.append((("channel", "max_turns"), "must be >= 1"))
    if ch.history_messages < 1:
        found.append((("channel", "history_messages"), "must be >= 1"))
    wc = config.webchat
    if not 0 <= wc.port <= 65535:
        found.append((("webchat", "port"), "must be 0-65535"))
    if wc.max_message_bytes < 1:
        found.append((("webchat", "max_message_bytes"), "must be >= 1"))
    if wc.enabled and wc.agent not in config.agents:
        found.append((("webchat", "agent"), f"{wc.agent!r} is not one of agents {config.agents}"))
    if wc.enabled and not _is_loopback(wc.host) and not wc.token:
        found.append(
            (("webchat", "host"), f"binding to {wc.host!r} (not loopback) requires webchat.token to be set")
        )
    for host in wc.public_hosts:
        if not _HOST_NAME.fullmatch(host):
            found.append(
                (
                    ("webchat", "public_hosts"),
                    f"{host!r} is not a host name (give names like 'chat.example.com', without port)",
                )
            )
    if wc.hello_timeout <= 0:
        found.append((("webchat", "hello_timeout"), "must be > 0"))
    for name in (
        "max_connections",
        "max_connections_per_ip",
        "create_per_minute",
        "open_per_minute",
        "list_per_minute",
    ):
        if getattr(wc, name) < 1:
            found.append((("webchat", name), "must be >= 1"))
    mc = config.metrics
    if not 0 <= mc.port <= 65535:
        found.append((("metrics", "port"), "must be 0-65535"))
    if mc.enabled and not _is_loopback(mc.host) and not mc.allow_remote:
        found.append(
            (
                ("metrics", "host"),
                f"binding to {mc.host!r} (not loopback) requires metrics.allow_remote = true "
                "(the endpoint has no authentication)",
            )
        )
    ac = config.api
    if not 0 <= ac.port <= 65535:
        found.append((("api", "port"), "must be 0-65535"))
    if ac.enabled and not _is_loopback(ac.host) and not ac.token:
        found.append((("api", "host"), f"binding to {ac.host!r} (not loopback) requires api.token to be set"))
    for host in ac.public_hosts:
        if not _HOST_NAME.fullmatch(host):
            found.append(
                (("api", "public_hosts"), f"{host!r} is not a host name (give names like 'ops.example.com')")
            )
    for agent in config.agents:
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", agent):
            found.append((("agents",), f"agent id {agent!r} must be 1-64 of A-Z a-z 0-9 _ -"))
    _check_messaging(config, found)
    _check_cortex(config.cortex, found)
    _check_cron(config, found)
    _check_mcp(config.tools.mcp, found)
    browser = config.tools.browser
    for limit in ("navigation_timeout", "action_timeout", "max_chars"):
        if getattr(browser, limit) <= 0:
            found.append((("tools", "browser", limit), "must be > 0"))
    if config.tools.opencode.start_timeout <= 0:
        found.append((("tools", "opencode", "start_timeout"), "must be > 0"))
    _check_memory(config.memory, found)


def _check_memory(mem: MemoryConfig, found: Found) -> None:
    if mem.rerank_depth < 0:
        found.append((("memory", "rerank_depth"), "must be >= 0"))
    if not (mem.rerank and mem.rerank_model):
        return
    if not Path(mem.rerank_model).expanduser().is_absolute():
        found.append(
            (("memory", "rerank_model"), f"{mem.rerank_model!r} must be an absolute path (or start with ~)")
        )
        return
    from spacebot.memory.rerank import Reranker, RerankerError  # numpy: only when a model is named

    try:
        Reranker.load(mem.rerank_model)
    except RerankerError as exc:
        found.append((("memory", "rerank_model"), str(exc)))


def _check_mcp(servers: list[McpServerSettings], found: Found) -> None:
    """``[[tools.mcp]]``: names valid and unique, a command, sane timeouts and variable names."""
    seen: set[str] = set()
    for number, server in enumerate(servers, start=1):
        where = f"entry {number} ({server.name!r})"
        if not re.fullmatch(r"[a-z0-9_]{1,24}", server.name):
            found.append((("tools", "mcp"), f"{where}: name must be 1-24 of a-z 0-9 _"))
        if server.name in seen:
            found.append((("tools", "mcp"), f"{where}: name {server.name!r} appears twice"))
        seen.add(server.name)
        if server.url and server.command:
            found.append((("tools", "mcp"), f"{where}: give either command (stdio) or url (HTTP), not both"))
        elif server.url:
            scheme, _, rest = server.url.partition("://")
            if scheme not in ("http", "https") or not rest.split("/")[0]:
                found.append(
                    (("tools", "mcp"), f"{where}: url {server.url!r} is not an http:// or https:// address")
                )
        elif not server.command or not server.command[0].strip():
            found.append(
                (
                    ("tools", "mcp"),
                    f"{where}: command is empty (give the program and its arguments, or the url of "
                    "an HTTP server)",
                )
            )
        for header in server.headers:
            if not re.fullmatch(r"[A-Za-z0-9-]{1,64}", header):
                found.append((("tools", "mcp"), f"{where}: header name {header!r} is not valid"))
        if server.timeout <= 0:
            found.append((("tools", "mcp"), f"{where}: timeout must be > 0"))
        for var in server.env:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
                found.append((("tools", "mcp"), f"{where}: env name {var!r} is not a variable name"))


def _check_cron(config: Config, found: Found) -> None:
    """``[defaults]`` and ``[[cron]]``: every job parses, its agent exists, ids are unique per agent."""
    import time

    from spacebot.cron import schedule

    d = config.defaults
    if d.timezone:
        try:
            schedule.zone(d.timezone)
        except schedule.CronSpecError as exc:
            found.append((("defaults", "timezone"), str(exc)))
    if d.cron_timeout <= 0:
        found.append((("defaults", "cron_timeout"), "must be > 0"))
    if d.cron_max_concurrent < 1:
        found.append((("defaults", "cron_max_concurrent"), "must be >= 1"))
    seen: set[tuple[str, str]] = set()
    for number, job in enumerate(config.cron, start=1):
        where = f"entry {number} ({job.id!r})"
        if job.agent not in config.agents:
            found.append((("cron",), f"{where}: agent {job.agent!r} is not one of agents {config.agents}"))
        if (job.agent, job.id) in seen:
            found.append((("cron",), f"{where}: job id {job.id!r} appears twice for agent {job.agent!r}"))
        seen.add((job.agent, job.id))
        try:
            schedule.check_spec(schedule.spec_of_config(job), d.timezone, time.time())
        except schedule.CronSpecError as exc:
            found.append((("cron",), f"{where}: {exc}"))


def _check_cortex(cx: CortexSection, found: Found) -> None:
    """``[cortex]`` ranges."""
    positive = (
        "decay_interval",
        "prune_interval",
        "merge_interval",
        "association_interval",
        "run_budget",
        "supervise_interval",
    )
    for name in positive:
        if getattr(cx, name) <= 0:
            found.append((("cortex", name), "must be > 0"))
    for name in ("circuit_open", "outcome_grace", "branch_grace", "turn_stall"):
        if getattr(cx, name) < 0:
            found.append((("cortex", name), "must be >= 0"))
    for name in ("association_batch", "circuit_threshold", "knowledge_per_type", "max_kills_per_tick"):
        if getattr(cx, name) < 1:
            found.append((("cortex", name), "must be >= 1"))
    for name in ("knowledge_words", "history_keep"):
        if getattr(cx, name) < 0:
            found.append((("cortex", name), "must be >= 0"))
    if not 0.0 < cx.association_threshold <= 1.0:
        found.append((("cortex", "association_threshold"), "must be in (0, 1]"))


_PLATFORM_TOKENS = {
    "discord": ("token",),
    "slack": ("app_token", "bot_token"),
    "webhook": (),
    "twitch": ("token",),
    "telegram": ("token", "api_id", "api_hash"),
}
"""The credentials an enabled instance of each platform cannot start without."""


def _check_messaging(config: Config, found: Found) -> None:
    """``[[messaging.<platform>]]`` instances and ``[[bindings]]``; messages never show a token."""
    ms = config.messaging
    names: dict[str, set[str]] = {}
    for platform, required in _PLATFORM_TOKENS.items():
        seen = names.setdefault(platform, set())
        for n, inst in enumerate(getattr(ms, platform)):
            key: Key = ("messaging", platform, f"[{n}]")
            if not _SAFE_ID.fullmatch(inst.name):
                found.append(((*key, "name"), f"instance name {inst.name!r} must be 1-64 of A-Z a-z 0-9 _ -"))
            elif inst.name in seen:
                found.append(((*key, "name"), f"a second [[messaging.{platform}]] is named {inst.name!r}"))
            seen.add(inst.name)
            for field in required if inst.enabled else ():
                if not getattr(inst, field):
                    message = f"instance {inst.name!r} needs {field} (literal, env:NAME or secret:NAME)"
                    found.append(((*key, field), message))
            if inst.history_backfill < 0:
                found.append(((*key, "history_backfill"), "must be >= 0"))
            if inst.stream_edit_interval <= 0:
                found.append(((*key, "stream_edit_interval"), "must be > 0"))
            if inst.guild_ready_timeout < 0:
                found.append(((*key, "guild_ready_timeout"), "must be >= 0"))
            if platform == "webhook":
                _check_webhook(inst, key, found)
            if platform == "twitch":
                _check_twitch(inst, key, found)
            url = inst.gateway_url
            if platform == "telegram" and url and not re.fullmatch(r"tcp://[^/:\s]+:\d+/?", url):
                found.append(((*key, "gateway_url"), "must be tcp://host:port (a test MTProto server)"))
    if ms.default_agent and ms.default_agent not in config.agents:
        found.append(
            (("messaging", "default_agent"), f"{ms.default_agent!r} is not one of agents {config.agents}")
        )
    for n, binding in enumerate(config.bindings):
        key = ("bindings", f"[{n}]")
        if binding.agent not in config.agents:
            found.append(((*key, "agent"), f"{binding.agent!r} is not one of agents {config.agents}"))
        if binding.platform not in PLATFORMS:
            listed = ", ".join(repr(p) for p in PLATFORMS)
            message = f"invalid value {binding.platform!r} (expected one of: {listed})"
            found.append(((*key, "platform"), message))
        elif binding.instance and binding.instance not in names.get(binding.platform, set()):
            found.append(
                (
                    (*key, "instance"),
                    f"no [[messaging.{binding.platform}]] is named {binding.instance!r}",
                )
            )


def _check_webhook(inst: PlatformInstance, key: Key, found: Found) -> None:
    """A ``[[messaging.webhook]]`` instance: its listener and callback (docs/webhook.md)."""
    if not 0 <= inst.port <= 65535:
        found.append(((*key, "port"), "must be 0-65535"))
    if inst.enabled and not _is_loopback(inst.host) and not inst.token:
        message = f"binding to {inst.host!r} (not loopback) requires token (literal, env:NAME or secret:NAME)"
        found.append(((*key, "host"), message))
    if inst.callback_url and not re.match(r"https?://[^/\s]+", inst.callback_url):
        found.append(((*key, "callback_url"), "must be an http:// or https:// URL"))


_TWITCH_LOGIN = re.compile(r"[a-z0-9_]{1,25}")


def _check_twitch(inst: PlatformInstance, key: Key, found: Found) -> None:
    """A ``[[messaging.twitch]]`` instance: its login, channels, renewal and IRC address."""
    if inst.enabled and not inst.bot_name:
        found.append(((*key, "bot_name"), "required: the bot account's Twitch login"))
    elif inst.bot_name and not _TWITCH_LOGIN.fullmatch(inst.bot_name):
        found.append(((*key, "bot_name"), f"{inst.bot_name!r} is not a Twitch login (a-z 0-9 _, lowercase)"))
    if inst.enabled and not inst.channels:
        found.append(((*key, "channels"), "required: at least one channel to join"))
    for channel in inst.channels:
        if not _TWITCH_LOGIN.fullmatch(channel):
            found.append(((*key, "channels"), f"{channel!r} is not a channel login (a-z 0-9 _, no '#')"))
    renewal = [bool(inst.refresh_token), bool(inst.client_id), bool(inst.client_secret)]
    if any(renewal) and not all(renewal):
        message = "token renewal needs all of refresh_token, client_id and client_secret"
        found.append(((*key, "refresh_token"), message))
    url = inst.gateway_url
    if url and not re.fullmatch(r"ircs?://[^/:\s]+(:\d+)?/?", url):
        found.append(((*key, "gateway_url"), "must be ircs://host[:port] (or irc:// to a loopback host)"))
    elif url.startswith("irc://") and not _is_loopback(url[6:].split(":")[0].rstrip("/")):
        found.append(((*key, "gateway_url"), "plain irc:// sends the token unencrypted: only to loopback"))


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _where(key: Key, source: str, lines: dict[Key, int], from_env: dict[Key, str]) -> str:
    """Where ``key`` was set: an environment variable, else ``file:line`` (of the key or the nearest
    table above it), else the file, else nowhere (defaults)."""
    for end in range(len(key), 0, -1):
        if key[:end] in from_env:
            return from_env[key[:end]]
    if not source:
        return "defaults and environment"
    line = _line(key, lines)
    return f"{source}:{line}" if line else source


def _key_text(key: Key) -> str:
    """``key`` as TOML writes it, an entry of an array of tables as ``bindings[0]``."""
    text = ""
    for part in key:
        text += part if re.fullmatch(r"\[\d+\]", part) else ("." if text else "") + dotted_key((part,))
    return text


def _line(key: Key, lines: dict[Key, int]) -> int | None:
    """The line of ``key``, else of the nearest table or key above it that is in the file."""
    return next((lines[key[:end]] for end in range(len(key), 0, -1) if key[:end] in lines), None)


# tomllib reports no positions, and the parsers that do (tomlkit) are not dependencies; error messages
# need only the line of each table header and key, which this small scan of the text finds.
_NAME = re.compile(r"""\s*(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)')\s*""")


def _parse_key(line: str, pos: int) -> tuple[Key, int] | None:
    """The dotted key starting at ``line[pos]`` (bare or quoted names) and where it ends."""
    parts: list[str] = []
    while match := _NAME.match(line, pos):
        bare, basic, literal = match.groups()
        parts.append(bare if bare is not None else literal if basic is None else _unescape(basic))
        pos = match.end()
        if not line.startswith(".", pos):
            return tuple(parts), pos
        pos += 1
    return None


def _unescape(basic: str) -> str:
    try:
        return str(json.loads(f'"{basic}"'))  # TOML's escapes are JSON's but for \UXXXXXXXX
    except ValueError:
        return basic


def _key_lines(text: str) -> dict[Key, int]:
    """The first line of every table header and key in TOML ``text`` (keys as full paths)."""
    lines: dict[Key, int] = {}
    entries: dict[Key, int] = {}  # entries seen so far of each array of tables
    table: Key = ()
    open_string = ""  # the delimiter of a multi-line string being skipped
    for number, line in enumerate(text.splitlines(), start=1):
        if open_string:
            if line.count(open_string) % 2:
                open_string = ""
            continue
        header = re.match(r"\s*\[\[?", line)
        if header:
            parsed = _parse_key(line, header.end())
            close = "]" * (header.end() - line.index("["))
            # Only a header: `["a"],` inside a multi-line array is not one.
            if parsed and re.match(re.escape(close) + r"\s*(#.*)?$", line[parsed[1] :]):
                table = parsed[0]
                lines.setdefault(table, number)
                if close == "]]":  # the next entry of an array of tables: its keys under `[n]`
                    entries[table] = entries.get(table, -1) + 1
                    table = (*table, f"[{entries[table]}]")
                    lines[table] = number
            continue
        parsed = _parse_key(line, 0)
        if parsed and line.startswith("=", parsed[1]):
            for end in range(1, len(parsed[0]) + 1):
                lines.setdefault((*table, *parsed[0][:end]), number)
            rest = line[parsed[1] + 1 :]
            open_string = next((d for d in ('"""', "'''") if rest.count(d) % 2), "")
    return lines
