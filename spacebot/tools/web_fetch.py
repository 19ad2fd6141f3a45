"""The ``web_fetch`` worker tool: one web page as readable markdown, through the network policy.

A fetch goes out from the worker itself, so it keeps the egress proxy's rules on its own: only
``http``/``https``; the host is resolved once and every address is checked with
:func:`spacebot.tools.egress.refusal` (loopback, private, link-local, multicast, reserved,
unspecified, IPv4 embedded in IPv6) unless ``[tools.web_fetch] allow_private``; the connection goes
to the addresses that were checked (:class:`PinnedResolver`: aiohttp never resolves the name a
second time, so a DNS answer cannot change between check and use); redirects are followed one hop
at a time and every hop is checked the same way.

The body is read up to ``max_bytes``; HTML becomes markdown with trafilatura (in a thread: it is
CPU work and the worker's loop must keep heartbeating), plain text and JSON come back as text,
PDF as text when ``pypdf`` is installed. Every failure is a :class:`ToolError` the model can read.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from spacebot.tools import egress
from spacebot.tools.errors import ToolError
from spacebot.tools.schema import spec

if TYPE_CHECKING:
    from spacebot.config import WebFetchSettings

WEB_FETCH = spec(
    "web_fetch",
    "Fetch one http(s) URL and return its readable text: HTML pages as markdown (navigation and "
    "boilerplate removed), plain text and JSON as text. Only public addresses are reachable; the "
    "result is capped.",
    {
        "url": {"type": "string", "description": "An absolute http:// or https:// URL."},
        "max_chars": {
            "type": "integer",
            "minimum": 1,
            "description": "Most characters to return (default and maximum set by the operator).",
        },
    },
    ["url"],
)

USER_AGENT = "Spacebot/0.1 (web_fetch)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TEXT_TYPES = frozenset({"text/plain", "text/markdown", "text/csv"})
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)

Refusal = Callable[[str], "str | None"]
"""Why an address (an IP literal) may not be fetched, or ``None``; :func:`egress.refusal`."""


class PinnedResolver(AbstractResolver):
    """An aiohttp resolver that answers only with addresses checked beforehand.

    One connector (one hop of a fetch) gets one of these: whatever name aiohttp asks for, the
    answer is the checked addresses and nothing else, so no second DNS lookup takes place.
    """

    def __init__(self, host: str, addresses: list[str]) -> None:
        if not addresses:
            raise ValueError(f"no checked address for {host!r}")
        self.host = host
        self.addresses = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.addresses
        ]

    async def close(self) -> None:
        return None


async def checked_addresses(host: str, port: int, *, allow_private: bool, refusal: Refusal) -> list[str]:
    """The addresses of ``host`` a fetch may connect to (resolved once; an IP literal as is).

    Raises:
        ToolError: the name does not resolve, or every address it has is refused.
    """
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ToolError(f"web_fetch: cannot resolve host {host!r} ({exc.strerror or exc})") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if allow_private:
        return addresses
    allowed = [a for a in addresses if refusal(a) is None]
    if not allowed:
        why = next((r for a in addresses if (r := refusal(a))), f"{host!r} has no address")
        raise ToolError(
            f"web_fetch: refused {host!r}: {why}; only public addresses are fetched "
            "([tools.web_fetch] allow_private = true allows it)"
        )
    return allowed


def _parse(url: str) -> URL:
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise ToolError(f"web_fetch: {url!r} is not a valid URL ({exc})") from exc
    if parsed.scheme not in ("http", "https"):
        raise ToolError(f"web_fetch: only http:// and https:// URLs can be fetched, got {url!r}")
    if not parsed.raw_host:
        raise ToolError(f"web_fetch: {url!r} has no host")
    return parsed


class _Page:
    """What one fetch read: the final URL, its content type, charset and (maybe cut) body."""

    def __init__(self, url: str, content_type: str, charset: str | None, body: bytes, cut: bool) -> None:
        self.url = url
        self.content_type = content_type
        self.charset = charset
        self.body = body
        self.cut = cut

    def text(self) -> str:
        try:
            return self.body.decode(self.charset or "utf-8", errors="replace")
        except LookupError:  # a charset Python does not know
            return self.body.decode("utf-8", errors="replace")


async def _get(url: str, settings: WebFetchSettings, refusal: Refusal) -> _Page:
    """Follow ``url`` hop by hop (each checked and pinned) and read the final body."""
    current = _parse(url)
    for _hop in range(settings.max_redirects + 1):
        host = current.raw_host
        assert host is not None  # _parse checked it
        port = current.port or (443 if current.scheme == "https" else 80)
        addresses = await checked_addresses(host, port, allow_private=settings.allow_private, refusal=refusal)
        connector = aiohttp.TCPConnector(resolver=PinnedResolver(host, addresses), force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT}) as session,
            session.get(current, allow_redirects=False) as resp,
        ):
            if resp.status in _REDIRECTS and "Location" in resp.headers:
                try:
                    target = current.join(URL(resp.headers["Location"]))
                except ValueError as exc:
                    raise ToolError(f"web_fetch: {current} redirected to a malformed location") from exc
                current = _parse(str(target))
                continue
            if resp.status >= 400:
                raise ToolError(
                    f"web_fetch: {current} answered HTTP {resp.status} {resp.reason or ''}".rstrip()
                )
            body = bytearray()
            cut = False
            async for chunk in resp.content.iter_chunked(65_536):
                body += chunk
                if len(body) > settings.max_bytes:
                    del body[settings.max_bytes :]
                    cut = True
                    break
            return _Page(str(resp.url), resp.content_type, resp.charset, bytes(body), cut)
    raise ToolError(
        f"web_fetch: more than {settings.max_redirects} redirects starting at {url!r} (last: {current})"
    )


def _html(page: _Page) -> tuple[str, str]:
    """Title and markdown of an HTML page (CPU work: run in a thread)."""
    import trafilatura
    from trafilatura.metadata import extract_metadata

    html = page.text()
    markdown = trafilatura.extract(html, output_format="markdown", include_links=True, url=page.url)
    meta = extract_metadata(html, default_url=page.url)
    title = meta.title if meta is not None and meta.title else ""
    if not title:
        found = _TITLE.search(html)
        title = " ".join(found.group(1).split()) if found else ""
    if not markdown:
        markdown = "(no readable text could be extracted from this page)"
    return title, markdown


def _pdf(page: _Page) -> str:
    """Text of a PDF with pypdf (CPU work: run in a thread)."""
    import io

    try:
        import pypdf
    except ImportError:
        raise ToolError(
            f"web_fetch: {page.url} is a PDF and PDF text extraction is not available "
            "(the pypdf package is not installed)"
        ) from None
    try:
        reader = pypdf.PdfReader(io.BytesIO(page.body))
        return "\n\n".join((p.extract_text() or "") for p in reader.pages).strip()
    except Exception as exc:  # pypdf raises many kinds on a damaged or cut file
        note = " (the body was cut at the byte limit)" if page.cut else ""
        raise ToolError(f"web_fetch: cannot read the PDF at {page.url}: {exc}{note}") from exc


def _json(page: _Page) -> str:
    text = page.text()
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text  # cut at the byte limit, or not JSON after all: as it came


async def _render(page: _Page) -> tuple[str, str]:
    """Title and text of a page, by content type."""
    kind = page.content_type.lower()
    default_title = URL(page.url).name or URL(page.url).host or page.url
    if kind in _HTML_TYPES:
        title, text = await asyncio.to_thread(_html, page)
        return title or default_title, text
    if kind in _TEXT_TYPES:
        return default_title, page.text()
    if kind == "application/json" or kind.endswith("+json"):
        return default_title, await asyncio.to_thread(_json, page)
    if kind == "application/pdf":
        return default_title, await asyncio.to_thread(_pdf, page)
    raise ToolError(
        f"web_fetch: {page.url} has content type {kind!r}, which cannot be shown as text "
        "(supported: HTML, plain text, JSON, PDF)"
    )


async def web_fetch(
    url: str,
    settings: WebFetchSettings,
    max_chars: int | None = None,
    *,
    refusal: Refusal = egress.refusal,
) -> str:
    """``# <title>\\n<final url>\\n\\n<markdown>``, at most ``max_chars`` (capped by the config's).

    Args:
        url: an absolute http(s) URL.
        settings: ``[tools.web_fetch]``.
        max_chars: the call's cap; the configured ``max_chars`` when absent or larger.
        refusal: the address check (tests swap it to treat a loopback test server as public).

    Raises:
        ToolError: a refused address, DNS failure, timeout, HTTP status of 400 or more, too many
            redirects, a content type that is not text, or a connection error.
    """
    try:
        async with asyncio.timeout(settings.timeout):
            page = await _get(url, settings, refusal)
    except TimeoutError:
        raise ToolError(f"web_fetch: {url!r} did not answer within {settings.timeout:g} s") from None
    except aiohttp.ClientError as exc:
        raise ToolError(f"web_fetch: cannot fetch {url!r}: {exc}") from exc
    title, text = await _render(page)
    out = f"# {title}\n{page.url}\n\n{text}"
    limit = min(max_chars or settings.max_chars, settings.max_chars)
    if len(out) > limit:
        out = f"{out[:limit]}\n\n[truncated: showed {limit} of {len(out)} characters]"
    if page.cut:
        out += f"\n[truncated at {settings.max_bytes} bytes: the rest of the body was not read]"
    return out
