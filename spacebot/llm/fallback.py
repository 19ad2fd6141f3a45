"""Per-model cooldowns shared across processes, and jittered back-off.

A ``CooldownRegistry`` keeps monotonic deadlines per model id. Recording a cooldown calls the
injected ``publish`` callback with a ``CooldownNotice`` (wall-clock ``until``) that the runtime
sends on the bus; notices from other processes come back in through ``apply``, which never
publishes (no echo loops) and never shortens a cooldown already known.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from spacebot.ipc.messages import CooldownNotice
from spacebot.llm.config import RetryPolicy
from spacebot.llm.errors import LLMError, RateLimited

log = logging.getLogger(__name__)

PublishCooldown = Callable[[CooldownNotice], object]


class CooldownRegistry:
    """Which models are cooling down, until when (monotonic), in this process."""

    def __init__(
        self,
        publish: PublishCooldown | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.publish = publish
        self._monotonic = monotonic
        self._wall = wall
        self._until: dict[str, float] = {}

    def cool(self, model: str, seconds: float, reason: str) -> CooldownNotice:
        """Cool ``model`` down for ``seconds`` and publish the notice."""
        seconds = max(0.0, seconds)
        deadline = self._monotonic() + seconds
        if deadline > self._until.get(model, 0.0):
            self._until[model] = deadline
        notice = CooldownNotice(model, self._wall() + seconds, reason)
        log.info("llm cooldown model=%s seconds=%.1f reason=%s", model, seconds, reason)
        if self.publish is not None:
            try:
                self.publish(notice)
            except Exception:  # a broken bus must not break the call that hit the rate limit
                log.exception("llm cooldown publish failed model=%s", model)
        return notice

    def apply(self, notice: CooldownNotice) -> None:
        """Accept a notice from another process (extends, never shortens)."""
        remaining = notice.until - self._wall()
        if remaining <= 0:
            return
        deadline = self._monotonic() + remaining
        if deadline > self._until.get(notice.model, 0.0):
            self._until[notice.model] = deadline

    def remaining(self, model: str) -> float:
        """Seconds until ``model`` may be used again (0 when usable)."""
        until = self._until.get(model)
        if until is None:
            return 0.0
        left = until - self._monotonic()
        if left <= 0:
            del self._until[model]
            return 0.0
        return left

    def snapshot(self) -> dict[str, float]:
        """Model → remaining seconds, for status displays."""
        return {m: r for m in list(self._until) if (r := self.remaining(m)) > 0}


def backoff_delay(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Full-jitter exponential back-off before retry number ``attempt`` (0-based)."""
    cap = min(policy.max_delay, policy.base_delay * (2**attempt))
    return (rng or random).uniform(0.0, cap)


def retry_delay(policy: RetryPolicy, err: LLMError, attempt: int) -> float | None:
    """How long to wait before retrying the same model, or None to move on to the next model.

    A Retry-After longer than ``max_delay`` means: do not wait in place, cool down and fall back.
    """
    if not err.retriable or attempt + 1 >= policy.attempts_per_model:
        return None
    if isinstance(err, RateLimited) and err.retry_after is not None:
        return err.retry_after if err.retry_after <= policy.max_delay else None
    return backoff_delay(policy, attempt)


def cooldown_seconds(policy: RetryPolicy, err: RateLimited) -> float:
    """Cooldown of a model that stayed rate-limited: its Retry-After, else the policy default."""
    seconds = err.retry_after if err.retry_after else policy.cooldown
    return min(seconds, policy.max_cooldown)
