"""The web chat gateway (``gateway:webchat``): an aiohttp server with the chat page and a WebSocket.

People's messages are stored through ``memory:<agent>`` (``pending``) before anything else, then
sent to ``channel:<agent>:<conversation>`` as ``Inbound`` — which starts that process if it is not
running. What the channel sends back (``Out*``) is fanned out to every socket that has the
conversation open. The protocol is in docs/webchat.md.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import logging
import os
import re
import time
from importlib import resources
from typing import Any, TypeVar, assert_never

import msgspec
from aiohttp import WSMsgType, web

from spacebot.agent.defaults import NO_MODEL_HINT
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    Body,
    CancelWork,
    ChannelList,
    ChannelUpsert,
    ConversationInfo,
    Envelope,
    Err,
    ErrorCode,
    Inbound,
    Notice,
    OutAbort,
    Outbound,
    OutDelta,
    OutError,
    OutMessage,
    OutReaction,
    OutTyping,
    ProcessExited,
    StoredMessage,
    TranscriptAppend,
    TranscriptPage,
)
from spacebot.ipc.replies import BusError, Reply, retry_transient
from spacebot.messaging import credentials, ports
from spacebot.messaging import webchat_frames as frames
from spacebot.messaging.webchat_frames import FrameError
from spacebot.messaging.webchat_guard import (
    Connections,
    HostCheck,
    Window,
    content_disposition,
    safe_mime,
    security_headers,
    token_ok,
)
from spacebot.runtime.child import ChildContext
from spacebot.runtime.memory_link import POLL

log = logging.getLogger("spacebot.webchat")

GATEWAY_ID = ids.gateway("web")
PLATFORM = "web"
RATE_WINDOW, RATE_MAX = 10.0, 20
DELIVERY_DEADLINE = 120.0
MEMORY_ATTEMPTS = 20
"""A person's hello, send or open waits out a memory restart this long (about 8 s) before the
answer is ``unavailable`` (the page then offers to send again)."""
_ID = re.compile(r"[0-9]{1,18}")  # a stored id or index: below 2**63 by construction
CLOSE_UNAUTHORIZED, CLOSE_HELLO_TIMEOUT = 4401, 4408
STATIC_TYPES = {
    "app.js": "application/javascript",
    "style.css": "text/css",
    "marked.umd.js": "application/javascript",
    "purify.min.js": "application/javascript",
    "marked.LICENSE": "text/plain",
    "purify.LICENSE": "text/plain",
}
"""The page's files: our script and style, and the vendored Markdown parser and HTML sanitiser
(marked, DOMPurify) with their licences."""

T = TypeVar("T")


class Client:
    """One WebSocket: one person in one browser tab."""

    def __init__(self, ws: web.WebSocketResponse, ip: str, windows: dict[str, Window]) -> None:
        self.ws = ws
        self.ip = ip
        self.person = ""
        self.name = ""
        self.ready = False
        """Said ``hello`` (with the token when one is set): only now does it get broadcasts."""
        self.open: set[str] = set()
        self.sent: collections.deque[float] = collections.deque()
        self.windows = windows
        """Frame rate limits by frame type (``create``, ``open``, ``list``)."""

    async def send(self, frame: dict[str, Any]) -> None:
        if self.ws.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.ws.send_str(msgspec.json.encode(frame).decode())

    def rate_limited(self, now: float) -> bool:
        while self.sent and now - self.sent[0] > RATE_WINDOW:
            self.sent.popleft()
        if len(self.sent) >= RATE_MAX:
            return True
        self.sent.append(now)
        return False


class _Reply:
    """A reply being streamed, kept so a socket that opens the conversation now sees it too."""

    def __init__(self) -> None:
        self.text: list[str] = []


class WebChat:
    """Sockets, conversations, and the bus side of the web chat."""

    def __init__(self, ctx: ChildContext, token: str = "") -> None:
        self.ctx = ctx
        self.settings = ctx.config.webchat
        self.agent = self.settings.agent
        self.memory = ids.memory(self.agent)
        self.token = token
        """``webchat.token`` resolved (:func:`~spacebot.messaging.credentials.resolve`); empty: none."""
        self.clients: set[Client] = set()
        self.connections = Connections(self.settings.max_connections, self.settings.max_connections_per_ip)
        self.watchers: dict[str, set[Client]] = collections.defaultdict(set)
        self.conversations: dict[str, ConversationInfo] = {}
        self.streams: dict[str, dict[str, _Reply]] = collections.defaultdict(dict)
        self.typing: dict[str, dict[str, Any]] = {}
        self.work: dict[str, tuple[list[dict[str, Any]], float]] = {}
        """Per conversation: the branches and workers it last said run, and when it said so."""
        self.tasks: set[asyncio.Task[Any]] = set()
        self.model = _model_info(ctx)

    # -- HTTP ------------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=max(1 << 20, self.settings.max_message_bytes * 8),
            middlewares=[HostCheck(self.settings.public_hosts).middleware],  # first, before any handler
        )
        app.on_response_prepare.append(security_headers)
        app.router.add_get("/", self.index)
        app.router.add_get("/static/{name}", self.static)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/attachments/{conversation}/{message}/{index}", self.attachment)
        return app

    async def index(self, _request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=_asset("index.html"), content_type="text/html", headers={"Cache-Control": "no-cache"}
        )

    async def static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        types = STATIC_TYPES
        if name not in types:
            raise web.HTTPNotFound(text=f"no static file {name!r}")
        return web.Response(
            body=_asset(name), content_type=types[name], headers={"Cache-Control": "no-cache"}
        )

    async def attachment(self, request: web.Request) -> web.StreamResponse:
        """A file the agent shared (``send_file``), by conversation, message id and position."""
        if self.token and not token_ok(request.query.get("token", ""), self.token):
            raise web.HTTPUnauthorized(text="wrong or missing token")
        conv = request.match_info["conversation"]
        if not conv.startswith(f"{PLATFORM}:") or not ids.is_conversation(conv):
            raise web.HTTPNotFound(text=f"no web chat conversation {conv!r}")
        raw_id, raw_index = request.match_info["message"], request.match_info["index"]
        if not (_ID.fullmatch(raw_id) and _ID.fullmatch(raw_index)):
            raise web.HTTPBadRequest(
                text=f"message id {raw_id!r} and index {raw_index!r} must be numbers of at most 18 digits"
            )
        message_id, index = int(raw_id), int(raw_index)
        rows = await self._mem(TranscriptPage(conv, limit=1, before_id=message_id + 1), list[StoredMessage])
        if not rows or rows[0].id != message_id or not 0 <= index < len(rows[0].attachments):
            raise web.HTTPNotFound(text="no such attachment")
        meta = rows[0].attachments[index]
        if "data" not in meta:
            raise web.HTTPNotFound(text="this attachment has no stored content")
        return web.Response(
            body=base64.b64decode(meta["data"]),
            content_type=safe_mime(meta.get("mime", "")),
            headers={"Content-Disposition": content_disposition(str(meta.get("name", "file")))},
        )

    async def health(self, _request: web.Request) -> web.StreamResponse:
        return web.json_response({"ok": True, "agent": self.agent, "connections": len(self.clients)})

    # -- WebSocket -----------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        if not self._origin_ok(request):
            raise web.HTTPForbidden(text="cross-origin WebSocket refused (set webchat.token to allow it)")
        ip = request.remote or "?"
        refusal = self.connections.refusal(ip)
        if refusal is not None:
            self.connections.refused += 1
            if self.connections.refused % 100 == 1:  # a flood must not flood the log too
                log.warning("socket refused ip=%s reason=%s total=%d", ip, refusal, self.connections.refused)
            raise web.HTTPServiceUnavailable(text=refusal, headers={"Retry-After": "10"})
        self.connections.add(ip)  # counted from before the handshake, so a flood cannot overshoot
        try:
            ws = web.WebSocketResponse(
                heartbeat=20.0, max_msg_size=self.settings.max_message_bytes * 4 + 4096
            )
            await ws.prepare(request)
            await self._serve(Client(ws, ip, self._windows()), request.query.get("token", ""))
            return ws
        finally:
            self.connections.remove(ip)

    async def _serve(self, client: Client, url_token: str) -> None:
        if self.token and url_token and not token_ok(url_token, self.token):
            await self._refuse(client)
            return
        timeout = self.settings.hello_timeout
        timer = asyncio.get_running_loop().call_later(timeout, self._hello_expired, client, timeout)
        self.clients.add(client)
        try:
            async for msg in client.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._frame(client, msg.data, url_token)
                elif msg.type == WSMsgType.ERROR:
                    log.info("socket error person=%s error=%s", client.person, client.ws.exception())
        finally:
            timer.cancel()
            self.clients.discard(client)
            for conv in client.open:
                self.watchers[conv].discard(client)

    def _windows(self) -> dict[str, Window]:
        s = self.settings
        return {
            "create": Window(s.create_per_minute, 60.0),
            "open": Window(s.open_per_minute, 60.0),
            "list": Window(s.list_per_minute, 60.0),
        }

    def _hello_expired(self, client: Client, timeout: float) -> None:
        if client.ready or client.ws.closed:
            return

        async def close() -> None:
            reason = f"no hello within {timeout:g} s ([webchat] hello_timeout)"
            await client.send(frames.error("hello_timeout", reason))
            await client.ws.close(code=CLOSE_HELLO_TIMEOUT, message=reason.encode())

        self._spawn(close())

    def _origin_ok(self, request: web.Request) -> bool:
        """Without a token, only the page's own origin (or a non-browser client) may connect."""
        origin = request.headers.get("Origin")
        if self.token or origin is None:
            return True
        host = origin.split("://", 1)[-1].rstrip("/")
        return host == request.host

    async def _refuse(self, client: Client) -> None:
        await client.send(
            frames.error("unauthorized", "wrong or missing token (open the page with ?token=…)")
        )
        await client.ws.close(code=CLOSE_UNAUTHORIZED, message=b"unauthorized")

    async def _frame(self, client: Client, raw: str | bytes, url_token: str) -> None:
        try:
            frame = frames.parse(raw)
            self._check_rate(client, frame)
            if not client.ready and not isinstance(frame, frames.Hello):
                raise FrameError("hello_first", "send a hello frame first", frame.ref)
            match frame:
                case frames.Hello():
                    token = frame.token or url_token
                    if self.token and not token_ok(token, self.token):
                        await self._refuse(client)
                        return
                    await self._hello(client, frame)
                case frames.ListConversations():
                    await client.send(
                        {"type": "conversations", "items": await self._list(), "ref": frame.ref}
                    )
                case frames.Create():
                    await self._create(client, frame)
                case frames.Open():
                    await self._open(client, frame)
                case frames.Close():
                    client.open.discard(frame.conversation)
                    self.watchers[frame.conversation].discard(client)
                case frames.Send():
                    await self._send(client, frame)
                case frames.Cancel():
                    await self._cancel(client, frame)
                case _:
                    assert_never(frame)
        except FrameError as exc:
            extra = exc.base if isinstance(exc, _SendError) else {}
            await client.send(
                frames.error(
                    exc.code,
                    str(exc),
                    ref=exc.ref,
                    conversation=extra.get("conversation"),
                    client_id=extra.get("client_id"),
                )
            )
        except BusError as exc:
            log.warning("memory request failed person=%s error=%s", client.person, exc)
            await client.send(frames.error("unavailable", f"the agent's memory is not reachable: {exc}"))
        except Exception:
            log.exception("frame failed person=%s", client.person)
            await client.send(frames.error("internal", "internal error; the gateway keeps serving"))

    def _check_rate(self, client: Client, frame: frames.ClientFrame) -> None:
        """``create``/``open``/``list`` (and repeated ``hello``) are capped per socket per minute."""
        kinds = {
            frames.Create: "create",
            frames.Open: "open",
            frames.Cancel: "open",
            frames.ListConversations: "list",
        }
        kind = kinds.get(type(frame), "list" if isinstance(frame, frames.Hello) and client.ready else None)
        if kind is None:
            return
        window = client.windows[kind]
        if not window.hit(time.monotonic()):
            raise FrameError(
                "rate_limited",
                f"more than {window.limit} {kind} frames in a minute ([webchat] {kind}_per_minute); "
                "wait a little",
                frame.ref,
            )

    async def _hello(self, client: Client, frame: frames.Hello) -> None:
        client.person, client.name = frame.person, frame.name.strip()
        client.ready = True
        await client.send(
            {
                "type": "welcome",
                "agent": self.agent,
                "person": client.person,
                "name": client.name,
                "model": self.model,
                "limits": {"max_message_bytes": self.settings.max_message_bytes},
                "conversations": await self._list(),
                "ref": frame.ref,
            }
        )

    async def _list(self) -> list[dict[str, Any]]:
        rows = await self._mem(ChannelList(PLATFORM), list[ConversationInfo])
        self.conversations = {c.id: c for c in rows}
        return [frames.conversation(c) for c in rows]

    async def _create(self, client: Client, frame: frames.Create) -> None:
        ident = ids.new_web_conversation()
        title = frame.title.strip() or time.strftime("Conversation %b %d %H:%M", time.gmtime())
        channel = await self._mem(ChannelUpsert(ident, PLATFORM, title), ConversationInfo)
        self.conversations[ident] = channel
        await client.send({"type": "created", "conversation": frames.conversation(channel), "ref": frame.ref})
        items = await self._list()
        ready = {c for c in self.clients if c.ready}  # a socket that has not said hello hears nothing
        await self._broadcast(ready, {"type": "conversations", "items": items})

    async def _known(self, conversation: str, ref: str | None) -> None:
        if conversation not in self.conversations:
            await self._list()
        if conversation not in self.conversations:
            raise FrameError("unknown_conversation", f"no web chat conversation {conversation!r}", ref)

    async def _open(self, client: Client, frame: frames.Open) -> None:
        await self._known(frame.conversation, frame.ref)
        limit = self.settings.history_page
        rows = await self._mem(
            TranscriptPage(frame.conversation, limit=limit + 1, before_id=frame.before), list[StoredMessage]
        )
        more = len(rows) > limit
        rows = rows[-limit:]
        client.open.add(frame.conversation)
        self.watchers[frame.conversation].add(client)
        streams = self.streams.get(frame.conversation, {})
        await client.send(
            {
                "type": "history",
                "conversation": frame.conversation,
                # Results of branches and workers are the agent's working notes (kept in the
                # transcript so a restarted conversation still sees them), not said to people.
                "messages": [frames.message(m) for m in rows if not ids.is_delegate(m.author_id)],
                "more": more,
                "pending": bool(streams) or frame.conversation in self.typing,
                "ref": frame.ref,
            }
        )
        if frame.before is None:
            if frame.conversation in self.typing:
                await client.send(self._typing_now(frame.conversation))
            for reply_id, reply in streams.items():  # a reply in progress: what was streamed so far
                text = "".join(reply.text)
                await client.send(
                    {"type": "delta", "conversation": frame.conversation, "reply_id": reply_id, "text": text}
                )

    async def _send(self, client: Client, frame: frames.Send) -> None:
        base = {"conversation": frame.conversation, "client_id": frame.client_id, "ref": frame.ref}
        size = len(frame.text.encode())
        if size > self.settings.max_message_bytes:
            raise _SendError(
                "too_large", f"message is {size} bytes; the limit is {self.settings.max_message_bytes}", base
            )
        if not frame.text.strip():
            raise _SendError("empty", "message is empty", base)
        if client.rate_limited(time.monotonic()):
            raise _SendError("rate_limited", f"more than {RATE_MAX} messages in {RATE_WINDOW:.0f} s", base)
        try:
            await self._known(frame.conversation, frame.ref)
            stored = await self._mem(
                TranscriptAppend(
                    frame.conversation,
                    frame.text,
                    author_id=f"web:{client.person}",
                    author_name=client.name,
                    platform_message_id=f"{client.person}:{frame.client_id}",
                ),
                StoredMessage,
            )
        except FrameError as exc:
            raise _SendError(exc.code, str(exc), base) from None
        except BusError as exc:
            raise _SendError(
                "unavailable", f"the message could not be stored ({exc}); send it again", base
            ) from None
        await client.send(
            {"type": "ack", "client_id": frame.client_id, "message": frames.message(stored), **base}
        )
        await self._broadcast(
            self.watchers[frame.conversation],
            {"type": "message", "conversation": frame.conversation, "message": frames.message(stored)},
        )
        if stored.reply_state.value == "pending":
            self._spawn(self._deliver(stored, client.person))

    def _typing_now(self, conv: str) -> dict[str, Any]:
        """The last ``typing`` frame of a conversation, with its running work aged to now."""
        return {**self.typing[conv], "work": self._work_now(conv)}

    def _work_now(self, conv: str) -> list[dict[str, Any]]:
        """The branches and workers the conversation last said run, their ages brought up to now
        (a ``thinking`` frame says nothing about them: they still run)."""
        work, at = self.work.get(conv, ([], 0.0))
        age = time.monotonic() - at
        return [{**w, "elapsed": round(w["elapsed"] + age, 1)} for w in work]

    async def _cancel(self, client: Client, frame: frames.Cancel) -> None:
        """Stop a running branch or worker of a conversation: the conversation's process checks
        that it is one of its own and stops it; its ``cancelled`` result reaches the model."""
        conv = frame.conversation
        await self._known(conv, frame.ref)
        running = {w["id"] for w in self.work.get(conv, ([], 0.0))[0]}
        if frame.id not in running:
            raise FrameError("not_running", f"{frame.id!r} is not running in {conv}", frame.ref)
        try:
            await self.ctx.request(
                ids.channel(self.agent, conv),
                CancelWork(frame.id, by=client.name or client.person),
                returns=None,
                timeout=35.0,
            )
        except BusError as exc:
            code = "not_running" if exc.code == ErrorCode.NOT_FOUND else "unavailable"
            raise FrameError(code, f"could not cancel {frame.id}: {exc.message}", frame.ref) from None
        log.info("cancel conversation=%s id=%s person=%s", conv, frame.id, client.person)
        await client.send({"type": "cancelled", "conversation": conv, "id": frame.id, "ref": frame.ref})

    async def _deliver(self, stored: StoredMessage, person: str) -> None:
        """Hand a stored message to its channel, retrying while the channel (re)starts."""
        conv = stored.channel_id
        inbound = Inbound(
            platform=PLATFORM,
            conversation=conv,
            author_id=stored.author_id,
            author_name=stored.author_name,
            text=stored.text,
            message_id=stored.platform_message_id or str(stored.id),
            stored_id=stored.id,
            timestamp=stored.created_at,
            gateway=GATEWAY_ID,
        )
        target = ids.channel(self.agent, conv)
        try:
            await retry_transient(
                lambda: self.ctx.request(target, inbound, returns=None, timeout=15.0),
                deadline=time.monotonic() + DELIVERY_DEADLINE,
                what=f"delivery to {target}",
                first_delay=0.05,
            )
        except BusError as exc:
            log.error("delivery failed conversation=%s message=%d error=%s", conv, stored.id, exc)
            await self._broadcast(
                self.watchers[conv],
                frames.error(
                    "unavailable",
                    "the agent cannot be reached right now; your message is saved and will be "
                    f"answered when it is back ({exc.message})",
                    conversation=conv,
                ),
            )

    # -- from channels -------------------------------------------------------------------------

    def on_message(self, env: Envelope) -> Reply | None:
        body = env.body
        if not isinstance(body, Outbound):
            return Err(ErrorCode.UNSUPPORTED, f"{GATEWAY_ID} does not handle {type(body).__name__}")
        frame = self._outbound(body)
        self._spawn(self._broadcast(self.watchers.get(body.conversation, set()), frame))
        return None

    def _outbound(self, body: Outbound) -> dict[str, Any]:
        """The frame people see for what a channel sent, after noting streams and typing."""
        conv = body.conversation
        match body:
            case OutDelta():
                self.streams[conv].setdefault(body.reply_id, _Reply()).text.append(body.text)
                return {"type": "delta", "conversation": conv, "reply_id": body.reply_id, "text": body.text}
            case OutMessage():
                self.streams[conv].pop(body.reply_id, None)
                return {
                    "type": "message",
                    "conversation": conv,
                    "message": frames.message(body.message, body.reply_id),
                }
            case OutAbort():
                self.streams[conv].pop(body.reply_id, None)
                return {
                    "type": "abort",
                    "conversation": conv,
                    "reply_id": body.reply_id,
                    "reason": body.reason,
                }
            case OutTyping():
                if body.state == "working":
                    self.work[conv] = (msgspec.to_builtins(body.work), time.monotonic())
                elif body.state == "idle":
                    self.work.pop(conv, None)
                frame = {
                    "type": "typing",
                    "conversation": conv,
                    "state": body.state,
                    "detail": body.detail,
                    "work": self._work_now(conv),
                }
                if body.state == "idle":
                    self.typing.pop(conv, None)
                else:
                    self.typing[conv] = frame
                return frame
            case OutReaction():
                return {
                    "type": "reaction",
                    "conversation": conv,
                    "message_id": body.message_id,
                    "emoji": body.emoji,
                }
            case OutError():
                return frames.error(body.code, body.text, conversation=conv)
            case _:
                assert_never(body)

    async def watch_channels(self) -> None:
        """When a conversation's process dies mid-reply, drop its half-streamed replies."""
        events = await self.ctx.events("proc.channel.")
        async for event in events:
            body = event.body
            if not isinstance(body, ProcessExited):
                continue
            try:
                agent, parsed = ids.parse_channel(body.id)
            except ids.IdError:
                continue
            conv = str(parsed)
            if agent != self.agent:
                continue
            streams = self.streams.pop(conv, {})
            watchers = self.watchers.get(conv, set())
            for reply_id in streams:
                frame = {"type": "abort", "conversation": conv, "reply_id": reply_id, "reason": "restarting"}
                await self._broadcast(watchers, frame)
            self.work.pop(conv, None)
            if self.typing.pop(conv, None) is not None:
                await self._broadcast(watchers, {"type": "typing", "conversation": conv, "state": "idle"})

    # -- helpers -------------------------------------------------------------------------------

    async def _broadcast(self, clients: set[Client], frame: dict[str, Any]) -> None:
        payload = msgspec.json.encode(frame).decode()
        for client in list(clients):
            if not client.ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await client.ws.send_str(payload)

    async def _mem(self, body: Body, returns: type[T]) -> T:
        # Memory restarts in a second or two: a person's hello, send or open waits for it instead
        # of getting "unavailable" for a blip.
        return await retry_transient(
            lambda: self.ctx.request(self.memory, body, returns=returns, timeout=10.0),
            attempts=MEMORY_ATTEMPTS,
            max_delay=POLL,
            what=f"memory request {type(body).__name__}",
        )

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


class _SendError(FrameError):
    def __init__(self, code: str, message: str, base: dict[str, Any]) -> None:
        super().__init__(code, message, base.get("ref"))
        self.base = base


def _asset(name: str) -> bytes:
    return resources.files("spacebot.messaging").joinpath("webchat_static", name).read_bytes()


def _model_info(ctx: ChildContext) -> dict[str, Any]:
    llm = ctx.config.llm
    fake = os.environ.get("SPACEBOT_FAKE_LLM") == "1"
    if not llm.providers:
        return {
            "configured": False,
            "fake": fake,
            "description": "no model configured",
            "hint": NO_MODEL_HINT,
        }
    from spacebot.llm.routing import Router
    from spacebot.llm.types import Request, UserMessage

    try:
        chain = Router(llm).decide(Request([UserMessage("hi")]), process="channel").chain
        description = chain[0] if chain else "configured"
    except Exception as exc:  # a routing problem shows up on the first message too
        description = f"configured ({exc})"
    return {"configured": True, "fake": fake, "description": description, "hint": ""}


async def run(ctx: ChildContext) -> None:
    """Serve the web chat until stopped."""
    chat = WebChat(ctx, await credentials.resolve(ctx, ctx.config.webchat.token, "webchat.token"))
    ctx.on_message(chat.on_message)
    # The sockets are closed by us below; a short timeout bounds the handlers still finishing.
    runner = web.AppRunner(chat.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site, port = await ports.start_site(
        runner, chat.settings.host, chat.settings.port, what="web chat", section="webchat"
    )
    url = f"http://{chat.settings.host}:{port}/"
    log.info("web chat listening url=%s agent=%s", url, chat.agent)
    ctx.publish(f"gateway.{GATEWAY_ID}.listening", Notice("listening", {"url": url, "port": port}))
    watcher = asyncio.get_running_loop().create_task(chat.watch_channels())
    ctx.ready()
    try:
        await asyncio.Event().wait()
    finally:
        watcher.cancel()
        await site.stop()  # no new connections while the open ones are told to come back later

        async def bye(client: Client) -> None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1.0):
                    await client.ws.close(code=1012, message=b"restarting")

        await asyncio.gather(*(bye(c) for c in list(chat.clients)))
        await runner.cleanup()
