"""The browser tools' layer over Playwright: a snapshot's overhead, and the browser's cold start.

* ``browser_snapshot``: a small local page (aiohttp on loopback); the tool call through the
  worker's :class:`~spacebot.tools.task_tools.TaskTools` (argument check, the snapshot turned into
  compact lines, secret scrubbing) vs the Playwright calls it makes on the same page
  (``page.aria_snapshot(mode="ai")`` and ``page.title()``), alternately; the overhead of a pair is
  the first's time minus the second's.
* ``browser_cold_start_ms``: a fresh profile, from the first tool call (Playwright's driver
  started, Chromium launched) to the first snapshot of the page (``browser_navigate`` returns it);
  the median of three.

Used by ``bench/tools.py``; alone: ``python bench/tools_browser.py [--json] [--calls 50]``.
Raises ``RuntimeError`` naming what is missing when Chromium or Playwright is not there.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, interleaved, machine, parser

from spacebot.config import BrowserSettings
from spacebot.llm.types import ToolCall
from spacebot.tools import browser
from spacebot.tools.browser import Browser
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools

PAGE = """<!doctype html><html><head><title>Sign in</title></head><body>
<nav><a href="/">Home</a> <a href="/help">Help</a></nav>
<main><h1>Sign in to the dashboard</h1>
<form><label>User <input name="user"></label><label>Password <input type="password"></label>
<label><input type="checkbox"> Remember me</label><button>Sign in</button></form>
<p>Forgot your password? <a href="/reset">Reset it</a>.</p></main></body></html>"""
SETTINGS = BrowserSettings(allow_private=True)
COLD_STARTS = 3


async def _site() -> tuple[web.AppRunner, str]:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app = web.Application()
    app.add_routes([web.get("/", page)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}/"


def _checked(result: tuple[str, bool]) -> str:
    text, is_error = result
    if is_error:
        raise RuntimeError(f"the browser tool failed: {text}")
    return text


async def _cold_start(root: Path, url: str, i: int) -> float:
    workspace = root / f"cold{i}"
    workspace.mkdir()
    tools = TaskTools(workspace, Limits(), lambda *_: None, browser=Browser(SETTINGS, workspace))
    assert tools.browser is not None
    try:
        start = time.perf_counter()
        _checked(await tools.call(ToolCall("c", "browser_navigate", {"url": url})))
        return (time.perf_counter() - start) * 1000
    finally:
        await tools.browser.aclose()


async def measure(n: int) -> dict[str, Any]:
    """``{"browser_snapshot": {p50_ms, p99_ms, ours_p50_ms, raw_p50_ms}, "browser_cold_start_ms"}``
    over ``n`` interleaved pairs of snapshots (after a warm-up)."""
    why = browser.unavailable(SETTINGS)
    if why is not None:
        raise RuntimeError(why)
    runner, url = await _site()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-browser-") as scratch:
            root = Path(scratch)
            cold = [await _cold_start(root, url, i) for i in range(COLD_STARTS)]
            workspace = root / "warm"
            workspace.mkdir()
            web_browser = Browser(SETTINGS, workspace)
            tools = TaskTools(workspace, Limits(), lambda *_: None, browser=web_browser)
            call = ToolCall("s", "browser_snapshot", {})
            try:
                _checked(await tools.call(ToolCall("n", "browser_navigate", {"url": url})))
                page = web_browser._page
                assert page is not None

                async def ours() -> None:
                    _checked(await tools.call(call))

                async def raw() -> None:
                    await page.aria_snapshot(mode="ai", timeout=SETTINGS.action_timeout * 1000)
                    await page.title()

                found = await interleaved(ours, raw, n)
            finally:
                await web_browser.aclose()
    finally:
        await runner.cleanup()
    return {
        "browser_snapshot": found,
        "browser_cold_start_ms": round(statistics.median(cold), 1),
    }


def main() -> None:
    p = parser(__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--calls", type=int, default=50, help="pairs of snapshots (default 50)")
    args = p.parse_args()
    result = asyncio.run(measure(args.calls))
    snap = result["browser_snapshot"]
    rows: list[tuple[str, ...]] = [
        ("measure", "p50", "p99"),
        ("snapshot overhead", f"{snap['p50_ms']:.2f} ms", f"{snap['p99_ms']:.2f} ms"),
        ("snapshot, ours", f"{snap['ours_p50_ms']:.2f} ms", ""),
        ("snapshot, Playwright", f"{snap['raw_p50_ms']:.2f} ms", ""),
        ("cold start", f"{result['browser_cold_start_ms']:.0f} ms", ""),
    ]
    result["machine"] = machine()
    emit(result, rows, args.json)


if __name__ == "__main__":
    main()
