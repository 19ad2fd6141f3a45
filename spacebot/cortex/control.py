"""``spacebotctl history`` through the control socket: the supervisor asks the agent's cortex, which
keeps the process history, and returns its answer as it is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from spacebot.ipc import ids
from spacebot.ipc.messages import Err, ErrorCode, HistoryGet, HistoryRequest, Ok
from spacebot.ipc.replies import BusError, Reply

if TYPE_CHECKING:
    from spacebot.config import Config
    from spacebot.ipc.broker import Broker

FORWARD_TIMEOUT = 10.0
"""Seconds the cortex has to answer."""


async def history(broker: Broker | None, config: Config, req: HistoryRequest) -> Reply:
    """``HistoryGet`` to ``cortex:<req.agent>``; its rows, or why not."""
    if req.agent not in config.agents:
        known = ", ".join(config.agents) or "none"
        return Err(ErrorCode.NOT_FOUND, f"agent {req.agent!r} is not configured (agents: {known})")
    if broker is None:
        return Err(ErrorCode.UNAVAILABLE, "the supervisor is starting; try again")
    body = HistoryGet(limit=req.limit, kind=req.kind, proc_id=req.proc_id)
    try:
        value = await broker.request(ids.cortex(req.agent), body, timeout=FORWARD_TIMEOUT)
    except BusError as exc:
        return Err(exc.code, exc.message)
    return Ok(value)
