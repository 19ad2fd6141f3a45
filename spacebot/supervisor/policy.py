"""Restart decisions with a flapping guard."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spacebot.config import ProcessPolicy


@dataclass(frozen=True)
class RestartDecision:
    """What to do after a process exited."""

    action: Literal["restart", "stay", "fail"]
    """``restart``, ``stay`` (leave it exited) or ``fail`` (declare it failed)."""
    delay: float = 0.0
    """Seconds to wait before restarting."""
    reason: str = ""
    """Why, for the event and the log."""


def decide(
    policy: ProcessPolicy,
    exit_code: int | None,
    restart_times: list[float],
    backoff_step: int,
    now: float,
) -> tuple[RestartDecision, int]:
    """Decide what follows an unrequested exit; returns the decision and the new back-off step.

    Up to ``flap_max_restarts`` restarts inside ``flap_window`` happen at once. Past that each
    restart waits ``backoff_initial * 2**(step-1)`` (at most ``backoff_max``); after
    ``backoff_max_steps`` such waits the process is declared failed — unless its policy says
    ``give_up = false`` (memory, gateways): those keep restarting at the capped wait.
    A window with fewer restarts resets the back-off.
    """
    clean = exit_code == 0
    if policy.restart == "never" or (policy.restart == "on-failure" and clean):
        how = "cleanly" if clean else f"with code {exit_code}"
        return RestartDecision("stay", reason=f"exited {how}; restart policy {policy.restart!r}"), 0
    recent = [t for t in restart_times if now - t < policy.flap_window]
    restart_times[:] = recent
    if len(recent) < policy.flap_max_restarts:
        return RestartDecision("restart", 0.0, f"exit code {exit_code}; restarting"), 0
    step = min(backoff_step + 1, 64)
    if step > policy.backoff_max_steps and policy.give_up:
        return (
            RestartDecision(
                "fail",
                reason=(
                    f"flapping: {len(recent)} restarts within {policy.flap_window:g}s and "
                    f"{policy.backoff_max_steps} back-offs"
                ),
            ),
            step,
        )
    delay = min(policy.backoff_initial * 2 ** (step - 1), policy.backoff_max)
    return RestartDecision("restart", delay, f"flapping: backing off {delay:g}s (step {step})"), step


def start_retry_delay(policy: ProcessPolicy, failures: int) -> float:
    """Wait before trying again to start a process that must never be left down, after its
    ``failures``-th failed start in a row (the zygote being replaced, a fork that timed out)."""
    return min(policy.backoff_initial * 2 ** max(0, min(failures, 32) - 1), policy.backoff_max)
