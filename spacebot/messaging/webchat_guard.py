"""What the web chat checks before it serves anything: Host, headers, connection caps, frame rates.

The gateway listens on loopback for the operator's browser, where any web page can make requests to
it: a page on ``rebind.attacker.example`` whose name is re-pointed at 127.0.0.1 (DNS rebinding)
sends its own name as ``Host`` and ``Origin``, so comparing the two proves nothing. Only names the
operator chose are accepted: loopback names, plus ``[webchat] public_hosts`` (docs/security.md).
"""

from __future__ import annotations

import collections
import hmac
import ipaddress
import re
import unicodedata
import urllib.parse
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

_HOST = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::(?P<port>[0-9]{1,5}))?")
_MIME = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}")

PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' {ws}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The chat page's Content-Security-Policy: only our own script, style and socket."""
OTHER_POLICY = "default-src 'none'; frame-ancestors 'none'; sandbox"
"""Every other response (scripts, files the agent shared, errors) may not run anything at all."""


def host_name(header: str | None) -> str | None:
    """The lower-case name of a ``Host`` header without its port; None when it is malformed."""
    match = _HOST.fullmatch(header or "")
    if match is None:
        return None
    return match["host"].lower().rstrip(".")


def is_loopback_name(name: str) -> bool:
    """``localhost``, ``[::1]`` or any 127.x address (names only a local client can mean)."""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class HostCheck:
    """The ``Host`` allowlist, as an aiohttp middleware that runs before every handler."""

    def __init__(self, public_hosts: Iterable[str]) -> None:
        self.public = frozenset(h.lower().rstrip(".") for h in public_hosts)

    def allowed(self, header: str | None) -> bool:
        name = host_name(header)
        return name is not None and (is_loopback_name(name) or name in self.public)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        header = request.headers.get("Host")
        if not self.allowed(header):
            return web.Response(
                status=403,
                text=(
                    f"Host {header!r} is not allowed. This web chat answers to localhost and "
                    "127.0.0.1 only; to reach it by another name (a reverse proxy, a LAN address) "
                    "add that name to [webchat] public_hosts in config.toml.\n"
                ),
            )
        return await handler(request)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: the same protective headers on every response, errors included."""
    headers = response.headers
    if request.path == "/" and response.content_type == "text/html":
        host = request.headers.get("Host", "")  # already checked against the allowlist
        headers["Content-Security-Policy"] = PAGE_POLICY.format(ws=f"ws://{host} wss://{host}")
    else:
        headers["Content-Security-Policy"] = OTHER_POLICY
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"


def token_ok(given: str, expected: str) -> bool:
    """Constant-time token comparison that any text (non-ASCII included) can go through."""
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))


class Connections:
    """Open WebSockets per remote address and in all, against the configured caps."""

    def __init__(self, total: int, per_ip: int) -> None:
        self.total, self.per_ip = total, per_ip
        self.by_ip: collections.Counter[str] = collections.Counter()
        self.refused = 0
        """Sockets refused since start (logged now and then, not each time)."""

    def refusal(self, ip: str) -> str | None:
        """Why one more socket from ``ip`` is refused (None: it is admitted)."""
        if sum(self.by_ip.values()) >= self.total:
            return (
                f"the web chat has {self.total} open connections, its limit "
                "([webchat] max_connections); try again later"
            )
        if self.by_ip[ip] >= self.per_ip:
            return (
                f"{self.per_ip} connections from {ip} are open, the limit per address "
                "([webchat] max_connections_per_ip); close a tab or try again later"
            )
        return None

    def add(self, ip: str) -> None:
        self.by_ip[ip] += 1

    def remove(self, ip: str) -> None:
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]


class Window:
    """At most ``limit`` events in any ``seconds``-long window (a sliding log: limits are small)."""

    def __init__(self, limit: int, seconds: float) -> None:
        self.limit, self.seconds = limit, seconds
        self.times: collections.deque[float] = collections.deque()

    def hit(self, now: float) -> bool:
        """Record one event at ``now``; False (and nothing recorded) when over the limit."""
        while self.times and now - self.times[0] >= self.seconds:
            self.times.popleft()
        if len(self.times) >= self.limit:
            return False
        self.times.append(now)
        return True


def content_disposition(name: str) -> str:
    """``attachment`` with an ASCII ``filename`` and the exact name in ``filename*`` (RFC 6266)."""
    clean = "".join("_" if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in name)
    clean = clean.replace("/", "_").replace("\\", "_").strip()[:200] or "file"
    fallback = "".join(ch if 0x20 <= ord(ch) < 0x7F and ch != '"' else "_" for ch in clean)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(clean, safe='')}"


def safe_mime(value: object) -> str:
    """A stored MIME type when it is well formed, else ``application/octet-stream``."""
    text = str(value)
    return text if _MIME.fullmatch(text) else "application/octet-stream"
