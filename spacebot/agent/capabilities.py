"""What a worker can do, said in its system prompt from the tools it is actually given.

The section is built from the tool specs the worker offers the model (after configuration and
availability were applied: a search provider configured, Chromium present, MCP servers started),
so the prompt never promises a tool the model cannot call, and names each group once instead of
repeating every tool's description (the specs carry those).
"""

from __future__ import annotations

from collections.abc import Iterable

_GROUPS: list[tuple[str, tuple[str, ...], str]] = [
    ("commands", ("shell", "exec"), "run programs in the workspace"),
    (
        "files",
        ("file_read", "file_write", "file_edit", "file_list"),
        "read, write, edit and list files in the workspace",
    ),
    ("search", ("web_search",), "search the web"),
    ("fetch", ("web_fetch",), "read a web page or document as text"),
    (
        "browser",
        ("browser_navigate", "browser_snapshot"),
        "drive a headless browser: navigate, snapshot the page (elements have refs), click, type, "
        "press keys, screenshot",
    ),
]


def worker_capabilities(tool_names: Iterable[str], mcp_servers: Iterable[str] = ()) -> str:
    """The "what you can do" lines of a worker's prompt for the tools named (one line per group)
    and the MCP servers whose tools are among them."""
    names = set(tool_names)
    lines: list[str] = []
    for _key, members, what in _GROUPS:
        present = [m for m in members if m in names]
        if not present:
            continue
        shown = "browser_*" if members[0].startswith("browser_") else ", ".join(present)
        lines.append(f"- {what} ({shown})")
    servers = sorted(mcp_servers)
    if servers:
        lines.append(
            "- tools of MCP servers: "
            + ", ".join(f"{server} (mcp_{server}_*)" for server in servers)
            + "; their descriptions say what each does"
        )
    if not lines:
        return "You have no tools beyond reporting your status: answer from what you know.\n"
    web = {"web_search", "web_fetch", "browser_navigate"} & names
    tail = "" if web else "You cannot reach the web: say so if the task needs it.\n"
    return "What you can do with your tools:\n" + "\n".join(lines) + "\n" + tail
