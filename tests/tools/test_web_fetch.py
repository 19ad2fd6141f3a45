"""``web_fetch``: a loopback aiohttp server, the address policy, pinning, caps and content types."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from spacebot.config import WebFetchSettings
from spacebot.llm.types import ToolCall
from spacebot.tools import egress
from spacebot.tools.errors import ToolError
from spacebot.tools.sandbox import Limits
from spacebot.tools.task_tools import TaskTools
from spacebot.tools.web_fetch import PinnedResolver, checked_addresses, web_fetch

PARAGRAPHS = [
    "The lighthouse keeper climbed the spiral stairs every evening at dusk to light the great lamp.",
    "Ships passing the rocky headland relied on its beam to find the narrow channel into the harbour.",
    "In the winter of the great storm the keeper stayed awake for three nights tending the flame.",
    "When the storm cleared, the harbour master wrote a letter of thanks that still hangs by the door.",
]
ARTICLE = f"""<!doctype html>
<html><head><title>The Lighthouse Keeper</title></head>
<body>
<nav><a href="/">Home</a> | <a href="/shop">Shop</a> | <a href="/login">Login NAVBOILERPLATE</a></nav>
<header><div class="menu">Subscribe to our newsletter MENUBOILERPLATE</div></header>
<main><article>
<h1>The Lighthouse Keeper</h1>
{"".join(f"<p>{p}</p>" for p in PARAGRAPHS)}
<p>Read more in <a href="https://example.org/history">the harbour history</a>.</p>
</article></main>
<footer>Copyright 2024 FOOTERBOILERPLATE. All rights reserved. Privacy | Terms</footer>
</body></html>"""
HUGE = 200_000


class Server:
    """A loopback web server; ``base`` is its ``http://127.0.0.1:<port>``."""

    def __init__(self) -> None:
        self.base = ""
        self.never = asyncio.Event()
        self.hits: list[str] = []


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()

    async def article(request: web.Request) -> web.Response:
        return web.Response(text=ARTICLE, content_type="text/html")

    async def empty(request: web.Request) -> web.Response:
        return web.Response(
            text="<html><head><title>Nothing Here</title></head><body></body></html>",
            content_type="text/html",
        )

    async def text(request: web.Request) -> web.Response:
        return web.Response(text="plain words\nsecond line", content_type="text/plain")

    async def data(request: web.Request) -> web.Response:
        return web.Response(text='{"b":[1,2],"a":"x"}', content_type="application/json")

    async def chain(request: web.Request) -> web.Response:
        n = int(request.match_info["n"])
        if n == 0:
            raise web.HTTPFound("/text")
        raise web.HTTPFound(f"/chain/{n - 1}")

    async def to_private(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://10.0.0.1/secret")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(text="x" * HUGE, content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        await srv.never.wait()  # set only at teardown: during a test the fetch's timeout ends this
        return web.Response(text="late")

    async def image(request: web.Request) -> web.Response:
        return web.Response(body=b"\x89PNG\r\n", content_type="image/png")

    async def pdf(request: web.Request) -> web.Response:
        return web.Response(body=b"%PDF-1.4\n", content_type="application/pdf")

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        srv.hits.append(request.path)
        return await handler(request)

    app = web.Application(middlewares=[record])
    app.add_routes(
        [
            web.get("/article", article),
            web.get("/empty", empty),
            web.get("/text", text),
            web.get("/data", data),
            web.get("/chain/{n}", chain),
            web.get("/to-private", to_private),
            web.get("/huge", huge),
            web.get("/slow", slow),
            web.get("/image", image),
            web.get("/doc.pdf", pdf),
        ]
    )
    runner = web.AppRunner(app, shutdown_timeout=0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.base = f"http://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        srv.never.set()  # let a request still held by /slow end before the server closes
        await runner.cleanup()


OPEN = WebFetchSettings(allow_private=True, timeout=30)
"""Loopback allowed: the test server itself is reachable."""
CLOSED = WebFetchSettings(timeout=30)


def loopback_is_public(address: str) -> str | None:
    """The real policy, except that the test server's 127.0.0.1 counts as public."""
    return None if address == "127.0.0.1" else egress.refusal(address)


# -- content -------------------------------------------------------------------------------------


async def test_html_becomes_markdown_without_boilerplate(server: Server) -> None:
    out = await web_fetch(server.base + "/article", OPEN)
    head, url, blank, *_ = out.split("\n")
    assert head == "# The Lighthouse Keeper"
    assert url == server.base + "/article"
    assert blank == ""
    for paragraph in PARAGRAPHS:
        assert paragraph in out
    assert "[the harbour history](https://example.org/history)" in out
    for junk in ("NAVBOILERPLATE", "MENUBOILERPLATE", "FOOTERBOILERPLATE"):
        assert junk not in out


async def test_html_without_text_falls_back_to_title_and_note(server: Server) -> None:
    out = await web_fetch(server.base + "/empty", OPEN)
    assert out.startswith("# Nothing Here\n")
    assert "no readable text" in out


async def test_plain_text_and_pretty_json(server: Server) -> None:
    text = await web_fetch(server.base + "/text", OPEN)
    assert text == f"# text\n{server.base}/text\n\nplain words\nsecond line"
    data = await web_fetch(server.base + "/data", OPEN)
    body = data.split("\n\n", 1)[1]
    assert body == json.dumps({"b": [1, 2], "a": "x"}, indent=2)


async def test_other_content_type_is_an_error_naming_it(server: Server) -> None:
    with pytest.raises(ToolError, match=r"content type 'image/png'"):
        await web_fetch(server.base + "/image", OPEN)


async def test_pdf_without_pypdf_says_so(server: Server) -> None:
    try:
        import pypdf  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        with pytest.raises(ToolError, match="PDF text extraction is not available"):
            await web_fetch(server.base + "/doc.pdf", OPEN)
    else:
        with pytest.raises(ToolError, match="cannot read the PDF"):
            await web_fetch(server.base + "/doc.pdf", OPEN)


async def test_http_error_status(server: Server) -> None:
    with pytest.raises(ToolError, match=r"HTTP 404 Not Found"):
        await web_fetch(server.base + "/missing", OPEN)


# -- caps ----------------------------------------------------------------------------------------


async def test_max_chars_truncates_with_a_note(server: Server) -> None:
    full = await web_fetch(server.base + "/text", OPEN)
    out = await web_fetch(server.base + "/text", OPEN, max_chars=20)
    assert out == f"{full[:20]}\n\n[truncated: showed 20 of {len(full)} characters]"
    # The call cannot ask for more than the operator's cap.
    capped = await web_fetch(server.base + "/text", WebFetchSettings(allow_private=True, max_chars=10), 500)
    assert capped.endswith(f"[truncated: showed 10 of {len(full)} characters]")


async def test_body_read_stops_at_max_bytes(server: Server) -> None:
    settings = WebFetchSettings(allow_private=True, max_bytes=1000, max_chars=HUGE * 2)
    out = await web_fetch(server.base + "/huge", settings)
    assert out.count("x") == 1000
    assert out.endswith("[truncated at 1000 bytes: the rest of the body was not read]")


async def test_slow_response_times_out(server: Server) -> None:
    settings = WebFetchSettings(allow_private=True, timeout=0.2)
    with pytest.raises(ToolError, match=r"did not answer within 0.2 s"):
        await web_fetch(server.base + "/slow", settings)


# -- redirects -----------------------------------------------------------------------------------


async def test_redirect_chain_is_followed_to_the_final_url(server: Server) -> None:
    out = await web_fetch(server.base + "/chain/3", OPEN)
    assert out.split("\n")[1] == server.base + "/text"
    assert server.hits == ["/chain/3", "/chain/2", "/chain/1", "/chain/0", "/text"]


async def test_too_many_redirects(server: Server) -> None:
    settings = WebFetchSettings(allow_private=True, max_redirects=2)
    with pytest.raises(ToolError, match=r"more than 2 redirects"):
        await web_fetch(server.base + "/chain/3", settings)
    assert server.hits == ["/chain/3", "/chain/2", "/chain/1"]


async def test_redirect_to_a_private_address_is_refused(server: Server) -> None:
    with pytest.raises(ToolError) as caught:
        await web_fetch(server.base + "/to-private", CLOSED, refusal=loopback_is_public)
    message = str(caught.value)
    assert "10.0.0.1 is a private address" in message
    assert "[tools.web_fetch] allow_private" in message
    assert server.hits == ["/to-private"]


async def test_public_hop_is_fetched_with_the_hook(server: Server) -> None:
    """The hook above lets the first hop through: the refusal came from the redirect."""
    out = await web_fetch(server.base + "/text", CLOSED, refusal=loopback_is_public)
    assert "plain words" in out


# -- the address policy --------------------------------------------------------------------------


async def test_loopback_is_refused_naming_the_address(server: Server) -> None:
    with pytest.raises(ToolError) as caught:
        await web_fetch(server.base + "/text", CLOSED)
    message = str(caught.value)
    assert "127.0.0.1 is a loopback address" in message
    assert "[tools.web_fetch] allow_private = true allows it" in message
    assert server.hits == []


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://[::1]/", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/", "embeds 127.0.0.1 is a loopback address"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
    ],
)
async def test_non_public_literals_are_refused(url: str, reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        await web_fetch(url, CLOSED)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.org/x", "not a url"])
async def test_only_http_and_https(url: str) -> None:
    with pytest.raises(ToolError, match="only http:// and https://"):
        await web_fetch(url, OPEN)


async def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_such_host(*args: Any, **kw: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_host)
    with pytest.raises(ToolError, match=r"cannot resolve host 'nowhere.example'"):
        await web_fetch("http://nowhere.example/", OPEN)


# -- pinning -------------------------------------------------------------------------------------


async def test_pinned_resolver_answers_only_the_checked_addresses() -> None:
    resolver = PinnedResolver("example.org", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
    answers = await resolver.resolve("example.org", 443, family=socket.AF_UNSPEC)
    assert [(a["host"], a["port"], a["family"]) for a in answers] == [
        ("93.184.215.14", 443, socket.AF_INET),
        ("2606:2800:21f:cb07:6820:80da:af6b:8b2c", 443, socket.AF_INET6),
    ]
    with pytest.raises(ValueError, match="no checked address"):
        PinnedResolver("example.org", [])


async def test_checked_addresses_drop_the_refused_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    async def mixed(host: str, port: int, **kw: Any) -> list[Any]:
        return [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.1.2.3", port)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", mixed)
    got = await checked_addresses("mixed.example", 80, allow_private=False, refusal=egress.refusal)
    assert got == ["93.184.215.14"]


async def test_dns_rebinding_cannot_switch_the_address(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The name is resolved once: a second answer (a private address) is never asked for or used."""
    port = int(server.base.rsplit(":", 1)[1])
    asked: list[str] = []

    async def rebinding(host: str, port_: int, **kw: Any) -> list[Any]:
        asked.append(host)
        address = "127.0.0.1" if len(asked) == 1 else "10.9.9.9"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port_))]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", rebinding)
    out = await web_fetch(f"http://rebind.example:{port}/text", CLOSED, refusal=loopback_is_public)
    assert "plain words" in out
    assert asked == ["rebind.example"]
    assert server.hits == ["/text"]


# -- through the worker's tools ------------------------------------------------------------------


async def test_task_tools_offer_and_run_web_fetch(server: Server, tmp_path: Path) -> None:
    tools = TaskTools(tmp_path, Limits(), lambda text, kind: None, web_fetch=OPEN)
    assert "web_fetch" in tools.specs
    text, is_error = await tools.call(ToolCall("c1", "web_fetch", {"url": server.base + "/text"}))
    assert not is_error
    assert "plain words" in text
    text, is_error = await tools.call(ToolCall("c2", "web_fetch", {"url": server.base + "/image"}))
    assert is_error
    assert "image/png" in text

    off = TaskTools(tmp_path, Limits(), lambda text, kind: None, web_fetch=WebFetchSettings(enabled=False))
    assert "web_fetch" not in off.specs
    text, is_error = await off.call(ToolCall("c3", "web_fetch", {"url": server.base + "/text"}))
    assert is_error
    assert "unknown tool 'web_fetch'" in text
