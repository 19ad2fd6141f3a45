"""The ``web_search`` worker tool: the Brave Search API or a SearXNG instance (``[tools.web_search]``).

The worker process makes the request itself, to the configured provider only (no redirects are
followed), with aiohttp. Brave's subscription token is resolved like a model key: a literal,
``env:NAME`` (the variable, else the systemd credential ``name``) or ``secret:NAME`` (asked of the
supervisor, which grants it to workers only). The token travels in a header, never in the URL,
and no result or error text names it.

Results come back as a compact numbered list, deduplicated by normalised URL::

    1. Title — https://example.org/page
       The snippet, without markup.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from spacebot.tools.errors import ToolError
from spacebot.tools.schema import spec

if TYPE_CHECKING:
    from spacebot.config import WebSearchSettings
    from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.tools")

BRAVE_URL = "https://api.search.brave.com"
"""Brave's public API, used when ``base_url`` is empty."""
KEY_USE = "tools.web_search.api_key"
"""The config key naming the token; also the name the token is scrubbed under."""
SNIPPET_CHARS = 300
"""Longest snippet shown per result."""

WEB_SEARCH = spec(
    "web_search",
    "Search the web. Returns a numbered list of results (title — url, then a snippet); fetch a "
    "page for its full text.",
    {
        "query": {"type": "string", "minLength": 1, "maxLength": 400, "description": "What to search for."},
        "count": {
            "type": "integer",
            "minimum": 1,
            "maximum": 20,
            "description": "How many results (default 5).",
        },
        "country": {
            "type": "string",
            "pattern": "^[A-Za-z]{2}$",
            "description": "Two-letter country code to favour, e.g. 'US', 'DE'.",
        },
        "language": {
            "type": "string",
            "pattern": "^[A-Za-z]{2,3}$",
            "description": "Language code of the results, e.g. 'en', 'fr'.",
        },
        "freshness": {
            "type": "string",
            "enum": ["day", "week", "month", "year"],
            "description": "Only results from the past day, week, month or year.",
        },
    },
    ["query"],
)

_BRAVE_FRESHNESS = {"day": "pd", "week": "pw", "month": "pm", "year": "py"}
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")


def resolve_api_key(settings: WebSearchSettings, secrets: Mapping[str, str]) -> tuple[str, str]:
    """The provider's token and, when it cannot be had, why (the token is then empty).

    Args:
        settings: ``[tools.web_search]``.
        secrets: the store secrets the supervisor granted (name → value), for ``secret:NAME``.
    """
    from spacebot.llm.config import key_from_env

    raw = settings.api_key
    if raw.startswith("env:"):
        name = raw[4:]
        value = key_from_env(name)
        return (value, "") if value else ("", f"environment variable {name!r} is not set")
    if raw.startswith("secret:"):
        name = raw[7:]
        value = secrets.get(name, "")
        return (value, "") if value else ("", f"secret {name!r} was not granted by the supervisor")
    return raw, ""


def normalise_url(url: str) -> str:
    """``url`` for comparison: scheme and host lower-case, no fragment, no trailing slash."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url.strip()
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), parts.query, ""))


def _clean(text: object) -> str:
    """Plain one-line text: markup removed (Brave marks matches with ``<strong>``), entities decoded."""
    if not isinstance(text, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub("", text))).strip()


def format_results(query: str, results: list[tuple[str, str, str]], count: int) -> str:
    """The numbered list of the first ``count`` distinct results (title, url, snippet)."""
    seen: set[str] = set()
    lines: list[str] = []
    for title, url, snippet in results:
        key = normalise_url(url)
        if not url or key in seen:
            continue
        seen.add(key)
        n = len(seen)
        lines.append(f"{n}. {title or '(untitled)'} — {url}")
        if snippet:
            cut = snippet if len(snippet) <= SNIPPET_CHARS else snippet[: SNIPPET_CHARS - 1] + "…"
            lines.append(f"   {cut}")
        if n >= count:
            break
    if not lines:
        return f"No results for {query!r}."
    return "\n".join(lines)


class WebSearch:
    """Runs ``web_search`` calls against the configured provider.

    Args:
        settings: ``[tools.web_search]`` (``provider`` not empty).
        api_key: Brave's token, resolved.
        problem: why the tool cannot work as configured (every call then fails with it).
    """

    def __init__(self, settings: WebSearchSettings, api_key: str = "", problem: str = "") -> None:
        self.settings = settings
        self.provider = settings.provider
        self.name = "Brave Search" if settings.provider == "brave" else "SearXNG"
        self._key = api_key
        if not problem:
            if settings.provider == "brave" and not api_key:
                problem = "no api_key is configured"
            elif settings.provider == "searxng" and not settings.base_url:
                problem = "base_url (the SearXNG instance's address) is not set"
        self.problem = problem

    @property
    def known(self) -> dict[str, str]:
        """The token under its config key (to be scrubbed from every tool result), or nothing."""
        return {KEY_USE: self._key} if self._key else {}

    async def search(self, args: dict[str, Any]) -> str:
        """One call with checked arguments; raises :class:`ToolError` with a message for the model."""
        if self.problem:
            raise ToolError(
                f"web_search: {self.name} is not usable: {self.problem} ([tools.web_search] in the "
                "configuration). Tell the operator; searching is not possible until then."
            )
        query: str = args["query"]
        count: int = args.get("count", 5)
        if self.provider == "brave":
            results = await self._brave(query, count, args)
        else:
            results = await self._searxng(query, args)
        return format_results(query, results, count)

    async def _brave(self, query: str, count: int, args: dict[str, Any]) -> list[tuple[str, str, str]]:
        params = {"q": query, "count": str(count)}
        if "country" in args:
            params["country"] = args["country"].upper()
        if "language" in args:
            params["search_lang"] = args["language"].lower()
        if "freshness" in args:
            params["freshness"] = _BRAVE_FRESHNESS[args["freshness"]]
        base = (self.settings.base_url or BRAVE_URL).rstrip("/")
        headers = {"X-Subscription-Token": self._key, "Accept": "application/json"}
        data = await self._get(f"{base}/res/v1/web/search", params, headers)
        web = data.get("web") if isinstance(data, dict) else None
        items = web.get("results") if isinstance(web, dict) else None
        return _items(items, "description")

    async def _searxng(self, query: str, args: dict[str, Any]) -> list[tuple[str, str, str]]:
        params = {"q": query, "format": "json"}
        if "language" in args:
            lang = args["language"].lower()
            params["language"] = f"{lang}-{args['country'].upper()}" if "country" in args else lang
        if "freshness" in args:
            params["time_range"] = args["freshness"]
        base = self.settings.base_url.rstrip("/")
        data = await self._get(f"{base}/search", params, {"Accept": "application/json"})
        return _items(data.get("results") if isinstance(data, dict) else None, "content")

    async def _get(self, url: str, params: dict[str, str], headers: dict[str, str]) -> Any:
        """The decoded JSON answer; every failure a :class:`ToolError` naming the provider."""
        timeout = aiohttp.ClientTimeout(total=self.settings.timeout)
        host = urlsplit(url).netloc
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url, params=params, headers=headers, allow_redirects=False) as resp,
            ):
                if resp.status >= 300:
                    raise self._status_error(resp.status, resp.reason or "", resp.headers)
                try:
                    return await resp.json(content_type=None)
                except ValueError as exc:
                    raise ToolError(
                        f"web_search: {self.name} at {host} answered with something that is not JSON "
                        f"({exc}); try again later"
                    ) from exc
        except TimeoutError as exc:
            raise ToolError(
                f"web_search: {self.name} at {host} did not answer within {self.settings.timeout:g} s; "
                "try again later"
            ) from exc
        except aiohttp.ClientError as exc:
            raise ToolError(f"web_search: could not reach {self.name} at {host}: {exc}") from exc

    def _status_error(self, status: int, reason: str, headers: Mapping[str, str]) -> ToolError:
        """A clear error for an HTTP status; the token is never part of it."""
        name, code = self.name, f"HTTP {status} {reason}".rstrip()
        if 300 <= status < 400:
            where = headers.get("Location", "")
            return ToolError(
                f"web_search: {name} answered with a redirect ({code}) to {where!r}, which is not "
                "followed; the operator should set [tools.web_search] base_url to the final address"
            )
        if self.provider == "brave" and status in (401, 403):
            return ToolError(
                f"web_search: Brave rejected the API key ({code}); the operator must check "
                "[tools.web_search] api_key. Searching is not possible until then."
            )
        if self.provider == "searxng" and status == 403:
            return ToolError(
                f"web_search: SearXNG refused the request ({code}); this usually means the JSON "
                "format is disabled on the instance (add 'json' to search.formats in its "
                "settings.yml)"
            )
        if status == 429:
            retry = headers.get("Retry-After", "")
            when = f"; retry after {retry} s" if retry else "; try again later"
            return ToolError(f"web_search: {name}'s request quota or rate limit is exhausted ({code}){when}")
        if status >= 500:
            return ToolError(f"web_search: {name} had an internal error ({code}); try again later")
        return ToolError(f"web_search: {name} refused the search ({code})")


def _items(items: object, snippet_field: str) -> list[tuple[str, str, str]]:
    """(title, url, snippet) of each well-formed entry of a provider's result list."""
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("url"), str):
            out.append((_clean(item.get("title")), item["url"], _clean(item.get(snippet_field))))
    return out


async def connect(ctx: ChildContext) -> WebSearch | None:
    """The worker's ``web_search`` as configured, or ``None`` when no provider is set.

    A ``secret:`` token is asked of the supervisor; a token that cannot be had leaves the tool
    offered, failing each call with the reason (and a warning in the log), so the model can tell
    the person instead of searching for a tool that is missing.
    """
    settings = ctx.config.tools.web_search
    if not settings.provider:
        return None
    granted: dict[str, str] = {}
    if settings.api_key.startswith("secret:"):
        from spacebot.supervisor.secrets_service import fetch

        granted, _refused = await fetch(ctx, [settings.api_key[7:]])
    key, problem = resolve_api_key(settings, granted)
    tool = WebSearch(settings, key, problem)
    if tool.problem:
        log.warning("web_search (%s) is not usable: %s", settings.provider, tool.problem)
    return tool


__all__ = ["WEB_SEARCH", "WebSearch", "connect", "format_results", "normalise_url", "resolve_api_key"]
