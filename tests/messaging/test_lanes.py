"""Lanes: in order within a key, concurrent across keys, a failure does not stop a lane."""

from __future__ import annotations

import asyncio

from spacebot.messaging.lanes import Lanes


async def test_order_within_a_key_and_no_waiting_across_keys() -> None:
    lanes = Lanes()
    seen: list[str] = []
    hold = asyncio.Event()

    def step(name: str, gate: asyncio.Event | None = None):  # type: ignore[no-untyped-def]
        async def work() -> None:
            if gate is not None:
                await gate.wait()
            seen.append(name)

        return work

    lanes.add("a", step("a1", hold))
    lanes.add("a", step("a2"))
    b = lanes.add("b", step("b1"))
    await b  # b finishes while a's first item is still held
    assert seen == ["b1"]
    hold.set()
    await lanes.drain()
    assert seen == ["b1", "a1", "a2"]


async def test_a_failing_item_is_logged_and_the_lane_goes_on() -> None:
    lanes = Lanes()
    seen: list[int] = []

    async def boom() -> None:
        raise RuntimeError("store failed")

    async def ok() -> None:
        seen.append(1)

    lanes.add("a", boom, "store")
    await lanes.add("a", ok)
    assert seen == [1]
