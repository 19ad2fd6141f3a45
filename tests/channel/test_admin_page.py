"""The admin page (``/admin`` of the operator API) in real headless Chromium, at a phone's width."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from spacebot.ipc import ids
from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import MemIngest
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.testing import ChatSystem
from tests.channel.cdp import Browser, Page, chromium_path
from tests.runtime.test_api import TOKEN, WAIT, api_url
from tests.runtime.test_api_routes import XSS, call, seed, until

if chromium_path() is None:
    if os.environ.get("SPACEBOT_REQUIRE_BROWSER") == "1":
        raise RuntimeError("SPACEBOT_REQUIRE_BROWSER=1 but Chromium is missing: apt-get install chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

WIDTH = 390
"""A small phone, in CSS pixels."""
SAFE = "window.__pwned === undefined && document.querySelectorAll('img').length === 0"
"""Nothing of the payload became markup or ran."""


async def phone(browser: Browser) -> Page:
    page = await browser.new_page()
    await page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    return page


async def tab(page: Page, name: str) -> None:
    await page.click(f'#tabs button[data-tab="{name}"]')
    await page.wait_for(f"!document.getElementById('panel-{name}').hidden")


async def fits(page: Page) -> None:
    """The page itself never scrolls sideways (wide tables scroll inside their own box)."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"the page is {width} px wide at a {WIDTH} px viewport"


async def test_admin_page_shows_every_panel_with_real_data(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(tool_calls=[FakeToolCall("reply", {"content": f"Hi! {XSS}"})])
        api = {"enabled": True, "port": 0, "token": TOKEN}
        async with (
            ChatSystem(short_tmp, fake, sections_extra={"api": api}) as system,
            await Browser.launch() as browser,
        ):
            url = await api_url(system)
            seeded = await seed(system)
            code, run = await call("POST", f"{url}/cron/{seeded.job}/run")
            assert code == 200, run

            async def ran() -> bool:
                runs = (await call("GET", f"{url}/cron"))[1]["runs"]
                return bool(runs and runs[0]["ended_at"] is not None)

            await until("the cron run ends", ran)
            page = await phone(browser)
            await page.goto(url.removesuffix("/api") + "/admin")

            # A token is configured: the page asks for it, and a wrong one is refused.
            await page.wait_for("!document.getElementById('login').hidden")
            await page.type("#token", "wrong")
            await page.click("#login button[type=submit]")
            await page.wait_for("document.getElementById('login-error').textContent === 'wrong token'")
            await page.evaluate("document.getElementById('token').value = ''")
            await page.type("#token", TOKEN)
            await page.click("#login button[type=submit]")
            await page.wait_for("document.getElementById('login').hidden")
            assert await page.evaluate("sessionStorage.getItem('spacebot.adminToken')") == TOKEN
            await page.wait_for("document.getElementById('health').textContent === 'healthy'", timeout=WAIT)

            # Processes: the live table, with the conversation's process and a kill button.
            channel = ids.channel("main", seeded.conversation)
            row = f"document.querySelector('#processes tr[data-id={json.dumps(channel)}]')"
            await page.wait_for(f"{row} !== null")
            assert await page.evaluate(f"{row}.querySelector('.state').textContent") in (
                "idle",
                "busy",
                "ready",
            )
            memory_row = "document.querySelector('#processes tr[data-id=\"memory:main\"]')"
            assert "MB" in await page.evaluate(f"{memory_row}.textContent")
            await fits(page)

            # Conversations: the title stays text, and so does the transcript.
            await tab(page, "conversations")
            item = f"document.querySelector('#conversations li[data-id={json.dumps(seeded.conversation)}]')"
            await page.wait_for(f"{item} !== null")
            assert XSS in await page.evaluate(f"{item}.textContent")
            assert await page.evaluate(f"{item}.querySelector('.live') !== null") is True
            await page.click(f"#conversations li[data-id={json.dumps(seeded.conversation)}]")
            await page.wait_for("document.querySelectorAll('#transcript .msg').length === 2")
            texts = await page.evaluate(
                "Array.from(document.querySelectorAll('#transcript .msg .text')).map(n => n.textContent)"
            )
            assert texts == [f"hello {XSS}", f"Hi! {XSS}"]
            assert await page.evaluate("document.getElementById('transcript-title').textContent") == XSS
            assert await page.evaluate(SAFE) is True
            await fits(page)

            # Memories: newest first, a type filter, a memory with its edge.
            await tab(page, "memories")
            tea, deploys = seeded.memories
            await page.wait_for("document.querySelectorAll('#memories li.memory').length === 2")
            await page.wait_for("document.querySelectorAll('#memory-type option').length > 5")
            await page.evaluate(
                "(() => { const s = document.getElementById('memory-type'); s.value = 'preference';"
                " s.dispatchEvent(new Event('change')); })()"
            )
            await page.wait_for("document.querySelectorAll('#memories li.memory').length === 1")
            assert "green tea" in await page.evaluate(
                "document.querySelector('#memories li.memory').textContent"
            )
            await page.click(f'#memories li[data-id="{tea.id}"]')
            await page.wait_for("document.querySelector('#memory-detail .memory-content') !== null")
            content = await page.evaluate(
                "document.querySelector('#memory-detail .memory-content').textContent"
            )
            assert content == "Ana likes green tea"
            edge = await page.evaluate("document.querySelector('#edges li').textContent")
            assert "caused_by" in edge and f"#{deploys.id}" in edge
            # The neighbours as a small graph: this memory in the middle, linked to the other.
            node = f"document.querySelector('#memory-graph g.node[data-id=\"{deploys.id}\"]')"
            assert await page.evaluate(f"{node}.textContent") == f"#{deploys.id}caused_by"
            assert await page.evaluate("document.querySelectorAll('#memory-graph line.link').length") == 1
            await page.click(f'#edges a[data-id="{deploys.id}"]')  # follow the edge
            await page.wait_for(
                f"document.querySelector('#memory-detail h2').textContent.includes('#{deploys.id}')"
            )
            await fits(page)

            # Usage: charts (SVG bars), per day and per model.
            await tab(page, "usage")
            await page.wait_for("document.querySelectorAll('#chart-days svg rect.bar2').length === 14")
            tallest = await page.evaluate(
                "Math.max(...Array.from(document.querySelectorAll('#chart-days rect.bar2'))"
                ".map(r => Number(r.getAttribute('height'))))"
            )
            assert tallest > 0  # today's tokens
            models = await page.evaluate(
                "Array.from(document.querySelectorAll('#chart-models rect.bar')).map(r => r.dataset.key)"
            )
            assert models and all(m.endswith("main") for m in models), models
            kinds = await page.evaluate(
                "Array.from(document.querySelectorAll('#chart-kinds rect.bar')).map(r => r.dataset.key)"
            )
            assert "channel" in kinds, kinds
            assert "model calls" in await page.evaluate(
                "document.getElementById('usage-summary').textContent"
            )
            await fits(page)

            # Cron: the job, its last run, and disabling it from the page.
            await tab(page, "cron")
            job = f"document.querySelector('#cron-jobs tr[data-id=\"{seeded.job}\"]')"
            await page.wait_for(f"{job} !== null")
            assert "success" in await page.evaluate(f"{job}.textContent")
            assert (
                await page.evaluate("document.querySelectorAll('#cron-runs tbody tr[data-id]').length") == 1
            )
            await page.evaluate(f"{job}.querySelector('button[data-action=\"disable\"]').click()")
            await page.wait_for(f"{job}.querySelector('button[data-action=\"enable\"]') !== null")
            code, cron = await call("GET", f"{url}/cron")
            assert cron["jobs"][0]["enabled"] is False

            # Events: the live stream shows a kill made from the process table.
            await tab(page, "events")
            await page.wait_for("document.getElementById('event-status').textContent === 'live'")
            await tab(page, "processes")
            kill = f"{row}.querySelector('button.danger')"
            await page.evaluate(f"{kill}.click()")  # arms it
            assert await page.evaluate(f"{kill}.textContent") == "Sure? Kill"
            await page.evaluate(f"{kill}.click()")
            await page.wait_for(
                f"{row} && !['ready', 'idle', 'busy'].includes({row}.querySelector('.state').textContent)"
            )
            await tab(page, "history")
            await page.wait_for(
                "Array.from(document.querySelectorAll('#history td'))"
                f".some(td => td.textContent === {json.dumps(channel)})",
                timeout=WAIT,
            )
            await tab(page, "events")
            topic = f"proc.channel.{channel}.killed"
            await page.wait_for(
                f"document.querySelector('#events li[data-topic={json.dumps(topic)}]') !== null"
            )
            await fits(page)
            assert await page.evaluate(SAFE) is True
            assert page.errors == []


async def test_admin_page_on_loopback_without_a_token(short_tmp: Path) -> None:
    api = {"enabled": True, "port": 0}
    async with (
        ChatSystem(short_tmp, model=False, sections_extra={"api": api}) as system,
        await Browser.launch() as browser,
    ):
        url = await api_url(system)
        page = await phone(browser)
        await page.goto(url.removesuffix("/api") + "/admin#memories")
        await page.wait_for("document.querySelector('#memories li.muted')?.textContent === 'no memories yet'")
        assert await page.evaluate("document.getElementById('login').hidden") is True
        await tab(page, "processes")
        await page.wait_for("document.querySelector('#processes tr[data-id=\"gateway:api\"]') !== null")
        # The API's own row has no kill button (the answer could not come back).
        assert (
            await page.evaluate("document.querySelector('#processes tr[data-id=\"gateway:api\"] button')")
            is None
        )
        await tab(page, "usage")
        await page.wait_for(
            "document.querySelector('#chart-models p')?.textContent.includes('no model calls')"
        )
        await fits(page)
        assert page.errors == []


MEMORY_BUDGET = {"ready_timeout": 60.0, "heartbeat_interval": 0.5, "heartbeat_miss_limit": 20}


async def test_admin_page_shows_ingest_progress_and_errors(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(user="malformed answer", text="not json at all")  # first match wins
        fake.add(
            user="turn a chunk of a document into memories",
            text='{"memories": [{"content": "The staging database moved to Frankfurt", "type": "fact"}]}',
        )
        sections = {
            "api": {"enabled": True, "port": 0},
            "memory": {"ingest_chunk_chars": 60, "ingest_max_attempts": 1},
        }
        async with (
            # The embedder's first loads can hold memory's loop longer than the test budget's 0.8 s.
            ChatSystem(short_tmp, fake, sections_extra=sections, memory=MEMORY_BUDGET) as system,
            await Browser.launch() as browser,
        ):
            url = await api_url(system)
            folder = system.sup.home / "agents" / "main" / "ingest"
            folder.mkdir(parents=True, exist_ok=True)
            lines = [f"Line {i}: the staging database moved to Frankfurt in May." for i in range(3)]
            (folder / "notes.md").write_text("\n".join(lines) + "\n")
            (folder / "broken.md").write_text("this chunk gets a malformed answer\n")
            page = await phone(browser)
            await page.goto(url.removesuffix("/api") + "/admin#ingest")
            await page.wait_for("!document.getElementById('panel-ingest').hidden")
            client = BusClient("admin-test", system.sup.endpoints.bus)
            client.start()
            try:
                await client.request(ids.memory("main"), MemIngest(), timeout=WAIT)
            finally:
                await client.close()
            done = "document.querySelector('#ingest tr[data-file=\"notes.md\"]')"
            failed = "document.querySelector('#ingest tr[data-file=\"broken.md\"]')"
            await page.wait_for(
                f"{done}?.dataset.state === 'done' && {failed}?.dataset.state === 'failed'", WAIT
            )
            # A progress bar per file: chunks stored of the total.
            assert await page.evaluate(f"{done}.querySelector('.chunks').textContent") == "3 / 3 chunks"
            assert await page.evaluate(f"{done}.querySelector('.fill').style.width") == "100%"
            assert await page.evaluate(f"{done}.querySelector('[role=progressbar]').ariaValueMax") == "3"
            # The failure says why.
            error = await page.evaluate(f"{failed}.querySelector('.error-text').textContent")
            assert "JSON" in error, error
            assert await page.evaluate(f"{failed}.querySelector('.fill').style.width") == "0%"
            summary = await page.evaluate("document.getElementById('ingest-summary').textContent")
            assert "1 failed" in summary and "1 done" in summary, summary
            await fits(page)
            assert page.errors == []
