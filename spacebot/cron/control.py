"""``spacebot cron`` through the control socket: the supervisor hands the command to the agent's
cortex, which owns the scheduler, and returns its answer as it is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spacebot.ipc import ids
from spacebot.ipc.messages import CronRequest, Err, ErrorCode, Ok
from spacebot.ipc.replies import BusError, Reply

if TYPE_CHECKING:
    from spacebot.config import Config
    from spacebot.ipc.broker import Broker

FORWARD_TIMEOUT = 20.0
"""Seconds the cortex has to answer (a ``run-now`` answers once the run is claimed, not finished)."""


async def forward(broker: Broker | None, config: Config, req: CronRequest) -> Reply:
    """Send ``req.command`` to ``cortex:<req.agent>`` and return its reply."""
    if req.agent not in config.agents:
        known = ", ".join(config.agents) or "none"
        return Err(ErrorCode.NOT_FOUND, f"agent {req.agent!r} is not configured (agents: {known})")
    if broker is None:
        return Err(ErrorCode.UNAVAILABLE, "the supervisor is starting; try again")
    try:
        value = await broker.request(ids.cortex(req.agent), req.command, timeout=FORWARD_TIMEOUT)
    except BusError as exc:
        return Err(exc.code, exc.message)
    return Ok(value)
