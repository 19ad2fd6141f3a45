"""The LLM layer: every thinking process calls models through ``LLM`` (routing, fallback, usage)."""

from __future__ import annotations

from spacebot.ipc.messages import CooldownNotice, Usage, UsageReport
from spacebot.llm.client import LLM, UsageCallback
from spacebot.llm.config import LLMConfig, ModelConfig, ProviderConfig, RetryPolicy, ScorerConfig, Timeouts
from spacebot.llm.errors import (
    AllModelsFailed,
    AuthError,
    BadRequest,
    ContextOverflow,
    LLMConfigError,
    LLMError,
    ModelNotFound,
    RateLimited,
    RetriableError,
)
from spacebot.llm.fallback import CooldownRegistry
from spacebot.llm.routing import RouteDecision, Router
from spacebot.llm.toolcall import tool_error_message
from spacebot.llm.types import (
    AssistantMessage,
    Fallback,
    ImagePart,
    Message,
    Request,
    Result,
    Stop,
    StreamEvent,
    SystemMessage,
    TextDelta,
    TextPart,
    ToolCall,
    ToolCallDelta,
    ToolCallDone,
    ToolMessage,
    ToolSpec,
    UsageEvent,
    UserMessage,
)

__all__ = [
    "LLM",
    "AllModelsFailed",
    "AssistantMessage",
    "AuthError",
    "BadRequest",
    "ContextOverflow",
    "CooldownNotice",
    "CooldownRegistry",
    "Fallback",
    "ImagePart",
    "LLMConfig",
    "LLMConfigError",
    "LLMError",
    "Message",
    "ModelConfig",
    "ModelNotFound",
    "ProviderConfig",
    "RateLimited",
    "Request",
    "Result",
    "RetriableError",
    "RetryPolicy",
    "RouteDecision",
    "Router",
    "ScorerConfig",
    "Stop",
    "StreamEvent",
    "SystemMessage",
    "TextDelta",
    "TextPart",
    "Timeouts",
    "ToolCall",
    "ToolCallDelta",
    "ToolCallDone",
    "ToolMessage",
    "ToolSpec",
    "Usage",
    "UsageCallback",
    "UsageEvent",
    "UsageReport",
    "UserMessage",
    "tool_error_message",
]
