"""What each MCP server answered to ``tools/list``, kept so workers need not start it to know.

A worker must offer a server's tools (names and input schemas) in its first model request, but
most workers never call them. With a cached listing the server is not started (nor, over HTTP,
contacted) until the first call to one of its tools; without one it is started at once, as it
must be to list its tools, and the listing is saved.

One file per server, ``agents/<id>/data/mcp-tools/<server>.json``: the agent's data directory,
which a worker's tools cannot write (the workspace they can is shared with the model's shell).
The file holds the listing and the key it was made under, a SHA-256 of everything that can change
what the server lists: its command (program and arguments), ``cwd``, environment (names, and a
hash of each value: secrets are never written), ``url``, headers (likewise), ``tools`` allow-list
and the Spacebot version. A different key, a missing file or one that does not decode is a miss
(the last one logged); writes go to a temporary file renamed over the old one, so a reader never
sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import mcp.types as mt

    from spacebot.config import McpServerSettings

log = logging.getLogger("spacebot.tools.mcp")

FOLDER = "mcp-tools"
"""The cache's folder in the agent's data directory."""
FORMAT = 1
"""The file format; another number is a miss."""
WORKSPACE_VARS = ("HOME", "TMPDIR")
"""Base variables that name the workspace: left out of the key unless the entry sets them, so
``spacebot mcp list`` (in a scratch workspace) makes the key a worker makes."""


class Listed(msgspec.Struct, frozen=True):
    """One tool of a server's ``tools/list``: what is needed to offer it."""

    name: str
    """The server's name for the tool."""
    title: str | None = None
    """Its human-readable title, if any."""
    description: str | None = None
    """Its description, if any."""
    input_schema: dict[str, Any] = {}
    """Its JSON schema for arguments, as listed (trimmed only when offered)."""


class _File(msgspec.Struct, frozen=True):
    format: int
    key: str
    server: str
    tools: list[Listed]


def listed(tool: mt.Tool) -> Listed:
    """A listed tool as kept (and offered)."""
    return Listed(tool.name, tool.title, tool.description, dict(tool.input_schema))


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def cache_key(settings: McpServerSettings, values: Mapping[str, str], version: str) -> str:
    """The key of an entry's listing; ``values`` is its resolved environment (with the base
    variables) for stdio, its resolved headers for HTTP."""
    hashed = {name: _digest(value) for name, value in values.items()}
    if settings.url:
        env: dict[str, str] = {}
        headers = hashed
    else:
        env = {name: h for name, h in hashed.items() if name not in WORKSPACE_VARS or name in settings.env}
        headers = {}
    what = {
        "command": list(settings.command),
        "cwd": settings.cwd,
        "env": env,
        "url": settings.url,
        "headers": headers,
        "tools": list(settings.tools),
        "version": version,
    }
    return _digest(json.dumps(what, sort_keys=True))


class ToolCache:
    """The cached listing of one server under one key (blocking file access: call in a thread).

    Args:
        data: the agent's data directory (``agents/<id>/data``).
        server: the entry's name.
        key: :func:`cache_key` of the entry as the worker runs it.
    """

    def __init__(self, data: Path, server: str, key: str) -> None:
        self.path = data / FOLDER / f"{server}.json"
        self.server = server
        self.key = key

    def read(self) -> list[Listed] | None:
        """The listing saved under this key; ``None`` when there is none (or it is unreadable)."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning(
                "mcp server %r: its tool cache %s is unreadable (%s): a miss", self.server, self.path, exc
            )
            return None
        try:
            saved = msgspec.json.decode(raw, type=_File)
        except (msgspec.DecodeError, ValueError) as exc:
            log.warning(
                "mcp server %r: its tool cache %s is corrupt (%s): a miss", self.server, self.path, exc
            )
            return None
        if saved.format != FORMAT or saved.key != self.key or saved.server != self.server:
            log.info("mcp server %r: its settings changed since its tools were cached: a miss", self.server)
            return None
        return saved.tools

    def write(self, tools: list[Listed]) -> None:
        """Save ``tools`` under this key, atomically (a temporary file renamed over the old one)."""
        data = msgspec.json.encode(_File(FORMAT, self.key, self.server, tools))
        folder = self.path.parent
        tmp = folder / f".{self.path.name}.{secrets.token_hex(6)}.tmp"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            log.warning("mcp server %r: its tools could not be cached in %s: %s", self.server, self.path, exc)

    def drop(self) -> None:
        """Forget the listing (the server could not be started: the next worker lists it afresh)."""
        with contextlib.suppress(OSError):
            self.path.unlink()


__all__ = ["FOLDER", "Listed", "ToolCache", "cache_key", "listed"]
