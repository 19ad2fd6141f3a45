"""One run's conversation: the prompt goes to a fresh ``channel:<agent>:cron:<job>.<run>`` with
this process as its gateway, its ``Out*`` messages come back here, and its answer is delivered to
the job's target conversation (see ``spacebot.cron.runner`` for the whole run)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from spacebot.cron.host import CronHost, Memory
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    CronJob,
    CronOutcome,
    CronRun,
    Inbound,
    OutAbort,
    OutDelta,
    OutError,
    OutMessage,
    OutReaction,
    OutTyping,
    ReplyState,
    Stop,
    StoredMessage,
    TranscriptAppend,
    TranscriptMarkReply,
    TranscriptPage,
)
from spacebot.ipc.replies import BusError, retry_transient

log = logging.getLogger("spacebot.cron")

DELIVERY_ATTEMPTS = 8
"""Tries at storing an answer in its target conversation (about 7 s: a memory restart)."""
INBOUND_DEADLINE = 30.0
"""Seconds the conversation process has to accept the prompt."""
RUN_AUTHOR = "cron"
"""Author id of prompts in cron conversations."""
OUTBOUND = (OutTyping, OutDelta, OutAbort, OutMessage, OutReaction, OutError)
"""What a conversation sends its gateway."""

Result = tuple[CronOutcome, StoredMessage | None, str]
"""How a run's conversation ended: outcome, the answer, an error line."""


@dataclass(eq=False)
class Active:
    """A run whose conversation is under way."""

    run: CronRun
    job: CronJob
    done: asyncio.Future[Result]
    prompt_id: int = 0
    error: str = ""
    seen: bool = False
    """Its conversation process has sent something (so it runs, and a ``Stop`` will not start it)."""
    checks: set[asyncio.Task[None]] = field(default_factory=set)


class Conversations:
    """The conversations of the runs under way, by conversation id."""

    def __init__(self, host: CronHost, agent: str, mem: Memory) -> None:
        self.host = host
        self.agent = agent
        self.mem = mem
        self.active: dict[str, Active] = {}

    async def talk(self, job: CronJob, run: CronRun, *, resume: bool = False) -> tuple[Result, Active]:
        """Ask the run's prompt and wait for its answer (or the job's timeout). Errors propagate."""
        act = Active(run, job, asyncio.get_running_loop().create_future())
        self.active[run.conversation] = act
        try:
            return await self._conduct(act, resume), act
        finally:
            self.active.pop(run.conversation, None)
            for task in act.checks:
                task.cancel()

    def stop(self, act: Active, timed_out: bool) -> None:
        """Let the run's conversation process go: it has done its one job."""
        if act.seen or timed_out:  # a Stop to a process that never ran would start it
            self.host.send(ids.channel(self.agent, act.run.conversation), Stop("cron run finished"))

    async def _conduct(self, act: Active, resume: bool) -> Result:
        run, job = act.run, act.job
        conv = run.conversation
        prompt = await self.mem(
            TranscriptAppend(
                conv,
                job.prompt,
                author_id=RUN_AUTHOR,
                author_name=f"cron job {job.id}",
                role="user",
                platform_message_id=f"cron-run:{run.id}",
                reply_state=ReplyState.PENDING,
            ),
            StoredMessage,
        )
        act.prompt_id = prompt.id
        if resume and (found := await self._answered(act)) is not None:
            return found
        inbound = Inbound(
            platform="cron",
            conversation=conv,
            author_id=RUN_AUTHOR,
            author_name=f"cron job {job.id}",
            text=prompt.text,
            message_id=f"cron-run:{run.id}",
            stored_id=prompt.id,
            timestamp=prompt.created_at,
            gateway=self.host.id,
            direct=True,
        )
        target = ids.channel(self.agent, conv)
        timeout = job.timeout or self.host.config.defaults.cron_timeout
        try:
            async with asyncio.timeout(timeout):
                await retry_transient(
                    lambda: self.host.request(target, inbound, returns=None, timeout=15.0),
                    deadline=time.monotonic() + min(INBOUND_DEADLINE, timeout),
                    what=f"cron prompt to {target}",
                    first_delay=0.05,
                )
                return await act.done
        except TimeoutError:
            return "timed_out", None, f"no answer within {timeout:g}s"

    async def _answered(self, act: Active) -> Result | None:
        """What the conversation already holds for this run: an answer, a notice, a skip, or nothing."""
        page = await self.mem(TranscriptPage(act.run.conversation, limit=20), list[StoredMessage])
        prompt = next((m for m in page if m.id == act.prompt_id), None)
        after = [m for m in page if m.id > act.prompt_id and m.role != "user"]
        answer = next((m for m in after if m.role == "assistant"), None)
        if answer is not None:
            return "success", answer, ""
        notice = next((m for m in after if m.role == "system"), None)
        if notice is not None:
            return "failed", None, notice.text[:500]
        if prompt is not None and prompt.reply_state == ReplyState.SKIPPED:
            return "skipped", None, act.error
        return None

    def outbound(self, body: Any) -> None:
        """An ``Out*`` of a run's conversation: the answer, a notice, or the end of a turn."""
        act = self.active.get(body.conversation)
        if act is None or act.done.done():
            return
        act.seen = True
        match body:
            case OutMessage(message=message) if message.role == "assistant":
                act.done.set_result(("success", message, ""))
            case OutMessage(message=message) if message.role == "system":
                act.done.set_result(("failed", None, message.text[:500]))
            case OutError():
                act.error = body.text[:500]
            case OutTyping(state="idle"):
                # A turn ended without an answer: skipped on purpose, or retried later.
                task = asyncio.get_running_loop().create_task(self._check(act))
                act.checks.add(task)
                task.add_done_callback(act.checks.discard)
            case _:
                pass

    async def _check(self, act: Active) -> None:
        try:
            found = await self._answered(act)
        except BusError:
            return
        if found is not None and not act.done.done():
            act.done.set_result(found)

    async def abandon(self, act: Active) -> None:
        """A timed-out run's prompt is marked skipped, so a later start of its conversation
        (or the resume sweep) does not answer it after all."""
        if act.prompt_id:
            try:
                await self.mem(
                    TranscriptMarkReply(act.prompt_id, ReplyState.SKIPPED), StoredMessage, attempts=3
                )
            except BusError as exc:
                log.warning("cron prompt not marked skipped run=%d error=%s", act.run.id, exc)

    async def deliver(self, job: CronJob, run: CronRun, message: StoredMessage) -> StoredMessage:
        """Store the answer in the target conversation (once per run) and show it there."""
        target = job.deliver_to
        append = TranscriptAppend(
            target,
            message.text,
            author_id=message.author_id,
            author_name=message.author_name,
            role="assistant",
            platform_message_id=f"cron-run:{run.id}",
            attachments=message.attachments or None,
        )
        stored: StoredMessage = await self.mem(append, StoredMessage, attempts=DELIVERY_ATTEMPTS)
        self.host.send(ids.gateway_of(target, self.agent), OutMessage(target, stored))
        return stored
