"""The delegation side of a conversation process: branches and workers it starts, their status lines
and results, and the tools that manage them (branch, spawn_worker, route, cancel, send_message,
send_file).

It is given what it reads (the conversation's settings, a briefing for branches) and what it may
do (spawn and message processes, post and show agent messages, add result lines to the transcript,
wake the turn loop), never the conversation process itself.

A result arrives as a :class:`DelegateResult` request from the branch or worker; if the process
dies without sending one (killed, crashed, hung past its budget), its exit event produces a
``failed`` (or ``timed_out``) outcome instead, so nothing stays "running" forever.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import mimetypes
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from spacebot.agent.identity import agent_dir
from spacebot.config import ChannelSection
from spacebot.conversation.roster import Delegate, Delegates
from spacebot.conversation.transcript import AgentVoice
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    CancelWork,
    DelegateInput,
    DelegateResult,
    DelegateStatus,
    Err,
    ErrorCode,
    KillReport,
    KillRequest,
    Kind,
    Notice,
    Ok,
    Outbound,
    OutMessage,
    OutTyping,
    ProcessExited,
    ProcessHung,
    ReplyState,
    SpawnSpec,
    StoredMessage,
    TranscriptAppend,
    TranscriptMarkReply,
    WorkItem,
)
from spacebot.ipc.replies import BusError, Reply
from spacebot.runtime.child import ChildContext
from spacebot.runtime.memory_link import PATIENT
from spacebot.tools import opencode
from spacebot.tools.errors import ToolArgumentError, ToolError
from spacebot.tools.workspace import Workspace

log = logging.getLogger("spacebot.channel")

MAX_FILE_BYTES = 256_000
_event_ids = itertools.count(-1, -1)


@dataclass(frozen=True)
class Briefing:
    """What a new branch is given: the conversation's system prompt and recent transcript."""

    system: str
    transcript: str


class Delegation:
    """Branches and workers of one conversation."""

    def __init__(
        self,
        ctx: ChildContext,
        agent: str,
        conversation: str,
        settings: ChannelSection,
        *,
        voice: AgentVoice,
        post: Callable[[str, list[dict[str, Any]]], Awaitable[object]],
        out: Callable[[Outbound], None],
        briefing: Callable[[], Briefing],
        add_event: Callable[[StoredMessage], None],
        wake: Callable[[], None],
    ) -> None:
        self.ctx = ctx
        self.agent = agent
        self.conversation = conversation
        self.settings = settings
        self.voice = voice
        self.memory = voice.memory  # results and their "seen" marks go through the same link
        self.post = post
        self.out = out
        self.briefing = briefing
        self.add_event = add_event
        self.wake = wake
        self.delegates = Delegates(settings.max_branches, settings.max_workers)
        self.unseen: list[int] = []  # ids of result events no turn has seen yet
        self.due = 0.0  # when gathered results should start a turn
        self.hung: set[str] = set()
        self.stopped: dict[str, str] = {}
        """Delegates being cancelled, and by whom: one that dies before it can report (stopped
        while it starts) ends ``cancelled``, not ``failed``."""
        self.recorded: set[int] = set()  # stored result rows already shown to the turn loop

    # -- tools ---------------------------------------------------------------------------------

    async def call(self, name: str, args: dict[str, Any]) -> str:
        """Run one delegation tool; raises ToolArgumentError with a message for the model."""
        if name == "branch":
            return await self._start("branch", args["description"])
        if name == "spawn_worker" and args.get("worker_type", "builtin") != "builtin":
            if not args["task"].strip():
                raise ToolArgumentError("worker: the task/description is empty")
            given = await asyncio.to_thread(
                opencode.spawn_spec, self.ctx.config, self.agent, self.ctx.id, args
            )
            return await self._start("worker", args["task"], args.get("task_type", ""), given=given)
        if name == "spawn_worker":
            return await self._start(
                "worker", args["task"], args.get("task_type", ""), bool(args.get("interactive", False))
            )
        if name == "route":
            return await self._route(args.get("worker_id", ""), args["message"])
        if name == "cancel":
            return await self._cancel(args["process_id"], args.get("reason", ""))
        if name == "send_message":
            return await self._send_message(args["target_channel"], args["text"])
        return await self._send_file(args["path"], args.get("caption", ""))

    async def _start(
        self,
        kind: str,
        task: str,
        task_type: str = "",
        interactive: bool = False,
        given: SpawnSpec | None = None,
    ) -> str:
        task = task.strip()
        if not task:
            raise ToolArgumentError(f"{kind}: the task/description is empty")
        refusal = self.delegates.refuse(kind, task)
        if refusal:
            return refusal
        if kind == "branch":
            brief = self.briefing()
            args: dict[str, Any] = {
                "agent": self.agent,
                "report_to": self.ctx.id,
                "conversation": self.conversation,
                "description": task,
                "system": brief.system,
                "transcript": brief.transcript,
            }
            spec = SpawnSpec(
                Kind.BRANCH, "spacebot.procs.branch:serve", args=args, task=task[:120], wait_ready=False
            )
        elif given is not None:  # a worker of another type (spacebot.tools.opencode.spawn_spec)
            spec = given
        else:
            args = {
                "agent": self.agent,
                "report_to": self.ctx.id,
                "task": task,
                "task_type": task_type,
                "interactive": interactive,
            }
            spec = SpawnSpec(
                Kind.WORKER, "spacebot.procs.worker:serve", args=args, task=task[:120], wait_ready=False
            )
        try:
            spawned = await self.ctx.spawn(spec, timeout=30.0)
        except BusError as exc:
            return f"could not start the {kind}: {exc.message}"
        self.delegates.add(Delegate(spawned.id, kind, task, task_type, interactive))
        self.ctx.publish(
            f"channel.{self.ctx.id}.delegate", Notice("started", {"id": spawned.id, "kind": kind})
        )
        self.out(self.typing())
        return f"started {spawned.id}; its result will come to you when it finishes"

    async def _route(self, worker_id: str, message: str) -> str:
        if not worker_id:
            waiting = [d.id for d in self.delegates.running.values() if d.waiting]
            if len(waiting) != 1:
                names = ", ".join(waiting) or "none"
                raise ToolArgumentError(
                    f"route: give worker_id ({len(waiting)} workers wait for input: {names})"
                )
            worker_id = waiting[0]
        d = self.delegates.running.get(worker_id)
        if d is None or d.kind != "worker":
            raise ToolArgumentError(f"route: no running worker {worker_id!r} (see the status block)")
        if not d.interactive:
            raise ToolArgumentError(f"route: {worker_id} is not interactive; it takes no input")
        try:
            await self.ctx.request(worker_id, DelegateInput(message), returns=None, timeout=10.0)
        except BusError as exc:
            return f"route failed: {exc.message}"
        d.waiting = False
        return f"sent to {worker_id}"

    async def _cancel(self, ident: str, reason: str) -> str:
        d = self.delegates.running.get(ident)
        if d is None:
            raise ToolArgumentError(
                f"cancel: {ident!r} is not a running branch or worker of this conversation"
            )
        self.stopped[ident] = reason or "cancelled"
        try:
            await self.ctx.request("supervisor", KillRequest(ident), returns=KillReport, timeout=30.0)
        except BusError as exc:
            self.stopped.pop(ident, None)
            return f"cancel failed: {exc.message}"
        log.info("cancelled id=%s reason=%r", ident, reason)
        return f"cancelled {ident}" + (f" ({reason})" if reason else "")

    async def on_cancel(self, body: CancelWork) -> Reply:
        """A person stopped one of this conversation's running branches or workers (the web chat's
        cancel button). Its ``cancelled`` result reaches the model like any other result."""
        if body.id not in self.delegates.running:
            return Err(
                ErrorCode.NOT_FOUND,
                f"{body.id!r} is not a running branch or worker of {self.conversation}",
            )
        self.stopped[body.id] = f"cancelled by {body.by}" if body.by else "cancelled by a person"
        try:
            await self.ctx.request("supervisor", KillRequest(body.id), returns=KillReport, timeout=30.0)
        except BusError as exc:
            self.stopped.pop(body.id, None)
            return Err(exc.code, f"could not stop {body.id}: {exc.message}")
        log.info("cancelled id=%s by=%r", body.id, body.by)
        return Ok()

    def typing(self) -> OutTyping:
        """What the conversation's people see about running work: each branch's or worker's task,
        last status line and age (``idle`` once none runs)."""
        running = list(self.delegates.running.values())
        if not running:
            return OutTyping(self.conversation, "idle")
        now = time.monotonic()
        first = running[0]
        more = f" (+{len(running) - 1} more)" if len(running) > 1 else ""
        work = [WorkItem(d.id, d.kind, d.task[:120], d.status, round(now - d.started, 1)) for d in running]
        return OutTyping(self.conversation, "working", f"{first.kind}: {first.task[:60]}{more}", work)

    async def _send_message(self, target: str, text: str) -> str:
        if target == self.conversation:
            raise ToolArgumentError("send_message: target_channel must be another conversation")
        try:
            ids.parse_conversation(target)
        except ids.IdError as exc:
            raise ToolArgumentError(f"send_message: target_channel: {exc}") from None
        message = await self.voice.say(text, conversation=target)
        try:
            self.ctx.bus.send(ids.gateway_of(target, self.agent), OutMessage(target, message))
        except BusError as exc:
            log.warning("send_message to %s not shown live: %s", target, exc)
        return f"posted in {target}"

    async def _send_file(self, path: str, caption: str) -> str:
        try:
            ws = Workspace(agent_dir(self.ctx.config.home, self.agent) / "workspace")
            target, data = await asyncio.to_thread(ws.read_bytes, path, MAX_FILE_BYTES)
        except ToolError as exc:
            raise ToolArgumentError(f"send_file: {exc}") from None
        size = len(data)
        mime = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        attachment: dict[str, Any] = {
            "name": target.name,
            "size": size,
            "mime": mime,
            "data": base64.b64encode(data).decode(),
        }
        text = caption or f"📎 {target.name}"
        try:
            body = data.decode()
            if "\0" not in body and len(body) <= 4000:
                text += f"\n\n```\n{body}\n```"
        except UnicodeDecodeError:
            pass
        await self.post(text, [attachment])
        return f"shared {ws.relative(target)}"

    # -- from branches and workers -------------------------------------------------------------

    async def on_result(self, result: DelegateResult) -> Reply:
        """A branch's or worker's result. It is stored (``pending`` until a turn has seen it) before
        it is acknowledged: a conversation process killed before its next turn finds it again at
        start-up, and the resume sweep wakes a conversation that owes one. The reporter retries
        while memory is away (a transient error), and a retried report is stored once."""
        outcome = result.outcome
        if result.id in self.hung and outcome == "cancelled":
            outcome = "timed_out"  # it was stopped for going past its budget, not by anyone's choice
        try:
            await self._record(result.id, outcome, result.text, attempts=3)
        except BusError as exc:
            return Err(exc.code, f"the result could not be stored yet: {exc.message}")
        return Ok()

    def on_status(self, status: DelegateStatus) -> None:
        d = self.delegates.set_status(status.id, status.text, status.kind)
        if d is not None and status.kind == "waiting":
            self._event(d, waiting=status.text)
        elif d is not None:
            self.out(self.typing())

    def on_hung(self, body: ProcessHung) -> None:
        if body.id in self.delegates.running:
            self.hung.add(body.id)

    async def on_exit(self, body: ProcessExited) -> None:
        """An exit without a result is an outcome too (killed, crashed, hung past its budget)."""
        if body.id in self.delegates.running:
            outcome = "timed_out" if body.id in self.hung else "failed"
            if body.id in self.stopped and outcome == "failed":
                outcome, text = "cancelled", f"{self.stopped[body.id]} before it could report"
            elif outcome == "timed_out":
                text = "killed: it went past its time or progress budget"
            else:
                text = f"the process ended without a result (exit code {body.exit_code})"
            try:
                await self._record(body.id, outcome, text)
            except BusError as exc:  # memory stayed away: the turn still hears of it, unstored
                log.warning("outcome of %s not stored: %s", body.id, exc)
                d = self.delegates.finish(body.id, outcome, text)
                if d is not None:
                    self._event(d)

    async def _record(self, ident: str, outcome: str, text: str, attempts: int = PATIENT) -> None:
        d = self.delegates.running.get(ident)
        kind, task = (d.kind, d.task) if d is not None else (ident.partition(":")[0], "")
        stored = await self.memory.request(
            TranscriptAppend(
                self.conversation,
                f"finished ({outcome}): {text}",
                author_id=ident,
                author_name=f"{kind} {ident} — {task[:60]}" if task else f"{kind} {ident}",
                role="system",
                platform_message_id=f"result:{ident}",  # a retried report is stored once
                reply_state=ReplyState.PENDING,
            ),
            returns=StoredMessage,
            attempts=attempts,
        )
        if stored.id in self.recorded:
            return
        self.recorded.add(stored.id)
        self.stopped.pop(ident, None)
        d = self.delegates.finish(ident, outcome, text)
        self._show(stored, d)

    def restore(self, row: StoredMessage) -> None:
        """A stored result no turn had seen when the previous process of this conversation ended."""
        if row.id not in self.recorded:
            self.recorded.add(row.id)
            self.unseen.append(row.id)
            self.due = self.due or time.monotonic()

    async def seen(self, results: list[int]) -> None:
        """A turn saw these stored results: they no longer wait (best effort: one that stays
        ``pending`` is seen again by the next process of this conversation, never lost)."""
        for rid in results:
            if rid in self.recorded:
                try:
                    mark = TranscriptMarkReply(rid, ReplyState.ANSWERED)
                    await self.memory.request(mark, returns=StoredMessage, attempts=3)
                except BusError as exc:
                    log.warning("result %d stays pending: %s", rid, exc)
                    return

    def _event(self, d: Delegate, waiting: str = "") -> None:
        text = f"is waiting for input: {waiting}" if waiting else f"finished ({d.outcome}): {d.result}"
        event = StoredMessage(
            id=next(_event_ids),
            channel_id=self.conversation,
            platform_message_id=None,
            author_id=d.id,
            author_name=f"{d.kind} {d.id} — {d.task[:60]}",
            role="system",
            text=text,
            attachments=[],
            created_at=time.time(),
            reply_state=ReplyState.NONE,
            replied_at=None,
        )
        self._show(event, d, waiting)

    def _show(self, event: StoredMessage, d: Delegate | None, waiting: str = "") -> None:
        """A result or waiting line joins the transcript and wakes the turn loop."""
        self.add_event(event)
        self.unseen.append(event.id)
        if not self.due:
            self.due = time.monotonic() + self.settings.retrigger_window
        self.ctx.publish(
            f"channel.{self.ctx.id}.delegate",
            Notice(
                "finished" if not waiting else "waiting",
                {"id": event.author_id, "outcome": d.outcome if d is not None else ""},
            ),
        )
        self.out(self.typing())  # what still runs, or idle
        self.wake()

    def take_unseen(self) -> list[int]:
        seen, self.unseen, self.due = self.unseen, [], 0.0
        return seen
