"""One streamed model call of a conversation, shown to people while the model writes it.

Plain text streams provisionally while no tool is being called; the ``reply`` tool's ``content``
argument streams as it is generated. What turns out not to be delivered (text followed by a tool
call, a call cut by a provider fallback) is taken back with :class:`OutAbort`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import assert_never

from spacebot.ipc.messages import OutAbort, Outbound, OutDelta, Usage
from spacebot.llm.partial import StreamedField
from spacebot.llm.types import (
    Fallback,
    Message,
    Request,
    Stop,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    UsageEvent,
)
from spacebot.runtime.llm_link import LinkedLLM


class _Stream:
    """One tool call (or the plain text) being streamed in the current model call."""

    def __init__(self, name: str = "") -> None:
        self.name = name
        self.call_id = ""
        self.reply_id = secrets.token_hex(6)
        self.field = StreamedField("content")
        self.shown = False


@dataclass
class Streamed:
    """What one model call produced."""

    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    reply_ids: dict[str, str] = field(default_factory=dict)
    """Reply id shown to people, per tool call id (``""``: the plain text)."""


class ReplyStreamer:
    """Streams model calls of one conversation to its gateway."""

    def __init__(
        self,
        conversation: str,
        out: Callable[[Outbound], None],
        progress: Callable[[], None],
        observe: Callable[[Usage, list[Message]], None],
    ) -> None:
        self.conversation = conversation
        self.out = out
        self.progress = progress
        self.observe = observe

    async def call(self, llm: LinkedLLM, request: Request, timeout: float) -> Streamed:
        """Run ``request`` as a stream within ``timeout``."""
        text = _Stream()
        streams: dict[int, _Stream] = {}
        parts: list[str] = []
        calls: list[ToolCall] = []
        async with asyncio.timeout(timeout):
            async for ev in llm.llm.stream(request, process="channel"):
                self.progress()
                match ev:
                    case TextDelta():
                        parts.append(ev.text)
                        if not streams:
                            self._show(text, ev.text)
                    case ToolCallDelta():
                        stream = streams.setdefault(ev.index, _Stream(ev.name))
                        if text.shown:  # a tool call follows: the text will not be delivered
                            self.abort(text.reply_id, "the model called a tool")
                            text = _Stream()
                        stream.name = ev.name or stream.name
                        stream.call_id = ev.id or stream.call_id
                        if stream.name == "reply":
                            self._show(stream, stream.field.feed(ev.arguments))
                    case ToolCallDone():
                        calls.append(ev.call)
                    case Fallback():
                        for s in [text, *streams.values()]:
                            if s.shown:
                                # People's clients get no error text: the operator's log has it.
                                self.abort(s.reply_id, "retrying")
                        text, streams, parts, calls = _Stream(), {}, [], []
                    case UsageEvent():
                        self.observe(ev.usage, request.messages)
                    case Stop():
                        pass
                    case _:
                        assert_never(ev)
        reply_ids = {s.call_id: s.reply_id for s in streams.values() if s.shown}
        if text.shown:
            reply_ids[""] = text.reply_id
        return Streamed("".join(parts), calls, reply_ids)

    def abort(self, reply_id: str, reason: str) -> None:
        """Take back a reply people saw being written."""
        if reply_id:
            self.out(OutAbort(self.conversation, reply_id, reason))

    def _show(self, stream: _Stream, chunk: str) -> None:
        if chunk:
            stream.shown = True
            self.out(OutDelta(self.conversation, stream.reply_id, chunk))
