"""Wire-safe types of the LLM layer: messages, tools, stream events, usage, notices.

Every struct is a frozen ``msgspec.Struct`` so it crosses the bus unchanged; union members carry
``tag=True`` so a decoder can tell them apart.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


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


class Usage(msgspec.Struct, frozen=True):
    """Token counts of one call."""

    input_tokens: int = 0
    """Prompt tokens billed at the full rate (excludes cached)."""
    output_tokens: int = 0
    """Generated tokens."""
    cached_tokens: int = 0
    """Prompt tokens served from the provider's cache."""


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


class Stop(msgspec.Struct, frozen=True, tag="stop"):
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


class CooldownNotice(msgspec.Struct, frozen=True, tag="llm_cooldown"):
    """A model was rate-limited or overloaded; every process of the agent should skip it until ``until``."""

    model: str
    """Model id ``provider/model``."""
    until: float
    """Wall-clock epoch seconds when the model may be used again."""
    reason: str
    """Why (e.g. ``rate_limited status=429``)."""


class UsageReport(msgspec.Struct, frozen=True, tag="llm_usage"):
    """Tokens and cost of one finished model call."""

    model: str
    """Model id that answered."""
    process: str
    """Process type that made the call (channel, worker, ...)."""
    task: str | None
    """Task type if any."""
    usage: Usage
    """Token counts."""
    cost_usd: float
    """Estimated cost in US dollars."""
    latency_ms: float
    """Wall time of the successful attempt."""
    fallbacks: list[str] = []
    """Models abandoned before this one."""


StopReason = Literal["end_turn", "tool_use", "max_tokens", "stop_sequence", "other"]
