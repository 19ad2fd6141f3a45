"""What every provider adapter shares: the interface, SDK error translation, and stream deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from typing import Any, Protocol

import httpcore2
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
from spacebot.llm.types import Request, StreamEvent, SystemMessage, ToolSpec, UserMessage


class Provider(Protocol):
    """A provider adapter: streams one model call as normalised events, raising typed ``LLMError``s."""

    name: str
    base_url: str
    """Where calls go, named in errors so the operator's log says which server failed."""

    def stream(self, model: str, request: Request, timeouts: Timeouts) -> AsyncIterator[StreamEvent]:
        """Stream ``request`` to ``model`` (the name after ``provider/``)."""
        ...

    async def close(self) -> None:
        """Release the HTTP client."""
        ...


def _tls_context() -> ssl.SSLContext:
    """The system's trust store (certifi's bundle where the system has none)."""
    context = ssl.create_default_context()
    if not context.cert_store_stats().get("x509_ca"):
        try:
            import certifi

            context.load_verify_locations(certifi.where())
        except ImportError:
            pass
    return context


TLS_CONTEXT = _tls_context()
"""One TLS context for every SDK client of the process. Built at import, i.e. in the zygote before it
forks: loading the CA store once there saves each process ~30 ms and a few MB of its own memory."""


def sdk_platform(sdk_base_client: Any) -> Any:
    """What an SDK's ``_base_client.get_platform()`` says (``None`` if it cannot say).

    Both SDKs find it on a worker thread at a client's first request, i.e. one more thread in every
    process (measured: ~170 KB of private memory). Found once at import, in the zygote, and handed
    to each client (``client._platform``), it is shared and no thread is started; the request
    headers are the same.
    """
    get = getattr(sdk_base_client, "get_platform", None)
    if get is None:
        return None
    try:
        return get()
    except Exception:
        return None


def preimport(*names: str) -> None:
    """Import modules an SDK would import lazily on its first request.

    Provider modules are imported by the zygote; whatever they import is shared by every process
    it forks. A module imported on first use instead is loaded (and kept) by each process on its
    own — measured: 27 such modules cost a conversation process ~14 MB of private memory.
    Names that do not exist in the installed SDK version are skipped.
    """
    for name in names:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


# Building one client imports the SDKs' HTTP transport stack (also only once, in the zygote).
httpx2.AsyncClient(verify=TLS_CONTEXT)
preimport(
    "anyio._backends._asyncio",
    "anyio._core._sockets",
    "anyio._core._streams",
    "anyio.abc._eventloop",
    "anyio.abc._sockets",
    "anyio.abc._subprocesses",
    "anyio.streams.memory",
    "anyio.streams.stapled",
    "concurrent.futures.thread",
    "queue",
)


def http_client(t: Timeouts, factory: Any) -> Any:
    """An SDK's default async HTTP client sharing :data:`TLS_CONTEXT`."""
    return factory(verify=TLS_CONTEXT, timeout=sdk_timeout(t))


def sdk_timeout(t: Timeouts) -> httpx2.Timeout:
    """SDK-level timeouts: connect as configured, reads bounded by the first-token deadline."""
    return httpx2.Timeout(t.total, connect=t.connect, read=max(t.first_token, 1.0))


def _root_cause(exc: BaseException) -> str:
    """The socket-level reason under an SDK's generic "Connection error." ("" when there is none)."""
    seen: set[int] = set()
    found = ""
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cur, socket.gaierror):
            return "host name not found"
        if isinstance(cur, ssl.SSLError):
            return f"TLS error: {cur.reason or cur}"
        if isinstance(cur, OSError) and not found:
            found = cur.strerror or ""
        cur = cur.__cause__ or cur.__context__
    return found


def translate(exc: BaseException, model_id: str, base_url: str = "") -> LLMError:
    """Map an exception of either SDK (or of httpx2 underneath) onto our typed errors.

    ``base_url`` (where the provider was called) travels with the error into the operator's log.
    """
    if isinstance(exc, LLMError):
        return exc.at(base_url)
    status = getattr(exc, "status_code", None)
    response = getattr(exc, "response", None)
    if isinstance(status, int) and response is not None:
        body = getattr(exc, "body", None)
        text = json.dumps(body) if body is not None else str(exc)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return classify_status(status, text, model=model_id, retry_after=retry_after, base_url=base_url)
    name = type(exc).__name__
    msg = f"model {model_id!r}: {name}: {exc}"
    if "Timeout" in name or isinstance(exc, (httpx2.TimeoutException, TimeoutError)):
        return Timeout(msg, model=model_id, base_url=base_url)
    if isinstance(exc, (httpx2.RemoteProtocolError, httpx2.ReadError)):
        return StreamCut(msg, model=model_id, base_url=base_url)
    if "Connection" in name or isinstance(exc, httpx2.TransportError):
        reason = _root_cause(exc) or f"{name}: {exc}"
        target = f" to {base_url}" if base_url else ""
        return ConnectError(
            f"model {model_id!r}: cannot connect{target}: {reason}", model=model_id, base_url=base_url
        )
    return BadResponse(msg, model=model_id, base_url=base_url)


async def next_within(
    it: AsyncIterator[Any], deadline: float, what: str, model_id: str, base_url: str = ""
) -> Any:
    """``anext(it)`` bounded by an absolute loop-time deadline; raises ``Timeout`` naming ``what``."""
    try:
        async with asyncio.timeout_at(deadline):
            return await anext(it)
    except TimeoutError as exc:
        raise Timeout(f"model {model_id!r}: {what} timeout", model=model_id, base_url=base_url) from exc


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


def stream_cut(model_id: str, detail: str, base_url: str = "") -> StreamCut:
    """The error for a stream that ended before the provider finished."""
    return StreamCut(f"model {model_id!r}: stream ended early ({detail})", model=model_id, base_url=base_url)


_WARM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


async def warm_calls(provider: Provider, sdk_client: Any, body: bytes, calls: int) -> None:
    """Stream ``calls`` calls through ``provider``, each answered from memory with the SSE ``body``.

    For a provider module's ``warm_up``, which the zygote runs before it forks: a process's first
    model call builds lazy SDK and HTTP-stack state and specialises the bytecode of everything on
    the call path, writing to pages shared with the zygote. Done there once, those pages stay
    shared (measured: ~2 MB less private memory per conversation process). No socket is opened:
    only the network backend under the SDK's HTTP client (``sdk_client``, e.g. ``AsyncOpenAI``)
    is swapped, so everything above the socket runs as in a real call. Closes the provider.
    """
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    request = Request(
        [SystemMessage("s"), UserMessage("u")],
        tools=[ToolSpec("t", "d", {"type": "object", "properties": {}})],
    )
    try:
        # SDK client → httpx2 client → its transport → the httpcore2 pool's network backend.
        pool = sdk_client._client._transport._pool
        for _ in range(calls):
            pool._network_backend = httpcore2.AsyncMockBackend([_WARM_HEAD, chunked])
            async for _event in provider.stream("m", request, Timeouts()):
                pass
    finally:
        await provider.close()
