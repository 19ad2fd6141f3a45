"""What branches and workers share: a tool-calling model loop, the ladder that turns how the work
ended into an outcome, and reporting that outcome back to their parent."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from spacebot.ipc.messages import OUTCOMES, DelegateResult, DelegateStatus, Outcome, StatusKind
from spacebot.ipc.replies import BusError, retry_transient
from spacebot.llm.errors import model_failure
from spacebot.llm.types import (
    AssistantMessage,
    ImagePart,
    Message,
    Request,
    TextPart,
    ToolCall,
    ToolMessage,
    ToolSpec,
    UserMessage,
)
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.delegate")

ToolRunner = Callable[[ToolCall], Awaitable[tuple[str, bool]]]


class TurnCapReached(Exception):
    """The model used every turn without giving a final answer."""

    def __init__(self, last_text: str) -> None:
        super().__init__("turn cap reached")
        self.last_text = last_text


class Finished(Exception):
    """The model ended the work itself (an interactive worker's ``finish`` tool), with its outcome."""

    def __init__(self, result: str, outcome: str) -> None:
        super().__init__(result)
        self.result = result
        self.outcome: Outcome = next((o for o in OUTCOMES if o == outcome), "failed")


_ENDINGS = {
    "branch": ("could not conclude within {turns} steps.", "could not conclude within {seconds:.0f} s"),
    "worker": ("stopped after {turns} steps.", "stopped at the {seconds:.0f} s limit"),
}
"""How a branch / a worker says it ran out of steps, and out of time."""


async def run_and_report(
    ctx: ChildContext,
    report_to: str,
    kind: str,
    work: Callable[[contextlib.AsyncExitStack[bool | None]], Awaitable[str]],
    *,
    max_turns: int,
    timeout: float,
    empty: str,
) -> None:
    """Run ``work`` within ``timeout`` and report how it ended to ``report_to``, always once.

    ``work`` returns the result text; what it opens it registers on the exit stack it is given,
    which is closed before the report goes out. The outcome ladder: returned → ``success``;
    :class:`Finished` → the model's own outcome; :class:`TurnCapReached` → ``partial`` with the
    last text; time limit → ``timed_out``; stopped (``cancel`` or the supervisor) → ``cancelled``;
    anything else → ``failed`` with the error."""
    turns_out, time_out = _ENDINGS[kind]
    outcome: Outcome = "failed"
    text = f"the {kind} could not start"
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                async with asyncio.timeout(timeout):
                    text = await work(stack)
                outcome = "success"
            except Finished as done:
                outcome, text = done.outcome, done.result
            except TurnCapReached as exc:
                outcome, text = "partial", f"{turns_out.format(turns=max_turns)} {exc.last_text}"
            except TimeoutError:
                outcome, text = "timed_out", time_out.format(seconds=timeout)
    except asyncio.CancelledError:
        outcome, text = "cancelled", f"cancelled ({ctx.stop_reason or 'stopped'})"
    except Exception as exc:
        failure = model_failure(exc)
        if failure is not None and failure.expected:  # a model down or refusing: no traceback
            log.warning("%s failed: %s", kind, failure.operator_line())
            outcome, text = "failed", f"the {kind} failed: {failure.person_message}"
        else:
            log.exception("%s failed", kind)
            outcome, text = "failed", f"the {kind} failed: {exc}"
    finally:
        await report(ctx, report_to, DelegateResult(ctx.id, outcome, text.strip() or empty))


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
    take_images: Callable[[], list[ImagePart]] | None = None,
) -> str:
    """Call the model, run its tool calls, repeat until it answers without tools; returns that answer.

    ``on_text`` (interactive workers) may turn a tool-less answer into more input: it returns the
    next user message, or ``None`` to finish with the answer. ``take_images`` gives the images the
    tool calls just made (screenshots): tool results are text, so they follow the results in a
    user message, and only the newest such message keeps its images (earlier ones become a note,
    so the history does not resend every screenshot). ``messages`` is extended in place.
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
        images = take_images() if take_images is not None else []
        if images:
            _retire_images(messages)
            messages.append(UserMessage([TextPart(IMAGES_NOTE), *images]))
    raise TurnCapReached(last)


IMAGES_NOTE = "The images from the tool calls above:"
"""Opens the user message that carries tool images (how :func:`_retire_images` knows it)."""


def _retire_images(messages: list[Message]) -> None:
    """Replace the images of earlier tool-image messages with a one-line note."""
    for i, message in enumerate(messages):
        if (
            isinstance(message, UserMessage)
            and isinstance(message.content, list)
            and message.content
            and isinstance(message.content[0], TextPart)
            and message.content[0].text == IMAGES_NOTE
        ):
            shown = sum(1 for part in message.content if isinstance(part, ImagePart))
            messages[i] = UserMessage(f"({shown} image(s) from earlier tool calls, no longer shown)")


def _user(text: str) -> Message:
    return UserMessage(text)


async def report(ctx: ChildContext, parent: str, result: DelegateResult, attempts: int = 30) -> bool:
    """Send the result to the parent, retrying while it restarts (a hibernated channel is woken)."""
    try:
        await retry_transient(
            lambda: ctx.request(parent, result, returns=None, timeout=10.0),
            attempts=attempts,
            what=f"report to {parent}",
        )
    except BusError as exc:
        log.error("cannot report to %s: %s", parent, exc)
        return False
    return True


def status(ctx: ChildContext, parent: str, text: str, kind: StatusKind = "progress") -> None:
    """A one-way status line to the parent."""
    ctx.progress(text[:200])
    try:
        ctx.bus.send(parent, DelegateStatus(ctx.id, text[:500], kind))
    except BusError as exc:
        log.warning("status not sent: %s", exc)
