"""What branches and workers share: a tool-calling model loop and reporting back to their parent."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from spacebot.ipc.messages import DelegateResult, DelegateStatus
from spacebot.ipc.replies import BusError, retry_transient
from spacebot.llm.types import AssistantMessage, Message, Request, ToolCall, ToolMessage, ToolSpec
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.delegate")

ToolRunner = Callable[[ToolCall], Awaitable[tuple[str, bool]]]


class TurnCapReached(Exception):
    """The model used every turn without giving a final answer."""

    def __init__(self, last_text: str) -> None:
        super().__init__("turn cap reached")
        self.last_text = last_text


async def model_loop(
    ctx: ChildContext,
    llm: Any,
    messages: list[Message],
    tools: list[ToolSpec],
    run_tool: ToolRunner,
    *,
    max_turns: int,
    process: str,
    task: str | None = None,
    on_text: Callable[[str], Awaitable[str | None]] | None = None,
) -> str:
    """Call the model, run its tool calls, repeat until it answers without tools; returns that answer.

    ``on_text`` (interactive workers) may turn a tool-less answer into more input: it returns the
    next user message, or ``None`` to finish with the answer. ``messages`` is extended in place.
    """
    last = ""
    for _ in range(max_turns):
        result = await llm.llm.complete(
            Request(messages, tools=tools, max_tokens=4096), process=process, task=task
        )
        ctx.progress()
        last = result.text or last
        if not result.tool_calls:
            if on_text is not None:
                more = await on_text(result.text)
                if more is not None:
                    messages += [AssistantMessage(result.text), _user(more)]
                    continue
            return result.text
        outputs: list[Message] = []
        for call in result.tool_calls:
            ctx.progress(f"{call.name}")
            text, is_error = await run_tool(call)
            outputs.append(ToolMessage(call.id, text, is_error=is_error, name=call.name))
        messages += [AssistantMessage(result.text, list(result.tool_calls)), *outputs]
    raise TurnCapReached(last)


def _user(text: str) -> Message:
    from spacebot.llm.types import UserMessage

    return UserMessage(text)


async def report(ctx: ChildContext, parent: str, result: DelegateResult, attempts: int = 30) -> bool:
    """Send the result to the parent, retrying while it restarts (a hibernated channel is woken)."""
    try:
        await retry_transient(
            lambda: ctx.request(parent, result, timeout=10.0), attempts=attempts, what=f"report to {parent}"
        )
    except BusError as exc:
        log.error("cannot report to %s: %s", parent, exc)
        return False
    return True


def status(ctx: ChildContext, parent: str, text: str, kind: str = "progress") -> None:
    """A one-way status line to the parent."""
    ctx.progress(text[:200])
    try:
        ctx.bus.send(parent, DelegateStatus(ctx.id, text[:500], kind))
    except BusError as exc:
        log.warning("status not sent: %s", exc)
