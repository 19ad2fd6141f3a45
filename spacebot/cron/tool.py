"""The ``cron`` conversation tool: a conversation creates, lists and deletes its agent's jobs by
asking ``cortex:<agent>``; what comes back is a line for the model to read."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from spacebot.ipc import ids
from spacebot.ipc.messages import CronCmdAdd, CronCmdList, CronCmdRemove, CronJob, CronJobSpec
from spacebot.ipc.replies import BusError
from spacebot.tools.errors import ToolArgumentError

TIMEOUT = 15.0
"""Seconds the cortex has to answer."""


def _line(job: CronJob) -> str:
    when = job.cron or f"every {job.every / 60:g} min"
    state = "on" if job.enabled else f"off ({job.disabled_reason or 'disabled'})"
    return (
        f"- {job.id}: {when}{' ' + job.timezone if job.timezone else ''}, {state}, to {job.deliver_to or '-'}"
    )


async def call(ctx: Any, agent: str, conversation: str, args: dict[str, Any]) -> str:
    """Run one ``cron`` tool call; refusals raise :class:`ToolArgumentError` with the reason."""
    cortex = ids.cortex(agent)
    action = args["action"]
    try:
        if action == "list":
            jobs = await ctx.request(cortex, CronCmdList(), returns=list[CronJob], timeout=TIMEOUT)
            return "\n".join(_line(j) for j in jobs) if jobs else "no scheduled jobs"
        job_id = args.get("id", "")
        if not job_id:
            raise ToolArgumentError(f"cron {action}: give the job id")
        if action == "delete":
            await ctx.request(
                cortex, CronCmdRemove(job_id, created_by=conversation), returns=bool, timeout=TIMEOUT
            )
            return f"deleted job {job_id}"
        spec = CronJobSpec(
            id=job_id,
            prompt=args.get("prompt", ""),
            cron=args.get("cron", ""),
            every=float(args.get("every_minutes", 0)) * 60,
            timezone=args.get("timezone", ""),
            active_hours=args.get("active_hours", ""),
            run_once=bool(args.get("run_once", False)),
            deliver_to=args.get("deliver_to", ""),
        )
        add = CronCmdAdd(spec, source="conversation", created_by=conversation)
        job = await ctx.request(cortex, add, returns=CronJob, timeout=TIMEOUT)
    except BusError as exc:
        raise ToolArgumentError(f"cron {action}: {exc.message}") from None
    if job.next_run_at is None:
        return f"scheduled {_line(job)[2:]}; it has no next run"
    when = datetime.fromtimestamp(job.next_run_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"scheduled {_line(job)[2:]}; next run {when}"
