"""What the worker tool layer adds over the client underneath, per tool, for a trivial call.

For each tool, the same call is made through the worker's :class:`~spacebot.tools.task_tools.TaskTools`
(argument check, the tool's own code, secret scrubbing — what a worker runs) and directly with the
library it is built on, alternately, ``--calls`` times; the overhead of a pair is the first's time
minus the second's, and the table gives the p50/p99 of those differences:

* ``web_search``: our Brave client against the shipped fake (``spacebot.tools.fakes.search``) vs one
  aiohttp GET of the same URL with the JSON decoded.
* ``web_fetch``: a small local page (aiohttp on loopback) vs one aiohttp GET and the same
  trafilatura extraction (so what is left is the address checks, the pinned resolver, the caps).
* ``mcp_call``: ``echo`` on the packaged fake MCP server over stdio vs the SDK session's
  ``call_tool`` on the same server.
* ``browser_snapshot``: a small local page, our snapshot vs the Playwright calls it makes
  (``bench/tools_browser.py``), and the browser's cold start (launch → first snapshot). Skipped,
  with the reason, when Chromium or Playwright is missing.

Run: ``python bench/tools.py [--json] [--calls 200]``. Goal: overhead p50 ≤ 5 ms for each tool.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, interleaved, machine, parser

from spacebot.config import McpServerSettings, WebFetchSettings, WebSearchSettings
from spacebot.llm.types import ToolCall
from spacebot.tools.fakes.search import FakeSearch
from spacebot.tools.mcp_tools import start_servers
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools, ToolSecrets
from spacebot.tools.web_search import WebSearch

PAGE = """<!doctype html><html><head><title>Release notes</title></head><body>
<nav><a href="/">Home</a></nav><article><h1>Release 2.4</h1>
<p>This release makes the scheduler twice as fast on small machines and fixes the reconnect bug
that left some sessions waiting after a network change.</p>
<p>Upgrade with the usual command; the configuration is unchanged.</p></article>
<footer>© Example</footer></body></html>"""


def _checked(result: tuple[str, bool]) -> str:
    text, is_error = result
    if is_error:
        raise RuntimeError(f"the tool call failed: {text}")
    return text


async def bench_search(workspace: Path, calls: int) -> dict[str, float]:
    async with FakeSearch() as fake:
        settings = WebSearchSettings(provider="brave", api_key="fake-brave-token", base_url=fake.url)
        tools = TaskTools(workspace, Limits(), lambda *_: None, web_search=WebSearch(settings, fake.token))
        call = ToolCall("c", "web_search", {"query": "release notes", "count": 5})
        url = f"{fake.url}/res/v1/web/search"
        headers = {"X-Subscription-Token": fake.token, "Accept": "application/json"}

        async def ours() -> None:
            _checked(await tools.call(call))

        async def raw() -> None:
            async with (
                aiohttp.ClientSession() as session,
                session.get(url, params={"q": "release notes", "count": "5"}, headers=headers) as resp,
            ):
                await resp.json(content_type=None)

        return await interleaved(ours, raw, calls)


async def bench_fetch(workspace: Path, calls: int) -> dict[str, float]:
    import trafilatura

    app = web.Application()

    async def notes(_request: web.Request) -> web.Response:
        return web.Response(text=PAGE, content_type="text/html")

    app.router.add_get("/notes", notes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    await web.SockSite(runner, sock).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/notes"
    try:
        tools = TaskTools(
            workspace, Limits(), lambda *_: None, web_fetch=WebFetchSettings(allow_private=True)
        )
        call = ToolCall("c", "web_fetch", {"url": url})

        async def ours() -> None:
            _checked(await tools.call(call))

        def extract(html: str) -> str | None:
            return trafilatura.extract(html, output_format="markdown", include_links=True, url=url)

        async def raw() -> None:
            async with aiohttp.ClientSession() as session, session.get(url) as resp:
                html = await resp.text()
            await asyncio.to_thread(extract, html)

        return await interleaved(ours, raw, calls)
    finally:
        await runner.cleanup()


async def bench_mcp(workspace: Path, calls: int) -> dict[str, float]:
    entry = McpServerSettings(name="fake", command=[sys.executable, "-m", "spacebot.tools.fakes.mcp_server"])
    mcp = await start_servers([entry], workspace)
    try:
        server = mcp.servers[0]
        tools = TaskTools(workspace, Limits(), lambda *_: None, secrets=ToolSecrets(known=mcp.known), mcp=mcp)
        call = ToolCall("c", "mcp_fake_echo", {"text": "hello"})

        async def ours() -> None:
            _checked(await tools.call(call))

        async def raw() -> None:
            session = server._session
            assert session is not None
            await session.call_tool("echo", {"text": "hello"})

        return await interleaved(ours, raw, calls)
    finally:
        await mcp.aclose()


async def bench_browser(calls: int) -> tuple[dict[str, float] | None, float | None, str]:
    try:
        from tools_browser import measure
    except ImportError as exc:
        return None, None, f"bench/tools_browser.py is not usable: {exc}"
    try:
        found = await measure(calls)
    except Exception as exc:  # a missing Chromium or Playwright: said, not fatal to the other tools
        return None, None, f"{type(exc).__name__}: {exc}"
    return found["browser_snapshot"], found["browser_cold_start_ms"], ""


async def run(calls: int, browser_calls: int) -> dict[str, Any]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="bench-tools-") as scratch:
        workspace = Path(scratch)
        result: dict[str, Any] = {
            "web_search": await bench_search(workspace, calls),
            "web_fetch": await bench_fetch(workspace, calls),
            "mcp_call": await bench_mcp(workspace, calls),
        }
        snapshot, cold, why = await bench_browser(browser_calls)
        result["browser_snapshot"] = snapshot
        result["browser_cold_start_ms"] = cold
        if why:
            result["browser_skipped"] = why
    return result


def main() -> None:
    p = parser(__doc__.split("\n\n")[0] if __doc__ else "")
    p.add_argument("--calls", type=int, default=200, help="pairs of calls per tool (default 200)")
    p.add_argument("--browser-calls", type=int, default=50, help="pairs of browser snapshots (default 50)")
    args = p.parse_args()
    result = asyncio.run(run(args.calls, args.browser_calls))
    rows: list[tuple[str, ...]] = [("tool", "overhead p50", "overhead p99", "ours p50", "underlying p50")]
    for name in ("web_search", "web_fetch", "browser_snapshot", "mcp_call"):
        row = result.get(name)
        if row is None:
            rows.append((name, "skipped", result.get("browser_skipped", ""), "", ""))
            continue
        rows.append(
            (
                name,
                f"{row['p50_ms']:.2f} ms",
                f"{row['p99_ms']:.2f} ms",
                f"{row['ours_p50_ms']:.2f} ms",
                f"{row['raw_p50_ms']:.2f} ms",
            )
        )
    cold = result["browser_cold_start_ms"]
    rows.append(("browser cold start", f"{cold:.0f} ms" if cold is not None else "skipped", "", "", ""))
    result["machine"] = machine()
    emit(result, rows, args.json)


if __name__ == "__main__":
    main()
