"""``spacebot mcp list``: the configured MCP servers and the tools workers would be offered.

Starts every enabled ``[[tools.mcp]]`` entry as a worker would (stdio servers in a scratch
workspace that is removed afterwards, HTTP servers connected with their headers), prints one line
per server — ✔ with its tool count, or ✘ with why it could not be used — and under it each tool
by the name the model sees (``mcp_<server>_<tool>``) with the start of its description. Exit codes:
0 every enabled server answered, 1 at least one did not, 2 a configuration error.

What each server listed is saved in every agent's tool cache (``agents/<id>/data/mcp-tools/``,
:mod:`spacebot.tools.mcp_cache`), so workers offer it without starting the server; a server that
did not answer is dropped from the caches.

``secret:NAME`` values are read from the secrets store as ``spacebot run`` would (the master key
from this environment); a value that cannot be had is named in the output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from spacebot.config import Config, McpServerSettings

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DESCRIPTION_SHOWN = 90
"""Characters of a tool's description printed in the table."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``mcp list`` to the top-level ``spacebot`` parser."""
    mcp = subparsers.add_parser(
        "mcp",
        help="the MCP servers of [[tools.mcp]] and their tools",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    msub = mcp.add_subparsers(dest="mcp_command", required=True)
    p = msub.add_parser("list", help="start each enabled server and list the tools workers are offered")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(func=handler)


def _granted(cfg: Config, entries: list[McpServerSettings]) -> tuple[dict[str, str], list[str]]:
    """The store secrets the entries name, and a problem line for each that cannot be read."""
    from spacebot.secrets import SecretsError, SecretStore
    from spacebot.tools.mcp_tools import secret_names

    names = secret_names(entries)
    if not names:
        return {}, []
    try:
        store = SecretStore.open(Path(cfg.home), os.environ)
    except SecretsError as exc:
        return {}, [f"the secrets store does not open ({exc}): secret: values are left out"]
    granted: dict[str, str] = {}
    for name in names:
        value = store.get(name)
        if value is not None:
            granted[name] = value
    return granted, []


def _save(cfg: Config, servers: list[Any], results: list[Any]) -> None:
    """Refresh the agents' tool caches with what was listed (blocking: run in a thread)."""
    from spacebot.agent.identity import agent_dir
    from spacebot.tools.mcp_cache import ToolCache

    for agent in cfg.agents:
        data = agent_dir(cfg.home, agent) / "data"
        if not data.is_dir():  # an agent that never ran: nothing of it is created here
            continue
        for server, result in zip(servers, results, strict=True):
            cache = ToolCache(data, server.name, server.cache_key())
            if isinstance(result, BaseException) or server.live is None:
                cache.drop()
            else:
                cache.write(server.live)


async def survey(cfg: Config) -> dict[str, Any]:
    """Start each enabled entry and describe it: ``{"servers": [{name, transport, ok, error, tools}]}``."""
    from spacebot.tools.errors import ToolError
    from spacebot.tools.mcp_http import McpHttpServer
    from spacebot.tools.mcp_session import McpServer
    from spacebot.tools.mcp_tools import McpTools, load_sdk, resolve_env, resolve_headers

    entries = [e for e in cfg.tools.mcp if e.enabled]
    granted, problems = _granted(cfg, entries)
    out: dict[str, Any] = {"servers": [], "problems": problems}
    if not entries:
        return out
    await load_sdk()
    with tempfile.TemporaryDirectory(prefix="spacebot-mcp-") as scratch:
        workspace = Path(scratch)
        servers: list[McpServer] = []
        missing: dict[str, list[str]] = {}
        for entry in entries:
            if entry.url:
                headers, _known, lacking = resolve_headers(entry, granted)
                servers.append(McpHttpServer(entry, workspace, headers))
            else:
                env, _known, lacking = resolve_env(entry, granted)
                servers.append(McpServer(entry, workspace, env))
            missing[entry.name] = lacking
        results = await asyncio.gather(*(s.start() for s in servers), return_exceptions=True)
        started = [s for s, r in zip(servers, results, strict=True) if not isinstance(r, BaseException)]
        offered = McpTools(started)
        await asyncio.to_thread(_save, cfg, servers, results)
        try:
            for server, result in zip(servers, results, strict=True):
                entry = server.settings
                row: dict[str, Any] = {
                    "name": entry.name,
                    "transport": "http" if entry.url else "stdio",
                    "where": entry.url or " ".join(entry.command),
                    "ok": not isinstance(result, BaseException),
                    "error": "",
                    "missing": missing[entry.name],
                    "tools": [],
                }
                if isinstance(result, ToolError):
                    row["error"] = str(result)
                elif isinstance(result, BaseException):
                    row["error"] = f"{type(result).__name__}: {result}"
                else:
                    row["tools"] = [
                        {"name": name, "tool": tool, "description": offered.specs[name].description}
                        for name, (owner, tool) in offered.routes.items()
                        if owner is server
                    ]
                    row["listed"] = len(server.tools)
                out["servers"].append(row)
        finally:
            await offered.aclose()
            await asyncio.gather(*(s.close() for s in servers), return_exceptions=True)
    return out


def _print(found: dict[str, Any]) -> None:
    for problem in found["problems"]:
        print(f"! {problem}")
    if not found["servers"]:
        print("no MCP server is configured: add a [[tools.mcp]] entry (docs/tools.md)")
    for row in found["servers"]:
        mark = "✔" if row["ok"] else "✘"
        what = f"{len(row['tools'])} tools offered" if row["ok"] else row["error"]
        if row["ok"] and row.get("listed", 0) > len(row["tools"]):
            what += f" (of {row['listed']} listed)"
        print(f"{mark} {row['name']} ({row['transport']}: {row['where']}): {what}")
        for lacking in row["missing"]:
            print(f"    ! started without {lacking}")
        width = max((len(t["name"]) for t in row["tools"]), default=0)
        for tool in row["tools"]:
            about = tool["description"]
            if len(about) > DESCRIPTION_SHOWN:
                about = about[: DESCRIPTION_SHOWN - 1] + "…"
            print(f"    {tool['name']:<{width}}  {about}")


def handler(args: argparse.Namespace) -> int:
    """Survey the servers and print the table (or JSON)."""
    from spacebot.cli.main import _load
    from spacebot.tools.errors import ToolError

    _path, cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    # The servers' own start-up chatter stays out of the table; failures are in the rows.
    logging.getLogger("spacebot.tools.mcp").setLevel(logging.CRITICAL)
    try:
        found = asyncio.run(survey(cfg))
    except ToolError as exc:
        print(f"spacebot: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(found, ensure_ascii=False))
    else:
        _print(found)
    return EXIT_OK if all(row["ok"] for row in found["servers"]) else EXIT_FAILED
