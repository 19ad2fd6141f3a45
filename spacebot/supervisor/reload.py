"""What a configuration reload changes, and whether each change is in effect.

A reload swaps the supervisor's :class:`~spacebot.config.Config` for the new one, but not every
key is read again: the supervisor reads some each time it needs them (in effect at once), each
process reads the config it was started with (in effect for processes started from now on), and
a few are read once at start-up (the sockets, the fork server, the long-lived memory and gateway
processes). :func:`diff` lists the changed keys with that verdict, so ``spacebotctl reload``
does not claim more than it did.
"""

from __future__ import annotations

from collections.abc import Iterator
from fnmatch import fnmatchcase
from typing import Any

import msgspec

from spacebot.config import Config
from spacebot.ipc import ids
from spacebot.ipc.messages import ConfigChange, ReloadEffect

APPLIED, NEW, RESTART = ReloadEffect.APPLIED, ReloadEffect.NEW_PROCESSES, ReloadEffect.NEEDS_RESTART

_SERVICE = "restart the service"
_WEB = ids.gateway("web")

RULES: tuple[tuple[str, ReloadEffect, str], ...] = (
    ("home", RESTART, f"every process finds its agents' files there: {_SERVICE}"),
    ("runtime.log_level", APPLIED, "in the supervisor at once; in every other process from its next start"),
    ("runtime.log_format", RESTART, f"every process chooses its log format when it starts: {_SERVICE}"),
    ("runtime.*", RESTART, f"the sockets and the bus are set up at start-up: {_SERVICE}"),
    ("supervisor.monitor_interval", APPLIED, ""),
    ("supervisor.shutdown_timeout", APPLIED, ""),
    ("supervisor.fork_timeout", APPLIED, "from the next spawn"),
    ("supervisor.zygote_start_timeout", APPLIED, "from the next spawn"),
    ("supervisor.allow_test_targets", APPLIED, "from the next spawn"),
    ("supervisor.*", RESTART, f"read when the supervisor and its fork server start: {_SERVICE}"),
    (
        "processes.*.heartbeat_interval",
        NEW,
        "running processes keep the interval they started with (the hang check uses the new one now)",
    ),
    ("processes.*", APPLIED, "the supervisor's budget checks, kills and restarts use it now"),
    ("agents", RESTART, f"each agent's memory process is started at start-up: {_SERVICE}"),
    (
        "memory.*",
        RESTART,
        f"read by each memory process when it starts: spacebotctl kill {ids.memory('<agent>')} "
        f"--restart, or {_SERVICE}",
    ),
    (
        "llm.*",
        NEW,
        "running processes (memory, the web chat, open conversations) keep the old setup until restarted",
    ),
    ("channel.*", NEW, "running conversations keep the old values until they hibernate or restart"),
    ("webchat.enabled", RESTART, f"the web chat is started (or not) at start-up: {_SERVICE}"),
    (
        "webchat.*",
        RESTART,
        f"read by the web chat when it starts: spacebotctl kill {_WEB} --restart, or {_SERVICE}",
    ),
    ("delegates.*", NEW, "branches and workers started from now on"),
    (
        "cron*",
        RESTART,
        f"[[cron]] jobs are read by each agent's cortex when it starts: spacebotctl kill "
        f"{ids.cortex('<agent>')} --restart, or {_SERVICE}",
    ),
    (
        "defaults.*",
        RESTART,
        f"read by each agent's cortex when it starts: spacebotctl kill {ids.cortex('<agent>')} --restart, "
        f"or {_SERVICE}",
    ),
    (
        "cortex.*",
        RESTART,
        f"read by each agent's cortex when it starts: spacebotctl kill {ids.cortex('<agent>')} --restart, "
        f"or {_SERVICE}",
    ),
    (
        "messaging*",
        RESTART,
        "each platform gateway reads its [[messaging.<platform>]] entry when it starts: spacebotctl "
        f"kill gateway:<platform>:<name> --restart (a new or removed entry: {_SERVICE})",
    ),
    (
        "bindings*",
        RESTART,
        "read by each platform gateway when it starts: spacebotctl kill gateway:<platform>:<name> "
        f"--restart, or {_SERVICE}",
    ),
    ("tools.*", NEW, "workers started from now on"),
    ("metrics.enabled", RESTART, f"the metrics endpoint is started (or not) at start-up: {_SERVICE}"),
    (
        "metrics.*",
        RESTART,
        f"read by gateway:metrics when it starts: spacebotctl kill gateway:metrics --restart, or {_SERVICE}",
    ),
    ("api.enabled", RESTART, f"the HTTP API is started (or not) at start-up: {_SERVICE}"),
    (
        "api.*",
        RESTART,
        f"read by gateway:api when it starts: spacebotctl kill gateway:api --restart, or {_SERVICE}",
    ),
)
"""``(key pattern, effect, note)``, the first match wins. Each verdict follows where the key is
read: by the supervisor on every use (``processes``: ``liveness.overdue``, ``policy.decide``,
kill grace), by a child from its spawn-time config (``runtime/child.py``: log level, heartbeat
interval; ``procs/*``: its own section), or once at start-up (``Supervisor.run``, the zygote)."""

_UNKNOWN = (RESTART, f"not known to be read again while running: {_SERVICE}")
_IGNORED = frozenset({"source"})
"""Not settings: the file the config came from."""


def effect(key: str) -> tuple[ReloadEffect, str]:
    """When a change of the dotted ``key`` takes effect, and a note saying where (or what to restart)."""
    for pattern, verdict, note in RULES:
        if fnmatchcase(key, pattern):
            return verdict, note
    return _UNKNOWN


def diff(old: Config, new: Config) -> list[ConfigChange]:
    """Every key whose value differs between ``old`` and ``new``, sorted, with its effect.

    Tables are compared key by key (``processes.worker.grace``); lists and other values whole
    (``agents``, ``webchat.public_hosts``). A table added or removed counts as one key.
    """
    before, after = msgspec.to_builtins(old), msgspec.to_builtins(new)
    keys = sorted(k for k in _changed(before, after, "") if k.partition(".")[0] not in _IGNORED)
    return [ConfigChange(key, *effect(key)) for key in keys]


def _changed(a: Any, b: Any, prefix: str) -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for name in a.keys() | b.keys():
            key = f"{prefix}.{name}" if prefix else str(name)
            if name not in a or name not in b:
                yield key
            else:
                yield from _changed(a[name], b[name], key)
    elif a != b:
        yield prefix


def describe(changes: list[ConfigChange]) -> str:
    """One log field: ``key (effect), …`` or ``none``."""
    return ", ".join(f"{c.key} ({c.effect.value})" for c in changes) or "none"
