"""``channel:<agent>:<conversation>``: the process that talks in one conversation.

It is started by the first message addressed to it (see ``supervisor/wake.py``), loads the
conversation's history and anything still unanswered from ``memory:<agent>``, and answers in
turns: every message that arrived since the last turn is answered together. It streams replies to
the gateway that owns the conversation while the model writes them, and hibernates (exits) after
``channel.idle_timeout`` seconds without messages.

Exactly-once: the gateway persists each inbound message (``pending``) before sending it here. A
reply is stored together with the ``answered`` state of the messages it answers, in one memory
transaction (``TranscriptAppend.answers``). A channel killed mid-turn is restarted, finds the
messages still ``pending``, and answers them; one whose reply was already stored is not pending.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import msgspec

# Imported here, not on first use: the zygote imports this module before forking conversation
# processes, so the model layer is shared (copy-on-write) instead of imported by each process. The
# SDKs of the configured providers come from ``[supervisor] preload`` (see ``preload_modules``).
import spacebot.llm.client  # noqa: F401
from spacebot.agent import context, identity
from spacebot.conversation.context_budget import ContextBudget
from spacebot.conversation.delegation import Briefing, Delegation
from spacebot.conversation.streaming import ReplyStreamer
from spacebot.conversation.transcript import AgentVoice, Transcript
from spacebot.cortex.knowledge import KnowledgeCache, with_block
from spacebot.cron import tool as cron_tool
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    TRANSIENT_CODES,
    CancelWork,
    Card,
    ChannelList,
    ConversationInfo,
    DelegateResult,
    DelegateStatus,
    Envelope,
    Err,
    ErrorCode,
    Inbound,
    InboundEdit,
    Notice,
    Ok,
    Outbound,
    OutError,
    OutErrorCode,
    OutMessage,
    OutReaction,
    OutTyping,
    ProcessExited,
    ProcessHung,
    ReplyState,
    Shown,
    StoredMessage,
    TranscriptMarkReply,
    TranscriptPage,
    TranscriptReact,
    TranscriptUnanswered,
)
from spacebot.ipc.replies import BusError, Reply
from spacebot.llm.errors import model_failure
from spacebot.llm.types import AssistantMessage, Message, Request, ToolCall, ToolMessage, ToolSpec
from spacebot.messaging import cards
from spacebot.runtime.child import ChildContext
from spacebot.runtime.llm_link import LinkedLLM, connect_llm
from spacebot.runtime.memory_link import MemoryLink
from spacebot.tools.conversation import CONVERSATION_TOOLS, CRON_TOOLS, delegation_tools
from spacebot.tools.errors import ToolArgumentError, ToolError
from spacebot.tools.schema import check

log = logging.getLogger("spacebot.channel")

NO_MODEL = (
    "No language model is configured, so I cannot answer yet. The operator can set ANTHROPIC_API_KEY, "
    "or OPENAI_API_KEY, or SPACEBOT_LLM_BASE_URL and SPACEBOT_LLM_MODEL (an OpenAI-compatible server "
    "such as Ollama or vLLM), or an [llm] section in config.toml, then restart Spacebot."
)

RETRY_MAX_DELAY = 30.0
"""Longest pause between attempts at a turn that failed because memory was away."""


def display_name(ident: identity.Identity) -> str:
    """The agent's name as people see it (``Your name is X`` in IDENTITY.md, else the agent id)."""
    match = re.search(r"[Yy]our name is ([^.\n]{1,40})", ident.identity)
    return match.group(1).strip() if match else ident.agent


class Channel:
    """One conversation: intake, the turn loop, and the conversation tools. What it is made of
    lives in ``spacebot.conversation``: the transcript and the agent's voice, reply streaming,
    delegation (branches and workers), and the context budget (compaction)."""

    def __init__(self, ctx: ChildContext, agent: str, conversation: str) -> None:
        self.ctx = ctx
        self.agent = agent
        self.conversation = conversation
        self.platform = conversation.partition(":")[0]
        self.gateway = ids.gateway_of(conversation, agent)
        self.settings = ctx.config.channel
        self.identity = identity.load(ctx.config.home, agent)
        self.images = context.image_loader(Path(ctx.config.home) / "agents" / agent / "attachments")
        self.title = conversation
        self.transcript = Transcript(conversation)
        self.memory = MemoryLink(ctx, ids.memory(agent))
        self.voice = AgentVoice(self.memory, agent, display_name(self.identity), conversation)
        self.knowledge = KnowledgeCache(ctx, agent)
        self.wake = asyncio.Event()
        self.closing = False
        self.llm: LinkedLLM | None = None
        self.turns = 0
        self.work = Delegation(
            ctx,
            agent,
            conversation,
            self.settings,
            voice=self.voice,
            post=self.post,
            out=self.out,
            briefing=lambda: Briefing(self.system_prompt(), self.transcript.text()),
            add_event=self.transcript.add_event,
            wake=self.wake.set,
        )
        self.budget = ContextBudget(
            ctx, agent, self.transcript, self.memory, self.system_prompt, self.settings.context_window
        )
        self.streamer = ReplyStreamer(conversation, self.out, ctx.progress, self.budget.observe)
        self.retriggers = 0
        self.hold_until = 0.0
        self.burst_start = 0.0
        self.fresh: set[int] = set()
        self.retry_step = 0
        """Consecutive failed turns; the next retry waits ``0.5 * 2**(step-1)`` s (capped)."""

    @property
    def pending(self) -> dict[int, StoredMessage]:
        return self.transcript.pending

    # -- intake --------------------------------------------------------------------------------

    def on_message(self, env: Envelope) -> Reply | Awaitable[Reply] | None:
        body = env.body
        if isinstance(body, DelegateResult):
            if self.budget.owns(body):
                self.budget.on_result(body)
                return Ok()
            return self.work.on_result(body)
        if isinstance(body, DelegateStatus):
            self.work.on_status(body)
            return None
        if isinstance(body, CancelWork):
            return self.work.on_cancel(body)
        if isinstance(body, InboundEdit):
            return self._edited(body)
        if not isinstance(body, Inbound):
            return Err(ErrorCode.UNSUPPORTED, f"{self.ctx.id} does not handle {type(body).__name__}")
        if self.closing:
            return Err(ErrorCode.UNAVAILABLE, f"{self.ctx.id} is hibernating; send again")
        if body.conversation != self.conversation:
            return Err(ErrorCode.BAD_REQUEST, f"message for {body.conversation!r} sent to {self.ctx.id}")
        self.gateway = body.gateway or self.gateway
        if body.stored_id not in self.transcript.known:
            self._coalesce(body)
            self._take(
                StoredMessage(
                    id=body.stored_id,
                    channel_id=self.conversation,
                    platform_message_id=body.message_id,
                    author_id=body.author_id,
                    author_name=body.author_name,
                    role="user",
                    text=body.text,
                    attachments=body.attachments,
                    created_at=body.timestamp,
                    reply_state=ReplyState.PENDING,
                    replied_at=None,
                )
            )
        return Ok()

    def _take(self, message: StoredMessage) -> None:
        if self.transcript.take(message):
            self.wake.set()

    def _edited(self, body: InboundEdit) -> Reply:
        """A person edited or deleted a message (already changed in storage): the history, and
        the message's copy waiting for an answer, show the new text from the next model call on."""
        if body.conversation != self.conversation:
            return Err(ErrorCode.BAD_REQUEST, f"edit for {body.conversation!r} sent to {self.ctx.id}")
        new = body.message
        for old in self.transcript.history:
            if old.id == new.id:
                self.transcript.update(msgspec.structs.replace(old, text=new.text))
                break
        if (waiting := self.pending.get(new.id)) is not None:
            self.pending[new.id] = msgspec.structs.replace(waiting, text=new.text)
        return Ok()

    def _coalesce(self, inbound: Inbound) -> None:
        """In a group conversation, a burst of messages is answered in one turn (see ``[channel]``).

        A burst is a message that arrives while ``coalesce_min_messages - 1`` others are still
        unanswered (waiting, or being answered right now). From then on the next turn waits until
        nobody has written for ``coalesce_debounce`` (at most ``coalesce_max_wait`` after the burst
        began). A message that finds nothing unanswered is answered at once, and so are DMs,
        conversations with one person, and ``/commands``.
        """
        now = time.monotonic()
        s = self.settings
        history = self.transcript.history
        recent = {m.author_id for m in history[-20:] if m.role == "user"} | {inbound.author_id}
        group = not inbound.direct and len(recent) >= 2 and not inbound.text.startswith("/")
        if group and s.coalesce_debounce > 0 and len(self.pending) + 1 >= s.coalesce_min_messages:
            if not self.burst_start:
                self.burst_start = now
            self.hold_until = min(self.burst_start + s.coalesce_max_wait, now + s.coalesce_debounce)
        elif not group:
            self.hold_until = 0.0
            self.burst_start = 0.0

    async def watch_children(self) -> None:
        """Exit and hung events of the processes this conversation starts: an exit without a
        result is an outcome too, for a branch, a worker or the compaction process."""
        events = await self.ctx.events("proc.branch.", "proc.worker.")
        async for event in events:
            match event.body:
                case ProcessHung() as hung:
                    self.work.on_hung(hung)
                case ProcessExited() as exited if self.budget.owns_process(exited.id):
                    self.budget.on_exit(exited.id)
                case ProcessExited() as exited:
                    await self.work.on_exit(exited)

    # -- life ----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Load, then answer until idle for ``idle_timeout`` (hibernate) or stopped."""
        if self.ctx.config.llm.providers:
            self.llm = await connect_llm(self.ctx)
        try:
            await self._load()
            watcher = asyncio.get_running_loop().create_task(self.watch_children(), name="delegate-events")
            try:
                await self._serve()
            finally:
                watcher.cancel()
        finally:
            if self.llm is not None:
                await self.llm.aclose()

    def _due(self) -> float | None:
        """When the next turn should start (monotonic time), or ``None`` when nothing waits."""
        if self.pending:
            return self.hold_until  # 0.0 = now; a group burst is held until it goes quiet
        if self.work.unseen and self.retriggers < self.settings.retrigger_cap:
            return self.work.due
        return None

    async def _serve(self) -> None:
        held = 0
        while True:
            due = self._due()
            now = time.monotonic()
            if due is None and len(self.work.unseen) > held:
                # Results came in but the retrigger cap keeps them for the next person's turn: say
                # so, so that whoever watches knows no turn is coming for them.
                held = len(self.work.unseen)
                self.ctx.publish(
                    f"channel.{self.ctx.id}.held",
                    Notice("held", {"results": held, "reason": "retrigger cap"}),
                )
            elif not self.work.unseen:
                held = 0
            if due is not None and due <= now:
                await self._turn()
                continue
            if due is not None:
                timeout: float | None = due - now
            else:
                idle = self.settings.idle_timeout
                busy = bool(self.work.delegates.running) or self.budget.running
                timeout = idle if idle > 0 and not busy else None
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
                self.wake.clear()
            except TimeoutError:
                if due is None and not self.pending and not self.work.delegates.running:
                    self._hibernate()
                    return

    def _hibernate(self) -> None:
        self.closing = True
        log.info("hibernating conversation=%s idle_s=%.0f", self.conversation, self.settings.idle_timeout)
        self.ctx.publish(
            f"channel.{self.ctx.id}.hibernate",
            Notice("hibernate", {"idle_timeout": self.settings.idle_timeout}),
        )

    async def _load(self) -> None:
        rows = list[StoredMessage]
        limit = self.settings.history_messages
        page = await self.memory.request(TranscriptPage(self.conversation, limit=limit), returns=rows)
        unanswered = await self.memory.request(
            TranscriptUnanswered(self.conversation, limit=500), returns=rows
        )
        self.transcript.load(page, unanswered)
        channels = await self.memory.request(ChannelList(self.platform), returns=list[ConversationInfo])
        self.title = next((c.display_name for c in channels if c.id == self.conversation), self.conversation)
        for row in [r for r in self.pending.values() if ids.is_delegate(r.author_id)]:
            del self.pending[row.id]  # a result the previous process had not shown to a turn yet
            self.work.restore(row)
        if self.pending or self.work.unseen:
            log.info(
                "resuming conversation=%s unanswered=%d results=%d",
                self.conversation,
                len(self.pending),
                len(self.work.unseen),
            )
            self.wake.set()

    def out(self, body: Outbound) -> None:
        """Send something to the conversation's gateway."""
        try:
            self.ctx.bus.send(self.gateway, body)
        except BusError as exc:  # oversized: never for our sizes, but never fatal either
            log.error("cannot send to gateway=%s error=%s", self.gateway, exc)

    async def post(self, text: str, attachments: list[dict[str, Any]] | None = None) -> StoredMessage:
        """Store and show an agent message that answers nothing in particular (a shared file...)."""
        message = await self.voice.say(text, attachments=attachments)
        self._take(message)
        self.out(OutMessage(self.conversation, message))
        return message

    # -- one turn ------------------------------------------------------------------------------

    async def _turn(self) -> None:
        batch = sorted(self.pending)
        held = bool(self.hold_until)
        self.hold_until = self.burst_start = 0.0
        if batch:
            self.retriggers = 0
        else:
            self.retriggers += 1  # started by finished work, not by a person
        self.fresh = set(batch) | set(self.work.take_unseen())
        if held and len(batch) >= self.settings.coalesce_min_messages:
            people = len({self.pending[m].author_id for m in batch})
            self.ctx.publish(
                f"channel.{self.ctx.id}.coalesced",
                Notice("coalesced", {"messages": len(batch), "people": people}),
            )
        self.turns += 1
        self.budget.check()  # before the call: an emergency must not reach the model
        self.ctx.set_busy(True, f"answering {len(batch)} message(s)")
        self.out(OutTyping(self.conversation, "thinking"))
        try:
            if self.llm is None:
                if not await self._notice(batch, "model", NO_MODEL):
                    self._retry_later(batch, RuntimeError("memory is unavailable"))
            else:
                await self._answer(self.llm, batch)
            self.retry_step = 0
        except asyncio.CancelledError:
            raise
        except BusError as exc:
            if exc.code not in TRANSIENT_CODES:
                log.exception("turn failed conversation=%s", self.conversation)
            await self._failed(batch, exc)
        except Exception as exc:
            failure = model_failure(exc)
            if failure is not None and failure.expected:  # a model down or refusing: no traceback
                log.warning("turn failed conversation=%s %s", self.conversation, failure.operator_line())
            else:
                log.exception("turn failed conversation=%s", self.conversation)
            await self._failed(batch, exc)
        finally:
            if results := sorted(self.fresh - set(batch)):
                await self.work.seen(results)
            running = self.work.delegates.running
            self.out(self.work.typing())
            self.ctx.set_busy(bool(running), "idle" if not running else f"{len(running)} delegate(s) running")
            self.budget.check()
            # Every turn says how it ended: a test (or an operator) waits on this instead of a
            # clock to know that nothing more is coming for these messages.
            self.ctx.publish(
                f"channel.{self.ctx.id}.turn",
                Notice(
                    "turn",
                    {
                        "turn": self.turns,
                        "messages": len(batch),
                        "results": len(self.fresh) - len(batch),
                        "pending": len(self.pending),
                        "unseen": len(self.work.unseen),
                        "retry": bool(set(batch) & set(self.pending)),
                    },
                ),
            )

    async def _failed(self, batch: list[int], exc: Exception) -> None:
        """A turn failed. Memory being away (restarting, starting) is not the person's problem:
        the batch stays pending here and in storage and the turn is tried again after a pause.
        Anything else is told to the conversation, and only once that notice is stored are the
        messages settled — a channel never forgets what storage still holds as pending."""
        transient = isinstance(exc, BusError) and exc.code in TRANSIENT_CODES
        if (failure := model_failure(exc)) is not None:
            text = failure.person_message  # one plain sentence: no URL, model id or exception name
        else:
            text = f"Something went wrong while answering: {_describe(exc)}"
        if transient or not await self._notice(batch, "model", text):
            self._retry_later(batch, exc)

    def _retry_later(self, batch: list[int], exc: Exception) -> None:
        if not batch:
            return  # a retrigger turn: the results stay unseen and come back with the next one
        self.retry_step += 1
        delay = min(0.5 * 2 ** (self.retry_step - 1), RETRY_MAX_DELAY)
        self.hold_until = time.monotonic() + delay
        log.warning(
            "turn failed conversation=%s pending=%d retry_in=%.1fs error=%s",
            self.conversation,
            len(batch),
            delay,
            exc,
        )
        self.ctx.publish(
            f"channel.{self.ctx.id}.retry",
            Notice("retry", {"messages": len(batch), "delay": delay, "error": str(exc)[:200]}),
        )

    def system_prompt(self) -> str:
        """Identity, how to talk here, what the agent remembers (the cortex's knowledge block; a
        branch gets it with this prompt), and the live status block of running work."""
        base = context.system_prompt(self.identity, platform=self.platform, title=self.title)
        base = with_block(base, self.knowledge.text)
        block = self.work.delegates.block()
        return f"{base}\n{block}" if block else base

    def tools(self) -> list[ToolSpec]:
        """What the model may call here (a cron run's conversation schedules nothing itself)."""
        extra = CRON_TOOLS if self.platform != "cron" else []
        return CONVERSATION_TOOLS + list(delegation_tools(self.ctx.config.tools.opencode)) + extra

    async def _answer(self, llm: LinkedLLM, batch: list[int]) -> None:
        await self.knowledge.refresh()  # never fails a turn: without the cortex, the copy held (or none)
        messages: list[Message] = context.build(
            self.system_prompt(), self.transcript.history, self.fresh, self.images
        )
        replies = 0
        tools = self.tools()
        for _ in range(self.settings.max_turns):
            request = Request(messages, tools=tools, max_tokens=2048)
            got = await self.streamer.call(llm, request, self.settings.turn_timeout)
            if not got.calls:
                if got.text.strip():
                    await self._deliver(got.text.strip(), batch, replies, got.reply_ids.get("", ""))
                elif batch:
                    log.info("empty answer conversation=%s; nothing sent", self.conversation)
                    await self._settle(batch, ReplyState.SKIPPED)
                return
            results, done, replies = await self._run_tools(got.calls, batch, replies, got.reply_ids)
            if done:
                return
            messages += [AssistantMessage(got.text, got.calls), *results]
        await self._notice(
            batch,
            "model",
            f"I used {self.settings.max_turns} steps without finishing an answer; please ask again.",
        )

    async def _run_tools(
        self, calls: list[ToolCall], batch: list[int], replies: int, reply_ids: dict[str, str]
    ) -> tuple[list[Message], bool, int]:
        """Run the conversation tools in order; returns (results, turn finished, replies sent)."""
        tools = {t.name: t for t in self.tools()}
        results: list[Message] = []
        done = False
        for call in calls:
            spec = tools.get(call.name)
            try:
                if spec is None:
                    raise ToolArgumentError(f"unknown tool {call.name!r} (tools: {', '.join(tools)})")
                args = check(spec, call)
                match call.name:
                    case "reply":
                        card = cards.parse(args["card"]) if "card" in args else None
                        await self._deliver(
                            args["content"],
                            batch,
                            replies,
                            reply_ids.get(call.id, ""),
                            thread_name=args.get("thread_name", "").strip(),
                            card=card,
                        )
                        replies += 1
                        done = True
                        content = "sent"
                    case "react":
                        if not batch and "message_id" not in args:
                            raise ToolArgumentError("react: give message_id (no new message to react to)")
                        content = await self._react(
                            args["emoji"], args.get("message_id", batch[-1] if batch else 0)
                        )
                    case "skip":
                        await self._settle(batch, ReplyState.SKIPPED)
                        log.info(
                            "skipped conversation=%s reason=%r", self.conversation, args.get("reason", "")
                        )
                        done = True
                        content = "skipped"
                    case "cron":
                        content = await cron_tool.call(self.ctx, self.agent, self.conversation, args)
                    case _:
                        content = await self.work.call(call.name, args)
                results.append(ToolMessage(call.id, content, name=call.name))
            except ToolError as exc:  # arguments, workspace and sandbox refusals: said to the model
                results.append(ToolMessage(call.id, str(exc), is_error=True, name=call.name))
                self.streamer.abort(reply_ids.get(call.id, ""), "invalid reply")
        return results, done, replies

    async def _deliver(
        self,
        content: str,
        batch: list[int],
        index: int,
        reply_id: str,
        *,
        thread_name: str = "",
        card: Card | None = None,
    ) -> StoredMessage:
        """Store a reply (marking ``batch`` answered in the same transaction), then show it: in a
        new thread on the newest message answered when ``thread_name`` is given, with ``card``
        stored as its plain text after the reply's own (see ``spacebot/messaging/cards.py``)."""
        limit = self.settings.max_reply_chars
        if len(content) > limit:
            content = content[:limit] + "\n\n(cut: the reply was longer than the limit)"
        content = cards.with_card(content, card)
        thread_on = batch[-1] if thread_name and batch else None
        thread_name = thread_name if thread_on is not None else ""
        # Stored with the reply: a gateway that was down when it was sent posts it as meant.
        shown = (
            Shown(card=card, thread_name=thread_name, thread_on=thread_on)
            if card is not None or thread_name
            else None
        )
        try:
            message = await self.voice.say(
                content,
                platform_message_id=f"reply:{batch[0]}:{index}" if batch else None,
                answers=batch,
                shown=shown,
            )
        except BusError:
            # The streamed text was not stored: take it back; the turn is retried.
            self.streamer.abort(reply_id, "the reply could not be stored")
            raise
        self.transcript.settled(batch, ReplyState.ANSWERED)
        self._take(message)
        self.out(
            OutMessage(
                self.conversation, message, reply_id, thread_name=thread_name, thread_on=thread_on, card=card
            )
        )
        return message

    async def _react(self, emoji: str, message_id: int) -> str:
        if message_id not in self.transcript.known:
            raise ToolArgumentError(f"react: no message [#{message_id}] in this conversation")
        self.transcript.update(
            await self.memory.request(TranscriptReact(message_id, emoji), returns=StoredMessage)
        )
        self.out(OutReaction(self.conversation, message_id, emoji))
        return f"reacted {emoji} to [#{message_id}]"

    async def _settle(self, batch: list[int], state: ReplyState) -> None:
        """Mark ``batch`` answered/skipped without sending anything."""
        for mid in batch:
            if mid in self.pending:
                await self.memory.request(TranscriptMarkReply(mid, state), returns=StoredMessage)
        self.transcript.settled(batch, state)

    async def _notice(self, batch: list[int], code: OutErrorCode, text: str) -> bool:
        """Tell the conversation something went wrong; the messages stay in the history, skipped.

        Returns False when the notice could not be stored: then nothing is settled."""
        self.out(OutError(self.conversation, code, text, batch[-1] if batch else None))
        try:
            message = await self.voice.say(
                text,
                role="system",
                platform_message_id=f"notice:{batch[0]}:{int(time.time())}" if batch else None,
                answers=batch,
                answers_state=ReplyState.SKIPPED,
                attempts=3,
            )
        except BusError as exc:
            log.warning("notice not stored conversation=%s error=%s", self.conversation, exc)
            return False
        self._take(message)
        self.out(OutMessage(self.conversation, message))
        self.transcript.settled(batch, ReplyState.SKIPPED)
        return True


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "…"


async def serve(ctx: ChildContext, agent: str, conversation: str) -> None:
    """Entry point of ``channel:<agent>:<conversation>``."""
    channel = Channel(ctx, agent, conversation)
    ctx.on_message(channel.on_message)
    ctx.ready()  # only now: the messages that woke us are released the moment we are ready
    await channel.run()


serve.manual_ready = True  # type: ignore[attr-defined]
