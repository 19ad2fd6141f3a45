"""A loopback relay that lends a confined program the agent's model without its API key.

OpenCode needs a model endpoint and a key in its configuration, and every command its model runs
inherits OpenCode's environment: a key handed to OpenCode is a key any prompt-injected command can
print. So the worker runs this relay on ``127.0.0.1`` outside the sandbox and gives OpenCode the
relay's address and a random token instead. The relay accepts a request only with that token (as
``Authorization: Bearer`` or ``x-api-key``, whichever the program's SDK sends), puts the real key in
its place and forwards the request to the provider, streaming the answer back as it arrives.
The token is worth nothing once the worker ends, and never works from another machine.

Only model calls get through: ``POST`` to the generation endpoints of the two wire formats
(``chat/completions``, ``completions``, ``responses``, ``embeddings``, ``messages``,
``messages/count_tokens``) and ``GET models[/<id>]``, with or without ``v1/`` before them, the
path appended to the provider's base URL exactly as written (no percent-encoding, so no ``..`` or
encoded ``/`` can climb out of it). Anything else the key could do at the provider (files,
batches, fine-tuning, another path of a gateway) is refused with ``403``. Redirects are not
followed: a ``3xx`` goes back to the program as it came, and the key never travels to another
address.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import secrets
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web

log = logging.getLogger("spacebot.tools")

_GENERATE = frozenset(
    {"chat/completions", "completions", "responses", "embeddings", "messages", "messages/count_tokens"}
)
_MODEL_ID = re.compile(r"models(/[A-Za-z0-9._:@-]{1,200})?")

MAX_BODY = 32 * 1024 * 1024
"""Largest request body relayed (a long conversation with images stays well below it)."""
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
_KEY_HEADERS = {"authorization", "x-api-key"}
_UPSTREAM_ANSWER_DROP = _HOP | {"content-encoding"}  # aiohttp decodes the body it reads


class ModelRelay:
    """``async with ModelRelay(base_url, key, anthropic=...) as relay``: ``relay.url`` and
    ``relay.token`` are what the confined program is configured with."""

    def __init__(self, base_url: str, key: str | None, *, anthropic: bool) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"model base URL {base_url!r} is not an http(s) URL")
        self.upstream = base_url.rstrip("/")
        self.key = key
        self.anthropic = anthropic
        self.token = secrets.token_urlsafe(32)
        self.url = ""
        """``http://127.0.0.1:<port>``: the base URL the program uses (set by :meth:`start`)."""
        self.port = 0
        """The port it listens on (set by :meth:`start`)."""
        self.relayed = 0
        """Requests forwarded (for tests and logs)."""
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        """Listen on a free loopback port; returns :attr:`url`."""
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._relay)
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
        # Requests still in flight at close are cancelled first (see aclose): the few seconds are
        # a backstop, not a wait.
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def aclose(self) -> None:
        """End the requests in flight at once (their answers cut short: the program they serve is
        gone or going), close the upstream connections and stop listening."""
        for task in list(self._inflight):
            task.cancel()
        if self._http is not None:
            await self._http.close()
            self._http = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> ModelRelay:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _authorised(self, request: web.Request) -> bool:
        given = request.headers.get("x-api-key", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            given = given or auth[7:].strip()
        return bool(given) and hmac.compare_digest(given.encode(), self.token.encode())

    async def _relay(self, request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()
        assert task is not None
        self._inflight.add(task)
        try:
            return await self._forward(request)
        finally:
            self._inflight.discard(task)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        if not self._authorised(request):
            log.warning("model relay refused a request without its token path=%s", request.path)
            return web.json_response(
                {"error": {"type": "authentication_error", "message": "the relay's token is required"}},
                status=401,
            )
        http = self._http
        if http is None:
            return web.json_response(
                {"error": {"type": "api_error", "message": "the relay is closing"}}, status=503
            )
        tail = request.match_info["tail"]
        if not _allowed(request.method, tail, request.raw_path):
            log.warning("model relay refused %s %s: not a model call", request.method, request.raw_path[:200])
            only = "the relay forwards model calls only"
            return web.json_response({"error": {"type": "permission_error", "message": only}}, status=403)
        target = f"{self.upstream}/{tail}" + (f"?{request.query_string}" if request.query_string else "")
        headers = {
            k: v
            for k, v in request.headers.items()
            if k.lower() not in _HOP and k.lower() not in _KEY_HEADERS and k.lower() != "accept-encoding"
        }
        if self.key:
            if self.anthropic:
                headers["x-api-key"] = self.key
            else:
                headers["Authorization"] = f"Bearer {self.key}"
        body = await request.read()
        self.relayed += 1
        answer: web.StreamResponse | None = None
        try:
            async with http.request(
                request.method, target, headers=headers, data=body, allow_redirects=False
            ) as up:
                answer = web.StreamResponse(
                    status=up.status,
                    headers={k: v for k, v in up.headers.items() if k.lower() not in _UPSTREAM_ANSWER_DROP},
                )
                await answer.prepare(request)
                async for chunk in up.content.iter_any():
                    await answer.write(chunk)
                await answer.write_eof()
                return answer
        except (aiohttp.ClientError, TimeoutError, ConnectionResetError) as exc:
            if answer is not None:  # begun: the provider or the program went away; end it as it is
                log.info("model relay: an answer was cut short: %s", exc)
                raise
            log.warning("model relay could not reach %s: %s", self.upstream, exc)
            return web.json_response(
                {"error": {"type": "api_error", "message": f"the model endpoint is unreachable: {exc}"}},
                status=502,
            )


def _allowed(method: str, tail: str, raw_path: str) -> bool:
    """A model call: ``POST`` to a generation endpoint or ``GET`` of the model list, named plainly."""
    if "%" in raw_path or "?" in tail or "#" in tail:
        return False
    tail = tail.removeprefix("v1/")  # the SDKs that put the version in the path, not the base URL
    if method == "POST":
        return tail in _GENERATE
    return method == "GET" and _MODEL_ID.fullmatch(tail) is not None
