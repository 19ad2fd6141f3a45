"""Types of one model call inside a process: prompt messages, tools, stream events, the result.

None of these travels on the bus: each process calls its models itself. What the LLM layer does
send — ``CooldownNotice`` and ``UsageReport`` events, with their ``Usage`` — is defined with every
other wire type in :mod:`spacebot.ipc.messages`. The structs are frozen
``msgspec.Struct`` s; union members carry a ``tag`` so a decoder can tell them apart, distinct from
every wire type's tag so a log or a dump never confuses the two.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from spacebot.ipc.messages import Usage

__all__ = [
    "AssistantMessage",
    "Fallback",
    "ImagePart",
    "Message",
    "Part",
    "Request",
    "Result",
    "Stop",
    "StopReason",
    "StreamEvent",
    "SystemMessage",
    "TextDelta",
    "TextPart",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallDone",
    "ToolMessage",
    "ToolSpec",
    "UsageEvent",
    "UserMessage",
]


class TextPart(msgspec.Struct, frozen=True, tag="text"):
    """A run of plain text inside a message."""

    text: str
    """The text itself."""


class ImagePart(msgspec.Struct, frozen=True, tag="image"):
    """An image inside a user message, inline (base64) or by URL."""

    media_type: str = "image/png"
    """MIME type such as ``image/png``."""
    data: str = ""
    """Base64-encoded bytes; empty when ``url`` is used."""
    url: str = ""
    """A URL the provider fetches itself; empty when ``data`` is used."""


Part = TextPart | ImagePart


class ToolCall(msgspec.Struct, frozen=True, tag="tool_call"):
    """A call the model asked for."""

    id: str
    """Provider-assigned id that the matching tool result must quote."""
    name: str
    """Name of the tool to run."""
    arguments: dict[str, Any]
    """Decoded JSON arguments (empty when ``raw_arguments`` did not decode)."""
    raw_arguments: str = ""
    """The arguments exactly as the model sent them."""
    error: str = ""
    """Why the arguments were unusable (bad JSON, not an object); empty when they are fine."""


class SystemMessage(msgspec.Struct, frozen=True, tag="system"):
    """Instructions that frame the whole conversation."""

    content: str
    """The system prompt."""


class UserMessage(msgspec.Struct, frozen=True, tag="user"):
    """A message from a person (text and images)."""

    content: str | list[Part]
    """Plain text or a list of parts."""


class AssistantMessage(msgspec.Struct, frozen=True, tag="assistant"):
    """An earlier model turn: text and the tool calls it made."""

    content: str = ""
    """Text the model said."""
    tool_calls: list[ToolCall] = []
    """Tool calls the model made in that turn."""


class ToolMessage(msgspec.Struct, frozen=True, tag="tool"):
    """The result of one tool call, returned to the model."""

    tool_call_id: str
    """Id of the call this answers."""
    content: str
    """The result (or the error text) the model reads."""
    is_error: bool = False
    """True when the tool failed; the model should read ``content`` as an error."""
    name: str = ""
    """Name of the tool that ran (informational)."""


Message = SystemMessage | UserMessage | AssistantMessage | ToolMessage


class ToolSpec(msgspec.Struct, frozen=True):
    """A tool offered to the model."""

    name: str
    """Tool name, ``[a-zA-Z0-9_-]{1,64}``."""
    description: str
    """What the tool does, for the model."""
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON schema (an ``object`` schema) of the arguments."""


class Request(msgspec.Struct, frozen=True):
    """One model call, independent of provider."""

    messages: list[Message]
    """The conversation, oldest first; system messages are lifted out for providers that need it."""
    tools: list[ToolSpec] = []
    """Tools the model may call."""
    max_tokens: int = 1024
    """Upper bound of output tokens."""
    temperature: float | None = None
    """Sampling temperature; None leaves the provider's default."""
    tier: str | None = None
    """Force a tier (light/standard/strong), bypassing process/task/scorer levels."""
    model: str | None = None
    """Force one model id ``provider/model``; its fallback chain still applies."""


class TextDelta(msgspec.Struct, frozen=True, tag="text_delta"):
    """A fragment of generated text."""

    text: str
    """The new characters."""


class ToolCallDelta(msgspec.Struct, frozen=True, tag="tool_call_delta"):
    """A fragment of a tool call being streamed."""

    index: int
    """Position of the call within this turn (parallel calls have distinct indexes)."""
    id: str = ""
    """Call id, set on the first fragment."""
    name: str = ""
    """Tool name, set on the first fragment."""
    arguments: str = ""
    """Next characters of the JSON arguments."""


class ToolCallDone(msgspec.Struct, frozen=True, tag="tool_call_done"):
    """A tool call fully received and decoded (or marked as malformed)."""

    call: ToolCall
    """The assembled call."""


class UsageEvent(msgspec.Struct, frozen=True, tag="usage"):
    """Token usage of the call, sent once near the end."""

    usage: Usage
    """The counts."""
    cost_usd: float = 0.0
    """Estimated cost from the configured price table."""


class Stop(msgspec.Struct, frozen=True, tag="stream_stop"):
    """The stream ended normally."""

    reason: str
    """Normalised stop reason: end_turn, tool_use, max_tokens, stop_sequence or other."""
    model: str = ""
    """Model id ``provider/model`` that produced the answer."""
    fallbacks: list[str] = []
    """Models tried and abandoned before this one, in order."""


class Fallback(msgspec.Struct, frozen=True, tag="fallback"):
    """An attempt was abandoned: discard every delta received since the previous ``Fallback``.

    Sent before the next attempt starts, whether it retries the same model or moves down the chain.
    """

    from_model: str
    """Model whose attempt failed."""
    error: str
    """Short description of the failure."""
    next_model: str = ""
    """Model tried next (equal to ``from_model`` for a retry)."""


StreamEvent = TextDelta | ToolCallDelta | ToolCallDone | UsageEvent | Stop | Fallback


class Result(msgspec.Struct, frozen=True):
    """The assembled outcome of :meth:`spacebot.llm.LLM.complete`."""

    text: str
    """All generated text."""
    tool_calls: list[ToolCall]
    """Tool calls, in order."""
    usage: Usage
    """Token counts of the successful attempt."""
    cost_usd: float
    """Estimated cost of the successful attempt."""
    model: str
    """Model that answered."""
    stop_reason: str
    """Normalised stop reason."""
    fallbacks: list[str] = []
    """Models abandoned before ``model`` answered."""


StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "other"]
