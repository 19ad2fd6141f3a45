"""OpenAI Chat Completions adapter (``openai`` SDK), also used for OpenAI-compatible servers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import openai
from openai.types.chat import ChatCompletion

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

_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "function_call": "tool_use", "length": "max_tokens"}


def _part(p: TextPart | ImagePart) -> dict[str, Any]:
    if isinstance(p, TextPart):
        return {"type": "text", "text": p.text}
    url = p.url or f"data:{p.media_type};base64,{p.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def to_openai(messages: list[Message]) -> list[dict[str, Any]]:
    """Messages in Chat Completions shape."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if isinstance(m, SystemMessage):
            out.append({"role": "system", "content": m.content})
        elif isinstance(m, UserMessage):
            content = m.content if isinstance(m.content, str) else [_part(p) for p in m.content]
            out.append({"role": "user", "content": content})
        elif isinstance(m, AssistantMessage):
            msg: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.raw_arguments or json.dumps(c.arguments)},
                    }
                    for c in m.tool_calls
                ]
            out.append(msg)
        elif isinstance(m, ToolMessage):
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
    return out


preimport(
    "openai.resources.chat.completions",
    "openai.lib.streaming.chat",
    "openai.pagination",
    "openai.types.chat.completions",
)


_PLATFORM = sdk_platform(openai._base_client)
"""For the SDK's request headers, found once (see :func:`~spacebot.llm.providers.base.sdk_platform`)."""


class OpenAIProvider:
    """Streams Chat Completions calls through ``openai.AsyncOpenAI``."""

    def __init__(self, name: str, api_key: str, base_url: str | None, timeouts: Timeouts) -> None:
        self.name = name
        self.client = openai.AsyncOpenAI(
            api_key=api_key or "none",
            base_url=base_url,
            max_retries=0,
            timeout=sdk_timeout(timeouts),
            http_client=http_client(timeouts, openai.DefaultAsyncHttpxClient),
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
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": to_openai(request.messages),
            "max_tokens": request.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + timeouts.first_token)):
                # ``post`` with a body already in wire form: ``chat.completions.create`` would first
                # walk every message and tool schema through the SDK's typed-dict transform
                # (measured ~4 ms of CPU per call for a 60-message conversation with 9 tools).
                # ``AsyncStream[object]``: the SDK still reads the SSE stream and raises its errors,
                # but hands each event over as the decoded dict instead of building a pydantic
                # ``ChatCompletionChunk`` from it (~1.3 ms of CPU per streamed answer).
                stream = await self.client.post(
                    "/chat/completions",
                    body=kwargs,
                    cast_to=ChatCompletion,
                    stream=True,
                    stream_cls=openai.AsyncStream[object],
                )
        except (TimeoutError, openai.OpenAIError) as exc:
            raise translate(exc, model_id, self.base_url) from exc
        tools = ToolCallAssembler()
        usage: Usage | None = None
        finish = ""
        first = True
        it = stream.__aiter__()
        try:
            while True:
                limit = min(deadline, loop.time() + timeouts.first_token) if first else deadline
                try:
                    chunk = await next_within(
                        it, limit, "first token" if first else "total", model_id, self.base_url
                    )
                except StopAsyncIteration:
                    break
                first = False
                u = chunk.get("usage")
                if u is not None:
                    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
                    prompt = u.get("prompt_tokens") or 0
                    usage = Usage(max(prompt - cached, 0), u.get("completion_tokens") or 0, cached)
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta")
                    if delta:
                        if text := delta.get("content"):
                            yield TextDelta(text)
                        for tc in delta.get("tool_calls") or ():
                            fn = tc.get("function") or {}
                            index, call_id = tc.get("index") or 0, tc.get("id") or ""
                            name, args = fn.get("name") or "", fn.get("arguments") or ""
                            if call_id or name:
                                tools.start(index, call_id, name)
                            if args:
                                tools.add(index, args)
                            yield ToolCallDelta(index, call_id, name, args)
                    if reason := choice.get("finish_reason"):
                        finish = reason
                        for call in tools.finish_all():
                            yield ToolCallDone(call)
        except LLMError:
            raise
        except Exception as exc:
            raise translate(exc, model_id, self.base_url) from exc
        finally:
            await stream.close()
        if not finish:
            raise stream_cut(model_id, "no finish_reason", self.base_url)
        yield UsageEvent(usage or Usage())
        yield Stop(_STOP.get(finish, "other"), model_id)


_WARM_EVENTS = (
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c",
                            "type": "function",
                            "function": {"name": "t", "arguments": "{}"},
                        }
                    ]
                },
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
)


async def warm_up(calls: int = 10) -> None:
    """Stream a few calls through an :class:`OpenAIProvider` answered from memory (no socket).

    Run by the zygote before it forks (see :func:`~spacebot.llm.providers.base.warm_calls`).
    """
    body = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in _WARM_EVENTS) + b"data: [DONE]\n\n"
    provider = OpenAIProvider("warm", "none", "http://warm.invalid/v1", Timeouts())
    await warm_calls(provider, provider.client, body, calls)
