"""``gateway:api``: the operator's HTTP API (JSON under ``/api/``) on one side, the bus on the other.

Started by the supervisor with the other core processes when ``[api] enabled = true`` (through
``spacebot.procs.gateway``, adapter ``api``). It asks the supervisor for the process table with
the same :class:`~spacebot.ipc.messages.StatusRequest` that ``spacebotctl status`` sends (the
supervisor answers it on the bus for this process alone), and relays the bus's events as
Server-Sent Events. The routes over an agent's data and over processes are in
:mod:`spacebot.procs.api_routes`, the usage tally in :mod:`spacebot.procs.api_usage`; the admin page
(``/admin``, files in ``admin_static/``) is a client of those routes. Routes, authentication and
examples: docs/api.md.

Every request passes three checks before a handler runs (the admin page's own files skip the
token, as they hold no data): the ``Host`` header names loopback or one
of ``[api] public_hosts`` (DNS rebinding), a browser's ``Origin`` is the API's own (there is no
CORS: no page of another site may read it), and ``Authorization: Bearer <token>`` matches
``[api] token`` when one is set.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import msgspec
from aiohttp import web

import spacebot
from spacebot.ipc import ids
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import SUPERVISOR_ID, Event, Notice, ProcState, StatusReply, StatusRequest
from spacebot.ipc.replies import BusError
from spacebot.messaging import credentials, ports
from spacebot.messaging.webchat_guard import HostCheck, security_headers, token_ok
from spacebot.procs.api_ingest import IngestBook
from spacebot.procs.api_openapi import OPENAPI_TYPES, openapi_paths
from spacebot.procs.api_routes import ApiError, Routes, error_response, json_response
from spacebot.procs.api_usage import UsageBook
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.api")

API_ID = ids.gateway("api")
"""Bus id of this process."""
HEALTHY = frozenset({ProcState.READY, ProcState.IDLE, ProcState.BUSY})
"""States in which a core process counts as up."""
STREAM_QUEUE = 1000
"""Events held for one ``/api/events`` reader; beyond that the oldest are dropped (and counted)."""
MAX_STREAMS = 64
"""Open ``/api/events`` readers; more get HTTP 503."""
KEEPALIVE_S = 15.0
"""An SSE comment after this long without an event, so proxies keep the connection open."""
STATUS_TIMEOUT = 5.0
"""Seconds the supervisor has to answer a status request."""

ADMIN_ASSETS = {"admin.js": "application/javascript", "admin.css": "text/css"}
"""Files under ``/admin/static/`` and their types."""
PUBLIC_PATHS = frozenset({"/admin", *(f"/admin/static/{name}" for name in ADMIN_ASSETS)})
"""Served without the token: the page and its code hold no data (the page asks for the token and
sends it with each API request); the Host and Origin checks still apply."""
ADMIN_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""The admin page's Content-Security-Policy: only its own script and style, and the API."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Health(msgspec.Struct, frozen=True):
    """``GET /api/health``: whether every core process is up."""

    version: str
    """Spacebot's version."""
    uptime_s: float
    """Seconds since the supervisor started."""
    processes: dict[str, str]
    """Each core process (memory per agent, gateways) → its lifecycle state (``missing``: not in
    the supervisor's table)."""


class BusEvent(msgspec.Struct, frozen=True):
    """One ``data:`` line of ``GET /api/events`` (the SSE event type ``dropped`` carries
    :class:`Dropped` instead)."""

    topic: str
    """Dotted topic, e.g. ``proc.worker.worker:ab12.spawn``."""
    src: str
    """Publisher's bus id."""
    ts: float
    """Wall-clock time of publication, epoch seconds."""
    body: Any
    """The event body, tagged with its ``type``."""


class Dropped(msgspec.Struct, frozen=True):
    """Events this reader missed because it read more slowly than they came."""

    dropped: int
    """How many were dropped since the previous ``dropped`` event."""


def core_ids(ctx: ChildContext) -> list[str]:
    """The processes the service needs (as ``Supervisor._start_core`` starts them)."""
    config = ctx.config
    found = [ids.memory(agent) for agent in config.agents]
    if config.webchat.enabled:
        found.append(ids.gateway("web"))
    if config.metrics.enabled:
        found.append(ids.gateway("metrics"))
    found.append(API_ID)
    return found


class Reader:
    """One ``/api/events`` reader's queue: bounded, the oldest dropped first, drops counted."""

    def __init__(self, prefix: str, size: int = STREAM_QUEUE) -> None:
        self.prefix = prefix
        self.queue: collections.deque[Event] = collections.deque(maxlen=size)
        self.dropped = 0
        """Dropped since the reader was last told."""
        self.wake = asyncio.Event()

    def offer(self, event: Event) -> None:
        """Queue ``event`` if it matches (never blocks: a full queue loses its oldest event)."""
        if not event.topic.startswith(self.prefix):
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(event)
        self.wake.set()

    def take(self) -> tuple[int, list[Event]]:
        """What to send now: the drop count since the last call and the queued events."""
        dropped, self.dropped = self.dropped, 0
        events = list(self.queue)
        self.queue.clear()
        self.wake.clear()
        return dropped, events


class Api:
    """The routes, the checks before them, and the readers of the event stream."""

    def __init__(self, ctx: ChildContext, token: str) -> None:
        self.ctx = ctx
        self.token = token
        self.hosts = HostCheck(ctx.config.api.public_hosts)
        self.readers: set[Reader] = set()
        self.usage = UsageBook(ctx.config.agents)
        self.ingest = IngestBook(ctx.config.home)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard])
        app.on_response_prepare.append(admin_headers)
        app.router.add_get("/api/health", self.health)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/events", self.events)
        app.router.add_get("/api/openapi.json", self.openapi)
        Routes(self.ctx, self._status, self.usage, self.ingest).add_to(app)
        app.router.add_get("/admin", self.admin)
        app.router.add_get("/admin/static/{name}", self.admin_static)
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        host = request.headers.get("Host")
        if not self.hosts.allowed(host):
            return _error(
                403,
                f"Host {host!r} is not allowed: the API answers to localhost and 127.0.0.1; to reach "
                "it by another name add that name to [api] public_hosts in config.toml",
            )
        origin = request.headers.get("Origin")
        if origin is not None and origin.split("://", 1)[-1].rstrip("/") != request.host:
            return _error(403, f"cross-origin request from {origin!r} refused (the API allows no CORS)")
        if self.token and request.path not in PUBLIC_PATHS:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token_ok(given.strip(), self.token):
                response = _error(401, "wrong or missing token: send Authorization: Bearer <[api] token>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="spacebot"'
                return response
        return await handler(request)

    async def _status(self) -> StatusReply:
        return await self.ctx.request(
            SUPERVISOR_ID, StatusRequest(), returns=StatusReply, timeout=STATUS_TIMEOUT
        )

    async def health(self, _request: web.Request) -> web.StreamResponse:
        try:
            reply = await self._status()
        except (BusError, TimeoutError) as exc:
            return _error(503, f"the supervisor did not answer: {exc}")
        rows = {row.id: row.state for row in reply.processes}
        processes = {ident: rows[ident].value if ident in rows else "missing" for ident in core_ids(self.ctx)}
        up = all(ident in rows and rows[ident] in HEALTHY for ident in processes)
        body = Health(spacebot.__version__, reply.uptime_s, processes)
        return _json(body, 200 if up else 503)

    async def status(self, _request: web.Request) -> web.StreamResponse:
        try:
            return _json(await self._status())
        except (BusError, TimeoutError) as exc:
            return _error(503, f"the supervisor did not answer: {exc}")

    async def events(self, request: web.Request) -> web.StreamResponse:
        if len(self.readers) >= MAX_STREAMS:
            return _error(503, f"{MAX_STREAMS} event streams are open, the limit; close one or retry later")
        reader = Reader(request.query.get("prefix", ""))
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        self.readers.add(reader)  # before the headers go out: a client that sees them misses nothing
        try:
            await response.prepare(request)
            await response.write(b": connected\n\n")
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        await reader.wake.wait()
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                dropped, queued = reader.take()
                chunk = bytearray()
                if dropped:
                    chunk += b"event: dropped\ndata: " + msgspec.json.encode(Dropped(dropped)) + b"\n\n"
                for event in queued:
                    data = BusEvent(event.topic, event.src, event.ts, event.body)
                    chunk += b"data: " + msgspec.json.encode(data) + b"\n\n"
                await response.write(bytes(chunk))  # a slow reader waits here; its queue fills
        finally:
            self.readers.discard(reader)

    async def openapi(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(body=OPENAPI, content_type="application/json")

    async def admin(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=_asset("index.html"), content_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    async def admin_static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ADMIN_ASSETS:
            return _error(404, f"no static file {name[:60]!r}")
        return web.Response(
            body=_asset(name), content_type=ADMIN_ASSETS[name], headers={"Cache-Control": "no-cache"}
        )

    async def fan_out(self, stream: EventStream) -> None:
        """Give every event to every reader, and to the usage tally, until cancelled (readers
        never slow this loop)."""
        async for event in stream:
            self.usage.feed(event)
            self.ingest.feed(event)
            for reader in self.readers:
                reader.offer(event)


_json = json_response
_error = error_response


def _asset(name: str) -> bytes:
    return resources.files("spacebot.procs").joinpath("admin_static", name).read_bytes()


async def admin_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The web chat's protective headers on every response; the admin page may run its own script
    and read the API (its own origin), nothing else."""
    await security_headers(request, response)
    if request.path == "/admin" and response.content_type == "text/html":
        response.headers["Content-Security-Policy"] = ADMIN_POLICY


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the routes, its schemas generated from the wire types."""
    ref = "#/components/schemas/{name}"
    core = (Health, StatusReply, ApiError, BusEvent, Dropped)
    found, schemas = msgspec.json.schema_components([*core, *OPENAPI_TYPES], ref_template=ref)
    health, status, error, event, dropped = found[: len(core)]
    by_type = dict(zip(OPENAPI_TYPES, found[len(core) :], strict=True))

    def content(schema: dict[str, Any], mime: str = "application/json") -> dict[str, Any]:
        return {"content": {mime: {"schema": schema}}}

    failed = {"description": "The supervisor did not answer", **content(error)}
    refused = {
        "401": {"description": "Wrong or missing bearer token", **content(error)},
        "403": {"description": "Host not allowed, or a cross-origin request", **content(error)},
    }
    paths = {
        "/api/health": {
            "get": {
                "summary": "Whether every core process (memory per agent, gateways) is up",
                "responses": {
                    "200": {"description": "Every core process is ready, idle or busy", **content(health)},
                    "503": {"description": "A core process is down (the body says which)", **content(health)},
                    **refused,
                },
            }
        },
        "/api/status": {
            "get": {
                "summary": "Every managed process with its live metrics (as spacebotctl status)",
                "responses": {
                    "200": {"description": "The process table", **content(status)},
                    "503": failed,
                    **refused,
                },
            }
        },
        "/api/events": {
            "get": {
                "summary": "The bus's events as Server-Sent Events",
                "parameters": [
                    {
                        "name": "prefix",
                        "in": "query",
                        "required": False,
                        "description": "Only events whose topic starts with this (e.g. proc.)",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "An endless stream: each data line is a BusEvent; an event of "
                        "type dropped (a Dropped) says how many a slow reader missed",
                        "content": {"text/event-stream": {"schema": {"oneOf": [event, dropped]}}},
                    },
                    "503": {"description": "Too many open streams", **content(error)},
                    **refused,
                },
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {
                    "200": {"description": "OpenAPI 3.1", **content({"type": "object"})},
                    **refused,
                },
            }
        },
    }
    paths.update(openapi_paths(by_type.__getitem__, content, refused))
    return {
        "openapi": "3.1.0",
        "info": {"title": "Spacebot operator API", "version": spacebot.__version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }


OPENAPI = msgspec.json.encode(openapi_document())
"""The document served at ``/api/openapi.json`` (built once, at import)."""


async def serve(ctx: ChildContext) -> None:
    """Entry point: subscribe, listen, relay until stopped."""
    settings = ctx.config.api
    api = Api(ctx, await credentials.resolve(ctx, settings.token, "api.token"))
    stream = await ctx.events()  # every topic, confirmed live before the first reader can connect
    with contextlib.suppress(BusError, TimeoutError):  # parents of processes already running
        api.usage.seed((await api._status()).processes)
    try:
        async with ports.serving(
            api.app(), settings.host, settings.port, what="the API", section="api"
        ) as port:
            url = f"http://{settings.host}:{port}/api/"
            log.info("api listening url=%s token=%s", url, "yes" if api.token else "no")
            ctx.publish(f"gateway.{API_ID}.listening", Notice("listening", {"url": url, "port": port}))
            ctx.ready()
            await api.fan_out(stream)
    finally:
        stream.close()
