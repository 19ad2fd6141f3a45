"""What every platform fake shares: an async context that starts and stops it, waiting on its state
from tests, and running one from the command line until it is told to stop."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self, TypeVar

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
