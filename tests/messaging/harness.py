"""Running one platform adapter against its fake, without the rest of Spacebot: a sink that records
what the adapter reports, and starting and stopping the adapter's ``run``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import pytest

from spacebot.messaging.platform import PlatformEdit, PlatformMessage

WAIT = 30.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""

A = TypeVar("A")


class Recorder:
    """A sink that records what it is given. With ``gate`` set, :meth:`message` waits on it before
    it returns (the adapter acknowledges to its platform only after that)."""

    def __init__(self) -> None:
        self.messages: list[PlatformMessage] = []
        self.edits: list[PlatformEdit] = []
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.changed = asyncio.Event()

    async def message(self, msg: PlatformMessage) -> None:
        self.messages.append(msg)
        self.entered.set()
        self._notify()
        if self.gate is not None:
            await self.gate.wait()

    async def edit(self, edit: PlatformEdit) -> None:
        self.edits.append(edit)
        self._notify()

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], Any]) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                await self.changed.wait()


class Running(Generic[A]):
    """An adapter running against the fake, and its sink."""

    def __init__(self, adapter: A, sink: Recorder, task: asyncio.Task[None]) -> None:
        self.adapter, self.sink, self.task = adapter, sink, task


async def start(adapter: A) -> Running[A]:
    """Run ``adapter`` until it says it is connected (or raise what its ``run`` raised)."""
    sink = Recorder()
    up = asyncio.Event()
    task = asyncio.get_running_loop().create_task(adapter.run(sink, up.set))  # type: ignore[attr-defined]
    async with asyncio.timeout(WAIT):
        done, _ = await asyncio.wait([task, asyncio.ensure_future(up.wait())], return_when="FIRST_COMPLETED")
    if task in done:
        await adapter.close()  # type: ignore[attr-defined]
        task.result()
    return Running(adapter, sink, task)


async def stop(run: Running[Any]) -> None:
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    await run.adapter.close()
