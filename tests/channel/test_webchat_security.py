"""The web chat against a hostile browser page and hostile clients, over the real gateway.

DNS rebinding (a forged ``Host``), broadcasts before ``hello``, a ``hello`` that never comes, a
connection flood, frame floods, and the inputs that used to end in HTTP 500 or a dropped socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import aiohttp
import pytest

from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.testing import ChatSystem

EVIL = "rebind.attacker.example"
PROTECTIVE = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _protected(headers: Mapping[str, str], what: str) -> None:
    """Every response carries the protective headers and a Content-Security-Policy."""
    got = {k.lower(): v for k, v in headers.items()}
    for name, value in PROTECTIVE.items():
        assert got.get(name.lower()) == value, f"{what}: {name} is {got.get(name.lower())!r}"
    csp = got.get("content-security-policy", "")
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, f"{what}: CSP {csp!r}"


async def _raw(port: int, request: str) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 exchange written by hand, so the Host header is exactly what a browser sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request.encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        body = b""
        if "Content-Length" in headers:
            body = await reader.readexactly(int(headers["Content-Length"]))
        return status, headers, body
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _get(path: str, host: str, extra: str = "") -> str:
    return f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"


UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


@contextlib.asynccontextmanager
async def _session(local: str | None = None) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(local, 0) if local else None, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def test_forged_host_is_refused_on_page_and_socket(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False, webchat={"public_hosts": ["chat.example.com"]}) as system:
        port = system.port
        for path in ("/", "/static/app.js", "/healthz", "/attachments/web:x/1/0", "/nowhere"):
            status, headers, body = await _raw(port, _get(path, f"{EVIL}:{port}"))
            assert status == 403, (path, status)
            assert b"not allowed" in body and b"public_hosts" in body
            _protected(headers, f"403 on {path}")
        # The DNS-rebinding socket: Host and Origin agree, no token is configured — still refused.
        status, headers, body = await _raw(
            port, _get("/ws", f"{EVIL}:{port}", UPGRADE + f"Origin: http://{EVIL}:{port}\r\n")
        )
        assert status == 403 and b"public_hosts" in body
        async with _session() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await session.ws_connect(
                    system.url + "/ws", headers={"Host": f"{EVIL}:{port}", "Origin": f"http://{EVIL}:{port}"}
                )
            assert err.value.status == 403
        # Malformed Host headers (an injected port, several names, none at all) are refused too.
        for host in (f"localhost:{port}; evil", f"localhost.{EVIL}", "127.0.0.1.nip.io", "0x7f.0.0.1", ""):
            status, _h, _b = await _raw(port, _get("/healthz", host))
            assert status == 403, host
        # Loopback names and the configured public name are served (any port, any case).
        for host in (
            f"localhost:{port}",
            f"127.0.0.1:{port}",
            f"127.9.8.7:{port}",
            f"[::1]:{port}",
            "LocalHost",
        ):
            status, headers, _b = await _raw(port, _get("/healthz", host))
            assert status == 200, host
        status, headers, body = await _raw(port, _get("/", "chat.example.com"))
        assert status == 200 and b"<title>Spacebot</title>" in body
        # A socket through the public name works when its Origin is that name.
        status, headers, _b = await _raw(
            port, _get("/ws", "chat.example.com", UPGRADE + "Origin: https://chat.example.com\r\n")
        )
        assert status == 101
        _protected(headers, "101 WebSocket handshake")


async def test_every_response_type_carries_the_protective_headers(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False, webchat={"token": "s3cret"}) as system:
        host = f"127.0.0.1:{system.port}"
        page = await _raw(system.port, _get("/", host))
        assert page[0] == 200
        _protected(page[1], "the page")
        csp = page[1]["Content-Security-Policy"]
        # The page runs only its own script and style and talks only to its own socket.
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and f"ws://{host}" in csp
        for path, status in (
            ("/static/app.js", 200),
            ("/static/style.css", 200),
            ("/healthz", 200),
            ("/static/nope.js", 404),
            ("/nowhere", 404),
            ("/attachments/web:x/1/0", 401),
            ("/attachments/web:x/1/0?token=s3cret&", 404),
            ("/attachments/web:x/99999999999999999999/0?token=s3cret", 400),
        ):
            got, headers, _body = await _raw(system.port, _get(path, host))
            assert got == status, (path, got)
            _protected(headers, f"{status} on {path}")
            if path.startswith("/attachments") or path.startswith("/static"):
                assert "sandbox" in headers["Content-Security-Policy"]


async def test_a_socket_hears_nothing_before_hello(short_tmp: Path) -> None:
    # A long hello deadline: this test is about broadcasts, not the deadline.
    async with (
        ChatSystem(short_tmp, model=False, webchat={"hello_timeout": 600.0}) as system,
        _session() as session,
    ):
        silent = await session.ws_connect(system.url + "/ws")
        ana = await system.client("Ana")
        conv = await ana.create("secret plans")
        await ana.wait_for(
            lambda f: f["type"] == "conversations" and any(c["id"] == conv for c in f["items"])
        )
        # Ana's frames are handled one after another: when her `list` is answered, the broadcast
        # her `create` caused has been written to every socket it was meant for.
        mark = len(ana.frames)
        await ana.send_frame({"type": "list", "ref": "after"})
        await ana.wait_for(lambda f: f.get("ref") == "after", since=mark)
        # The silent socket's own round trip: anything broadcast to it would arrive before this answer.
        await silent.send_json({"type": "list", "ref": "probe"})
        first = await silent.receive_json(timeout=15)
        assert first["type"] == "error" and first["code"] == "hello_first" and first["ref"] == "probe", first
        # Once it has said hello it is told about new conversations like everyone else.
        await silent.send_json({"type": "hello", "name": "Late", "person": "late"})
        welcome = await silent.receive_json(timeout=15)
        assert welcome["type"] == "welcome" and conv in {c["id"] for c in welcome["conversations"]}
        second = await ana.create("more plans")
        heard = await silent.receive_json(timeout=15)
        assert heard["type"] == "conversations" and second in {c["id"] for c in heard["items"]}
        await silent.close()


async def test_no_hello_in_time_closes_the_socket(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False, webchat={"hello_timeout": 2.0}) as system:
        ana = await system.client("Ana", reconnect=False)
        async with _session() as session:
            silent = await session.ws_connect(system.url + "/ws")
            said = await silent.receive_json(timeout=30)
            assert said["type"] == "error" and said["code"] == "hello_timeout"
            assert "hello_timeout" in said["message"]
            closed = await silent.receive(timeout=30)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4408
            assert "no hello" in closed.extra
        # Ana, who said hello at once and connected earlier, is still served.
        await ana.create("still here")
        assert not any(f["type"] == "closed" for f in ana.frames)


async def test_connection_flood_is_refused_and_existing_clients_keep_working(short_tmp: Path) -> None:
    limits = {"max_connections": 4, "max_connections_per_ip": 2, "hello_timeout": 600.0}
    async with ChatSystem(short_tmp, model=False, webchat=limits) as system:
        ana = await system.client("Ana", reconnect=False)  # from 127.0.0.1
        url = system.url + "/ws"
        async with (
            _session() as one,
            _session("127.0.0.2") as two,
            _session("127.0.0.3") as three,
            _session("127.0.0.4") as four,
        ):
            second = await one.ws_connect(url)  # 127.0.0.1's second socket
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await one.ws_connect(url)
            assert err.value.status == 503
            from_two = await two.ws_connect(url)
            from_three = await three.ws_connect(url)  # 4 in all now
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await four.ws_connect(url)
            assert err.value.status == 503
            # The refusal says which limit and which key (what a non-browser client sees).
            status, headers, body = await _raw(system.port, _get("/ws", f"127.0.0.1:{system.port}", UPGRADE))
            assert status == 503 and b"max_connections" in body
            _protected(headers, "503 refusal")
            # The client that was already there keeps working.
            conv = await ana.create("during the flood")
            assert (await ana.open(conv))["type"] == "history"
            # A closed socket frees its place (counts are not leaked).
            await from_three.close()
            async with asyncio.timeout(30):
                while True:
                    try:
                        replacement = await four.ws_connect(url)
                        break
                    except aiohttp.WSServerHandshakeError as exc:
                        assert exc.status == 503
                        await asyncio.sleep(0.05)
            for ws in (second, from_two, replacement):
                await ws.close()


async def test_create_open_and_list_are_rate_limited(short_tmp: Path) -> None:
    limits = {"create_per_minute": 3, "open_per_minute": 2, "list_per_minute": 2}
    async with ChatSystem(short_tmp, model=False, webchat=limits) as system:
        ana = await system.client("Ana", reconnect=False)
        convs = [await ana.create(f"c{i}") for i in range(3)]
        with pytest.raises(RuntimeError, match=r"more than 3 create frames.*create_per_minute"):
            await ana.create("one too many")
        for frame_type, key in (("list", "list_per_minute"), ("open", "open_per_minute")):
            answers = []
            for i in range(3):
                mark = len(ana.frames)
                frame = {"type": frame_type, "ref": f"{frame_type}{i}", "conversation": convs[0]}
                await ana.send_frame(frame)
                answers.append(await ana.wait_for(lambda f, r=frame["ref"]: f.get("ref") == r, since=mark))
            assert all(a["type"] != "error" for a in answers[:2]), answers
            assert answers[2]["type"] == "error" and answers[2]["code"] == "rate_limited"
            assert key in answers[2]["message"]
        # The socket is still served: a message goes through.
        ack = await ana.send(convs[0], "still talking")
        assert ack["type"] == "ack"


async def test_non_ascii_token_gets_a_clear_refusal(short_tmp: Path) -> None:
    async with (
        ChatSystem(short_tmp, model=False, webchat={"token": "s3cret"}) as system,
        _session() as session,
    ):
        for in_url in (True, False):
            ws = await session.ws_connect(system.url + "/ws", params={"token": "ñø€"} if in_url else None)
            if not in_url:
                await ws.send_json({"type": "hello", "name": "Eve", "person": "eve", "token": "tökén"})
            said = await ws.receive_json(timeout=15)
            assert said["type"] == "error" and said["code"] == "unauthorized"
            closed = await ws.receive(timeout=15)
            assert closed.type == aiohttp.WSMsgType.CLOSE and closed.data == 4401
            await ws.close()
        async with session.get(system.url + "/attachments/web:x/1/0", params={"token": "ñø€"}) as resp:
            assert resp.status == 401
        good = await system.client("Ana", token="s3cret")
        assert good.welcome["type"] == "welcome"


async def test_out_of_range_ids_get_a_clear_error(short_tmp: Path) -> None:
    async with ChatSystem(short_tmp, model=False) as system:
        ana = await system.client("Ana", reconnect=False)
        conv = await ana.create()
        for before in (2**64, 2**63, 0, -1):
            got = await ana.open(conv, before=before)
            assert got["type"] == "error" and got["code"] == "bad_frame" and "before" in got["message"]
        async with aiohttp.ClientSession() as http:
            for mid, index in (
                ("18446744073709551616", "0"),
                ("1", "99999999999999999999"),
                ("٣", "0"),
                ("-1", "0"),
            ):
                async with http.get(f"{system.url}/attachments/{conv}/{mid}/{index}") as resp:
                    assert resp.status == 400, (mid, index, resp.status)
                    assert "numbers" in await resp.text()
        assert (await ana.open(conv))["type"] == "history"  # the socket still works


def _call(name: str, **arguments: object) -> FakeToolCall:
    return FakeToolCall(name, arguments)


async def test_hostile_file_name_downloads_with_a_safe_header(short_tmp: Path) -> None:
    name = 'evil\r\nSet-Cookie: x=1\t"ü.txt'
    async with FakeLLM() as fake:
        fake.add(
            user=r"\(new\) Ana: share",
            tool_calls=[_call("send_file", path=name), _call("reply", content="ok")],
        )
        async with ChatSystem(short_tmp, fake) as system:
            workspace = system.sup.home / "agents" / "main" / "workspace"
            workspace.mkdir(parents=True, exist_ok=True)
            (workspace / name).write_bytes(b"payload")
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "share it")
            shared = await ana.wait_for(
                lambda f: f["type"] == "message" and bool(f["message"]["attachments"]), timeout=30
            )
            [attachment] = shared["message"]["attachments"]
            status, headers, body = await _raw(
                system.port, _get("/" + attachment["url"], f"127.0.0.1:{system.port}")
            )
            assert status == 200 and body == b"payload"
            disposition = headers["Content-Disposition"]
            assert "Set-Cookie" not in headers and "\r" not in disposition and "\n" not in disposition
            assert disposition.startswith('attachment; filename="evil__Set-Cookie: x=1_')
            assert "filename*=UTF-8''evil__Set-Cookie%3A%20x%3D1_%22%C3%BC.txt" in disposition
            _protected(headers, "a download")


async def test_invalid_reaction_is_a_tool_error_and_the_turn_goes_on(short_tmp: Path) -> None:
    async with FakeLLM() as fake:
        # Rules are tried in order: the model's second step (it has read the tool errors) first.
        fake.add(
            tool_result="react",
            tool_result_content="1 to 32 characters",
            tool_calls=[_call("reply", content="recovered")],
        )
        fake.add(
            user=r"\(new\) Ana: react",
            tool_calls=[
                _call("react", emoji="🎉" * 40),
                _call("react", emoji="   "),
                _call("react", emoji="👍", message_id=2**63),
            ],
        )
        async with ChatSystem(short_tmp, fake) as system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "react to this")
            reply = await ana.wait_for(
                lambda f: f["type"] == "message" and f["message"]["role"] == "assistant", timeout=30
            )
            assert reply["message"]["text"] == "recovered"
            assert not any(f["type"] == "error" for f in ana.frames)
            results = [m["content"] for m in fake.requests[-1].body["messages"] if m.get("role") == "tool"]
            assert len(results) == 3, results
            assert "1 to 32 characters" in results[0]
            assert "must match" in results[1]
            assert "<= 9223372036854775807" in results[2]


async def test_the_page_works_under_its_content_security_policy(short_tmp: Path) -> None:
    from tests.channel.cdp import Browser, chromium_path

    if chromium_path() is None:
        pytest.skip("Chromium is not installed (apt-get install chromium): the CSP is checked in a browser")
    async with FakeLLM() as fake:
        fake.add(tool_calls=[_call("reply", content="under the policy")])
        async with ChatSystem(short_tmp, fake) as system, await Browser.launch() as browser:
            page = await browser.new_page()
            violations: list[str] = []
            browser.on(page.session, "Log.entryAdded", lambda p: violations.append(p["entry"]["text"]))
            await page.send("Log.enable")
            await page.goto(system.url + "/")
            await page.wait_for("document.getElementById('status').textContent === 'connected'")
            await page.click("#new-conversation")
            await page.wait_for("!document.getElementById('composer').disabled")
            await page.type("#composer", "hello")
            await page.press_enter()
            await page.wait_for(
                "document.querySelector('.msg[data-role=\"assistant\"]:not(.streaming)') !== null"
            )
            # The page itself needs nothing the policy forbids ...
            assert not [v for v in violations if "Content Security Policy" in v], violations
            assert page.errors == []
            # ... and the policy is enforced: an injected inline script does not run.
            outcome = await page.evaluate(
                """new Promise(resolve => {
                    document.addEventListener('securitypolicyviolation',
                        e => resolve(e.violatedDirective + ':' + String(window.injected)));
                    const s = document.createElement('script');
                    s.textContent = 'window.injected = 1';
                    document.body.appendChild(s);
                })"""
            )
            assert outcome == "script-src-elem:undefined", outcome
