"""MCP servers as worker tools (``[[tools.mcp]]``, docs/tools.md).

Each configured server is started by the worker as a subprocess speaking MCP over stdio (the
official ``mcp`` SDK's :class:`~mcp.ClientSession` over pipes this module owns): ``initialize``,
then ``tools/list``; every tool it lists (up to :data:`MAX_TOOLS`, filtered by the entry's
``tools`` allow-list) is offered to the model as ``mcp_<server>_<tool>`` with the server's input
schema trimmed to what :mod:`spacebot.tools.schema` checks and providers accept. A call is a
``tools/call`` under the entry's ``timeout``; text content comes back as it is, images, audio and
resources as a one-line note.

The process (:mod:`spacebot.tools.mcp_session`) gets an environment made only of the base
variables (PATH, HOME = the workspace, LANG, TERM, TMPDIR) and the entry's ``env``; it runs in
its own session and dies with the worker. It is not confined by Landlock: an MCP server is a
program the operator chose, with the access it needs.

A server that stops during a call turns that call into an error naming the server, the tool and
how it ended (with the last lines of its stderr); the next call starts it again, once. Errors
the model reads never carry secret values: the worker scrubs every tool result.

A worker starts a server lazily when its ``tools/list`` answer is cached in the agent's data
directory (:mod:`spacebot.tools.mcp_cache`): the cached tools are offered and the first call
starts it. Without a cached answer the server is started with the worker, and its answer saved.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spacebot.llm.types import ToolSpec
from spacebot.tools.mcp_http import McpHttpServer
from spacebot.tools.mcp_session import McpServer, _cut, load_sdk

if TYPE_CHECKING:
    from spacebot.config import McpServerSettings
    from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.tools.mcp")

MAX_TOOLS = 32
"""Most tools offered per server; the rest are left out (with a warning)."""
DESCRIPTION_CHARS = 500
"""Longest tool description offered to the model."""
ARG_DESCRIPTION_CHARS = 200
"""Longest description of one argument."""
MAX_PROPERTIES = 32
"""Most arguments (properties) kept per object schema."""
MAX_ENUM = 64
"""Most choices kept in an ``enum``; a longer one is dropped (the server still checks it)."""
SCHEMA_DEPTH = 4
"""Nesting kept in a schema (objects in arrays in objects ...)."""
SCHEMA_CHARS = 8_000
"""Largest trimmed schema (as JSON); a tool whose schema is larger is not offered."""
NAME_CHARS = 64
"""Longest tool name providers accept."""

_UNSAFE = re.compile(r"[^a-z0-9_]+")
_SCHEMA_TYPES = ("string", "integer", "number", "boolean", "object", "array")


def sanitise(name: str) -> str:
    """``name`` in ``[a-z0-9_]``: lower case, every other run of characters one ``_``."""
    return _UNSAFE.sub("_", name.lower()).strip("_") or "tool"


def tool_name(server: str, tool: str, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """The name offered to the model, ``mcp_<server>_<tool>``, at most 64 characters, not in ``taken``."""
    base = f"mcp_{sanitise(server)}_{sanitise(tool)}"[:NAME_CHARS].rstrip("_")
    name, n = base, 2
    while name in taken:
        suffix = f"_{n}"
        name, n = base[: NAME_CHARS - len(suffix)] + suffix, n + 1
    return name


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _trim(schema: object, depth: int) -> dict[str, Any]:
    """One (sub)schema reduced to type, description, enum, bounds, items and properties."""
    if not isinstance(schema, dict):
        return {}
    # ``anyOf``/``oneOf`` with one non-null branch (pydantic's ``Optional[X]``) is that branch.
    for key in ("anyOf", "oneOf"):
        branches = schema.get(key)
        if isinstance(branches, list):
            real = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
            if len(real) == 1 and isinstance(real[0], dict):
                schema = {**real[0], **{k: v for k, v in schema.items() if k not in (key, "type")}}
                break
    out: dict[str, Any] = {}
    kind = schema.get("type")
    if isinstance(kind, list):  # ["string", "null"] -> "string"
        real_types = [t for t in kind if t != "null"]
        kind = real_types[0] if len(real_types) == 1 else None
    if isinstance(kind, str) and kind in _SCHEMA_TYPES:
        out["type"] = kind
    if isinstance(schema.get("description"), str) and schema["description"]:
        out["description"] = _cut(schema["description"], ARG_DESCRIPTION_CHARS)
    enum = schema.get("enum")
    if (
        isinstance(enum, list)
        and 0 < len(enum) <= MAX_ENUM
        and all(isinstance(e, str | int | float) for e in enum)
    ):
        out["enum"] = enum
    for bound in ("minimum", "maximum"):
        if _number(schema.get(bound)):
            out[bound] = schema[bound]
    for bound in ("minLength", "maxLength"):
        value = schema.get(bound)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            out[bound] = value
    if depth >= SCHEMA_DEPTH:
        return out
    if kind == "array" and isinstance(schema.get("items"), dict):
        out["items"] = _trim(schema["items"], depth + 1)
    if kind == "object" and isinstance(schema.get("properties"), dict):
        props: dict[str, Any] = {}
        for name, sub in schema["properties"].items():
            if len(props) >= MAX_PROPERTIES:
                break
            if isinstance(name, str) and 0 < len(name) <= 64:
                props[name] = _trim(sub, depth + 1)
        out["properties"] = props
        required = schema.get("required")
        if isinstance(required, list):
            out["required"] = [r for r in required if isinstance(r, str) and r in props]
    return out


def trim_schema(schema: object) -> dict[str, Any]:
    """A tool's input schema as offered to the model: always an object schema, only the keywords
    ``schema.check`` knows (no ``pattern``, ``$ref``, ``default``, ``title`` ...), bounded.

    Raises ``ValueError`` when even the trimmed schema is over :data:`SCHEMA_CHARS`.
    """
    out = _trim(schema, 0)
    if out.get("type") != "object":
        out = {"type": "object"}
    out.setdefault("properties", {})
    out.setdefault("required", [])
    size = len(json.dumps(out))
    if size > SCHEMA_CHARS:
        raise ValueError(f"its input schema is {size} characters after trimming (limit {SCHEMA_CHARS})")
    return out


def resolve_env(
    settings: McpServerSettings, granted: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The entry's ``env``: (variables, secret values to scrub by name, problems).

    ``env:NAME`` reads the variable (else the systemd credential), ``secret:NAME`` the granted
    store secrets; a value that cannot be had is left out and named in the problems.
    """
    return _resolve(settings.name, "env", settings.env, granted, environ)


def resolve_headers(
    settings: McpServerSettings, granted: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """The entry's HTTP ``headers``, resolved like :func:`resolve_env`.

    A header value may carry its secret after a prefix (``"Bearer secret:TOKEN"``): the part after
    the last space is resolved, the rest kept.
    """
    prefixes: dict[str, str] = {}
    raw: dict[str, str] = {}
    for name, value in settings.headers.items():
        head, _, tail = value.rpartition(" ")
        if head and tail.startswith(("env:", "secret:")):
            prefixes[name], raw[name] = head + " ", tail
        else:
            raw[name] = value
    values, known, problems = _resolve(settings.name, "headers", raw, granted, environ)
    return {name: prefixes.get(name, "") + value for name, value in values.items()}, known, problems


def _resolve(
    server: str,
    kind: str,
    values: Mapping[str, str],
    granted: Mapping[str, str],
    environ: Mapping[str, str] | None,
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    from spacebot.llm.config import key_from_env

    out: dict[str, str] = {}
    known: dict[str, str] = {}
    problems: list[str] = []
    for var, raw in values.items():
        value: str | None = raw
        if raw.startswith("env:"):
            value = key_from_env(raw[4:], environ)
            why = f"environment variable {raw[4:]!r} is not set"
        elif raw.startswith("secret:"):
            value = granted.get(raw[7:])
            why = f"secret {raw[7:]!r} was not granted by the supervisor"
        if value is None or value == "":
            if raw:
                problems.append(f"{var}: {why}")
                continue
            value = ""
        out[var] = value
        if raw.startswith(("env:", "secret:")):
            known[f"tools.mcp.{server}.{kind}.{var}"] = value
    return out, known, problems


def _references(entry: McpServerSettings) -> list[str]:
    """The ``env:``/``secret:`` references of an entry's variables and headers."""
    refs = list(entry.env.values())
    refs += [value.rpartition(" ")[2] for value in entry.headers.values()]
    return [ref for ref in refs if ref.startswith(("env:", "secret:"))]


def secret_names(servers: list[McpServerSettings]) -> list[str]:
    """The store secrets the enabled entries' ``env`` name (``secret:NAME``)."""
    return [raw[7:] for s in servers if s.enabled for raw in _references(s) if raw.startswith("secret:")]


class McpTools:
    """The MCP tools of one worker: specs offered to the model and where each call goes."""

    def __init__(self, servers: list[McpServer], known: Mapping[str, str] | None = None) -> None:
        self.servers = servers
        self.known = dict(known or {})
        """Secret values the servers were given (name → value), for the worker's scrubber."""
        self.specs: dict[str, ToolSpec] = {}
        self.routes: dict[str, tuple[McpServer, str]] = {}
        for server in servers:
            self._offer(server)

    def _offer(self, server: McpServer) -> None:
        allow = server.settings.tools
        listed = {t.name for t in server.tools}
        for missing in [name for name in allow if name not in listed]:
            log.warning("mcp server %r does not offer the allowed tool %r", server.name, missing)
        count = 0
        for tool in server.tools:
            if allow and tool.name not in allow:
                continue
            if count >= MAX_TOOLS:
                log.warning(
                    "mcp server %r lists more than %d tools: the rest are not offered", server.name, MAX_TOOLS
                )
                break
            try:
                params = trim_schema(tool.input_schema)
            except ValueError as exc:
                log.warning("mcp tool %r of server %r is not offered: %s", tool.name, server.name, exc)
                continue
            name = tool_name(server.name, tool.name, set(self.specs))
            about = _cut(" ".join((tool.description or tool.title or tool.name).split()), DESCRIPTION_CHARS)
            self.specs[name] = ToolSpec(name, f"[MCP {server.name}] {about}", params)
            self.routes[name] = (server, tool.name)
            count += 1

    async def call(self, name: str, args: dict[str, Any]) -> str:
        """Run the MCP tool offered as ``name`` with checked arguments."""
        server, tool = self.routes[name]
        return await server.call(tool, name, args)

    async def aclose(self) -> None:
        """Stop every server."""
        await asyncio.gather(*(s.close() for s in self.servers), return_exceptions=True)


async def start_servers(
    settings: list[McpServerSettings],
    workspace: Path,
    granted: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
    data: Path | None = None,
) -> McpTools:
    """The enabled servers, started at once; one that fails is logged and left out.

    With ``data`` (the agent's data directory), a server whose listing is cached there is offered
    from the cache and started by its first call; the others are started and their listings saved.
    """
    servers: list[McpServer] = []
    # A missing SDK is found without importing it (a second of work a cache hit may not need).
    if any(entry.enabled for entry in settings) and importlib.util.find_spec("mcp") is None:
        log.error("no MCP server is started: MCP servers need the mcp package: pip install mcp")
        return McpTools([])
    known: dict[str, str] = {}
    for entry in settings:
        if not entry.enabled:
            continue
        if entry.url:
            headers, secret_values, problems = resolve_headers(entry, granted or {}, environ)
            server: McpServer = McpHttpServer(entry, workspace, headers)
        else:
            env, secret_values, problems = resolve_env(entry, granted or {}, environ)
            server = McpServer(entry, workspace, env)
        for problem in problems:
            log.warning("mcp server %r starts without %s", entry.name, problem)
        known.update(secret_values)
        servers.append(server)
    to_start = servers
    if data is not None:
        hits = await asyncio.gather(*(s.use_cache(data) for s in servers))
        to_start = [s for s, hit in zip(servers, hits, strict=True) if not hit]
    results = await asyncio.gather(*(s.start() for s in to_start), return_exceptions=True)
    failed = {
        id(s) for s, outcome in zip(to_start, results, strict=True) if isinstance(outcome, BaseException)
    }
    for server, outcome in zip(to_start, results, strict=True):
        if isinstance(outcome, BaseException):
            log.warning("mcp server %r is not offered: %s", server.name, outcome)
    return McpTools([s for s in servers if id(s) not in failed], known)


async def connect(ctx: ChildContext, workspace: Path, data: Path | None = None) -> McpTools | None:
    """The worker's MCP tools as configured (``None`` when no server is enabled); listings are
    cached in ``data``, the agent's data directory (never the workspace, which tools can write)."""
    entries = [s for s in ctx.config.tools.mcp if s.enabled]
    if not entries:
        return None
    granted: dict[str, str] = {}
    names = secret_names(entries)
    if names:
        from spacebot.supervisor.secrets_service import fetch

        granted, _refused = await fetch(ctx, names)
    for entry in entries:
        for raw in _references(entry):
            if raw.startswith("env:"):
                from spacebot import logs
                from spacebot.llm.config import key_from_env

                value = key_from_env(raw[4:])
                if value:
                    logs.register_secret(value)
    return await start_servers(entries, workspace, granted, data=data)


__all__ = [
    "McpServer",
    "McpTools",
    "connect",
    "load_sdk",
    "sanitise",
    "start_servers",
    "tool_name",
    "trim_schema",
]
