"""The process types a spawn request may name, and the checks on their arguments.

Every spawn request — from ``spacebotctl``, from a child over the bus, from the supervisor's own
core list — passes :func:`check` before anything is forked. Only the entry points below exist; each
one's keyword arguments are typed here (unknown or mistyped ones are refused, not left to fail in
the child), and every argument that names an agent or a process is checked against the config:
an ``agent`` must be a configured agent id (so it can never carry ``/`` or ``..`` into a path), a
process id is a plain ``kind:name`` string. The misbehaving processes of
``spacebot.procs.testkit`` exist only when ``[supervisor] allow_test_targets = true``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgspec

from spacebot.config import Config
from spacebot.ipc.messages import Kind, SpawnSpec
from spacebot.procs.gateway import ADAPTERS as GATEWAY_ADAPTERS

AGENT_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""The agent id rule of the config (``agents``)."""
PROCESS_ID_RE = re.compile(r"[a-z]+:[A-Za-z0-9_.:-]{1,400}")
"""A bus id: ``<kind>:<name>``, no slash, no whitespace."""
TESTKIT = "spacebot.procs.testkit:"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class SpawnRefused(ValueError):
    """A spawn request that names an unknown target or a bad argument; the message says which."""


class _Args(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Base of the argument types: unknown keyword arguments are refused."""


class WorkerArgs(_Args, frozen=True):
    """``spacebot.procs.worker:serve``."""

    agent: str
    report_to: str
    task: str
    task_type: str = ""
    interactive: bool = False


class OpenCodeWorkerArgs(_Args, frozen=True):
    """``spacebot.procs.opencode_worker:serve``."""

    agent: str
    report_to: str
    task: str
    task_type: str = ""
    directory: str = ""


class BranchArgs(_Args, frozen=True):
    """``spacebot.procs.branch:serve``."""

    agent: str
    report_to: str
    conversation: str
    description: str
    system: str
    transcript: str


class CompactionArgs(_Args, frozen=True):
    """``spacebot.procs.compaction:serve``."""

    agent: str
    report_to: str
    conversation: str
    transcript: str


class ChannelArgs(_Args, frozen=True):
    """``spacebot.procs.channel:serve``."""

    agent: str
    conversation: str


class MemoryArgs(_Args, frozen=True):
    """``spacebot.procs.memory:serve``."""

    agent: str = "main"
    workers: int = 4
    ingest_every: float = 30.0


class CortexArgs(_Args, frozen=True):
    """``spacebot.procs.cortex:serve``."""

    agent: str = "main"


class GatewayArgs(_Args, frozen=True):
    """``spacebot.procs.gateway:serve``."""

    adapter: str


class PlatformArgs(_Args, frozen=True):
    """``spacebot.messaging.gateway_core:run``: one ``[[messaging.<platform>]]`` instance."""

    platform: str
    instance: str


@dataclass(frozen=True)
class Target:
    """One registered entry point: the kinds it may run as and the type of its arguments."""

    kinds: frozenset[Kind]
    args: type[_Args]


TARGETS: dict[str, Target] = {
    "spacebot.procs.worker:serve": Target(frozenset({Kind.WORKER}), WorkerArgs),
    "spacebot.procs.opencode_worker:serve": Target(frozenset({Kind.WORKER}), OpenCodeWorkerArgs),
    "spacebot.procs.compaction:serve": Target(frozenset({Kind.WORKER}), CompactionArgs),
    "spacebot.procs.branch:serve": Target(frozenset({Kind.BRANCH}), BranchArgs),
    "spacebot.procs.channel:serve": Target(frozenset({Kind.CHANNEL}), ChannelArgs),
    "spacebot.procs.memory:serve": Target(frozenset({Kind.MEMORY}), MemoryArgs),
    "spacebot.procs.cortex:serve": Target(frozenset({Kind.CORTEX}), CortexArgs),
    "spacebot.procs.gateway:serve": Target(frozenset({Kind.GATEWAY}), GatewayArgs),
    "spacebot.messaging.gateway_core:run": Target(frozenset({Kind.GATEWAY}), PlatformArgs),
}
"""Every process type Spacebot has. A new one is added here with its arguments."""


def check(spec: SpawnSpec, config: Config) -> None:
    """Raise :class:`SpawnRefused` unless ``spec`` names a registered target with valid arguments."""
    if spec.id and not PROCESS_ID_RE.fullmatch(spec.id):
        raise SpawnRefused(f"process id {spec.id!r} must be '<kind>:<name>' of A-Z a-z 0-9 _ . : -")
    if spec.id and spec.id.partition(":")[0] != spec.kind.value:
        raise SpawnRefused(f"process id {spec.id!r} must start with its kind {spec.kind.value + ':'!r}")
    if spec.target.startswith(TESTKIT):
        if not config.supervisor.allow_test_targets:
            raise SpawnRefused(
                f"target {spec.target!r} is a test process; set [supervisor] allow_test_targets = true "
                "to allow spacebot.procs.testkit:*"
            )
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", spec.target.removeprefix(TESTKIT)):
            raise SpawnRefused(f"target {spec.target!r} is not a testkit function name")
        return
    target = TARGETS.get(spec.target)
    if target is None:
        raise SpawnRefused(
            f"target {spec.target!r} is not a registered process type (known: {', '.join(TARGETS)})"
        )
    if spec.kind not in target.kinds:
        kinds = ", ".join(sorted(k.value for k in target.kinds))
        raise SpawnRefused(f"target {spec.target!r} runs as kind {kinds}, not {spec.kind.value!r}")
    try:
        args = msgspec.convert(spec.args, target.args)
    except msgspec.ValidationError as exc:
        raise SpawnRefused(f"bad arguments for {spec.target!r}: {exc}") from None
    _check_values(args, config)


def _check_values(args: _Args, config: Config) -> None:
    values: dict[str, Any] = msgspec.structs.asdict(args)
    if "agent" in values:
        agent = values["agent"]
        if not AGENT_RE.fullmatch(agent):
            raise SpawnRefused(f"agent {agent!r} is not an agent id (1-64 of A-Z a-z 0-9 _ -)")
        if agent not in config.agents:
            raise SpawnRefused(
                f"agent {agent!r} is not configured (agents: {', '.join(config.agents) or 'none'})"
            )
    if "report_to" in values and not PROCESS_ID_RE.fullmatch(values["report_to"]):
        raise SpawnRefused(f"report_to {values['report_to']!r} is not a process id")
    if "conversation" in values:
        conv = values["conversation"]
        if not conv or len(conv) > 512 or "/" in conv or "\\" in conv or _CONTROL.search(conv):
            raise SpawnRefused(
                f"conversation {conv[:80]!r} must be 1-512 characters without a slash, a backslash "
                "or control characters"
            )
    if "adapter" in values and values["adapter"] not in GATEWAY_ADAPTERS:
        raise SpawnRefused(
            f"gateway adapter {values['adapter']!r} is unknown (known: {', '.join(GATEWAY_ADAPTERS)})"
        )
    if "platform" in values:
        instances = getattr(config.messaging, values["platform"], None)
        if not isinstance(instances, list) or not any(i.name == values["instance"] for i in instances):
            raise SpawnRefused(
                f"no [[messaging.{values['platform']}]] instance named {values['instance']!r} in the config"
            )
    for name in ("workers", "ingest_every"):
        if name in values and values[name] <= 0:
            raise SpawnRefused(f"{name} must be positive, got {values[name]!r}")
