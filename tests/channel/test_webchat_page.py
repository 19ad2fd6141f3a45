"""The web chat page's rendering in real headless Chromium: the agent's Markdown (and what must not
become markup), a phone-width layout, running work with its status and a cancel button, and the
no-model notice."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.testing import ChatSystem
from tests.channel.cdp import Browser, Page, chromium_path

if chromium_path() is None:
    if os.environ.get("SPACEBOT_REQUIRE_BROWSER") == "1":
        raise RuntimeError("SPACEBOT_REQUIRE_BROWSER=1 but Chromium is missing: apt-get install chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

WIDTH = 390
"""A small phone, in CSS pixels."""
WORKER = "You are a worker"
ASSISTANT = "document.querySelectorAll('.msg[data-role=\"assistant\"]:not(.streaming)')"
NO_PAGE_SCROLL = "document.documentElement.scrollWidth <= document.documentElement.clientWidth"
WAIT = 60.0

MARKDOWN = """**Plan** for *today*:

- buy `milk`
- call [Bob](https://example.org/bob)

```
print("a very long line of code that is much wider than a phone screen ............................")
```

<img src=x onerror="window.__pwned = 1"> and <script>window.__pwned = 2</script>
[tap me](javascript:window.__pwned=3)"""


def _call(name: str, **args: Any) -> FakeToolCall:
    return FakeToolCall(name, args)


async def _phone(browser: Browser) -> Page:
    page = await browser.new_page()
    await page.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    return page


async def _start(page: Page, url: str) -> None:
    await page.goto(url + "/")
    await page.wait_for("document.getElementById('status').textContent === 'connected'")
    await page.click("#new-conversation")
    await page.wait_for("!document.getElementById('composer').disabled")


async def _say(page: Page, text: str) -> None:
    await page.type("#composer", text)
    await page.press_enter()


async def _js(page: Page, expression: str) -> Any:
    return await page.evaluate(expression)


async def test_markdown_is_rendered_and_html_in_it_stays_text_at_phone_width(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(user=r"\(new\) [^:]+: plan", tool_calls=[_call("reply", content=MARKDOWN)])
        async with ChatSystem(short_tmp, fake) as system, await Browser.launch() as browser:
            page = await _phone(browser)
            await _start(page, system.url)
            await _say(page, "plan please")
            await page.wait_for(f"{ASSISTANT}.length === 1")
            reply = "document.querySelector('.msg[data-role=\"assistant\"] .text')"
            assert await _js(page, f"{reply}.querySelector('strong').textContent") == "Plan"
            assert await _js(page, f"{reply}.querySelector('em').textContent") == "today"
            items = await _js(page, f"Array.from({reply}.querySelectorAll('li')).map(n => n.textContent)")
            assert items == ["buy milk", "call Bob"]
            assert await _js(page, f"{reply}.querySelector('li code').textContent") == "milk"
            assert "a very long line of code" in await _js(
                page, f"{reply}.querySelector('pre code').textContent"
            )
            link = "[a.textContent, a.getAttribute('href'), a.rel]"
            links = await _js(page, f"Array.from({reply}.querySelectorAll('a')).map(a => {link})")
            assert links[0] == ["Bob", "https://example.org/bob", "noopener noreferrer nofollow"]
            # The HTML in the model's text is shown as the text it is; nothing of it ran or became markup.
            assert links[1][:2] == ["tap me", None]
            text = await _js(page, f"{reply}.textContent")
            assert '<img src=x onerror="window.__pwned = 1">' in text
            assert "<script>window.__pwned = 2</script>" in text
            assert await _js(page, "document.querySelectorAll('#messages img, #messages script').length") == 0
            await page.click('.msg[data-role="assistant"] a:not([href])')
            assert await _js(page, "window.__pwned === undefined") is True
            # A phone-width screen: nothing makes the page scroll sideways, the composer fits.
            assert await _js(page, NO_PAGE_SCROLL) is True, await _js(
                page, "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
            )
            right = await _js(page, "document.getElementById('send').getBoundingClientRect().right")
            assert 0 < right <= WIDTH
            # The wide code block scrolls inside its own box.
            pre = "document.querySelector('.md pre')"
            assert await _js(page, f"{pre}.scrollWidth > {pre}.clientWidth")
            assert page.errors == []


async def test_running_work_shows_its_status_and_the_cancel_button_stops_it(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) [^:]+: sleep",
            tool_calls=[
                _call("spawn_worker", task="sleep for a long time"),
                _call("reply", content="On it."),
            ],
        )
        fake.add(
            system=WORKER,
            tool_calls=[
                _call("set_status", text="counting sheep"),
                _call("shell", command="sleep 1000", timeout=3600),
            ],
        )
        fake.add(
            user=r"finished \(cancelled\)", tool_calls=[_call("reply", content="The sleeper was cancelled.")]
        )
        async with ChatSystem(short_tmp, fake) as system, await Browser.launch() as browser:
            page = await _phone(browser)
            await _start(page, system.url)
            await _say(page, "sleep please")
            item = "document.querySelector('#typing .work-item')"
            await page.wait_for(
                f"{item}?.querySelector('.work-status').textContent === 'counting sheep'", WAIT
            )
            assert await _js(page, "document.getElementById('typing').hidden") is False
            assert "sleep for a long time" in await _js(page, f"{item}.querySelector('.task').textContent")
            assert await _js(page, f"/^[0-9]+s$/.test({item}.querySelector('.elapsed').textContent)")
            worker = await _js(page, f"{item}.dataset.id")
            assert worker.startswith("worker:")
            assert await _js(page, NO_PAGE_SCROLL) is True
            await page.click("#typing .work-item .cancel")
            # The worker ends cancelled: its result reaches the model as such, and the model answers.
            await page.wait_for(f"{ASSISTANT}.length === 2", WAIT)
            texts = await _js(page, f"Array.from({ASSISTANT}).map(n => n.querySelector('.text').textContent)")
            assert texts == ["On it.", "The sleeper was cancelled."]
            await page.wait_for("document.getElementById('typing').hidden", WAIT)
            rows = [r for r in (await system.sup.status()).processes if r.id == worker]
            assert all(r.state.value != "running" for r in rows), rows
            assert page.errors == []


async def test_cancel_of_work_that_is_not_running_is_refused(short_tmp: Path) -> None:
    async with FakeLLM() as fake, ChatSystem(short_tmp, fake) as system:
        chat = await system.client("Ana")
        conv = await chat.create()
        await chat.open(conv)
        mark = len(chat.frames)
        await chat.send_frame({"type": "cancel", "conversation": conv, "id": "supervisor", "ref": "c1"})
        frame = await chat.wait_for(lambda f: f.get("ref") == "c1", since=mark)
        assert frame["type"] == "error" and frame["code"] == "not_running", frame


async def test_no_model_notice_is_shown_once(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False) as system, await Browser.launch() as browser:
        page = await _phone(browser)
        await page.goto(system.url + "/")
        await page.wait_for("!document.getElementById('model-banner').hidden")
        await _start(page, system.url)
        await _say(page, "is anyone there?")
        system_msgs = "document.querySelectorAll('.msg[data-role=\"system\"]:not(.transient)')"
        await page.wait_for(f"{system_msgs}.length === 1", WAIT)
        await page.wait_for("document.querySelectorAll('.msg.transient').length === 0")
        assert await _js(page, "document.getElementById('error').hidden") is True
        visible = await _js(page, "document.body.innerText")
        assert visible.count("OPENAI_API_KEY") == 1, visible
        assert "Not answered" in await _js(page, f"{system_msgs}[0].textContent")
        # Reloaded, the stored notice is still the short line under the one banner.
        await page.reload()
        await page.wait_for(f"{system_msgs}.length === 1", WAIT)
        assert (await _js(page, "document.body.innerText")).count("OPENAI_API_KEY") == 1
        assert await _js(page, NO_PAGE_SCROLL) is True
        assert page.errors == [], json.dumps(page.errors)


async def test_work_can_be_cancelled_while_the_agent_is_thinking(short_tmp: Path) -> None:
    """A turn in progress (``thinking``) neither hides running work nor keeps it from being cancelled."""
    from tests.channel.test_delegation import GatedLLM

    fake = GatedLLM()
    async with fake:
        fake.add(
            user=r"\(new\) Ana: sleep",
            tool_calls=[
                _call("spawn_worker", task="sleep for a long time"),
                _call("reply", content="On it."),
            ],
        )
        fake.add(system=WORKER, tool_calls=[_call("shell", command="sleep 1000", timeout=3600)])
        fake.add(name="slow", user=r"\(new\) Ana: meanwhile", tool_calls=[_call("reply", content="Later.")])
        fake.add(user=r"finished \(cancelled\)", tool_calls=[_call("reply", content="Cancelled it.")])
        held = fake.gate("slow")
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "sleep please")
            working = await ana.wait_for(
                lambda f: f["type"] == "typing" and bool(f.get("work")), timeout=WAIT
            )
            worker = working["work"][0]["id"]
            mark = len(ana.frames)
            await ana.send(conv, "meanwhile, a question")
            await fake.reached("slow")
            thinking = await ana.wait_for(
                lambda f: f["type"] == "typing" and f["state"] == "thinking", since=mark, timeout=WAIT
            )
            assert [w["id"] for w in thinking["work"]] == [worker], thinking
            mark = len(ana.frames)
            await ana.send_frame({"type": "cancel", "conversation": conv, "id": worker, "ref": "c"})
            answer = await ana.wait_for(lambda f: f.get("ref") == "c", since=mark, timeout=WAIT)
            assert answer == {"type": "cancelled", "conversation": conv, "id": worker, "ref": "c"}, answer
            held.set()
            await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["text"] == "Cancelled it.", timeout=WAIT
            )
