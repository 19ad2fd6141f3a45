"""One worker's running browser: Playwright's driver, Chromium, its profile and its proxy.

:class:`BrowserSession` starts the system's Chromium (``[tools.browser] executable``; never a
downloaded one) headless through Playwright, with a persistent profile in the workspace, and stops
it gracefully, then by force.

**Profile.** The workspace's ``.browser-profile``, so a login survives from one task to the next.
The workers of one agent share a workspace: the profile is held with a file lock (released by the
kernel however the holder ends), and a worker that finds it held uses a profile of its own for its
life (``.browser-profile.<pid>``, removed when it stops).

**Network.** With ``allow_private = false`` every request of the browser goes through an
:class:`~spacebot.tools.egress.EgressProxy` of its own, which refuses non-public addresses after
resolving the name itself (Playwright sends loopback through the proxy too).

**Processes.** Playwright's driver (node) is a child of the worker and in its process group;
Chromium runs under the driver in a session of its own, and its crash handlers leave it (double
fork) to be re-parented to the worker, a subreaper. Driver and crash handlers are counted among the
sandbox's running calls, so the sweep that ends a shell call (which kills every other child of the
worker as an escapee) leaves them alone. When the worker is killed, the driver dies with its
process group, Chromium exits as its pipe to the driver closes, and what remains is re-parented to
the supervisor, which kills orphans.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib
import logging
import os
import re
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from spacebot.tools import sandbox
from spacebot.tools.egress import EgressProxy
from spacebot.tools.errors import ToolError

if TYPE_CHECKING:
    from playwright.async_api import BrowserContext, Playwright

    from spacebot.config import BrowserSettings

log = logging.getLogger("spacebot.tools.browser")

PROFILE = ".browser-profile"
"""The shared profile directory, relative to the workspace."""
LAUNCH_TIMEOUT = 60.0
"""Seconds Chromium may take to start."""
CLOSE_TIMEOUT = 10.0
"""Seconds a graceful close may take before the browser's processes are killed."""
ARGS = ["--no-first-run", "--no-default-browser-check"]
"""Chromium flags beyond Playwright's: no first-run UI."""


def _children() -> set[int]:
    """This process's direct children."""
    pids: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        for task in Path("/proc/self/task").iterdir():
            pids.update(int(p) for p in (task / "children").read_text().split())
    return pids


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _of_profile(argv: list[str], profile: Path) -> bool:
    return f"--user-data-dir={profile}" in argv or any(a.startswith(f"--database={profile}/") for a in argv)


def _sweep_profiles(workspace: Path) -> None:
    """Remove the own profiles (``.browser-profile.<pid>``) of workers that are gone: one killed
    with SIGKILL had no chance to remove its own. A profile whose worker still runs, or that a
    browser still uses, stays."""
    for path in workspace.glob(f"{PROFILE}.*"):
        pid = path.name.rpartition(".")[2]
        if not pid.isdigit() or not path.is_dir() or Path(f"/proc/{pid}").exists():
            continue
        if profile_processes(path):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("removed the browser profile of a worker that is gone: %s", path)


def profile_processes(profile: Path) -> list[int]:
    """Live browser processes of ``profile``: Chromium's (``--user-data-dir``) and its crash
    handlers' (their database is in the profile: Chromium runs with ``HOME`` there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _of_profile(_cmdline(int(entry.name)), profile):
            with contextlib.suppress(OSError):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X"):
                    found.append(int(entry.name))
    return found


_PROGRESS = re.compile(
    r"^(\d+ × )?(waiting|retrying|attempting|scrolling|done scrolling|element is|locator resolved|"
    r"performing|click action done|navigated to|navigating to)"
)


def first_lines(text: str, limit: int = 400) -> str:
    """A Playwright error message on one line: the message, and from its call log the last line
    that says why (``<div id="cover"> intercepts pointer events``), if any."""
    head, _, calls = text.partition("\nCall log:")
    head = " ".join(head.split())
    reasons = [
        line
        for raw in calls.splitlines()
        if (line := raw.strip().lstrip("-").strip()) and not _PROGRESS.match(line)
    ]
    if reasons:
        head += f" ({reasons[-1]})"
    return head if len(head) <= limit else head[: limit - 3] + "..."


class BrowserSession:
    """Chromium for one worker: :meth:`start` (again after :meth:`stop`), :meth:`stop`.

    Args:
        settings: ``[tools.browser]``.
        workspace: the worker's workspace (the profile lives there).
    """

    def __init__(self, settings: BrowserSettings, workspace: Path) -> None:
        self.settings = settings
        self.workspace = workspace
        self.context: BrowserContext | None = None
        """The running browser (its persistent context), or ``None``."""
        self.profile: Path | None = None
        """The profile directory of the running browser."""
        self.gone = False
        """Chromium exited or crashed by itself (the next :meth:`start` replaces it)."""
        self._pw: Playwright | None = None
        self._proxy: EgressProxy | None = None
        self._lock_fd: int | None = None
        self._own_profile = False
        self._helpers: set[int] = set()
        """Our children that are the browser's: the driver and adopted crash handlers."""

    def _take_profile(self) -> Path:
        """The shared profile when no other worker holds it, else one for this process alone."""
        shared = self.workspace / PROFILE
        shared.mkdir(parents=True, exist_ok=True)
        _sweep_profiles(self.workspace)
        fd = os.open(self.workspace / f"{PROFILE}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            own = self.workspace / f"{PROFILE}.{os.getpid()}"
            own.mkdir(exist_ok=True)
            self._own_profile = True
            return own
        self._lock_fd = fd
        self._own_profile = False
        return shared

    async def start(self) -> BrowserContext:
        """Start the browser; a :class:`ToolError` saying why when it cannot."""
        try:
            api = await asyncio.to_thread(importlib.import_module, "playwright.async_api")
        except ImportError as exc:
            raise ToolError(
                f"the browser needs the playwright package ({exc}): pip install playwright"
            ) from None
        settings = self.settings
        before = _children()
        try:
            self._pw = await api.async_playwright().start()
            self._adopt({p for p in _children() - before if "run-driver" in _cmdline(p)})
            self.profile = profile = await asyncio.to_thread(self._take_profile)
            proxy: dict[str, str] | None = None
            if not settings.allow_private:
                self._proxy = await EgressProxy().start()
                proxy = {"server": f"http://127.0.0.1:{self._proxy.port}"}
            # A clean environment (never the worker's API keys); HOME in the profile so that what
            # Chromium keeps outside it (its crash handler's database) stays with the profile.
            env: dict[str, str | float | bool] = {**sandbox.default_env(self.workspace)}
            env["HOME"] = str(profile)
            await asyncio.to_thread((self.workspace / ".tmp").mkdir, parents=True, exist_ok=True)
            context = await self._pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=settings.executable,
                headless=True,
                args=ARGS,
                env=env,
                proxy=proxy,  # type: ignore[arg-type]
                accept_downloads=False,
                timeout=LAUNCH_TIMEOUT * 1000,
            )
            self._adopt({p for p in _children() - before if _of_profile(_cmdline(p), profile)})
        except Exception as exc:
            await self.stop()
            raise ToolError(
                f"the browser ({settings.executable}) did not start: {first_lines(str(exc))}"
            ) from None
        self.context, self.gone = context, False
        context.on("close", self._on_close)
        context.set_default_timeout(settings.action_timeout * 1000)
        context.set_default_navigation_timeout(settings.navigation_timeout * 1000)
        log.info("browser started: %s profile=%s", settings.executable, profile)
        return context

    def _adopt(self, pids: set[int]) -> None:
        """Children of ours that belong to the browser: not escapees for the sandbox's sweeps."""
        self._helpers |= pids
        sandbox._active.update(pids)

    def _on_close(self, _context: BrowserContext) -> None:
        self.gone = True

    async def stop(self) -> None:
        """Close the browser (gracefully, then by force), the driver, the proxy and the profile."""
        context, pw, proxy, profile = self.context, self._pw, self._proxy, self.profile
        self.context = self._pw = self._proxy = self.profile = None
        if context is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await context.close()
        if pw is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(CLOSE_TIMEOUT):
                    await pw.stop()
        helpers, self._helpers = self._helpers, set()
        if profile is not None:
            for pid in await asyncio.to_thread(profile_processes, profile):
                log.debug("killing browser process pid=%d left after close", pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if self._own_profile:
                await asyncio.to_thread(shutil.rmtree, profile, True)
        await sandbox.reap({p for p in helpers if p in _children()})  # adopted crash handlers
        sandbox._active.difference_update(helpers)
        if proxy is not None:
            await proxy.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the profile's lock
            self._lock_fd = None
