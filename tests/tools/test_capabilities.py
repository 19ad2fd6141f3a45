"""A worker's prompt names what its tools can do, and nothing it was not given."""

from __future__ import annotations

from spacebot.agent.capabilities import worker_capabilities

BASE = ["shell", "exec", "file_read", "file_write", "file_edit", "file_list", "set_status"]


def test_only_the_given_tools_are_named() -> None:
    text = worker_capabilities(BASE)
    assert "run programs in the workspace (shell, exec)" in text
    assert "read, write, edit and list files" in text
    assert "search the web" not in text and "browser" not in text and "MCP" not in text
    assert "You cannot reach the web" in text


def test_web_browser_and_mcp_groups_appear_when_offered() -> None:
    names = [*BASE, "web_search", "web_fetch", "browser_navigate", "browser_snapshot", "mcp_my_srv_x"]
    text = worker_capabilities(names, ["my_srv"])
    assert "search the web (web_search)" in text
    assert "read a web page or document as text (web_fetch)" in text
    assert "drive a headless browser" in text and "(browser_*)" in text
    assert "tools of MCP servers: my_srv (mcp_my_srv_*)" in text
    assert "cannot reach the web" not in text


def test_fetch_alone_still_reaches_the_web() -> None:
    text = worker_capabilities(["web_fetch"])
    assert "web_fetch" in text and "search the web" not in text and "cannot reach the web" not in text


def test_no_tools_at_all() -> None:
    assert "no tools" in worker_capabilities(["set_status"])
