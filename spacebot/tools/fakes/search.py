"""``FakeSearch``: a real aiohttp server on loopback answering like the Brave Search API and SearXNG.

``async with FakeSearch(token="t") as fake:`` then point ``[tools.web_search] base_url`` at
``fake.url`` (both providers are served on the same port):

* ``GET /res/v1/web/search`` — Brave: the ``X-Subscription-Token`` header must equal ``token``
  (else 401 with Brave's error body), ``q`` is required and ``count`` must be 1–20 (else 422);
  the answer is ``{"type": "search", "query": {...}, "web": {"type": "search", "results": [...]}}``
  with ``<strong>`` around matched words in descriptions, as Brave does.
* ``GET /search`` — SearXNG: without ``format=json`` the answer is an HTML page; with it and
  ``json_enabled=False`` a 403 (the instance's settings.yml does not list the json format); else
  ``{"query": ..., "number_of_results": ..., "results": [{"title", "url", "content", ...}]}``.

``fake.fail(status, retry_after=...)`` makes every later request answer that status (Brave-shaped
error body), ``fake.hang()`` makes them wait forever (for client timeouts), ``fake.recover()``
undoes both. Every request is recorded in ``fake.requests``.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web


@dataclass(frozen=True)
class Hit:
    """One result the fake returns."""

    title: str
    url: str
    snippet: str


@dataclass
class SearchRequest:
    """One request the fake received."""

    path: str
    query: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)
    """Lower-cased header names."""


DEFAULT_HITS = (
    Hit("Python (programming language) - Wikipedia", "https://en.wikipedia.org/wiki/Python_(programming_language)",
        "Python is a high-level, general-purpose programming language."),
    Hit("Welcome to Python.org", "https://www.python.org/",
        "The official home of the Python Programming Language."),
    Hit("The Python Tutorial", "https://docs.python.org/3/tutorial/index.html",
        "Python is an easy to learn, powerful programming language."),
)  # fmt: skip

_HTML_PAGE = "<!DOCTYPE html><html><head><title>SearXNG</title></head><body>results</body></html>"


class FakeSearch:
    """Scriptable fake of both search APIs.

    Args:
        hits: the results every search returns, in order (the query only shows up in snippets).
        token: the Brave subscription token the fake accepts.
        json_enabled: whether the SearXNG side serves ``format=json``.
    """

    def __init__(
        self,
        hits: Iterable[Hit] = DEFAULT_HITS,
        *,
        token: str = "fake-brave-token",
        json_enabled: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self.hits = list(hits)
        self.token = token
        self.json_enabled = json_enabled
        self.host = host
        self.port = 0
        self.requests: list[SearchRequest] = []
        self._status = 0
        self._retry_after = ""
        self._hang = False
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """Base URL of both APIs (``base_url`` in ``[tools.web_search]``)."""
        return f"http://{self.host}:{self.port}"

    def fail(self, status: int, retry_after: str = "") -> None:
        """Answer every later request with ``status`` (and a ``Retry-After`` header when given)."""
        self._status, self._retry_after = status, retry_after

    def hang(self) -> None:
        """Never answer later requests (until the client gives up)."""
        self._hang = True

    def recover(self) -> None:
        """Answer normally again."""
        self._status, self._retry_after, self._hang = 0, "", False

    async def start(self) -> int:
        """Start listening on a free loopback port; returns it."""
        app = web.Application()
        app.router.add_get("/res/v1/web/search", self._brave)
        app.router.add_get("/search", self._searxng)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self.port

    async def stop(self) -> None:
        """Stop and release the port."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSearch:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- handlers ---------------------------------------------------------------------------
    async def _scripted(self, request: web.Request) -> web.Response | None:
        """Record the request; the scripted failure or hang, if any."""
        self.requests.append(
            SearchRequest(
                request.path, dict(request.query), {k.lower(): v for k, v in request.headers.items()}
            )
        )
        if self._hang:
            await asyncio.Event().wait()  # cancelled when the client disconnects or the server stops
        if self._status:
            headers = {"Retry-After": self._retry_after} if self._retry_after else {}
            return _brave_error(self._status, "SCRIPTED", "scripted failure", headers)
        return None

    async def _brave(self, request: web.Request) -> web.Response:
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        if request.headers.get("X-Subscription-Token") != self.token:
            return _brave_error(
                401, "SUBSCRIPTION_TOKEN_INVALID", "The provided subscription token is invalid."
            )
        q = request.query.get("q", "")
        if not q:
            return _brave_error(422, "VALIDATION", "Unable to validate request parameter(s): q")
        try:
            count = int(request.query.get("count", "20"))
        except ValueError:
            count = 0
        if not 1 <= count <= 20:
            return _brave_error(422, "VALIDATION", "Unable to validate request parameter(s): count")
        results = [
            {
                "type": "search_result",
                "title": hit.title,
                "url": hit.url,
                "description": f"{hit.snippet} <strong>{q}</strong>",
                "is_source_local": False,
                "language": request.query.get("search_lang", "en"),
                "profile": {"name": hit.title.split(" ")[0], "url": hit.url},
            }
            for hit in self.hits[:count]
        ]
        body = {
            "type": "search",
            "query": {"original": q, "more_results_available": len(self.hits) > count},
            "mixed": {"type": "mixed", "main": [{"type": "web", "index": i} for i in range(len(results))]},
            "web": {"type": "search", "results": results, "family_friendly": True},
        }
        return web.json_response(body)

    async def _searxng(self, request: web.Request) -> web.Response:
        scripted = await self._scripted(request)
        if scripted is not None:
            return scripted
        if request.query.get("format") != "json":
            return web.Response(text=_HTML_PAGE, content_type="text/html")
        if not self.json_enabled:
            return web.Response(status=403, text="403 Forbidden", content_type="text/html")
        q = request.query.get("q", "")
        results = [
            {
                "title": hit.title,
                "url": hit.url,
                "content": f"{hit.snippet} {q}",
                "engine": "duckduckgo",
                "engines": ["duckduckgo", "brave"],
                "score": 1.0 / (i + 1),
                "category": "general",
            }
            for i, hit in enumerate(self.hits)
        ]
        body = {
            "query": q,
            "number_of_results": len(results),
            "results": results,
            "answers": [],
            "corrections": [],
            "infoboxes": [],
            "suggestions": [],
            "unresponsive_engines": [],
        }
        return web.json_response(body)


def _brave_error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> web.Response:
    """An error answer shaped like Brave's."""
    body = {
        "type": "ErrorResponse",
        "error": {"id": "fake", "status": status, "code": code, "detail": detail},
    }
    return web.json_response(body, status=status, headers=headers)
