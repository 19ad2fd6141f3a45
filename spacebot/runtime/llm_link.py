"""The LLM layer on the bus: rate-limit cooldowns shared by every process, usage as metrics events.

``secret:NAME`` api keys come from the supervisor over the bus when the ``LLM`` is built.

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

from spacebot.llm.errors import LLMConfigError
from spacebot.runtime.child import ChildContext
from spacebot.supervisor.secrets_service import fetch as fetch_secrets
from spacebot.supervisor.secrets_service import model_secret_names

if TYPE_CHECKING:
    from spacebot.llm.client import LLM
    from spacebot.llm.config import LLMConfig

log = logging.getLogger("spacebot.llm")

COOLDOWN_TOPIC = "llm.cooldown"
USAGE_TOPIC = "llm.usage."


class LinkedLLM:
    """An :class:`LLM` whose cooldowns and usage travel over the bus; close it with :meth:`aclose`."""

    def __init__(self, llm: LLM, listener: asyncio.Task[None], secrets: dict[str, str] | None = None) -> None:
        self.llm = llm
        self._listener = listener
        self.secrets: dict[str, str] = dict(secrets or {})
        """The ``secret:NAME`` api keys this process received (name → value): what a scrubber of
        this process's output must know."""

    async def aclose(self) -> None:
        """Stop listening and close the providers' HTTP clients."""
        self._listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._listener
        await self.llm.aclose()


async def connect_llm(ctx: ChildContext, config: LLMConfig | None = None) -> LinkedLLM:
    """Build this process's :class:`LLM` and join the agent-wide cooldown exchange.

    ``secret:NAME`` api keys are asked of the supervisor once, here (one bus round trip, none
    without such keys); the resolver given to the ``LLM`` answers from what came back, and a name
    that was refused raises an ``LLMConfigError`` carrying the supervisor's reason when its
    provider is first used.
    """
    from spacebot.ipc.messages import CooldownNotice
    from spacebot.llm.client import LLM

    cfg = config or ctx.config.llm
    secrets, refused = await fetch_secrets(ctx, model_secret_names(cfg))

    def resolve(name: str) -> str:
        value = secrets.get(name)
        if value is None:
            raise LLMConfigError(f"secret {name!r}: {refused.get(name) or 'not asked of the supervisor'}")
        return value

    llm = LLM(
        cfg,
        on_usage=lambda report: ctx.publish(USAGE_TOPIC + ctx.id, report),
        publish_cooldown=lambda notice: ctx.publish(COOLDOWN_TOPIC, notice),
        secret_resolver=resolve,
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

    return LinkedLLM(llm, asyncio.get_running_loop().create_task(listen(), name="llm-cooldowns"), secrets)
