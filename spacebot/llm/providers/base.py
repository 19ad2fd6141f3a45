"""What every provider adapter shares: the interface, SDK error translation, and stream deadlines."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpx2

from spacebot.llm.config import LLMConfig, SecretResolver, Timeouts
from spacebot.llm.errors import (
    BadResponse,
    ConnectError,
    LLMConfigError,
    LLMError,
    StreamCut,
    Timeout,
    classify_status,
    parse_retry_after,
)
from spacebot.llm.types import Request, StreamEvent


class Provider(Protocol):
    """A provider adapter: streams one model call as normalised events, raising typed ``LLMError``s."""

    name: str

    def stream(self, model: str, request: Request, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        """Stream ``request`` to ``model`` (the name after ``provider/``)."""
        ...

    async def close(self) -> None:
        """Release the HTTP client."""
        ...


def sdk_timeout(t: Timeouts) -> httpx2.Timeout:
    """SDK-level timeouts: connect as configured, reads bounded by the first-token deadline."""
    return httpx2.Timeout(t.total, connect=t.connect, read=max(t.first_token, 1.0))


def translate(exc: BaseException, model_id: str) -> LLMError:
    """Map an exception of either SDK (or of httpx2 underneath) onto our typed errors."""
    if isinstance(exc, LLMError):
        return exc
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if isinstance(status, int) and response is not None:
        body = getattr(exc, "body", None)
        text = json.dumps(body) if body is not None else str(exc)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return classify_status(status, text, model=model_id, retry_after=retry_after)
    name = type(exc).__name__
    msg = f"model {model_id!r}: {name}: {exc}"
    if "Timeout" in name or isinstance(exc, (httpx2.TimeoutException, TimeoutError)):
        return Timeout(msg, model=model_id)
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError)):
        return StreamCut(msg, model=model_id)
    if "Connection" in name or isinstance(exc, httpx2.TransportError):
        return ConnectError(msg, model=model_id)
    if isinstance(exc, (json.JSONDecodeError, UnicodeDecodeError, ValueError)) or "Validation" in name:
        return BadResponse(msg, model=model_id)
    return BadResponse(msg, model=model_id)


async def next_within(it: AsyncIterator[Any], deadline: float, what: str, model_id: str) -> Any:
    """``anext(it)`` bounded by an absolute loop-time deadline; raises ``Timeout`` naming ``what``."""
    try:
        async with asyncio.timeout_at(deadline):
            return await anext(it)
    except TimeoutError as exc:
        raise Timeout(f"model {model_id!r}: {what} timeout", model=model_id) from exc


def make_provider(config: LLMConfig, name: str, resolver: SecretResolver | None = None) -> Provider:
    """Build the adapter of provider ``name`` (the key is resolved now, so a missing one fails early)."""
    if name not in config.providers:
        raise LLMConfigError(f"unknown provider {name!r} (have {sorted(config.providers)})")
    pcfg = config.providers[name]
    key = config.resolve_key(name, resolver)
    if pcfg.kind == "anthropic":
        from spacebot.llm.providers.anthropic import AnthropicProvider

        return AnthropicProvider(name, key, pcfg.base_url, config.timeouts)
    from spacebot.llm.providers.openai import OpenAIProvider

    return OpenAIProvider(name, key, pcfg.base_url, config.timeouts)


def stream_cut(model_id: str, detail: str) -> StreamCut:
    """The error for a stream that ended before the provider finished."""
    return StreamCut(f"model {model_id!r}: stream ended early ({detail})", model=model_id)
