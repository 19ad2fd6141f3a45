"""Anthropic Messages API adapter (``anthropic`` SDK, raw streaming events)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic

from spacebot.ipc.messages import Usage
from spacebot.llm.config import Timeouts
from spacebot.llm.errors import LLMError
from spacebot.llm.providers.base import (
    http_client,
    next_within,
    preimport,
    sdk_platform,
    sdk_timeout,
    stream_cut,
    translate,
    warm_calls,
)
from spacebot.llm.toolcall import ToolCallAssembler
from spacebot.llm.types import (
    AssistantMessage,
    ImagePart,
    Message,
    Request,
    Stop,
    StreamEvent,
    SystemMessage,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolCallDone,
    ToolMessage,
    UsageEvent,
    UserMessage,
)

_STOP = {
    "end_turn": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
}


def _part(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    if p.url:
        return {"type": "image", "source": {"type": "url", "url": p.url}}
    return {"type": "image", "source": {"type": "base64", "media_type": p.media_type, "data": p.data}}


def to_anthropic(messages: list[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, messages) in Messages API shape; consecutive tool results share one user turn."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            system.append(m.content)
        elif isinstance(m, UserMessage):
            content = m.content if isinstance(m.content, str) else [_part(p) for p in m.content]
            out.append({"role": "user", "content": content})
        elif isinstance(m, AssistantMessage):
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in m.tool_calls
            ]
            out.append({"role": "assistant", "content": blocks})
        elif isinstance(m, ToolMessage):
            block = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id,
                "content": m.content,
                "is_error": m.is_error,
            }
            last = out[-1] if out else None
            if (
                last
                and last["role"] == "user"
                and isinstance(last["content"], list)
                and last["content"]
                and (last["content"][-1].get("type") == "tool_result")
            ):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
    return "\n\n".join(system), out


preimport(
    "anthropic.resources.messages",
    "anthropic.lib.streaming",
    "opentelemetry.propagate",
    "opentelemetry.baggage.propagation",
    "opentelemetry.trace.propagation.tracecontext",
)


_PLATFORM = sdk_platform(anthropic._base_client)
"""For the SDK's request headers, found once (see :func:`~spacebot.llm.providers.base.sdk_platform`)."""


class AnthropicProvider:
    """Streams Messages API calls through ``anthropic.AsyncAnthropic``."""

    def __init__(self, name: str, api_key: str, base_url: str | None, timeouts: Timeouts) -> None:
        self.name = name
        self.client = anthropic.AsyncAnthropic(
            api_key=api_key or "none",
            base_url=base_url,
            max_retries=0,
            timeout=sdk_timeout(timeouts),
            http_client=http_client(timeouts, anthropic.DefaultAsyncHttpxClient),
        )
        if _PLATFORM is not None:
            self.client._platform = _PLATFORM
        self.base_url = str(self.client.base_url).rstrip("/")
        """Where calls go (the SDK's default when the config names none), for error reports."""

    async def close(self) -> None:
        await self.client.close()

    async def stream(self, model: str, request: Request, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        model_id = f"{self.name}/{model}"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total
        system, messages = to_anthropic(request.messages)
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "max_tokens": request.max_tokens,
            "stream": True,
        }
        if system:
            kwargs["system"] = system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + timeouts.first_token)):
                stream = await self.client.messages.create(**kwargs)
        except TimeoutError as exc:
            raise translate(exc, model_id, self.base_url) from exc
        except anthropic.AnthropicError as exc:
            raise translate(exc, model_id, self.base_url) from exc
        tools = ToolCallAssembler()
        tool_blocks: dict[int, int] = {}  # content block index → tool-call position
        inp = out = cached = 0
        stop = ""
        finished = False
        first = True
        it = stream.__aiter__()
        try:
            while True:
                limit = min(deadline, loop.time() + timeouts.first_token) if first else deadline
                try:
                    ev = await next_within(
                        it, limit, "first token" if first else "total", model_id, self.base_url
                    )
                except StopAsyncIteration:
                    break
                first = False
                kind = ev.type
                if kind == "content_block_delta":
                    d = ev.delta
                    if d.type == "text_delta":
                        yield TextDelta(d.text)
                    elif d.type == "input_json_delta":
                        pos = tool_blocks.get(ev.index, ev.index)
                        tools.add(pos, d.partial_json)
                        yield ToolCallDelta(pos, arguments=d.partial_json)
                elif kind == "content_block_start":
                    block = ev.content_block
                    if block.type == "tool_use":
                        pos = tool_blocks[ev.index] = len(tool_blocks)
                        tools.start(pos, block.id, block.name)
                        yield ToolCallDelta(pos, id=block.id, name=block.name)
                    elif block.type == "text" and block.text:
                        yield TextDelta(block.text)
                elif kind == "content_block_stop":
                    if ev.index in tool_blocks:
                        yield ToolCallDone(tools.finish(tool_blocks[ev.index]))
                elif kind == "message_start":
                    u = ev.message.usage
                    inp = u.input_tokens or 0
                    cached = getattr(u, "cache_read_input_tokens", None) or 0
                    out = u.output_tokens or 0
                elif kind == "message_delta":
                    stop = ev.delta.stop_reason or stop
                    if ev.usage is not None:
                        out = ev.usage.output_tokens or out
                        if getattr(ev.usage, "input_tokens", None):
                            inp = ev.usage.input_tokens
                elif kind == "message_stop":
                    finished = True
                elif kind == "error":
                    raise translate(RuntimeError(str(ev)), model_id, self.base_url)
        except anthropic.AnthropicError as exc:
            raise translate(exc, model_id, self.base_url) from exc
        except LLMError:
            raise
        except Exception as exc:
            raise translate(exc, model_id, self.base_url) from exc
        finally:
            await stream.close()
        if not finished:
            raise stream_cut(model_id, "no message_stop", self.base_url)
        yield UsageEvent(Usage(inp, out, cached))
        yield Stop(_STOP.get(stop, "other"), model_id)


_WARM_EVENTS = (
    {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}},
    {"type": "content_block_stop", "index": 0},
    {
        "type": "content_block_start",
        "index": 1,
        "content_block": {"type": "tool_use", "id": "c", "name": "t", "input": {}},
    },
    {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
    {"type": "content_block_stop", "index": 1},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": 2},
    },
    {"type": "message_stop"},
)


async def warm_up(calls: int = 10) -> None:
    """Stream a few calls through an :class:`AnthropicProvider` answered from memory (no socket).

    Run by the zygote before it forks (see :func:`~spacebot.llm.providers.base.warm_calls`).
    """
    body = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in _WARM_EVENTS)
    provider = AnthropicProvider("warm", "none", "http://warm.invalid", Timeouts())
    await warm_calls(provider, provider.client, body, calls)
