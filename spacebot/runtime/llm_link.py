"""The LLM layer on the bus: rate-limit cooldowns shared by every process, usage as metrics events.

A process that cools a model down (a 429, an overload) publishes a ``CooldownNotice`` on
``llm.cooldown``; every other process of the agent applies it to its own registry and skips the
model until the notice's wall-clock deadline. Each finished call publishes its ``UsageReport``
on ``llm.usage.<process id>`` so a metrics reader sees tokens and cost per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from spacebot.runtime.child import ChildContext

if TYPE_CHECKING:
    from spacebot.llm.client import LLM
    from spacebot.llm.config import LLMConfig

log = logging.getLogger("spacebot.llm")

COOLDOWN_TOPIC = "llm.cooldown"
USAGE_TOPIC = "llm.usage."


class LinkedLLM:
    """An :class:`LLM` whose cooldowns and usage travel over the bus; close it with :meth:`aclose`."""

    def __init__(self, llm: LLM, listener: asyncio.Task[None]) -> None:
        self.llm = llm
        self._listener = listener

    async def aclose(self) -> None:
        """Stop listening and close the providers' HTTP clients."""
        self._listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._listener
        await self.llm.aclose()


async def connect_llm(ctx: ChildContext, config: LLMConfig | None = None) -> LinkedLLM:
    """Build this process's :class:`LLM` and join the agent-wide cooldown exchange."""
    from spacebot.ipc.messages import CooldownNotice
    from spacebot.llm.client import LLM

    llm = LLM(
        config or ctx.config.llm,
        on_usage=lambda report: ctx.publish(USAGE_TOPIC + ctx.id, report),
        publish_cooldown=lambda notice: ctx.publish(COOLDOWN_TOPIC, notice),
    )

    async def listen() -> None:
        # Subscribing waits for a confirmation round trip; the process does not wait for it to start.
        stream = await ctx.bus.subscribe(COOLDOWN_TOPIC)
        try:
            async for event in stream:
                if event.src != ctx.id and isinstance(event.body, CooldownNotice):
                    llm.cooldowns.apply(event.body)
                    log.info(
                        "cooldown from %s model=%s until=%.0f", event.src, event.body.model, event.body.until
                    )
        finally:
            stream.close()

    return LinkedLLM(llm, asyncio.get_running_loop().create_task(listen(), name="llm-cooldowns"))
