"""Is a TCP port free, who holds it, and where does a process listen: for clear start-up messages."""

from __future__ import annotations

import contextlib
import errno
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import psutil

from spacebot.errors import ConfigError

if TYPE_CHECKING:
    from aiohttp import web


def holder(port: int) -> str:
    """`` (by pid N, name)`` for the process listening on ``port``, or ``""`` when it cannot be
    seen (another user's process without the privilege to inspect it)."""
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                name = ""
                with contextlib.suppress(psutil.Error):
                    name = f", {psutil.Process(conn.pid).name()}"
                return f" (by pid {conn.pid}{name})"
    return ""


def in_use(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on now (``None``: it can).

    Tries the bind itself, with the same ``SO_REUSEADDR`` the web chat uses, so a port left in
    TIME_WAIT by our own previous run counts as free and one with a listener does not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} is in use{holder(port)}"
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def listening_port(pid: int) -> int:
    """The TCP port process ``pid`` listens on (0 = none, or not visible)."""
    with contextlib.suppress(psutil.Error):
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr:
                return int(conn.laddr.port)
    return 0


async def start_site(
    runner: web.AppRunner, host: str, port: int, *, what: str, section: str
) -> tuple[web.TCPSite, int]:
    """Listen with ``runner`` (set up) on ``host:port``; returns the site and the port bound (``port``
    0: any free one). A port that cannot be listened on is a :class:`ConfigError` in one line, not a
    traceback (the runner is cleaned up; the process's restarts retry it with back-off)."""
    from aiohttp import web

    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        why = f"port {port} is in use{holder(port)}" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise ConfigError(
            f"{what} cannot listen on {host}:{port}: {why}; set [{section}] port (0 = any free port)"
        ) from None
    return site, runner.addresses[0][1] if runner.addresses else port


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, host: str, port: int, *, what: str, section: str
) -> AsyncIterator[int]:
    """Serve ``app`` on ``host:port`` for the body of the ``async with``; yields the port bound.

    The listeners that only answer requests (metrics, the API) share this; the web chat keeps its
    own sequence because it says goodbye to open sockets between closing the site and the runner.
    """
    from aiohttp import web

    # Handlers still finishing at the end get a short bound; the process is stopping.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site, bound = await start_site(runner, host, port, what=what, section=section)
    try:
        yield bound
    finally:
        await site.stop()
        await runner.cleanup()
