"""``FakeLLM``: a real aiohttp server on loopback speaking the OpenAI and Anthropic wire protocols."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import socket
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import msgspec
from aiohttp import web

from spacebot.llm.fake import wire
from spacebot.llm.fake.rules import (
    Conversation,
    FakeToolCall,
    Fault,
    Rule,
    Script,
    matches,
    parse_conversation,
)

log = logging.getLogger(__name__)


class Recorded(msgspec.Struct):
    """One request the fake received."""

    path: str
    """Request path."""
    headers: dict[str, str]
    """Request headers (lower-cased names)."""
    body: dict[str, Any]
    """Decoded JSON body."""
    model: str
    """Requested model."""
    rule: str
    """Name of the rule that answered."""
    conversation: Conversation
    """The normalised conversation."""


class FakeLLM:
    """Scriptable fake provider. ``async with FakeLLM(rules) as fake:`` or ``port = await fake.start()``.

    ``fake.url`` is the Anthropic base URL, ``fake.openai_url`` the OpenAI one (``.../v1``).
    """

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        *,
        default: Rule | None = None,
        ttft: float = 0.0,
        token_latency: float = 0.0,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Iterable[str] = ("fake-model",),
        script: Script | None = None,
    ) -> None:
        script = script or Script()
        self.rules: list[Rule] = list(script.rules) + list(rules)
        self.default = default or script.default
        self.ttft = ttft or script.ttft
        self.token_latency = token_latency or script.token_latency
        self.host, self.port = host, port
        self.models = list(models)
        self.requests: list[Recorded] = []
        self.disconnects = 0
        self._disc_event: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)
        self._stopping = False

    # ---- scripting -------------------------------------------------------------------------
    def add(self, rule: Rule | None = None, /, **fields: Any) -> Rule:
        """Append a rule (given, or built from keyword fields of ``Rule``)."""
        rule = rule or msgspec.convert(fields, Rule)
        self.rules.append(rule)
        return rule

    def fail(
        self,
        status: int = 500,
        *,
        times: int | None = 1,
        kind: str = "status",
        error: str = "auto",
        retry_after: str | None = None,
        after_events: int = 0,
        model: str | None = None,
        abort: bool = True,
        text: str = "this answer is interrupted before it is complete",
    ) -> Rule:
        """Put a fault rule in front of every other rule (limited to ``times`` uses).

        ``text`` is what a ``cut``/``hang``/``garbage`` stream starts sending before the fault.
        """
        fault = msgspec.convert(
            {
                "kind": kind,
                "status": status,
                "error": error,
                "retry_after": retry_after,
                "after_events": after_events,
                "abort": abort,
            },
            Fault,
        )
        rule = Rule(name=f"fault:{kind}:{status}", model=model, times=times, fault=fault, text=text)
        self.rules.insert(0, rule)
        return rule

    def select(self, conv: Conversation) -> Rule:
        """The rule that answers ``conv`` (its use is counted)."""
        rule = next((r for r in self.rules if matches(r, conv)), self.default)
        rule.used += 1
        return rule

    def hits(self, name: str) -> int:
        """How many times the rule called ``name`` answered."""
        return sum(1 for r in self.requests if r.rule == name)

    # ---- lifecycle ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL for the Anthropic SDK."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_url(self) -> str:
        """Base URL for the OpenAI SDK."""
        return f"{self.url}/v1"

    async def start(self) -> int:
        """Start listening; returns the bound port (``port=0`` picks a free one)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_get("/v1/models", self._models)
        self._disc_event = asyncio.Event()
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self.port

    async def stop(self) -> None:
        """Stop and release the port."""
        self._stopping = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeLLM:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def wait_disconnect(self, timeout: float = 10.0) -> None:
        """Wait until a client dropped a connection mid-answer."""
        assert self._disc_event is not None, "server not started"
        async with asyncio.timeout(timeout):
            await self._disc_event.wait()

    # ---- handlers ---------------------------------------------------------------------------
    async def _models(self, request: web.Request) -> web.Response:
        if "anthropic-version" in request.headers:
            data = [
                {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in self.models
            ]
            return web.json_response(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": self.models[0] if self.models else None,
                    "last_id": self.models[-1] if self.models else None,
                }
            )
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models],
            }
        )

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "openai")

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "anthropic")

    async def _handle(self, request: web.Request, protocol: str) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError as exc:
            return web.json_response({"error": {"message": f"invalid JSON body: {exc}"}}, status=400)
        conv = parse_conversation(protocol, body)
        rule = self.select(conv)
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.requests.append(Recorded(request.path, headers, body, conv.model, rule.name, conv))
        try:
            return await self._answer(request, protocol, conv, rule)
        except (asyncio.CancelledError, ConnectionResetError):
            if not self._stopping:
                self.disconnects += 1
                if self._disc_event is not None:
                    self._disc_event.set()
            raise

    async def _answer(
        self, request: web.Request, protocol: str, conv: Conversation, rule: Rule
    ) -> web.StreamResponse:
        fault = rule.fault
        if fault is not None and fault.kind == "status":
            hdrs = {"retry-after": fault.retry_after} if fault.retry_after is not None else {}
            if protocol == "anthropic":
                hdrs["request-id"] = f"req_{next(self._ids)}"
            return web.json_response(
                wire.error_body(protocol, fault, conv.model), status=fault.status, headers=hdrs
            )
        group = ""
        if rule.user is not None:
            found = re.search(rule.user, conv.last_user)
            group = (found.group(1) or "") if found is not None and found.groups() else ""
        text = rule.text.replace("{last_user}", conv.last_user).replace("{user_group}", group)
        prefix = "toolu" if protocol == "anthropic" else "call"
        calls: list[tuple[str, FakeToolCall]] = [
            (c.id or f"{prefix}_{next(self._ids)}", _fill(c, conv.last_user, group)) for c in rule.tool_calls
        ]
        if self.ttft or rule.delay:
            await asyncio.sleep(self.ttft + rule.delay)
        if not conv.stream:
            return await self._unstreamed(request, protocol, conv, rule, text, calls)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        if protocol == "openai":
            payloads = [
                f"data: {d}\n\n".encode() for d in wire.openai_events(conv, text, calls, rule.stop_reason)
            ]
            payloads.append(b"data: [DONE]\n\n")
        else:
            events = wire.anthropic_events(conv, text, calls, rule.stop_reason)
            payloads = [f"event: {n}\ndata: {d}\n\n".encode() for n, d in events]
        limit = fault.after_events if fault is not None else len(payloads)
        for i, payload in enumerate(payloads[:limit]):
            if i and self.token_latency:
                await asyncio.sleep(self.token_latency)
            await resp.write(payload)
        if fault is not None:
            await self._stream_fault(request, resp, fault, protocol, conv.model)
        await resp.write_eof()
        return resp

    async def _stream_fault(
        self, request: web.Request, resp: web.StreamResponse, fault: Fault, protocol: str, model: str
    ) -> None:
        if fault.kind == "error_event":
            body = json.dumps(wire.error_body(protocol, fault, model))
            await resp.write(
                f"event: error\ndata: {body}\n\n".encode()
                if protocol == "anthropic"
                else f"data: {body}\n\n".encode()
            )
        elif fault.kind == "hang":
            await asyncio.Event().wait()  # until the client goes away (handler cancellation)
        elif fault.kind == "garbage":
            await resp.write(b'data: {"choices": [{"delta": \xff\xfe not json\n\n')
        elif fault.kind == "cut" and fault.abort and request.transport is not None:
            request.transport.abort()
            raise ConnectionResetError("fake cut the stream")

    async def _unstreamed(
        self,
        request: web.Request,
        protocol: str,
        conv: Conversation,
        rule: Rule,
        text: str,
        calls: list[tuple[str, FakeToolCall]],
    ) -> web.StreamResponse:
        fault = rule.fault
        if fault is not None and fault.kind == "hang":
            await asyncio.Event().wait()
        if fault is not None and fault.kind == "garbage":
            return web.Response(body=b"{not json \xff", content_type="application/json")
        if fault is not None and fault.kind == "cut" and request.transport is not None:
            request.transport.abort()
            raise ConnectionResetError("fake cut the response")
        if protocol == "openai":
            return web.json_response(wire.openai_body(conv, text, calls, rule.stop_reason))
        return web.json_response(wire.anthropic_body(conv, text, calls, rule.stop_reason))


def _fill(call: FakeToolCall, last_user: str, group: str = "") -> FakeToolCall:
    """``{last_user}`` / ``{user_group}`` in a call's string arguments (see :class:`Rule`)."""

    def sub(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{last_user}", last_user).replace("{user_group}", group)
        if isinstance(value, list):
            return [sub(v) for v in value]
        if isinstance(value, dict):
            return {k: sub(v) for k, v in value.items()}
        return value

    if call.raw_arguments is not None or "{" not in json.dumps(call.arguments):
        return call
    return msgspec.structs.replace(call, arguments=sub(call.arguments))
