"""``LLM``: the one entry point every thinking process calls models through."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from spacebot.ipc.messages import Usage, UsageReport
from spacebot.llm.config import LLMConfig, SecretResolver, Timeouts
from spacebot.llm.cost import estimate_cost
from spacebot.llm.errors import AllModelsFailed, LLMError, RateLimited
from spacebot.llm.fallback import CooldownRegistry, PublishCooldown, cooldown_seconds, retry_delay
from spacebot.llm.providers.base import Provider, make_provider
from spacebot.llm.routing import RouteDecision, Router
from spacebot.llm.types import (
    Fallback,
    Request,
    Result,
    Stop,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDone,
    UsageEvent,
)

log = logging.getLogger(__name__)

UsageCallback = Callable[[UsageReport], object]


def _gen(it: AsyncIterator[StreamEvent]) -> AsyncGenerator[StreamEvent, None]:
    """Provider ``stream`` methods are async generators; say so for ``aclosing``."""
    assert isinstance(it, AsyncGenerator)
    return it


class LLM:
    """Routes, streams, retries and falls back; reports usage and cooldowns through callbacks.

    Args:
        config: the ``[llm]`` configuration.
        on_usage: called with a ``UsageReport`` after every successful call.
        publish_cooldown: called with a ``CooldownNotice`` whenever this process cools a model down.
        secret_resolver: resolves ``secret:NAME`` api keys.
        cooldowns: share a registry (e.g. between several ``LLM`` objects in one process).
        profile: override ``config.profile`` for this agent.
    """

    def __init__(
        self,
        config: LLMConfig,
        *,
        on_usage: UsageCallback | None = None,
        publish_cooldown: PublishCooldown | None = None,
        secret_resolver: SecretResolver | None = None,
        cooldowns: CooldownRegistry | None = None,
        profile: str | None = None,
    ) -> None:
        self.config = config
        self.router = Router(config, profile)
        self.on_usage = on_usage
        self.cooldowns = cooldowns or CooldownRegistry(publish_cooldown)
        if cooldowns is not None and publish_cooldown is not None:
            self.cooldowns.publish = publish_cooldown
        self._resolver = secret_resolver
        self._providers: dict[str, Provider] = {}

    def provider(self, name: str) -> Provider:
        """The (cached) adapter of provider ``name``."""
        prov = self._providers.get(name)
        if prov is None:
            prov = self._providers[name] = make_provider(self.config, name, self._resolver)
        return prov

    async def aclose(self) -> None:
        """Close every HTTP client."""
        for prov in self._providers.values():
            await prov.close()
        self._providers.clear()

    def route(self, request: Request, *, process: str, task: str | None = None) -> RouteDecision:
        """The routing decision for ``request`` without calling anything."""
        return self.router.decide(request, process=process, task=task)

    async def stream(
        self, request: Request, *, process: str, task: str | None = None, timeouts: Timeouts | None = None
    ) -> AsyncIterator[StreamEvent]:
        """Stream the answer; ``Fallback`` events mean "discard the deltas of the abandoned attempt".

        Raises ``ContextOverflow`` (compact and call again), ``BadRequest``, ``LLMConfigError``, or
        ``AllModelsFailed`` once the whole chain is exhausted.
        """
        decision = self.router.decide(request, process=process, task=task)
        tmo = timeouts or self.config.timeouts
        policy = self.config.retry
        errors: list[tuple[str, LLMError]] = []
        abandoned: list[str] = []
        chain = decision.chain
        for pos, model_id in enumerate(chain):
            left = self.cooldowns.remaining(model_id)
            if left > 0:
                cooling = RateLimited(f"model {model_id!r}: cooling down for {left:.1f}s", model=model_id)
                errors.append((model_id, cooling))
                abandoned.append(model_id)
                continue
            provider_name, _, model_name = model_id.partition("/")
            provider = self.provider(provider_name)
            attempt = 0
            while True:
                started = time.perf_counter()
                usage, cost = Usage(), 0.0
                try:
                    async with contextlib.aclosing(_gen(provider.stream(model_name, request, tmo))) as events:
                        async for ev in events:
                            if isinstance(ev, UsageEvent):
                                cost = estimate_cost(self.config, model_id, ev.usage)
                                usage = ev.usage
                                yield UsageEvent(ev.usage, cost)
                            elif isinstance(ev, Stop):
                                self._report(model_id, process, task, usage, cost, started, abandoned)
                                yield Stop(ev.reason, model_id, list(abandoned))
                            else:
                                yield ev
                    return
                except LLMError as err:
                    if not err.next_model:
                        raise
                    delay = retry_delay(policy, err, attempt)
                    if delay is None:
                        if isinstance(err, RateLimited):
                            self.cooldowns.cool(
                                model_id, cooldown_seconds(policy, err), f"rate_limited status={err.status}"
                            )
                        errors.append((model_id, err))
                        abandoned.append(model_id)
                        nxt = next((m for m in chain[pos + 1 :] if self.cooldowns.remaining(m) <= 0), "")
                        # The last model's failure reaches the caller inside ``AllModelsFailed``, and
                        # the caller logs it (with the hint): here it is only a detail.
                        log.log(
                            logging.WARNING if nxt else logging.INFO,
                            "llm fallback next=%s %s",
                            nxt or "-",
                            err.operator_line(),
                        )
                        yield Fallback(model_id, f"{type(err).__name__}: {err}", nxt)
                        break
                    log.info(
                        "llm retry model=%s attempt=%d delay=%.2f error=%s", model_id, attempt + 1, delay, err
                    )
                    yield Fallback(model_id, f"{type(err).__name__}: {err}", model_id)
                    attempt += 1
                    await asyncio.sleep(delay)
        raise AllModelsFailed(errors)

    def _report(
        self,
        model: str,
        process: str,
        task: str | None,
        usage: Usage,
        cost: float,
        started: float,
        abandoned: list[str],
    ) -> None:
        if self.on_usage is None:
            return
        latency = (time.perf_counter() - started) * 1000.0
        try:
            self.on_usage(UsageReport(model, process, task, usage, cost, latency, list(abandoned)))
        except Exception:  # accounting must never break the conversation
            log.exception("llm usage callback failed model=%s", model)

    async def complete(
        self, request: Request, *, process: str, task: str | None = None, timeouts: Timeouts | None = None
    ) -> Result:
        """Run ``stream`` to the end and assemble the result."""
        text: list[str] = []
        calls: list[ToolCall] = []
        usage, cost, stop = Usage(), 0.0, None
        async for ev in self.stream(request, process=process, task=task, timeouts=timeouts):
            if isinstance(ev, TextDelta):
                text.append(ev.text)
            elif isinstance(ev, ToolCallDone):
                calls.append(ev.call)
            elif isinstance(ev, UsageEvent):
                usage, cost = ev.usage, ev.cost_usd
            elif isinstance(ev, Stop):
                stop = ev
            elif isinstance(ev, Fallback):
                text.clear()
                calls.clear()
        if stop is None:
            raise LLMError("stream ended without a stop event")
        return Result("".join(text), calls, usage, cost, stop.model, stop.reason, stop.fallbacks)
