"""The web chat page in real headless Chromium (Debian's package), driven over the DevTools protocol."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.testing import ChatSystem
from tests.channel.cdp import Browser, Page, chromium_path

if chromium_path() is None:
    if os.environ.get("SPACEBOT_REQUIRE_BROWSER") == "1":
        raise RuntimeError("SPACEBOT_REQUIRE_BROWSER=1 but Chromium is missing: apt-get install chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

ASSISTANT = "document.querySelectorAll('.msg[data-role=\"assistant\"]:not(.streaming)')"


async def _texts(page: Page, selector: str) -> list[str]:
    nodes = f"Array.from(document.querySelectorAll({json.dumps(selector)}))"
    return await page.evaluate(f"{nodes}.map(n => n.querySelector('.text').textContent)")


async def _say(page: Page, text: str) -> None:
    await page.type("#composer", text)
    await page.press_enter()


async def test_chat_in_the_browser(short_tmp: Path) -> None:
    async with FakeLLM(token_latency=0.03) as fake:
        fake.add(
            user=r"\(new\) Ana: hello",
            tool_calls=[
                FakeToolCall("react", {"emoji": "👋"}),
                FakeToolCall("reply", {"content": "Hello Ana! Nice to meet you, I am streaming this reply."}),
            ],
        )
        fake.add(tool_calls=[FakeToolCall("reply", {"content": "Noted."})])
        async with ChatSystem(short_tmp, fake) as system, await Browser.launch() as browser:
            ana = await browser.new_page()
            await ana.goto(system.url + "/")
            await ana.wait_for("document.getElementById('status').textContent === 'connected'")
            assert await ana.evaluate("document.getElementById('fake-label').hidden") is True
            await ana.evaluate(
                "(() => { const n = document.getElementById('name'); n.value = 'Ana';"
                " n.dispatchEvent(new Event('change')); })()"
            )
            await ana.click("#new-conversation")
            conv = await ana.wait_for("document.querySelector('.conversation.active')?.dataset.id")
            await ana.wait_for("!document.getElementById('composer').disabled")
            await _say(ana, "hello everyone")
            # The reply streams in (a bubble growing under "thinking"), then the final message replaces it.
            await ana.wait_for("document.querySelector('.msg.streaming') !== null")
            assert await ana.evaluate("document.getElementById('typing').hidden") is False
            await ana.wait_for(f"{ASSISTANT}.length === 1")
            assert await _texts(ana, '.msg[data-role="assistant"]') == [
                "Hello Ana! Nice to meet you, I am streaming this reply."
            ]
            await ana.wait_for("document.querySelectorAll('.msg.streaming').length === 0")
            await ana.wait_for(
                "document.querySelector('.msg[data-role=\"user\"] .reaction')?.textContent === '👋'"
            )
            await ana.wait_for("document.getElementById('typing').hidden")
            # Reload: the history (with the reaction) comes back.
            await ana.reload()
            await ana.wait_for(f"{ASSISTANT}.length === 1 && document.querySelector('.reaction') !== null")
            assert await _texts(ana, ".msg") == [
                "hello everyone",
                "Hello Ana! Nice to meet you, I am streaming this reply.",
            ]
            # A second tab is a second person in the same conversation.
            bob = await browser.new_page()
            await bob.goto(f"{system.url}/#c={conv}")
            await bob.wait_for("document.getElementById('status').textContent === 'connected'")
            await bob.evaluate(
                "(() => { const n = document.getElementById('name'); n.value = 'Bob';"
                " n.dispatchEvent(new Event('change')); })()"
            )
            await bob.wait_for(f"{ASSISTANT}.length === 1")
            await bob.wait_for("!document.getElementById('composer').disabled")
            await _say(bob, "hi from bob")
            for page in (ana, bob):
                await page.wait_for(f"{ASSISTANT}.length === 2")
                users = "Array.from(document.querySelectorAll('.msg[data-role=\"user\"]'))"
                authors = await page.evaluate(f"{users}.map(n => n.dataset.author)")
                assert authors == ["Ana", "Bob"]
            assert await _texts(bob, ".msg.own") == ["hi from bob"]
            await _say(ana, "one more")  # the Enter that sent the last message left nothing behind
            await ana.wait_for(f"{ASSISTANT}.length === 3")
            assert (await _texts(ana, ".msg.own"))[-1] == "one more"
            await _say(ana, "second line check")  # the Enter that sent the last message left nothing behind
            await ana.wait_for(f"{ASSISTANT}.length === 3")
            assert (await _texts(ana, ".msg.own"))[-1] == "second line check"
            # An oversized message is refused in the page before it is sent.
            await ana.evaluate(
                "(() => { const c = document.getElementById('composer');"
                " c.value = 'x'.repeat(16001); c.dispatchEvent(new Event('input')); })()"
            )
            assert await ana.evaluate("document.getElementById('send').disabled") is True
            assert "limit" in await ana.evaluate("document.getElementById('limit').textContent")
            assert ana.errors == [] and bob.errors == []


async def test_page_shows_what_to_configure_without_a_model(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False) as system, await Browser.launch() as browser:
        page = await browser.new_page()
        await page.goto(system.url + "/")
        await page.wait_for("!document.getElementById('model-banner').hidden")
        banner = await page.evaluate("document.getElementById('model-banner').textContent")
        assert "ANTHROPIC_API_KEY" in banner and "SPACEBOT_LLM_BASE_URL" in banner
        await page.click("#new-conversation")
        await page.wait_for("!document.getElementById('composer').disabled")
        await _say(page, "is anyone there?")
        # The notice for the message is a short line under the banner, not the same words again.
        await page.wait_for("document.querySelector('.msg[data-role=\"system\"]:not(.transient)') !== null")
        assert (await page.evaluate("document.body.innerText")).count("OPENAI_API_KEY") == 1
        assert page.errors == []


async def _proxy(target: str, prefix: str) -> tuple[Any, str]:
    """A minimal reverse proxy serving ``target`` under ``prefix`` (HTTP and WebSocket)."""
    session = aiohttp.ClientSession()
    sockets: list[Any] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        path = request.path[len(prefix) - 1 :]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            client = web.WebSocketResponse()
            await client.prepare(request)
            sockets.append(client)
            upstream = await session.ws_connect(
                target + path + (f"?{request.query_string}" if request.query_string else "")
            )

            async def pump(src: Any, dst: Any) -> None:
                async for msg in src:
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        await dst.send_str(msg.data)
                await dst.close()

            await asyncio.gather(pump(client, upstream), pump(upstream, client), return_exceptions=True)
            return client
        async with session.get(target + path) as resp:
            return web.Response(body=await resp.read(), status=resp.status, content_type=resp.content_type)

    app = web.Application()
    app.router.add_route("GET", prefix + "{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]

    async def close() -> None:
        for ws in sockets:
            await ws.close()
        await runner.cleanup()
        await session.close()

    return close, f"http://127.0.0.1:{port}{prefix}"


async def test_page_works_behind_a_reverse_proxy_under_a_sub_path(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=[FakeToolCall("reply", {"content": "through the proxy"})])
        async with ChatSystem(short_tmp, fake) as system, await Browser.launch() as browser:
            close, url = await _proxy(system.url, "/chat/")
            try:
                page = await browser.new_page()
                await page.goto(url)
                await page.wait_for("document.getElementById('status').textContent === 'connected'")
                await page.click("#new-conversation")
                await page.wait_for("!document.getElementById('composer').disabled")
                await _say(page, "hello via proxy")
                await page.wait_for(f"{ASSISTANT}.length === 1")
                assert await _texts(page, '.msg[data-role="assistant"]') == ["through the proxy"]
                assert page.errors == []
            finally:
                await close()
