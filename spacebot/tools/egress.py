"""The egress proxy of ``[delegates] network = "loopback-deny"``: public addresses only.

Landlock (ABI 4) can allow TCP connect by port, not by address. So a worker runs this small proxy
on ``127.0.0.1`` outside the sandbox; its tools may connect to the proxy's port only, and get
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` pointing at it. The proxy speaks HTTP ``CONNECT``
(for TLS and any TCP protocol) and plain HTTP forwarding (absolute-form request lines). It
resolves the destination itself, refuses loopback, private, link-local, shared (CGNAT),
multicast, reserved and unspecified addresses — IPv4 and IPv6, including IPv4 embedded in IPv6 —
with ``403``, and connects to the address it checked (never re-resolving, so a DNS answer cannot
change between check and use).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from urllib.parse import urlsplit

from spacebot.tools.sandbox import Network

log = logging.getLogger("spacebot.tools")

MAX_HEAD = 16_384
"""Longest request head (request line and headers) the proxy reads."""
HEAD_TIMEOUT = 15.0
"""Seconds a client has to send its request head."""
CONNECT_TIMEOUT = 15.0
"""Seconds to resolve and connect to the destination."""
MAX_CLIENTS = 64
"""Connections served at once; more wait."""

_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598, carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052, IPv4 embedded in the low 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215, local-use translation


def refusal(address: str) -> str | None:
    """Why a connection to ``address`` (an IP literal) is refused, or ``None`` when it is public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if ip.teredo:
            embedded = ip.teredo[1]
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip in _NAT64_LOCAL:
            return f"{ip} is a local-use translation address"
        if embedded is not None:
            inner = refusal(str(embedded))
            return f"{ip} embeds {inner}" if inner else None
    for test, what in (
        (ip.is_unspecified, "unspecified"),
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED, "shared (carrier-grade NAT)"),
        (ip.is_reserved, "reserved"),
        (ip.is_private, "private"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "site-local"),
        (not ip.is_global, "non-global"),
    ):
        if test:
            return f"{ip} is a {what} address"
    return None


class EgressProxy:
    """One proxy on ``127.0.0.1:<port>``; :meth:`start` then :meth:`close`."""

    def __init__(self) -> None:
        self.port = 0
        self.refused = 0
        """Requests answered 403 (a destination that is not public)."""
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CLIENTS)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> EgressProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with self._slots:
                await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        async with asyncio.timeout(HEAD_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        line, _, rest = head.partition(b"\r\n")
        parts = line.decode("latin-1").split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return await _answer(writer, 400, "malformed request line")
        method, target, version = parts
        if method == "CONNECT":
            host, port = _host_port(target, None)
            forward = b""
        else:
            url = urlsplit(target)
            if url.scheme != "http" or not url.hostname:
                return await _answer(writer, 400, "only absolute http:// URLs (or CONNECT) are proxied")
            host, port = _host_port(url.netloc.rpartition("@")[2], 80)
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            kept = [
                h
                for h in rest.split(b"\r\n")
                if h and not h.lower().startswith((b"proxy-connection:", b"proxy-authorization:"))
            ]
            forward = b"\r\n".join([f"{method} {path} {version}".encode("latin-1"), *kept, b"", b""])
        if host is None or port is None:
            return await _answer(writer, 400, f"bad destination {target!r}")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                upstream = await self._connect(host, port)
        except PermissionError as exc:
            self.refused += 1
            log.warning("egress refused host=%r port=%d reason=%s", host, port, exc)
            return await _answer(writer, 403, f"refused: {exc} (only public addresses are reachable)")
        except (OSError, TimeoutError) as exc:
            return await _answer(writer, 502, f"cannot connect to {host}:{port}: {exc}")
        up_reader, up_writer = upstream
        try:
            if method == "CONNECT":
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                await writer.drain()
            else:
                up_writer.write(forward)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.close()

    async def _connect(self, host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve, keep the public addresses, connect to the first that answers."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        allowed = []
        reasons = []
        for _family, _type, _proto, _name, sockaddr in infos:
            why = refusal(str(sockaddr[0]))
            if why is None:
                allowed.append(str(sockaddr[0]))
            else:
                reasons.append(why)
        if not allowed:
            raise PermissionError(reasons[0] if reasons else f"{host!r} has no address")
        error: OSError = OSError(f"{host!r}: no address answered")
        for address in allowed:
            try:
                return await asyncio.open_connection(address, port)
            except OSError as exc:
                error = exc
        raise error


def _host_port(authority: str, default: int | None) -> tuple[str | None, int | None]:
    """``host:port`` / ``[v6]:port`` split; ``(None, None)`` when malformed."""
    if authority.startswith("["):
        host, _, tail = authority[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port_text = authority.rpartition(":") if ":" in authority else (authority, "", "")
    if not port_text:
        return (host or None, default) if default is not None else (None, None)
    if not port_text.isdigit() or not 0 < int(port_text) < 65536 or not host:
        return None, None
    return host, int(port_text)


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
    body = (text + "\n").encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(OSError):
            if dst.can_write_eof():
                dst.write_eof()


async def network_for(mode: str, stack: contextlib.AsyncExitStack[bool | None]) -> Network:
    """The :class:`~spacebot.tools.sandbox.Network` of ``[delegates] network`` = ``mode`` for one
    worker: with ``loopback-deny`` an egress proxy of its own is started and closed with ``stack``."""
    if mode != "loopback-deny":
        return Network(mode, 0)
    proxy = await EgressProxy().start()
    stack.push_async_callback(proxy.close)
    return Network(mode, proxy.port)
