"""The files ``spacebot init`` writes: a commented config, the default agent's identity, and the
secrets store's master key file when no key source exists yet."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from spacebot.agent.defaults import IDENTITY_MD, ROLE_MD, SOUL_MD

CONFIG_TOML = """\
# Spacebot configuration. Every key is optional: delete what you don't change.
# Check it with `spacebot config check`; apply changes with `spacebotctl reload` (or SIGHUP).

[runtime]
# Socket directory (mode 0700). Empty: $RUNTIME_DIRECTORY (systemd), $XDG_RUNTIME_DIR/spacebot,
# or /tmp/spacebot-<uid>.
# runtime_dir = ""
log_level = "info"            # debug | info | warning | error (changes on reload)
# log_format = "text"         # or "json" (one JSON object per line)
# max_frame_bytes = 4194304   # largest message accepted on the bus
# hwm = 10000                 # queued messages per socket before shedding

[supervisor]
# Modules the zygote imports once so that every process forks warm.
# preload = ["msgspec", "zmq", "zmq.asyncio", "psutil", "numpy",
#            "spacebot.llm.providers.anthropic", "spacebot.llm.providers.openai"]
# preload_first = ["spacebot.procs.memory", "spacebot.procs.cortex", "spacebot.procs.gateway",
#                  "spacebot.messaging.webchat", "spacebot.messaging.gateway_core"]
#                             # imported before the zygote forks anything; `preload` follows
# spawn_mode = "zygote"       # "cold" starts each process in a fresh interpreter (slow; debugging)
# monitor_interval = 0.5      # seconds between liveness checks
# shutdown_timeout = 30.0     # longest graceful shutdown before SIGKILL

# Budgets and restart policy per process kind: gateway, channel, branch, worker, memory, cortex.
# [processes.worker]
# heartbeat_interval = 2.0    # seconds between heartbeats from the child's event loop
# heartbeat_miss_limit = 3    # missed heartbeats before it counts as hung and is killed
# wall_clock_limit = 3600.0   # longest life in seconds (0 = none)
# progress_limit = 900.0      # longest busy stretch without progress (0 = none)
# grace = 5.0                 # seconds between SIGTERM and SIGKILL
# restart = "never"           # always | on-failure | never
# flap_max_restarts = 5       # restarts within flap_window before back-off
# flap_window = 60.0
# backoff_initial = 1.0       # doubled each step
# backoff_max_steps = 4       # then the process is marked failed

[webchat]                     # the web chat (docs/webchat.md)
# enabled = true
# host = "127.0.0.1"          # anything but loopback requires token
# port = 8787
# token = ""                  # or "env:SPACEBOT_WEBCHAT_TOKEN", or "secret:NAME" (the store)
# agent = "main"
# max_message_bytes = 16000

# Discord and Slack bot accounts, and which agent answers where (docs/platforms.md).
# [[messaging.discord]]
# name = "main"
# token = "secret:DISCORD_TOKEN"   # spacebot secrets set DISCORD_TOKEN
# dm_allowed_users = []            # user ids that may DM the bot; empty: no DMs
# require_mention = true           # in channels, answer only mentions of the bot and replies to it
# [[messaging.slack]]
# name = "main"
# app_token = "secret:SLACK_APP_TOKEN"   # xapp-… (Socket Mode, connections:write)
# bot_token = "secret:SLACK_BOT_TOKEN"   # xoxb-…
# [[bindings]]                     # first match wins; unmatched messages are dropped
# agent = "main"
# platform = "discord"
# guild = ""                       # a Discord guild / Slack team id; empty: any
# channels = []                    # channel ids; empty: every channel (threads match their channel)
# dms = false                      # true: this binding takes direct messages

[channel]                     # conversation processes (docs/delegation.md)
# idle_timeout = 900.0        # seconds idle before a conversation hibernates (0 = never)
# max_turns = 6               # model calls per batch of messages
# max_branches = 3            # at once, per conversation
# max_workers = 5
# retrigger_window = 0.5      # finished work gathered into one turn
# retrigger_cap = 3           # turns started by finished work per message from a person
# coalesce_debounce = 1.5     # group bursts answered as one turn
# coalesce_max_wait = 5.0
# context_window = 0          # 0 = the model's window (compaction at 80/85/95 %)

# The model (docs/llm.md). Without an [llm] section Spacebot uses, from the environment,
# SPACEBOT_LLM_BASE_URL + SPACEBOT_LLM_MODEL, else ANTHROPIC_API_KEY, else OPENAI_API_KEY.
# To configure it here, uncomment ONE of the three blocks below (with its [llm] line); keys may
# be literal, "env:NAME", "cred:NAME" (a systemd credential) or "secret:NAME" (the encrypted
# store: `spacebot secrets set NAME`, then `spacebot secrets list`).
#
# -- Anthropic --
# [llm]
# profile = "balanced"                       # eco | balanced | premium
# [llm.providers.anthropic]
# kind = "anthropic"
# api_key = "env:ANTHROPIC_API_KEY"
# [llm.profiles.balanced]
# light = "anthropic/claude-haiku-4-5"
# standard = "anthropic/claude-sonnet-4-5"
# strong = "anthropic/claude-opus-4-1"
#
# -- OpenAI --
# [llm]
# profile = "balanced"
# [llm.providers.openai]
# kind = "openai"
# api_key = "env:OPENAI_API_KEY"
# [llm.profiles.balanced]
# light = "openai/gpt-4o-mini"
# standard = "openai/gpt-4o"
# strong = "openai/gpt-4.1"
#
# -- A local OpenAI-compatible server (Ollama, llama.cpp server, vLLM) --
# [llm]
# profile = "balanced"
# [llm.providers.local]
# kind = "openai_compatible"
# base_url = "http://127.0.0.1:11434/v1"    # Ollama's default; `ollama pull qwen2.5` first
# [llm.profiles.balanced]
# light = "local/qwen2.5"
# standard = "local/qwen2.5"
# strong = "local/qwen2.5"

[metrics]                     # Prometheus /metrics (docs/metrics.md)
# enabled = false
# host = "127.0.0.1"          # anything but loopback also needs allow_remote = true
# port = 9464

[api]                         # the operator's HTTP API under /api/ (docs/api.md)
# enabled = false
# host = "127.0.0.1"          # anything but loopback also needs a token
# port = 8788
# token = ""                  # "env:NAME" or "secret:NAME" work too; sent as Authorization: Bearer …

[memory]                      # the agent's memory (docs/memory.md)
# embed_threads = 2           # ONNX threads for embeddings
# duckdb_memory_mb = 512      # DuckDB's memory limit
# duckdb_threads = 2
# max_content_bytes = 50000   # largest single memory
# vector_top_n = 200          # candidates from the vector index per recall
# bm25_top_n = 200            # candidates from full-text search per recall
# duplicate_threshold = 0.92  # similarity above which a new memory merges into an old one

[delegates]                   # branches, workers and the programs they run
# branch_timeout = 120.0
# worker_timeout = 1800.0
# shell_timeout = 60.0
# output_bytes = 64000
# cpu_seconds = 600
# address_space_mb = 4096
# secrets = []                # tool secrets (`spacebot secrets set NAME --category tool`) that
#                             # shell/exec programs get as environment variables

# [tools.web_search]          # the workers' web_search tool (docs/tools.md); no provider: not offered
# provider = "brave"          # "brave" (Brave Search API) or "searxng" (a self-hosted instance)
# api_key = "secret:BRAVE_SEARCH_KEY"   # Brave's token: literal, env:NAME or secret:NAME
# base_url = ""               # empty: Brave's public API; required for SearXNG
# timeout = 10.0
"""

KEY_FILE_WARNING = (
    "note    the key file beside the store protects only against a copy of secrets.enc, not "
    "against anyone who can read {home}; docs/security.md (Secrets) moves it to a systemd credential"
)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files and directories created inside get no group/other bits (parents made by mkdir too)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


def write_starter(home: Path, *, force: bool = False, environ: Mapping[str, str] | None = None) -> list[str]:
    """Create ``home`` with a config and agent ``main``; returns one line per file touched.

    Everything is created private (files 0600, directories 0700) whatever the caller's umask, and
    an existing ``home`` of ours that others can reach is tightened to 0700: it holds the config,
    the conversations and the memories. When no master key source exists (``environ``: default
    ``os.environ``), a key file for the secrets store is created; an existing key is never replaced,
    ``force`` or not, since it is the only way into the store.
    """
    agent = home / "agents" / "main"
    files = {
        home / "config.toml": CONFIG_TOML,
        agent / "SOUL.md": SOUL_MD,
        agent / "IDENTITY.md": IDENTITY_MD,
        agent / "ROLE.md": ROLE_MD,
    }
    lines = []
    with private_umask():
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        st = home.stat()
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(home, 0o700)
            lines.append(f"private {home} (mode {stat.S_IMODE(st.st_mode):04o} -> 0700)")
        for sub in ("data", "ingest", "workspace"):
            (agent / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
        for path, text in files.items():
            if path.exists() and not force:
                lines.append(f"kept    {path} (exists; --force overwrites)")
                continue
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            os.fchmod(fd, 0o600)  # --force over an older, wider file
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            lines.append(f"wrote   {path}")
        lines.extend(_master_key(home, os.environ if environ is None else environ))
    return lines


def _master_key(home: Path, environ: Mapping[str, str]) -> list[str]:
    """Create the key file unless a master key source exists; the lines saying what was done."""
    from spacebot.secrets import SecretsError, create_key_file, find_master_key

    try:
        found = find_master_key(home, environ)
        if found is not None:
            return [f"kept    {found[1].describe()} (the secrets store's key)"]
        store = home / "secrets.enc"
        if store.exists():  # a new key would not open it
            return [f"warning {store} exists but no master key was found; not creating a new one"]
        path = create_key_file(home)
    except SecretsError as exc:
        return [f"warning {exc}"]
    return [f"wrote   {path} (the secrets store's master key)", KEY_FILE_WARNING.format(home=home)]
