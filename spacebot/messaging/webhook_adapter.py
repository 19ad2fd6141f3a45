"""A plain HTTP webhook: the protocol half of ``gateway:webhook:<instance>`` (docs/webhook.md).

For anything that can send an HTTP request (scripts, home automation, another chat bridge):

* ``POST /send`` with JSON ``{conversation_id, sender_id, sender_name, message, idempotency_key,
  callback_url}`` answers ``202`` once the message is stored. The idempotency key is the platform
  message id, so the gateway stores (and answers) a retried send once;
* ``GET /poll/<conversation_id>?after=<cursor>&timeout=<s>`` long-polls the agent's replies after
  a cursor; it answers at once when there are some, else when one arrives or the timeout ends;
* each reply is also POSTed to the conversation's callback URL (or the instance's), with retries.

Replies are kept in a small SQLite file (``$SPACEBOT_HOME/gateways/webhook-<instance>/``), the
last :data:`KEEP` per conversation, so a poll after a gateway restart still finds them and cursors
(the row numbers, never reused) stay valid. A bearer ``token`` is required when the listener binds
beyond loopback; when set, every request must carry it.

Conversation ids: ``webhook:<instance>:<conversation_id>`` (the scheme's ``source`` is the instance,
its ``key`` the caller's conversation id). In the permission rule the conversation id is the
channel, every message addresses the bot, and the sender is never a direct-message author.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import re
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import aiohttp
import yarl
from aiohttp import web

from spacebot.config import PlatformInstance
from spacebot.errors import ConfigError
from spacebot.ipc.messages import Notice
from spacebot.messaging import bindings, credentials, ports
from spacebot.messaging.bindings import Decision, Scope
from spacebot.messaging.platform import OutFile, PlatformMessage, Sink
from spacebot.runtime.child import ChildContext

log = logging.getLogger("spacebot.gateway.webhook")

LIMIT = 100_000
"""Characters per reply (replies are stored whole by memory; this only splits a giant one)."""
MAX_MESSAGE = 32_000
"""Characters of a ``/send`` message."""
MAX_BODY = 256 * 1024
"""Bytes of a request body."""
MAX_NAME = 128
MAX_URL = 2048
MAX_POLL = 60.0
"""Longest wait of one ``/poll`` (a longer ``timeout`` is cut to it)."""
BATCH = 100
"""Replies one ``/poll`` returns at most (the next cursor picks up the rest)."""
KEEP = 500
"""Replies kept per conversation."""
CALLBACK_ATTEMPTS = 4
CALLBACK_DELAY = 0.5
"""Seconds before the second callback attempt, doubled for each further one."""
CALLBACK_TIMEOUT = 10.0

_ID = re.compile(r"[A-Za-z0-9_.+-]+")
_ID_TEXT = "letters, digits, '_', '.', '+' or '-'"
_LIMITS = {"conversation_id": 100, "sender_id": MAX_NAME, "idempotency_key": MAX_NAME}
"""Id fields → their longest length (a conversation id is a part of Spacebot's id: 100)."""
_FIELDS = frozenset({*_LIMITS, "sender_name", "message", "callback_url"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, conversation TEXT NOT NULL, nonce TEXT,
    text TEXT NOT NULL, created_at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS replies_conversation ON replies (conversation, seq);
CREATE UNIQUE INDEX IF NOT EXISTS replies_nonce ON replies (conversation, nonce) WHERE nonce IS NOT NULL;
CREATE TABLE IF NOT EXISTS callbacks (conversation TEXT PRIMARY KEY, url TEXT NOT NULL);
"""


class Invalid(ValueError):
    """A request the webhook refuses (400), with the message the caller sees."""


def http_url(url: str) -> bool:
    """Whether ``url`` is an absolute http(s) URL with a host (the only kind a callback goes to)."""
    try:
        parsed = yarl.URL(url)
    except ValueError:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


class Replies:
    """The replies of every conversation of one instance, kept across restarts (SQLite, one writer:
    this process; a few small indexed queries per reply, as :class:`Deliveries` does)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def add(self, conversation: str, text: str, nonce: str) -> tuple[int, bool]:
        """Store a reply; returns its cursor and whether it is new (a retried ``nonce`` is not)."""
        if nonce:
            row = self._db.execute(
                "SELECT seq FROM replies WHERE conversation = ? AND nonce = ?", (conversation, nonce)
            ).fetchone()
            if row is not None:
                return int(row[0]), False
        cur = self._db.execute(
            "INSERT INTO replies (conversation, nonce, text, created_at) VALUES (?, ?, ?, ?)",
            (conversation, nonce or None, text, time.time()),
        )
        seq = int(cur.lastrowid or 0)
        self._db.execute(  # only the last KEEP of the conversation stay
            "DELETE FROM replies WHERE conversation = ? AND seq < (SELECT seq FROM replies "
            "WHERE conversation = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (conversation, conversation, KEEP - 1),
        )
        return seq, True

    def after(self, conversation: str, cursor: int, limit: int = BATCH) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT seq, text, created_at FROM replies WHERE conversation = ? AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (conversation, cursor, limit),
        ).fetchall()
        return [reply(seq, text, at) for seq, text, at in rows]

    def callback(self, conversation: str) -> str:
        row = self._db.execute("SELECT url FROM callbacks WHERE conversation = ?", (conversation,)).fetchone()
        return str(row[0]) if row else ""

    def set_callback(self, conversation: str, url: str) -> None:
        if url:
            self._db.execute("INSERT OR REPLACE INTO callbacks VALUES (?, ?)", (conversation, url))
        else:
            self._db.execute("DELETE FROM callbacks WHERE conversation = ?", (conversation,))

    def close(self) -> None:
        self._db.close()


def reply(seq: int, text: str, at: float) -> dict[str, Any]:
    """One reply as ``/poll`` and the callback show it."""
    return {"message_id": str(seq), "cursor": seq, "text": text, "timestamp": at}


class WebhookAdapter:
    """One HTTP endpoint that callers send messages to and read the agent's replies from."""

    platform: ClassVar[str] = "webhook"
    limit = LIMIT
    supports_edit = False
    own_id = ""  # the agent never writes through the webhook as a sender

    def __init__(
        self,
        instance: PlatformInstance,
        token: str,
        store: Path,
        *,
        decide: Callable[[Scope], Decision] | None = None,
        ctx: ChildContext | None = None,
    ) -> None:
        """``decide`` tells a caller at once that no agent takes its message (403); ``ctx``
        announces the listener as ``gateway.<id>.listening``."""
        self.instance = instance
        self.token = token.encode()
        self.replies = Replies(store)
        self.decide = decide
        self.ctx = ctx
        self.port = 0
        """The port bound, once listening."""
        self.callback_delay = CALLBACK_DELAY
        self._signals: dict[str, asyncio.Event] = {}
        self._callback_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: aiohttp.ClientSession | None = None
        self._sink: Sink | None = None
        self._closing = False

    @classmethod
    async def create(cls, ctx: ChildContext, instance: PlatformInstance) -> WebhookAdapter:
        where = f"messaging.webhook[{instance.name}]"
        token = await credentials.resolve(ctx, instance.token, f"{where}.token") if instance.token else ""
        config = ctx.config
        return cls(
            instance,
            token,
            Path(config.home) / "gateways" / f"webhook-{instance.name}" / "replies.sqlite",
            decide=lambda scope: bindings.decide(
                scope, instance, config.bindings, config.messaging.default_agent
            ),
            ctx=ctx,
        )

    def conversation(self, key: str) -> str:
        return f"webhook:{self.instance.name}:{key}"

    # -- the listener --------------------------------------------------------------------------

    async def run(self, sink: Sink, connected: Callable[[], None]) -> None:
        inst = self.instance
        if not self.token and not _loopback(inst.host):
            raise ConfigError(
                f"messaging.webhook[{inst.name}]: binding to {inst.host!r} (not loopback) requires "
                "token (literal, env:NAME or secret:NAME)"
            )
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=CALLBACK_TIMEOUT))
        app = web.Application(middlewares=[self._auth], client_max_size=MAX_BODY)
        self._sink = sink
        app.router.add_post("/send", self._send)
        app.router.add_get("/poll/{conversation}", self._poll)
        async with ports.serving(
            app, inst.host, inst.port, what=f"webhook {inst.name!r}", section="messaging.webhook"
        ) as port:
            self.port = port
            url = f"http://{inst.host}:{port}/"
            log.info("webhook listening url=%s instance=%s", url, inst.name)
            if self.ctx is not None:
                self.ctx.publish(
                    f"gateway.{self.ctx.id}.listening", Notice("listening", {"url": url, "port": port})
                )
            connected()
            try:
                await asyncio.Event().wait()
            finally:
                self._closing = True
                for signal in self._signals.values():  # open polls answer now, with what they have
                    signal.set()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token:
            given = request.headers.get("Authorization", "")
            scheme, _, value = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), self.token):
                return web.json_response(
                    {"error": "missing or wrong bearer token (Authorization: Bearer <token>)"},
                    status=401,
                    headers={"WWW-Authenticate": "Bearer"},
                )
        response: web.StreamResponse = await handler(request)
        return response

    async def _send(self, request: web.Request) -> web.Response:
        assert self._sink is not None
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"request body over {MAX_BODY} bytes")
        except ValueError:
            return _error(400, "the body must be a JSON object")
        try:
            fields = _validate(body)
        except Invalid as exc:
            return _error(400, str(exc))
        conv = self.conversation(fields["conversation_id"])
        key = fields["idempotency_key"] or f"auto-{uuid.uuid4().hex}"
        scope = Scope(
            platform="webhook",
            instance=self.instance.name,
            guild="",
            channel=fields["conversation_id"],
            author_id=fields["sender_id"],
            mentions_bot=True,  # everything sent to the webhook is addressed to the agent
        )
        msg = PlatformMessage(
            conversation=conv,
            scope=scope,
            message_id=key,
            author_name=fields["sender_name"] or fields["sender_id"],
            text=fields["message"],
            timestamp=time.time(),
            conversation_name=fields["conversation_id"],
        )
        decision = self.decide(scope) if self.decide is not None else None
        try:
            await self._sink.message(msg)  # stored (or counted as dropped) when it returns
        except Exception as exc:  # memory unreachable for now: the caller sends again
            log.warning("message not stored conversation=%s error=%s", conv, exc)
            return _error(
                503, "the message could not be stored now; send it again with the same idempotency_key"
            )
        if decision is not None and not decision.accepted:
            return _error(403, f"no agent takes this message: {decision.reason}")
        if "callback_url" in fields:
            self.replies.set_callback(conv, fields["callback_url"])
        return web.json_response({"message_id": key, "conversation": conv}, status=202)

    async def _poll(self, request: web.Request) -> web.Response:
        key = request.match_info["conversation"]
        prefix = f"webhook:{self.instance.name}:"
        key = key.removeprefix(prefix)
        try:
            _check_id("conversation_id", key)
            after = _number(request.query.get("after", "0"), "after", integer=True)
            timeout = min(_number(request.query.get("timeout", "0"), "timeout"), MAX_POLL)
        except Invalid as exc:
            return _error(400, str(exc))
        conv = self.conversation(key)
        found = await self.wait(conv, int(after), timeout)
        cursor = found[-1]["cursor"] if found else int(after)
        return web.json_response({"conversation": conv, "messages": found, "cursor": cursor})

    async def wait(self, conv: str, after: int, timeout: float) -> list[dict[str, Any]]:
        """Replies of ``conv`` after cursor ``after``; waits up to ``timeout`` s for one to come."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            # Set (and dropped) by the next reply of ``conv``; taken before looking, so a reply
            # stored between the look and the wait still wakes this poll.
            signal = self._signals.setdefault(conv, asyncio.Event())
            found = self.replies.after(conv, after)
            left = deadline - asyncio.get_running_loop().time()
            if found or left <= 0 or self._closing:
                return found
            try:
                async with asyncio.timeout(left):
                    await signal.wait()
            except TimeoutError:
                return []

    # -- the agent's side ----------------------------------------------------------------------

    async def post(self, conversation: str, text: str, *, nonce: str = "") -> str:
        seq, new = self.replies.add(conversation, text, nonce)
        if new:
            signal = self._signals.pop(conversation, None)
            if signal is not None:
                signal.set()
            url = self.replies.callback(conversation) or self.instance.callback_url
            if url:
                payload = {"conversation": conversation, **reply(seq, text, time.time())}
                task = asyncio.get_running_loop().create_task(self._call_back(url, payload))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return str(seq)

    async def _call_back(self, url: str, payload: dict[str, Any]) -> None:
        """POST one reply to ``url``: a few attempts with doubling delays; one failing for good is
        logged (the reply stays pollable). A conversation's callbacks go out in order."""
        conv = str(payload["conversation"])
        async with self._callback_locks.setdefault(conv, asyncio.Lock()):
            for attempt in range(CALLBACK_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(self.callback_delay * 2 ** (attempt - 1))
                try:
                    assert self._http is not None
                    async with self._http.post(url, json=payload, allow_redirects=False) as resp:
                        if 200 <= resp.status < 300:
                            return
                        why = f"HTTP {resp.status}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "callback failed conversation=%s url=%s attempt=%d error=%s",
                    conv,
                    url,
                    attempt + 1,
                    why,
                )
            log.error(
                "callback given up conversation=%s reply=%s (it stays pollable)", conv, payload["cursor"]
            )

    async def send_files(self, conversation: str, files: list[OutFile], text: str = "") -> str:
        names = "\n".join(f"[file: {f.name}]" for f in files)
        return await self.post(conversation, f"{text}\n{names}" if text else names)

    async def edit(self, conversation: str, message_id: str, text: str) -> None:
        """Callers see final replies only."""

    async def delete(self, conversation: str, message_id: str) -> None:
        """Callers see final replies only."""

    async def react(self, conversation: str, message_id: str, emoji: str) -> None:
        """A poll client sees messages only."""

    async def typing(self, conversation: str) -> None:
        """A poll client sees messages only."""

    async def history(self, conversation: str, limit: int) -> list[PlatformMessage]:
        """The caller owns its history: nothing to backfill."""
        return []

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
        self.replies.close()


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _check_id(name: str, value: object) -> str:
    longest = _LIMITS[name]
    if not isinstance(value, str):
        raise Invalid(f"{name} must be a string")
    if not 1 <= len(value) <= longest or not _ID.fullmatch(value):
        raise Invalid(f"{name} must be 1-{longest} characters of {_ID_TEXT}")
    return value


def _validate(body: object) -> dict[str, str]:
    """The ``/send`` fields, checked; raises :class:`Invalid` naming the first field that is wrong."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise Invalid(f"unknown field {unknown[0]!r} (known: {', '.join(sorted(_FIELDS))})")
    out = {
        "conversation_id": _check_id("conversation_id", body.get("conversation_id")),
        "sender_id": _check_id("sender_id", body.get("sender_id")),
        "idempotency_key": "",
        "sender_name": "",
    }
    if body.get("idempotency_key") is not None:
        out["idempotency_key"] = _check_id("idempotency_key", body["idempotency_key"])
    name = body.get("sender_name")
    if name is not None:
        if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
            raise Invalid(f"sender_name must be a string of at most {MAX_NAME} printable characters")
        out["sender_name"] = name.strip()
    message = body.get("message")
    if not isinstance(message, str):
        raise Invalid("message must be a string")
    if not message.strip():
        raise Invalid("message is empty")
    if len(message) > MAX_MESSAGE:
        raise Invalid(f"message has {len(message)} characters (at most {MAX_MESSAGE})")
    out["message"] = message
    if "callback_url" in body:
        url = body["callback_url"]
        if url is None:
            url = ""
        if not isinstance(url, str) or len(url) > MAX_URL or (url and not http_url(url)):
            raise Invalid(f"callback_url must be an http:// or https:// URL of at most {MAX_URL} characters")
        out["callback_url"] = url
    return out


def _number(text: str, name: str, *, integer: bool = False) -> float:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise Invalid(
            f"{name} must be {'an integer' if integer else 'a number'}, got {text[:40]!r}"
        ) from None
    if value < 0 or math.isnan(value):
        raise Invalid(f"{name} must be >= 0")
    return value


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
