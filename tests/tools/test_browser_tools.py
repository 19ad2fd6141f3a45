"""The ``browser_*`` worker tools: a real Chromium (Playwright) against a loopback test site."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiohttp import web

from spacebot.config import BrowserSettings
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.llm.types import ToolCall
from spacebot.testing import ChatSystem, eventually
from spacebot.tools import browser
from spacebot.tools.browser import Browser
from spacebot.tools.browser_session import profile_processes
from spacebot.tools.browser_snapshot import compact
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import Policy, TaskTools, ToolSecrets, workspace_bytes

pytestmark = pytest.mark.skipif(
    browser.unavailable(BrowserSettings()) is not None and not os.environ.get("CI"),
    reason=f"no browser: {browser.unavailable(BrowserSettings())}",
)

PASSWORD = "hunter2-Vx9q-correct-horse"
LOGIN = """<!doctype html><html><head><title>Test Site</title></head><body>
<h1>Log in</h1>
<form method="post" action="/login">
  <label>User <input name="user"></label>
  <label>Password <input name="password" type="password"></label>
  <button type="submit">Sign in</button>
</form>
<a href="/about">About us</a>
<a href="/hang">Slow page</a>
<button type="button" id="more" onclick="document.getElementById('out').textContent = 'More content loaded'">
Show more</button>
<p id="out"></p>
</body></html>"""
ABOUT = "<!doctype html><title>About</title><h1>About this site</h1>"


class Site:
    """The loopback test site; ``base`` is its ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.base = ""
        self.logins: list[dict[str, str]] = []
        self.never = asyncio.Event()


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    state = Site()

    async def login_page(request: web.Request) -> web.Response:
        return web.Response(text=LOGIN, content_type="text/html")

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        state.logins.append({k: str(v) for k, v in form.items()})
        page = f"<!doctype html><title>Home</title><h1>Welcome, {form.get('user')}</h1>"
        return web.Response(text=page, content_type="text/html")

    async def about(request: web.Request) -> web.Response:
        return web.Response(text=ABOUT, content_type="text/html")

    async def hang(request: web.Request) -> web.Response:
        await state.never.wait()  # never answers
        return web.Response(text="late")

    app = web.Application()
    app.add_routes(
        [
            web.get("/", login_page),
            web.post("/login", login),
            web.get("/about", about),
            web.get("/hang", hang),
        ]
    )
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    tcp = web.TCPSite(runner, "127.0.0.1", 0)
    await tcp.start()
    port = tcp._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.base = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        state.never.set()
        await runner.cleanup()


LOCAL = BrowserSettings(allow_private=True, navigation_timeout=30.0)


def _tools(workspace: Path, settings: BrowserSettings, secrets: dict[str, str] | None = None) -> TaskTools:
    return TaskTools(
        workspace,
        Limits(),
        lambda _text, _kind: None,
        secrets=ToolSecrets(secrets or {}),
        browser=Browser(settings, workspace),
    )


class Calls:
    """Calls tools by name and keeps every result the model would read."""

    def __init__(self, tools: TaskTools) -> None:
        self.tools = tools
        self.results: list[str] = []

    async def ok(self, name: str, **args: Any) -> str:
        text, is_error = await self.tools.call(ToolCall(f"c{len(self.results)}", name, args))
        self.results.append(text)
        assert not is_error, f"{name} failed: {text}"
        return text

    async def error(self, name: str, **args: Any) -> str:
        text, is_error = await self.tools.call(ToolCall(f"c{len(self.results)}", name, args))
        self.results.append(text)
        assert is_error, f"{name} should have failed: {text}"
        return text


def ref_of(snapshot: str, label: str) -> str:
    """The ref on the snapshot line that contains ``label``."""
    for line in snapshot.splitlines():
        if label in line and line.strip().startswith("[e"):
            return line.strip()[1:].split("]", 1)[0]
    raise AssertionError(f"no ref for {label!r} in:\n{snapshot}")


async def test_log_in_click_and_screenshot_on_a_local_site(short_tmp: Path, site: Site) -> None:
    tools = _tools(short_tmp, LOCAL, {"SITE_PASSWORD": PASSWORD})
    assert tools.browser is not None
    calls = Calls(tools)
    try:
        first = await calls.ok("browser_navigate", url=site.base + "/")
        assert first.startswith("# Test Site\n" + site.base + "/")
        snap = await calls.ok("browser_snapshot")
        user, password = ref_of(snap, 'textbox "User"'), ref_of(snap, 'textbox "Password"')
        sign_in, more, about = (
            ref_of(snap, 'button "Sign in"'),
            ref_of(snap, "Show more"),
            ref_of(snap, "About us"),
        )
        assert f'[{about}] link "About us" -> /about' in snap
        assert "More content loaded" not in snap
        # Refs stay the same between snapshots of the same page.
        assert ref_of(await calls.ok("browser_snapshot"), 'button "Sign in"') == sign_in

        await calls.ok("browser_type", ref=user, text="ana")
        typed = await calls.ok("browser_type", ref=password, secret="SITE_PASSWORD")
        assert "SITE_PASSWORD" in typed
        await calls.ok("browser_click", ref=more)
        changed = await calls.ok("browser_snapshot")
        assert "More content loaded" in changed
        assert ref_of(changed, 'button "Sign in"') == sign_in  # the element stayed: so did its ref
        assert 'textbox "User": ana' in changed

        assert tools.take_images() == []
        shot = await calls.ok("browser_screenshot")
        path = short_tmp / shot.split(" to ", 1)[1].split(" (", 1)[0]
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # The model sees it too: once, as an image part with the saved file's bytes.
        assert "shown to you after the tool results" in shot
        (image,) = tools.take_images()
        assert image.media_type == "image/png" and base64.b64decode(image.data) == path.read_bytes()
        assert tools.take_images() == []

        await calls.ok("browser_click", ref=sign_in)
        await eventually(lambda: bool(site.logins), what="the form was not posted")
        home = await calls.ok("browser_snapshot")
        assert 'heading "Welcome, ana"' in home
        missing = await calls.error("browser_click", ref=about)  # that page is gone
        assert "take a new browser_snapshot" in missing
    finally:
        await tools.browser.aclose()
    # The secret reached the site, and never a result the model read.
    assert site.logins == [{"user": "ana", "password": PASSWORD}]
    assert not [r for r in calls.results if PASSWORD in r]
    assert not profile_processes(short_tmp / ".browser-profile")  # closed with aclose


async def test_screenshots_count_against_the_workspace_cap(short_tmp: Path, site: Site) -> None:
    tools = _tools(short_tmp, LOCAL)
    assert tools.browser is not None
    calls = Calls(tools)
    shots = short_tmp / browser.SCREENSHOTS
    try:
        await calls.ok("browser_navigate", url=site.base + "/")
        tools.policy = Policy(workspace_max_bytes=1)
        full = await calls.error("browser_screenshot")
        assert "no room for a screenshot" in full and "Delete files" in full
        # Room for less than any file takes (a block): the screenshot is taken back.
        tools.policy = Policy(workspace_max_bytes=workspace_bytes(short_tmp) + 1024)
        over = await calls.error("browser_screenshot")
        # (The browser's own profile may grow meanwhile and fill the room first.)
        assert "so it was not kept" in over or "no room for a screenshot" in over
        assert not list(shots.glob("*.png")) and tools.take_images() == []
        tools.policy = Policy(workspace_max_bytes=2**30)
        await calls.ok("browser_screenshot")
        assert len(list(shots.glob("*.png"))) == 1 and len(tools.take_images()) == 1
    finally:
        await tools.browser.aclose()


async def test_a_secret_shown_by_the_page_is_redacted_and_unknown_names_are_refused(
    short_tmp: Path, site: Site
) -> None:
    tools = _tools(short_tmp, LOCAL, {"SITE_PASSWORD": PASSWORD})
    assert tools.browser is not None
    calls = Calls(tools)
    try:
        snap = await calls.ok("browser_navigate", url=site.base + "/")
        await calls.ok("browser_type", ref=ref_of(snap, 'textbox "User"'), secret="SITE_PASSWORD")
        # The field now shows the value in the accessibility tree: scrubbed before the model reads it.
        shown = await calls.ok("browser_snapshot")
        assert 'textbox "User": [REDACTED:SITE_PASSWORD]' in shown
        refused = await calls.error("browser_type", ref=ref_of(snap, 'textbox "User"'), secret="NOPE")
        assert "no secret named 'NOPE'" in refused and "SITE_PASSWORD" in refused
        both = await calls.error("browser_type", ref=ref_of(snap, 'textbox "User"'), text="x", secret="NOPE")
        assert "exactly one" in both
        # Tabs: a second one, listed, switched back.
        await calls.ok("browser_tabs", action="new", url=site.base + "/about")
        listed = await calls.ok("browser_tabs", action="list")
        assert "[1] 'About'" in listed and listed.count("*") == 1
        back = await calls.ok("browser_tabs", action="switch", index=0)
        assert "# Test Site" in back
        assert await calls.ok("browser_close") == "browser closed"
    finally:
        await tools.browser.aclose()
    assert not [r for r in calls.results if PASSWORD in r]


async def test_a_page_that_hangs_is_a_tool_error_and_the_browser_stays_usable(
    short_tmp: Path, site: Site
) -> None:
    tools = _tools(short_tmp, BrowserSettings(allow_private=True, navigation_timeout=2.0, action_timeout=2.0))
    assert tools.browser is not None
    calls = Calls(tools)
    try:
        await calls.ok("browser_navigate", url=site.base + "/")
        error = await calls.error("browser_navigate", url=site.base + "/hang")
        assert "did not load within 2 s" in error
        # The page shown before is still there to read, and the next navigation works.
        shown = await calls.ok("browser_snapshot")
        assert "# Test Site" in shown
        # A click that starts a navigation that hangs: the snapshot stops the loading.
        await calls.ok("browser_click", ref=ref_of(shown, "Slow page"))
        assert "# Test Site" in await calls.ok("browser_snapshot")
        after = await calls.ok("browser_navigate", url=site.base + "/about")
        assert 'heading "About this site"' in after
    finally:
        await tools.browser.aclose()


async def test_private_addresses_are_refused_by_default(short_tmp: Path, site: Site) -> None:
    tools = _tools(short_tmp, BrowserSettings())
    assert tools.browser is not None
    calls = Calls(tools)
    try:
        error = await calls.error("browser_navigate", url=site.base + "/")
        assert "127.0.0.1 is a loopback address" in error and "[tools.browser] allow_private" in error
        scheme = await calls.error("browser_navigate", url="file:///etc/passwd")
        assert "only absolute http:// and https://" in scheme
    finally:
        await tools.browser.aclose()
    assert not site.logins


async def test_every_request_goes_through_the_egress_proxy_by_default(short_tmp: Path, site: Site) -> None:
    # The first check (the navigation's address) is told loopback is public: the proxy, which
    # carries every request of the browser, still refuses it.
    web_browser = Browser(BrowserSettings(), short_tmp, refusal=lambda _address: None)
    try:
        page = await web_browser.call("browser_navigate", {"url": site.base + "/"}, {})
    finally:
        await web_browser.aclose()
    assert "HTTP 403" in page and "127.0.0.1 is a loopback address" in page
    assert "Log in" not in page and not site.logins


async def test_a_second_browser_in_the_same_workspace_gets_a_profile_of_its_own(
    short_tmp: Path, site: Site
) -> None:
    first, second = Browser(LOCAL, short_tmp), Browser(LOCAL, short_tmp)
    try:
        await first.call("browser_navigate", {"url": site.base + "/"}, {})
        page = await second.call("browser_navigate", {"url": site.base + "/about"}, {})
        assert 'heading "About this site"' in page
        assert first.session.profile == short_tmp / ".browser-profile"
        assert second.session.profile == short_tmp / f".browser-profile.{os.getpid()}"
        own = second.session.profile
    finally:
        await second.aclose()
        await first.aclose()
    assert not own.exists()  # removed with its browser; the shared one is kept
    assert (short_tmp / ".browser-profile").is_dir()
    assert not profile_processes(own) and not profile_processes(short_tmp / ".browser-profile")


def test_profiles_of_workers_that_are_gone_are_removed(tmp_path: Path) -> None:
    """A worker killed with SIGKILL cannot remove its own profile: the next browser started in the
    workspace does, and leaves the shared profile and those of live processes alone."""
    import subprocess
    import sys

    from spacebot.tools.browser_session import _sweep_profiles

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = tmp_path / f".browser-profile.{gone.pid}"
    alive = tmp_path / f".browser-profile.{os.getpid()}"
    shared = tmp_path / ".browser-profile"
    for path in (dead, alive, shared):
        (path / "Default").mkdir(parents=True)
    _sweep_profiles(tmp_path)
    assert not dead.exists() and alive.is_dir() and shared.is_dir()


def test_what_is_offered(tmp_path: Path) -> None:
    assert browser.connect(BrowserSettings(enabled=False), tmp_path) is None
    assert browser.connect(BrowserSettings(executable=str(tmp_path / "no-chromium")), tmp_path) is None
    default = browser.connect(BrowserSettings(), tmp_path)
    assert default is not None and "browser_evaluate" not in default.specs
    assert {"browser_navigate", "browser_snapshot", "browser_click", "browser_type"} <= set(default.specs)
    allowed = browser.connect(BrowserSettings(evaluate=True), tmp_path)
    assert allowed is not None and "browser_evaluate" in allowed.specs


def test_the_config_section() -> None:
    from spacebot.config import ConfigError, from_dict

    config = from_dict({"tools": {"browser": {"allow_private": True, "evaluate": True}}}, {})
    assert config.tools.browser.allow_private and config.tools.browser.evaluate
    assert from_dict({}, {}).tools.browser == BrowserSettings()
    with pytest.raises(ConfigError, match=r"tools\.browser\.navigation_timeout"):
        from_dict({"tools": {"browser": {"navigation_timeout": 0}}}, {})


def test_compact_snapshot_lines() -> None:
    raw = "\n".join(
        [
            "- generic [active] [ref=e1]:",
            "  - 'link \"Home: page\" [ref=e3] [cursor=pointer]':",
            "    - /url: /a",
            '  - paragraph [ref=e6]: "Some text with: colon"',
            "  - generic [ref=e8]:",
            "    - text: User",
            '    - textbox "User" [ref=e9]: bob',
            '  - checkbox "Remember" [checked] [ref=e13]',
            "  - generic [ref=e16] [cursor=pointer]: Clickable div",
            "  - iframe [ref=e22]:",
            '    - button "inner" [ref=f1e2]',
        ]
    )
    out = compact(raw, "T", "http://x/", 10_000)
    assert out.splitlines() == [
        "# T",
        "http://x/",
        '[e3] link "Home: page" -> /a',
        "paragraph: Some text with: colon",
        "User",
        '[e9] textbox "User": bob',
        '[e13] checkbox "Remember" [checked]',
        "[e16] generic: Clickable div",
        "iframe",
        '  [f1e2] button "inner"',
    ]
    cut = compact(raw, "T", "http://x/", 60)
    assert cut.endswith("[snapshot cut: showed 1 of 8 lines (60 characters)]")


def _worker_of(profile: Path) -> int | None:
    """The worker whose browser runs with ``profile``: the parent of Playwright's driver."""
    for pid in profile_processes(profile):
        try:
            for parent in psutil.Process(pid).parents():
                if "run-driver" in " ".join(parent.cmdline()):
                    return parent.ppid()
        except psutil.Error:
            continue
    return None


def _navigated(fake: FakeLLM, tool: str = "browser_navigate") -> int:
    """Model requests that follow a call of ``tool`` which showed the test site."""
    return sum(
        1
        for r in fake.requests
        if r.conversation.tool_results[-1:]
        and r.conversation.tool_results[-1][0] == tool
        and r.conversation.tool_results[-1][1].startswith("# Test Site")
    )


async def test_the_browser_ends_with_its_worker_killed_or_finished(short_tmp: Path, site: Site) -> None:
    worker_prompt = "You are a worker"
    async with FakeLLM() as fake:
        for said, task in (("look", "look at the site and wait"), ("read", "read the site")):
            fake.add(
                user=rf"Ana: {said}",
                tool_calls=[
                    FakeToolCall("spawn_worker", {"task": task}),
                    FakeToolCall("reply", {"content": "On it."}),
                ],
            )
        # The first worker opens the page, then stays busy until it is killed; the second opens
        # it and finishes.
        fake.add(
            system=worker_prompt,
            user="and wait",
            tool_result="browser_navigate",
            tool_calls=[FakeToolCall("shell", {"command": "sleep 600"})],
        )
        # The screenshot comes back as an image in a user message after the tool results.
        fake.add(system=worker_prompt, user="images from the tool calls above", text="page read")
        fake.add(
            system=worker_prompt,
            user="read the site",
            tool_result="browser_snapshot",
            tool_calls=[FakeToolCall("browser_screenshot", {})],
        )
        fake.add(
            system=worker_prompt,
            user="read the site",
            tool_result="shell",
            tool_calls=[FakeToolCall("browser_snapshot", {})],
        )
        fake.add(
            system=worker_prompt,
            user="read the site",
            tool_result="browser_navigate",
            tool_calls=[FakeToolCall("shell", {"command": "true"})],
        )
        fake.add(
            system=worker_prompt, tool_calls=[FakeToolCall("browser_navigate", {"url": site.base + "/"})]
        )
        fake.add(user=r"finished \(success\)", tool_calls=[FakeToolCall("reply", {"content": "{last_user}"})])
        extra: dict[str, dict[str, object]] = {"tools": {"browser": {"allow_private": True}}}
        async with ChatSystem(short_tmp, fake, sections_extra=extra) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "look please")
            profile = (system.sup.home / "agents" / "main" / "workspace" / ".browser-profile").resolve()
            await eventually(lambda: _navigated(fake) == 1, timeout=90.0, what="the page was not opened")
            worker = _worker_of(profile)
            assert worker is not None and profile_processes(profile)
            os.kill(worker, signal.SIGKILL)
            await eventually(
                lambda: not profile_processes(profile),
                timeout=60.0,
                what=lambda: f"browser processes left: {profile_processes(profile)}",
            )
            assert not psutil.pid_exists(worker) or psutil.Process(worker).status() == psutil.STATUS_ZOMBIE

            # A worker that finishes closes its browser on the way out. (Another conversation: this
            # one is busy hearing of the killed worker.)
            other = await ana.create()
            await ana.open(other)
            await ana.send(other, "read please")

            def answered(frame: dict[str, Any]) -> bool:
                return frame["type"] == "message" and "page read" in frame["message"].get("text", "")

            await ana.wait_for(answered, timeout=90.0)
            await eventually(
                lambda: not profile_processes(profile),
                timeout=60.0,
                what=lambda: f"browser processes left: {profile_processes(profile)}",
            )
    # Both workers read the page through the browser.
    assert _navigated(fake) == 2
    # The shell call between them (and the sweep for escapees that ends it) left the browser be.
    assert _navigated(fake, "browser_snapshot") == 1
    # The screenshot reached the model as an image, after the tool results.
    after = [r for r in fake.requests if worker_prompt in r.conversation.system and _has_image(r.body)]
    assert len(after) == 1


def _has_image(body: dict[str, Any]) -> bool:
    """Whether an OpenAI chat request carries an image part in a user message."""
    for message in body.get("messages", []):
        content = message.get("content")
        if (
            message.get("role") == "user"
            and isinstance(content, list)
            and any(part.get("type") == "image_url" for part in content)
        ):
            return True
    return False
