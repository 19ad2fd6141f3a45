"""Assembling streamed tool calls, and turning a malformed one into an error the model can fix."""

from __future__ import annotations

import json
from typing import Any

from spacebot.llm.types import ToolCall, ToolMessage


def finish_tool_call(call_id: str, name: str, raw: str) -> ToolCall:
    """Decode ``raw`` JSON arguments; a call with bad arguments carries ``error`` instead of raising."""
    text = raw.strip() or "{}"
    try:
        args: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return ToolCall(call_id, name, {}, raw, f"arguments of tool {name!r} are not valid JSON: {exc}")
    if not isinstance(args, dict):
        return ToolCall(call_id, name, {}, raw, f"arguments of tool {name!r} must be a JSON object")
    return ToolCall(call_id, name, args, raw)


def tool_error_message(call: ToolCall, error: str | None = None) -> ToolMessage:
    """The tool result that tells the model its call was unusable, so it can retry correctly."""
    why = error or call.error or "the call could not be run"
    text = (
        f"error: {why}. Received arguments: {call.raw_arguments[:500]!r}. "
        f"Call {call.name!r} again with a valid JSON object."
    )
    return ToolMessage(call.id, text, is_error=True, name=call.name)


class ToolCallAssembler:
    """Accumulates tool-call fragments by index until the stream says the calls are complete."""

    def __init__(self) -> None:
        self._parts: dict[int, list[str]] = {}
        self._meta: dict[int, tuple[str, str]] = {}

    def start(self, index: int, call_id: str, name: str) -> None:
        """Register a call's id and name."""
        old = self._meta.get(index, ("", ""))
        self._meta[index] = (call_id or old[0], name or old[1])
        self._parts.setdefault(index, [])

    def add(self, index: int, fragment: str) -> None:
        """Append argument text."""
        self._parts.setdefault(index, []).append(fragment)

    def finish(self, index: int) -> ToolCall:
        """Assemble one call and forget it."""
        call_id, name = self._meta.pop(index, ("", ""))
        raw = "".join(self._parts.pop(index, []))
        return finish_tool_call(call_id or f"call_{index}", name, raw)

    def finish_all(self) -> list[ToolCall]:
        """Assemble every pending call in index order."""
        return [self.finish(i) for i in sorted(set(self._meta) | set(self._parts))]
