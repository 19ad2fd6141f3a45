"""A small Chrome DevTools Protocol driver for browser tests in Debian's headless Chromium.

No Playwright download, no Selenium: Chromium is started with ``--remote-debugging-port=0``, the
port is read from ``DevToolsActivePort`` in its profile directory, and commands go over the
browser's WebSocket (aiohttp) with flattened target sessions. Waits poll a JavaScript condition
with a deadline; nothing sleeps for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
]


def chromium_path() -> str | None:
    """Debian's Chromium (or ``$SPACEBOT_CHROMIUM``), if installed."""
    explicit = os.environ.get("SPACEBOT_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class CDPError(RuntimeError):
    """A protocol command failed (or the page threw)."""


class Browser:
    """One headless Chromium process and its DevTools connection."""

    def __init__(self, proc: subprocess.Popen[bytes], profile: Path) -> None:
        self.proc = proc
        self.profile = profile
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._listeners: dict[str, list[Any]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._log: Any = None

    @classmethod
    async def launch(cls, timeout: float = 30.0) -> Browser:
        exe = chromium_path()
        if exe is None:
            raise FileNotFoundError("Chromium not found: install Debian's 'chromium' package")
        profile = Path(tempfile.mkdtemp(prefix="sb-chromium-"))
        # Its chatter goes to a file, not a pipe: nobody reads a pipe while it runs, and a full
        # one would stall Chromium.
        log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns once started
            [exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        browser = cls(proc, profile)
        browser._log = log
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                err = log.read().decode(errors="replace")[-2000:]
                await browser.close()
                raise RuntimeError(f"Chromium did not start (exit {proc.returncode}): {err}")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        browser._session = aiohttp.ClientSession()
        browser._ws = await browser._session.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        browser._reader = asyncio.get_running_loop().create_task(browser._read())
        return browser

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for msg in self._ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    continue
                data = msg.json()
                if "id" in data:
                    fut = self._waiting.pop(data["id"], None)
                    if fut is not None and not fut.done():
                        if "error" in data:
                            fut.set_exception(CDPError(data["error"].get("message", str(data["error"]))))
                        else:
                            fut.set_result(data.get("result", {}))
                else:
                    key = f"{data.get('sessionId', '')}:{data.get('method')}"
                    for callback in self._listeners.get(key, []):
                        callback(data.get("params", {}))
        finally:
            for fut in self._waiting.values():
                if not fut.done():
                    fut.set_exception(CDPError("the DevTools connection closed"))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: str = "", timeout: float = 15.0
    ) -> Any:
        """Run one protocol command and return its result."""
        assert self._ws is not None
        ident = next(self._ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = fut
        frame: dict[str, Any] = {"id": ident, "method": method, "params": params or {}}
        if session:
            frame["sessionId"] = session
        await self._ws.send_json(frame)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            raise CDPError(f"{method} did not answer within {timeout} s") from None

    def on(self, session: str, method: str, callback: Any) -> None:
        """Call ``callback(params)`` for every ``method`` event of a session."""
        self._listeners.setdefault(f"{session}:{method}", []).append(callback)

    async def new_page(self) -> Page:
        """A fresh tab."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        page = Page(self, attached["sessionId"])
        await page.start()
        return page

    async def close(self) -> None:
        """Close the connection, stop Chromium, remove its profile."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(Exception):
                await self.send("Browser.close", timeout=3.0)
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                await asyncio.to_thread(self.proc.wait, 5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)


class Page:
    """One tab: navigate, evaluate, type, click, wait for conditions."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        self.errors: list[str] = []
        self.console: list[str] = []
        self._loaded = asyncio.Event()

    async def start(self) -> None:
        self.browser.on(self.session, "Page.loadEventFired", lambda _p: self._loaded.set())
        self.browser.on(self.session, "Runtime.exceptionThrown", self._exception)
        self.browser.on(
            self.session,
            "Runtime.consoleAPICalled",
            lambda p: self.console.append(
                " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            ),
        )
        await self.send("Page.enable")
        await self.send("Runtime.enable")

    def _exception(self, params: dict[str, Any]) -> None:
        details = params.get("exceptionDetails", {})
        self.errors.append(details.get("exception", {}).get("description") or details.get("text", "?"))

    async def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 15.0) -> Any:
        return await self.browser.send(method, params, session=self.session, timeout=timeout)

    async def goto(self, url: str, timeout: float = 15.0) -> None:
        self._loaded.clear()
        result = await self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise CDPError(f"cannot open {url}: {result['errorText']}")
        async with asyncio.timeout(timeout):
            await self._loaded.wait()

    async def reload(self, timeout: float = 15.0) -> None:
        self._loaded.clear()
        await self.send("Page.reload")
        async with asyncio.timeout(timeout):
            await self._loaded.wait()

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise CDPError(details.get("exception", {}).get("description") or details.get("text", "error"))
        return result.get("result", {}).get("value")

    async def wait_for(self, expression: str, timeout: float = 15.0) -> Any:
        """Poll ``expression`` until it is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            last = await self.evaluate(expression)
            if last:
                return last
            await asyncio.sleep(0.05)
        raise TimeoutError(f"still false after {timeout} s: {expression} (last value {last!r})")

    async def type(self, selector: str, text: str) -> None:
        """Focus an input and type into it (input events fire as for a person)."""
        await self.evaluate(f"document.querySelector({selector!r}).focus()")
        await self.send("Input.insertText", {"text": text})

    async def press_enter(self) -> None:
        # keyDown with text is a real key press: keydown, then keypress/input unless prevented.
        for kind in ("keyDown", "keyUp"):
            params: dict[str, Any] = {
                "type": kind,
                "key": "Enter",
                "code": "Enter",
                "windowsVirtualKeyCode": 13,
            }
            if kind == "keyDown":
                params["text"] = "\r"
            await self.send("Input.dispatchKeyEvent", params)

    async def click(self, selector: str) -> None:
        """Click the middle of the element, as a mouse would."""
        box = await self.evaluate(
            f"""(() => {{ const el = document.querySelector({selector!r}); if (!el) return null;
            el.scrollIntoView({{block: 'center'}}); const r = el.getBoundingClientRect();
            return [r.left + r.width / 2, r.top + r.height / 2]; }})()"""
        )
        if not box:
            raise CDPError(f"nothing matches {selector!r}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": box[0], "y": box[1], "button": "left", "clickCount": 1},
            )

    async def screenshot(self, path: Path) -> None:
        import base64

        data = await self.send("Page.captureScreenshot", {"format": "png"})
        await asyncio.to_thread(path.write_bytes, base64.b64decode(data["data"]))
