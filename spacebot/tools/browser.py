"""The ``browser_*`` worker tools: a headless Chromium driven through Playwright (docs/tools.md).

The browser (:class:`~spacebot.tools.browser_session.BrowserSession`: the system's Chromium, a
persistent profile in the workspace, its processes) starts on the first browser call and closes
with the worker.

What it can reach: with ``allow_private = false`` (the default) every request of the browser goes
through an egress proxy that refuses loopback, private, link-local and other non-public addresses;
``browser_navigate`` checks the address first too
(:func:`~spacebot.tools.web_fetch.checked_addresses`) so the model reads why.

Pages are read as accessibility snapshots (:mod:`spacebot.tools.browser_snapshot`): one line per
node, a ref such as ``e3`` per interactive element; ``browser_click``/``browser_type`` take the
ref back (Playwright's ``aria-ref`` selector, against the page's last snapshot). ``browser_type``
can type a tool secret by name: the value goes to the page and never into a result.

Calls are one at a time (a lock); a Playwright error becomes a :class:`ToolError` naming the tool.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yarl import URL

from spacebot.llm.types import ImagePart, ToolSpec
from spacebot.tools import egress
from spacebot.tools.browser_session import BrowserSession, first_lines
from spacebot.tools.browser_snapshot import compact
from spacebot.tools.errors import ToolArgumentError, ToolError
from spacebot.tools.schema import spec
from spacebot.tools.web_fetch import Refusal, checked_addresses

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Locator, Page

    from spacebot.config import BrowserSettings

log = logging.getLogger("spacebot.tools.browser")

IMAGE_BYTES = 3 * 2**20
"""Largest screenshot shown to the model (providers refuse images over about 5 MB of base64)."""
SCREENSHOTS = "screenshots"
"""Where screenshots are saved, relative to the workspace."""
LOAD_GRACE = 5.0
"""Seconds to wait for ``load`` once a navigated page's document is in (images, scripts)."""

_REF = re.compile(r"^(f\d+)?e\d+$")

BROWSER_NAVIGATE = spec(
    "browser_navigate",
    "Open a URL in the browser's current tab and return the page's snapshot (see browser_snapshot).",
    {"url": {"type": "string", "description": "An absolute http:// or https:// URL."}},
    ["url"],
)
BROWSER_SNAPSHOT = spec(
    "browser_snapshot",
    "The current page as text: one line per element of its accessibility tree. Interactive "
    "elements carry a ref such as [e3], which browser_click and browser_type take. Refs stay the "
    "same while the element does; take a new snapshot after the page changes.",
    {},
    [],
)
BROWSER_CLICK = spec(
    "browser_click",
    "Click the element with this ref (from the last snapshot).",
    {"ref": {"type": "string", "description": "A ref from the last snapshot, e.g. e3."}},
    ["ref"],
)
BROWSER_TYPE = spec(
    "browser_type",
    "Fill a text field (or choose an option of a select) with `text`, or with the value of the "
    "stored secret named `secret` (typed without you ever seeing it). Give exactly one of them.",
    {
        "ref": {"type": "string", "description": "A ref from the last snapshot, e.g. e9."},
        "text": {"type": "string", "description": "The text to type."},
        "secret": {"type": "string", "description": "The name of a stored secret to type instead."},
        "submit": {"type": "boolean", "description": "Press Enter afterwards (default false)."},
    },
    ["ref"],
)
BROWSER_PRESS = spec(
    "browser_press",
    "Press a key or a combination in the page (Enter, Tab, Escape, ArrowDown, Control+a ...).",
    {"key": {"type": "string"}},
    ["key"],
)
BROWSER_SCREENSHOT = spec(
    "browser_screenshot",
    f"Save a PNG screenshot of the current page in the workspace ({SCREENSHOTS}/) and return its path.",
    {"full_page": {"type": "boolean", "description": "The whole page, not only the viewport."}},
    [],
)
BROWSER_TABS = spec(
    "browser_tabs",
    "List the tabs, open a new one (optionally at a URL), switch to one or close one by index.",
    {
        "action": {"type": "string", "enum": ["list", "new", "switch", "close"]},
        "index": {"type": "integer", "minimum": 0, "description": "The tab (switch, close)."},
        "url": {"type": "string", "description": "A URL to open in the new tab (new)."},
    },
    ["action"],
)
BROWSER_CLOSE = spec(
    "browser_close",
    "Close the browser and all its tabs (the next browser call starts it again; the profile, "
    "with its cookies and logins, is kept).",
    {},
    [],
)
BROWSER_EVALUATE = spec(
    "browser_evaluate",
    "Run a JavaScript expression or function in the current page and return its result as JSON.",
    {"script": {"type": "string", "description": "e.g. document.title or () => location.href"}},
    ["script"],
)
BROWSER_TOOLS = [
    BROWSER_NAVIGATE,
    BROWSER_SNAPSHOT,
    BROWSER_CLICK,
    BROWSER_TYPE,
    BROWSER_PRESS,
    BROWSER_SCREENSHOT,
    BROWSER_TABS,
    BROWSER_CLOSE,
]


def unavailable(settings: BrowserSettings) -> str | None:
    """Why the browser tools cannot be offered, or ``None`` when they can."""
    if not settings.enabled:
        return "[tools.browser] enabled = false"
    if not os.access(settings.executable, os.X_OK):
        return f"the browser {settings.executable!r} does not exist ([tools.browser] executable)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    return None


class Browser:
    """One worker's browser: started on the first call, closed with :meth:`aclose`.

    Args:
        settings: ``[tools.browser]``.
        workspace: the worker's workspace (profile and screenshots live there).
        refusal: the address check of ``browser_navigate`` (tests may swap it).
    """

    def __init__(
        self, settings: BrowserSettings, workspace: Path, *, refusal: Refusal = egress.refusal
    ) -> None:
        self.settings = settings
        self.workspace = workspace
        self.refusal = refusal
        tools = [*BROWSER_TOOLS, *([BROWSER_EVALUATE] if settings.evaluate else [])]
        self.specs: dict[str, ToolSpec] = {t.name: t for t in tools}
        self.session = BrowserSession(settings, workspace)
        """The running browser (started by the first call that needs it)."""
        self._page: Page | None = None
        self._lock = asyncio.Lock()
        self.images: list[ImagePart] = []
        """Screenshots taken since the worker last collected them (:meth:`take_images`), for the
        model to see (tool results are text)."""
        self._shot: tuple[Path, bool] | None = None
        """The last screenshot saved, and whether it joined ``images``."""

    # -- the tool calls --------------------------------------------------------------------------

    async def call(self, name: str, args: dict[str, Any], secrets: Mapping[str, str]) -> str:
        """Run one checked browser call; every failure is a :class:`ToolError` naming the tool.

        Args:
            name: the tool.
            args: its checked arguments.
            secrets: the worker's tool secrets by name (``browser_type``'s ``secret``).
        """
        from playwright.async_api import Error as PlaywrightError

        async with self._lock:
            try:
                return self._cap(await self._dispatch(name, args, secrets))
            except PlaywrightError as exc:
                raise ToolError(f"{name}: {first_lines(exc.message)}") from None

    def _cap(self, text: str) -> str:
        limit = self.settings.max_chars
        if len(text) <= limit:
            return text
        return f"{text[:limit]}\n[truncated: showed {limit} of {len(text)} characters]"

    async def _dispatch(self, name: str, args: dict[str, Any], secrets: Mapping[str, str]) -> str:
        if name == "browser_close":
            running = self.session.context is not None
            await self.stop()
            return "browser closed" if running else "the browser was not running"
        if name == "browser_tabs":
            return await self._tabs(args)
        if name == "browser_navigate":
            return await self._navigate(args["url"])
        page = await self._current()
        if name == "browser_snapshot":
            return await self.snapshot(page)
        if name == "browser_click":
            return await self._click(page, args["ref"])
        if name == "browser_type":
            return await self._type(page, args, secrets)
        if name == "browser_press":
            await page.keyboard.press(args["key"])
            return f"pressed {args['key']}; now at {await self._where(page)}"
        if name == "browser_screenshot":
            return await self._screenshot(page, bool(args.get("full_page", False)))
        if name == "browser_evaluate" and self.settings.evaluate:
            result = await page.evaluate(args["script"])
            return json.dumps(result, ensure_ascii=False, default=str)
        raise ToolArgumentError(f"unknown browser tool {name!r}")

    @property
    def _action_ms(self) -> float:
        return self.settings.action_timeout * 1000

    async def snapshot(self, page: Page) -> str:
        """The page's compact accessibility snapshot (what ``browser_snapshot`` returns).

        A page stuck loading (a click that started a navigation that hangs) blocks the snapshot:
        then the loading is stopped and the snapshot taken again, once.
        """
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        try:
            raw = await page.aria_snapshot(mode="ai", timeout=self._action_ms)
        except PlaywrightTimeout:
            await self._stop_loading(page)
            raw = await page.aria_snapshot(mode="ai", timeout=self._action_ms)
        return compact(raw, await page.title(), page.url, self.settings.max_chars)

    async def _where(self, page: Page) -> str:
        with contextlib.suppress(Exception):  # a page mid-navigation has no title yet
            return f"{await page.title()!r} ({page.url})"
        return page.url

    async def _find(self, page: Page, ref: str) -> Locator:
        if not _REF.match(ref):
            raise ToolArgumentError(f"argument 'ref' must be a ref from the snapshot such as e3, got {ref!r}")
        locator = page.locator(f"aria-ref={ref}")
        if await locator.count() == 0:
            raise ToolError(f"no element [{ref}] on the page: take a new browser_snapshot and use its refs")
        return locator

    async def _navigate(self, url: str, *, new_tab: bool = False) -> str:
        """Open ``url`` in the current tab (or a new one); the page's snapshot."""
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        target = await self._checked(url)  # before a browser or a tab is started for it
        if new_tab:
            page = self._page = await (await self._ensure()).new_page()
        else:
            page = await self._current()
        timeout = self.settings.navigation_timeout
        started = time.monotonic()
        try:
            response = await page.goto(target, wait_until="domcontentloaded", timeout=timeout * 1000)
        except PlaywrightTimeout:
            await self._stop_loading(page)
            raise ToolError(
                f"browser_navigate: {url!r} did not load within {timeout:g} s "
                "([tools.browser] navigation_timeout); the tab is still usable"
            ) from None
        left = timeout - (time.monotonic() - started)
        with contextlib.suppress(PlaywrightTimeout):
            await page.wait_for_load_state("load", timeout=max(0.1, min(LOAD_GRACE, left)) * 1000)
        note = f"HTTP {response.status}\n" if response is not None and response.status >= 400 else ""
        return note + await self.snapshot(page)

    async def _stop_loading(self, page: Page) -> None:
        """Stop a navigation that timed out (as the stop button does): until then the tab waits
        for it and even a snapshot of the page still shown would time out."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.settings.action_timeout):
                session = await page.context.new_cdp_session(page)
                try:
                    await session.send("Page.stopLoading")
                finally:
                    await session.detach()

    async def _checked(self, url: str) -> str:
        """``url`` if the browser may open it; a :class:`ToolError` saying why not otherwise."""
        try:
            parsed = URL(url)
        except (ValueError, TypeError) as exc:
            raise ToolError(f"browser_navigate: {url!r} is not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise ToolError(
                f"browser_navigate: only absolute http:// and https:// URLs can be opened, got {url!r}"
            )
        if not self.settings.allow_private:
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            try:
                await checked_addresses(parsed.raw_host, port, allow_private=False, refusal=self.refusal)
            except ToolError as exc:
                why = str(exc).replace("[tools.web_fetch]", "[tools.browser]").replace("fetched", "opened")
                raise ToolError(why.replace("web_fetch:", "browser_navigate:", 1)) from None
        return url

    async def _click(self, page: Page, ref: str) -> str:
        from playwright.async_api import TimeoutError as PlaywrightTimeout

        locator = await self._find(page, ref)
        try:
            await locator.click(timeout=self._action_ms)
        except PlaywrightTimeout as exc:
            if "click action done" not in exc.message:
                raise
            # Clicked, and what it started (a navigation) has not finished within the action's
            # timeout: said so; a snapshot stops the loading if it still blocks the page.
            return (
                f"clicked [{ref}]; the page is still loading after {self.settings.action_timeout:g} s "
                "(browser_snapshot shows what is there)"
            )
        return f"clicked [{ref}]; now at {await self._where(page)}"

    async def _type(self, page: Page, args: dict[str, Any], secrets: Mapping[str, str]) -> str:
        ref, text, secret = args["ref"], args.get("text"), args.get("secret")
        if (text is None) == (secret is None):
            raise ToolArgumentError("browser_type: give exactly one of 'text' and 'secret'")
        value: str
        if secret is not None:
            if secret not in secrets:
                known = ", ".join(sorted(secrets)) or "none"
                raise ToolError(f"browser_type: no secret named {secret!r} (secrets: {known})")
            value, what = secrets[secret], f"the secret {secret!r}"
        else:
            value = str(text)
            what = f"{len(value)} characters"
        locator = await self._find(page, ref)
        if await locator.evaluate("e => e.tagName") == "SELECT":
            await locator.select_option(label=value, timeout=self._action_ms)
            what = f"option {value!r}" if secret is None else what
        else:
            await locator.fill(value, timeout=self._action_ms)
        if args.get("submit"):
            await locator.press("Enter", timeout=self._action_ms)
        return f"typed {what} into [{ref}]" + ("; pressed Enter" if args.get("submit") else "")

    async def _screenshot(self, page: Page, full_page: bool) -> str:
        folder = self.workspace / SCREENSHOTS
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"browser-{stamp}.png"
        n = 1
        while path.exists():
            n += 1
            path = folder / f"browser-{stamp}-{n}.png"
        data = await page.screenshot(path=str(path), full_page=full_page, timeout=self._action_ms)
        saved = (
            f"saved a screenshot of {page.url} to {path.relative_to(self.workspace)} ({len(data)} bytes, PNG)"
        )
        if len(data) > IMAGE_BYTES:
            self._shot = (path, False)
            too_big = f"over {IMAGE_BYTES // 2**20} MiB"
            return f"{saved}; it is too large to show you ({too_big}): take one without full_page"
        self.images.append(ImagePart("image/png", base64.b64encode(data).decode()))
        self._shot = (path, True)
        return f"{saved}; it is shown to you after the tool results"

    async def discard_screenshot(self) -> int:
        """Take back the last screenshot (the workspace had no room for it): its file is removed
        and the model is not shown it. Returns the bytes it took."""
        shot, self._shot = self._shot, None
        if shot is None:
            return 0
        path, shown = shot
        if shown and self.images:
            self.images.pop()
        size = await asyncio.to_thread(lambda: path.stat().st_size if path.exists() else 0)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        return size

    def take_images(self) -> list[ImagePart]:
        """The screenshots taken since the last call (each shown to the model once)."""
        images, self.images = self.images, []
        return images

    async def _tabs(self, args: dict[str, Any]) -> str:
        action = args["action"]
        if action == "new":
            if args.get("url"):
                return "opened a new tab\n" + await self._navigate(args["url"], new_tab=True)
            context = await self._ensure()
            page = self._page = await context.new_page()
            return f"opened tab {context.pages.index(page)} (blank)"
        if self.session.context is None:
            return "the browser is not running (no tabs)"
        pages = self.session.context.pages
        if action in ("switch", "close"):
            index = args.get("index")
            if index is None or index >= len(pages):
                raise ToolArgumentError(f"browser_tabs: {action} needs an 'index' from 0 to {len(pages) - 1}")
            page = pages[index]
            if action == "switch":
                self._page = page
                await page.bring_to_front()
                return f"switched to tab {index}\n" + await self.snapshot(page)
            await page.close()
            if self._page is page:
                self._page = None
        lines = []
        for i, page in enumerate(self.session.context.pages):
            mark = "*" if page is self._page else " "
            lines.append(f"{mark} [{i}] {await self._where(page)}")
        return "\n".join(lines) or "no tabs"

    # -- the browser's life ----------------------------------------------------------------------

    async def _current(self) -> Page:
        context = await self._ensure()
        if self._page is None or self._page.is_closed():
            self._page = context.pages[-1] if context.pages else await context.new_page()
        return self._page

    async def _ensure(self) -> BrowserContext:
        if self.session.context is not None and self.session.gone:
            log.warning("the browser closed by itself: starting it again")
            await self.stop()
        return self.session.context or await self.session.start()

    async def stop(self) -> None:
        """Close the browser (its profile stays)."""
        self._page = None
        await self.session.stop()

    async def aclose(self) -> None:
        """Close the browser if it runs (the worker's way out)."""
        async with self._lock:
            await self.stop()


def connect(settings: BrowserSettings, workspace: Path) -> Browser | None:
    """The worker's browser tools as configured (``None`` when they cannot be offered)."""
    why = unavailable(settings)
    if why is not None:
        if settings.enabled:
            log.info("browser tools not offered: %s", why)
        return None
    return Browser(settings, workspace)
