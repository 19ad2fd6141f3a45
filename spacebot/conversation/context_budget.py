"""The context budget: a programmatic monitor inside each conversation process that keeps its
context under the model's window without the conversation ever going dark.

Size = the prompt tokens the provider reported for the last call, plus an estimate (4 characters a
token) for what was added since. Above 80 % of the window it summarises the oldest 30 % in the
background, above 85 % the oldest 50 %, above 95 % it drops the oldest 50 % at once without a
model. Summaries come from a compaction process (``spacebot.procs.compaction``) while the channel
keeps answering; before a span leaves the context the memories worth keeping are extracted and
saved (in an emergency, a plain digest of the span is saved instead). One compaction at a time; a
failed one falls back to truncation and says so in an event (``channel.<id>.compaction``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from spacebot.conversation.transcript import Transcript, lines
from spacebot.ipc.messages import (
    DelegateResult,
    Kind,
    Memory,
    MemoryDraft,
    MemoryType,
    MemSave,
    Notice,
    ReplyState,
    SpawnSpec,
    StoredMessage,
    Usage,
)
from spacebot.ipc.replies import BusError
from spacebot.llm.types import Message
from spacebot.runtime.child import ChildContext
from spacebot.runtime.memory_link import MemoryLink

log = logging.getLogger("spacebot.compactor")

LEVELS: tuple[tuple[float, str, float], ...] = (
    (0.95, "emergency", 0.5),
    (0.85, "aggressive", 0.5),
    (0.80, "background", 0.3),
)
"""(share of the window, level, share of the context to compact)."""
DEFAULT_WINDOW = 128_000


def estimate_tokens(text: str) -> int:
    """A cheap token estimate for text not yet seen by the provider."""
    return len(text) // 4 + 1


def level_for(tokens: int, window: int) -> tuple[str, float] | None:
    """The compaction level for a context of ``tokens`` (``None`` = nothing to do)."""
    for share, name, fraction in LEVELS:
        if tokens > share * window:
            return name, fraction
    return None


def choose_span(history: list[StoredMessage], fraction: float) -> int:
    """How many of the oldest entries to compact: about ``fraction`` of the context's characters,
    stopping before any message still waiting for an answer, and never splitting a worker's
    result line from the entries just before it that asked for it (a span ends on a person's or
    the agent's message)."""
    total = sum(len(m.text) for m in history) or 1
    goal = fraction * total
    taken = 0
    cut = 0
    for i, m in enumerate(history):
        if m.reply_state is ReplyState.PENDING:
            break
        taken += len(m.text)
        if m.role in ("user", "assistant") or m.author_id.startswith("summary"):
            cut = i + 1
        if taken >= goal:
            break
    return cut


class ContextBudget:
    """Tracks the context size of one conversation and compacts it.

    It reads the transcript and rewrites its oldest span (through :class:`Transcript`), starts the
    compaction process, saves digests through the memory link, and reads the system prompt's size;
    nothing else of the conversation."""

    def __init__(
        self,
        ctx: ChildContext,
        agent: str,
        transcript: Transcript,
        memory: MemoryLink,
        system_prompt: Callable[[], str],
        configured_window: int = 0,
    ) -> None:
        self.ctx = ctx
        self.agent = agent
        self.conversation = transcript.conversation
        self.transcript = transcript
        self.memory = memory
        self.system_prompt = system_prompt
        self.window = self._window(configured_window)
        self.reported = 0
        self.reported_len = 0
        self.running = False
        self.worker_id = ""
        self.span: list[StoredMessage] = []
        self.level = ""
        self.compactions = 0
        self._task: asyncio.Task[None] | None = None

    def _window(self, configured: int) -> int:
        if configured > 0:
            return configured
        windows = [
            m.context_window for m in self.ctx.config.llm.models.values() if getattr(m, "context_window", 0)
        ]
        return min(windows) if windows else DEFAULT_WINDOW

    # -- measuring -----------------------------------------------------------------------------

    def observe(self, usage: Usage, messages: list[Message]) -> None:
        """The provider's count for the prompt just sent."""
        del messages
        self.reported = usage.input_tokens + usage.cached_tokens + usage.output_tokens
        self.reported_len = len(self.transcript.history)

    def size(self) -> int:
        """Tokens the next prompt will have (reported + estimated for newer entries)."""
        newer = self.transcript.history[self.reported_len :] if self.reported else self.transcript.history
        base = self.reported or estimate_tokens(self.system_prompt())
        return base + sum(estimate_tokens(m.text) + 8 for m in newer)

    # -- acting --------------------------------------------------------------------------------

    def check(self) -> None:
        """Start a compaction if the context is over a threshold and none is running."""
        found = level_for(self.size(), self.window)
        if found is None:
            return
        name, fraction = found
        if name == "emergency":
            self._truncate(fraction, "emergency: over 95% of the context window")
            return
        if self.running:
            return
        n = choose_span(self.transcript.history, fraction)
        if n == 0:
            return
        self.running = True
        self.level = name
        self.span = self.transcript.history[:n]
        self._task = asyncio.get_running_loop().create_task(self._start(name))

    async def _start(self, name: str) -> None:
        transcript = lines(self.span)
        self._event("started", level=name, messages=len(self.span), tokens=self.size())
        spec = SpawnSpec(
            Kind.WORKER,
            "spacebot.procs.compaction:serve",
            args={
                "agent": self.agent,
                "report_to": self.ctx.id,
                "conversation": self.conversation,
                "transcript": transcript,
            },
            task=f"compaction ({name}) of {self.conversation}",
            wait_ready=False,
        )
        try:
            spawned = await self.ctx.spawn(spec, timeout=30.0)
            self.worker_id = spawned.id
        except BusError as exc:
            self._fail(f"could not start the compaction process: {exc.message}")

    def owns(self, result: DelegateResult) -> bool:
        return self.owns_process(result.id)

    def owns_process(self, ident: str) -> bool:
        """Whether ``ident`` is the compaction process this budget started."""
        return bool(self.worker_id) and ident == self.worker_id

    def on_result(self, result: DelegateResult) -> None:
        """The compaction process finished: swap the span for its summary (or truncate)."""
        if result.outcome != "success":
            self._fail(result.text)
            return
        memories = int(result.data.get("memories", 0))
        self._replace(f"Summary of the earlier conversation: {result.text}")
        self._event("done", level=self.level, memories=memories, tokens=self.size())
        self._reset()

    def on_exit(self, ident: str) -> None:
        """The compaction process ended; if it sent nothing, that is a failure."""
        if self.running and ident == self.worker_id:
            self._fail("the compaction process ended without a result")

    def _fail(self, why: str) -> None:
        log.warning("compaction failed conversation=%s reason=%s; truncating", self.conversation, why)
        self._event("failed", level=self.level, reason=why)
        span = self.span
        self._reset()
        self._truncate_span(span, f"compaction failed ({why})")

    def _reset(self) -> None:
        self.running = False
        self.worker_id = ""
        self.span = []
        self.level = ""

    def _replace(self, summary: str) -> None:
        """Put ``summary`` where the span was (entries added meanwhile stay after it)."""
        self.transcript.replace_span(self.span, summary)
        self.reported = 0  # the next provider count replaces the estimate
        self.compactions += 1

    def _truncate(self, fraction: float, why: str) -> None:
        n = choose_span(self.transcript.history, fraction)
        if n:
            self._truncate_span(self.transcript.history[:n], why)

    def _truncate_span(self, span: list[StoredMessage], why: str) -> None:
        """Drop ``span`` without a model; a plain digest is saved to memory first (nothing is lost:
        the transcript itself stays in the memory store and is searchable)."""
        if not span:
            return
        digest = lines([m for m in span if m.role in ("user", "assistant")], chars=200, sep=" / ")
        if digest:
            draft = MemoryDraft(
                content=f"Conversation excerpt ({self.conversation}): {digest[:3000]}",
                type=MemoryType.EVENT,
                source="compaction:truncate",
                channel=self.conversation,
            )
            self._task = asyncio.get_running_loop().create_task(self._save([draft]))
        self.span = span
        self._replace(f"(Earlier messages were dropped to make room: {why}.)")
        self.span = []
        self._event("truncated", reason=why, messages=len(span), tokens=self.size())

    async def _save(self, drafts: list[MemoryDraft]) -> None:
        try:
            await self.memory.request(MemSave(drafts), returns=list[Memory])
        except BusError as exc:
            log.error("could not save the digest of a dropped span: %s", exc)

    def _event(self, what: str, **detail: Any) -> None:
        log.info("compaction %s conversation=%s %s", what, self.conversation, detail)
        self.ctx.publish(f"channel.{self.ctx.id}.compaction", Notice(what, detail))
