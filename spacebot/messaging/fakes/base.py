"""What every platform fake shares: an async context that starts and stops it, waiting on its state
from tests, and running one from the command line until it is told to stop."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Self, TypeVar

from aiohttp import web

T = TypeVar("T")


class FakeServer:
    """Base of the loopback platform fakes. A subclass sets ``self._changed = asyncio.Event()`` in
    its ``__init__``, implements :meth:`start` and :meth:`stop`, and calls :meth:`_notify` after
    every change of its state that a test may wait for."""

    _changed: asyncio.Event

    async def start(self) -> Any:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def _notify(self) -> None:
        """Wake every :meth:`wait_for`: the state changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Wait until ``predicate()`` is truthy (checked after every change); return its value.

        Raises:
            TimeoutError: It stayed false for ``timeout`` seconds.
        """
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                value = predicate()
                if value:
                    return value
                await changed.wait()


def serve_until_stopped(
    name: str, make: Callable[[], FakeServer], announce: Callable[[FakeServer], str], where: str
) -> int:
    """``spacebot fake-<name>``: start the fake from ``make``, print ``announce(fake)`` as the first
    line, and serve until SIGINT or SIGTERM (exit 0); a port that cannot be bound exits 1."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with make() as fake:
            print(announce(fake), flush=True)
            await stop.wait()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"spacebot fake-{name}: cannot listen on {where}: {exc}", file=sys.stderr)
        return 1
    return 0


Action = Callable[[str, dict[str, Any]], Awaitable[Any]]
"""A fake's test API: ``(action, JSON body) → JSON-able result``."""


async def json_action(
    request: web.Request,
    run: Action,
    counts: Callable[[], Any],
    refused: tuple[type[BaseException], ...] = (),
) -> web.Response:
    """``POST|GET /_fake/<action>`` of a fake started in another process: the body as JSON to
    ``run``; a bad body or argument is a 400 naming the action, a wait that ran out a 408 with the
    fake's counters."""
    action = request.match_info["action"]
    body: dict[str, Any] = {}
    if request.can_read_body:
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
    bad: tuple[type[BaseException], ...] = (KeyError, TypeError, ValueError, *refused)
    try:
        result = await run(action, body)
    except bad as exc:
        return web.json_response({"error": f"{action}: {exc!r}"}, status=400)
    except TimeoutError:
        return web.json_response({"error": f"{action}: timed out", "counts": counts()}, status=408)
    return web.json_response(result)
