"""Work in arrival order per key, concurrently across keys.

A platform connection delivers every chat's messages on one stream. Storing a message takes a
memory round trip; awaiting each in the read loop would make one busy or new chat hold up all the
others. :class:`Lanes` runs each message's work as a task, in order within its chat (the next one
of a chat starts when the previous one finished), and at the same time as other chats' work.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("spacebot.gateway")


class Lanes:
    """One ordered lane per key (a chat)."""

    def __init__(self) -> None:
        self._tails: dict[str, asyncio.Task[None]] = {}

    def add(self, key: str, work: Callable[[], Awaitable[None]], what: str = "") -> asyncio.Task[None]:
        """Run ``work()`` after the work queued before it under ``key``; its failure is logged and
        does not stop the lane."""
        before = self._tails.get(key)

        async def run() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed (lane %s)", what or "work", key)
            finally:
                if self._tails.get(key) is task:
                    del self._tails[key]

        task = asyncio.get_running_loop().create_task(run(), name=f"lane:{key}")
        self._tails[key] = task
        return task

    async def drain(self) -> None:
        """Wait for everything queued so far."""
        await asyncio.gather(*self._tails.values(), return_exceptions=True)

    def cancel(self) -> None:
        for task in self._tails.values():
            task.cancel()
        self._tails.clear()
