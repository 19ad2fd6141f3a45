"""``FakeTwitch``: a loopback Twitch chat (IRC with IRCv3 tags) and its OAuth token endpoint.

Two listeners on 127.0.0.1:

* **IRC** (plain TCP, asyncio streams; point ``gateway_url = fake.gateway_url``, an ``irc://``
  URL): ``CAP REQ`` (tags, commands, membership), ``PASS oauth:<token>`` / ``NICK`` (a wrong token
  or nick gets ``NOTICE * :Login authentication failed`` and the connection closed), ``JOIN``
  (answered with ``JOIN``, ``353``/``366``, ``USERSTATE`` and ``ROOMSTATE``), ``PRIVMSG`` from the
  bot (answered with ``USERSTATE`` carrying the message's ``id``, or a ``NOTICE``: Twitch's
  duplicate rule, its per-channel rate limit, or refusals queued by the test), ``PING``/``PONG``
  both ways, ``RECONNECT`` on demand;
* **HTTP** (aiohttp; point ``api_base = fake.api_url``): ``POST /oauth2/token`` with
  ``grant_type=refresh_token`` (a fresh access token and a rotated refresh token), ``GET
  /oauth2/validate`` (``Authorization: OAuth <token>``: 200 with the login, or 401), and a test API
  under ``/_fake/...`` (JSON) for a fake running in another process (``spacebot fake-twitch``);
  tests in the same event loop call the Python methods instead.

People's messages (:meth:`FakeTwitch.post`) reach the connections that joined the channel at that
moment; like Twitch, nothing is kept for a bot that was not there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import socket
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from spacebot.messaging.fakes.base import FakeServer, json_action, serve_until_stopped

SERVER = "tmi.twitch.tv"
CAPS = ("twitch.tv/tags", "twitch.tv/commands", "twitch.tv/membership")
WINDOW = 30.0
"""Seconds over which the fake counts a channel's messages and compares duplicates."""


def _escape(value: str) -> str:
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\:")
        .replace(" ", "\\s")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value):
            out.append({":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}.get(value[i + 1], value[i + 1]))
            i += 2
        elif value[i] == "\\":
            i += 1
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def _split(raw: str) -> tuple[dict[str, str], str, list[str]]:
    """``@tags :prefix CMD a b :trailing`` → (tags, command, params)."""
    tags: dict[str, str] = {}
    rest = raw
    if rest.startswith("@"):
        block, _, rest = rest[1:].partition(" ")
        for item in filter(None, block.split(";")):
            k, _, v = item.partition("=")
            tags[k] = _unescape(v)
    if rest.startswith(":"):
        rest = rest.partition(" ")[2]
    head, sep, trailing = rest.partition(" :")
    words = head.split()
    params = words[1:] + ([trailing] if sep else [])
    return tags, (words[0].upper() if words else ""), params


def _tagged(tags: dict[str, str], rest: str) -> str:
    return "@" + ";".join(f"{k}={_escape(v)}" for k, v in tags.items()) + " " + rest


@dataclass
class ChatMessage:
    """A person's message in a channel."""

    channel: str
    user: str
    text: str
    id: str
    tags: dict[str, str]


@dataclass
class Sent:
    """A ``PRIVMSG`` the bot sent, with its tags; ``refused`` names the NOTICE it got instead of
    being shown (empty: shown)."""

    channel: str
    text: str
    tags: dict[str, str]
    id: str
    at: float
    refused: str = ""


@dataclass(eq=False)
class _Client:
    writer: asyncio.StreamWriter
    number: int
    token: str = ""
    nick: str = ""
    caps: set[str] = field(default_factory=set)
    logged_in: bool = False
    joined: set[str] = field(default_factory=set)


class FakeTwitch(FakeServer):
    """Twitch chat on loopback. ``async with FakeTwitch() as twitch:`` or ``await twitch.start()``.

    Args:
        token: The access token IRC accepts at first (``PASS oauth:<token>``).
        bot_name: The bot's login (``NICK`` must be it).
        refresh_token, client_id, client_secret: What the token endpoint accepts.
        mod_in: Channels where the bot is a moderator (``USERSTATE mod=1``: 100 messages per 30 s).
        rate: Messages per 30 s a non-moderator may send in a channel (Twitch: 20).
        expires_in: ``expires_in`` of renewed tokens, in seconds.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        irc_port: int = 0,
        port: int = 0,
        token: str = "fake-twitch-token",
        bot_name: str = "spacebot",
        refresh_token: str = "fake-refresh-token",
        client_id: str = "fake-client-id",
        client_secret: str = "fake-client-secret",
        mod_in: tuple[str, ...] = (),
        rate: int = 20,
        expires_in: int = 14400,
    ) -> None:
        self.host, self.irc_port, self.port = host, irc_port, port
        self.token, self.bot_name = token, bot_name
        self.refresh_token, self.client_id, self.client_secret = refresh_token, client_id, client_secret
        self.mod_in = set(mod_in)
        self.rate, self.expires_in = rate, expires_in
        self.valid_tokens = {token}
        self.messages: list[ChatMessage] = []
        """People's messages, in order."""
        self.sent: list[Sent] = []
        """Every ``PRIVMSG`` from the bot, refused ones included."""
        self.connections = 0
        """IRC connections accepted."""
        self.logins = 0
        self.login_failures = 0
        self.joins: list[str] = []
        """Channels joined, once per ``JOIN`` (a reconnect joins again)."""
        self.refreshes = 0
        """Successful renewals at the token endpoint."""
        self.refresh_failures = 0
        self.pings = 0
        """``PING``s the fake sent."""
        self.pongs = 0
        """``PONG``s it received."""
        self.reconnects = 0
        """``RECONNECT``s it sent."""
        self.notices: list[str] = []
        """``msg-id`` of every NOTICE sent to the bot about its messages."""
        self._refuse: deque[str] = deque()
        self._windows: dict[str, deque[float]] = {}
        self._clients: list[_Client] = []
        self._ids = itertools.count(1)
        self._user_ids: dict[str, str] = {}
        self._room_ids: dict[str, str] = {}
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- lifecycle -----------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        """``irc://127.0.0.1:<port>``: the adapter's ``gateway_url``."""
        return f"irc://{self.host}:{self.irc_port}"

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:<port>``: the adapter's ``api_base`` (``/oauth2/token`` below it)."""
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        """Start both listeners (port 0 picks free ones)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.irc_port)
        self.irc_port = self._server.sockets[0].getsockname()[1]
        app = web.Application()
        app.router.add_post("/oauth2/token", self._token)
        app.router.add_get("/oauth2/validate", self._validate)
        app.router.add_route("*", "/_fake/{action}", self._test_api)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        """Close every connection and release both ports."""
        if self._server is not None:
            self._server.close()
        for client in list(self._clients):
            client.writer.close()  # each connection's task then reads its end and finishes
        tasks = list(self._tasks)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=5.0)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- test API ------------------------------------------------------------------------------
    def joined(self, channel: str) -> int:
        """Logged-in connections in ``channel`` now."""
        return sum(1 for c in self._clients if c.logged_in and channel in c.joined)

    def post(
        self,
        channel: str,
        user: str,
        text: str,
        *,
        reply_to: str | None = None,
        mod: bool = False,
        display_name: str | None = None,
    ) -> ChatMessage:
        """``user`` (a login) says ``text`` in ``channel``; ``reply_to`` is the id of a message
        (a person's or the bot's) it answers."""
        channel, user = channel.lstrip("#").lower(), user.lower()
        msg_id = str(uuid.uuid4())
        badges = "moderator/1" if mod else ""
        tags = {
            "badge-info": "",
            "badges": badges,
            "color": "",
            "display-name": display_name or user.capitalize(),
            "emotes": "",
            "first-msg": "0",
            "flags": "",
            "id": msg_id,
            "mod": "1" if mod else "0",
            "returning-chatter": "0",
            "room-id": self._room(channel),
            "subscriber": "0",
            "tmi-sent-ts": str(int(time.time() * 1000)),
            "turbo": "0",
            "user-id": self._user(user),
            "user-type": "mod" if mod else "",
        }
        if reply_to is not None:
            tags.update(self._parent(reply_to))
        msg = ChatMessage(channel, user, text, msg_id, tags)
        self.messages.append(msg)
        line = _tagged(tags, f":{user}!{user}@{user}.{SERVER} PRIVMSG #{channel} :{text}")
        for client in self._clients:
            if client.logged_in and channel in client.joined:
                self._send(client, line if "twitch.tv/tags" in client.caps else line.partition(" ")[2])
        self._notify()
        return msg

    def bot_messages(self, channel: str | None = None) -> list[Sent]:
        """What the bot's messages show (refused sends left out), oldest first."""
        return [s for s in self.sent if not s.refused and (channel is None or s.channel == channel)]

    def refuse(self, kind: str = "msg_ratelimit", times: int = 1) -> None:
        """The bot's next ``times`` sends get ``NOTICE`` ``kind`` instead of being shown."""
        self._refuse.extend([kind] * times)

    def rate_limit(self, times: int = 1) -> None:
        """The next ``times`` sends are refused with ``msg_ratelimit``."""
        self.refuse("msg_ratelimit", times)

    def expire_tokens(self) -> None:
        """Every access token issued so far stops working (the next login is refused)."""
        self.valid_tokens.clear()
        self._notify()

    def ping(self) -> None:
        """``PING`` every logged-in connection (each should answer ``PONG``)."""
        for client in self._clients:
            if client.logged_in:
                self.pings += 1
                self._send(client, f"PING :{SERVER}")
        self._notify()

    def reconnect(self) -> None:
        """Tell every connection to reconnect, then close it (Twitch's server maintenance)."""
        for client in list(self._clients):
            self.reconnects += 1
            self._send(client, f":{SERVER} RECONNECT")
            client.writer.close()
        self._notify()

    def drop(self) -> None:
        """Close every connection without a word (a network failure)."""
        for client in list(self._clients):
            client.writer.close()
        self._notify()

    def counts(self) -> dict[str, int]:
        """The counters ``/_fake/wait`` can wait on."""
        return {
            "connections": self.connections,
            "open_connections": len(self._clients),
            "logins": self.logins,
            "login_failures": self.login_failures,
            "joins": len(self.joins),
            "messages": len(self.messages),
            "sent": len(self.sent),
            "bot_messages": len(self.bot_messages()),
            "refused": sum(1 for s in self.sent if s.refused),
            "refreshes": self.refreshes,
            "refresh_failures": self.refresh_failures,
            "pings": self.pings,
            "pongs": self.pongs,
            "reconnects": self.reconnects,
        }

    def state(self) -> dict[str, Any]:
        """Everything the fake recorded, as JSON-ready builtins (``GET /_fake/state``)."""
        return {
            "bot_name": self.bot_name,
            "counts": self.counts(),
            "joins": self.joins,
            "messages": [asdict(m) for m in self.messages],
            "sent": [asdict(s) for s in self.sent],
            "notices": self.notices,
        }

    # ---- IRC -----------------------------------------------------------------------------------
    def _room(self, channel: str) -> str:
        return self._room_ids.setdefault(channel, str(100000 + len(self._room_ids)))

    def _user(self, login: str) -> str:
        return self._user_ids.setdefault(login, str(500000 + len(self._user_ids)))

    def _parent(self, msg_id: str) -> dict[str, str]:
        for m in self.messages:
            if m.id == msg_id:
                login, name, body = m.user, m.tags["display-name"], m.text
                break
        else:
            sent = next((s for s in self.sent if s.id == msg_id), None)
            if sent is None:
                raise ValueError(f"no message with id {msg_id!r} to reply to")
            login, name, body = self.bot_name, self.bot_name, sent.text
        return {
            "reply-parent-display-name": name,
            "reply-parent-msg-body": body,
            "reply-parent-msg-id": msg_id,
            "reply-parent-user-id": self._user(login),
            "reply-parent-user-login": login,
        }

    def _send(self, client: _Client, line: str) -> None:
        if not client.writer.is_closing():
            client.writer.write((line + "\r\n").encode())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        client = _Client(writer, self.connections)
        self._clients.append(client)
        self._notify()
        try:
            while not writer.is_closing():
                raw = await reader.readline()
                if not raw:
                    break
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line and not self._handle(client, line):
                    break
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._clients.remove(client)
            writer.close()
            self._tasks.discard(task)
            self._notify()

    def _handle(self, client: _Client, raw: str) -> bool:
        """One line from a client; ``False`` closes the connection."""
        tags, command, params = _split(raw)
        nick = client.nick or "*"
        match command:
            case "CAP" if params[:1] == ["REQ"] and len(params) > 1:
                wanted = params[1].split()
                verdict = "ACK" if all(c in CAPS for c in wanted) else "NAK"
                if verdict == "ACK":
                    client.caps.update(wanted)
                self._send(client, f":{SERVER} CAP * {verdict} :{params[1]}")
            case "CAP":
                pass
            case "PASS" if params:
                client.token = params[0].removeprefix("oauth:")
            case "NICK" if params:
                client.nick = params[0].lower()
                return self._login(client)
            case "PING":
                self._send(client, f":{SERVER} PONG {SERVER} :{params[-1] if params else SERVER}")
            case "PONG":
                self.pongs += 1
                self._notify()
            case "JOIN" if client.logged_in and params:
                for channel in params[0].split(","):
                    self._join(client, channel.lstrip("#").lower())
            case "PART" if client.logged_in and params:
                for channel in params[0].split(","):
                    client.joined.discard(channel.lstrip("#").lower())
            case "PRIVMSG" if client.logged_in and len(params) >= 2:
                self._privmsg(client, params[0].lstrip("#").lower(), params[1], tags)
            case _:
                self._send(client, f":{SERVER} 421 {nick} {command} :Unknown command")
        return True

    def _login(self, client: _Client) -> bool:
        if client.token not in self.valid_tokens or client.nick != self.bot_name:
            self.login_failures += 1
            self._send(client, f":{SERVER} NOTICE * :Login authentication failed")
            self._notify()
            return False
        client.logged_in = True
        self.logins += 1
        n = client.nick
        for code, text in (
            ("001", "Welcome, GLHF!"),
            ("002", f"Your host is {SERVER}"),
            ("003", "This server is rather new"),
            ("004", "-"),
            ("375", "-"),
            ("372", "You are in a maze of twisty passages, all alike."),
            ("376", ">"),
        ):
            self._send(client, f":{SERVER} {code} {n} :{text}")
        if "twitch.tv/commands" in client.caps:
            tags = {"badge-info": "", "badges": "", "color": "", "display-name": n, "emote-sets": "0"}
            tags |= {"user-id": self._user(n), "user-type": ""}
            self._send(client, _tagged(tags, f":{SERVER} GLOBALUSERSTATE"))
        self._notify()
        return True

    def _userstate(self, client: _Client, channel: str, msg_id: str = "") -> None:
        if "twitch.tv/commands" not in client.caps:
            return
        mod = channel in self.mod_in
        tags = {
            "badge-info": "",
            "badges": "moderator/1" if mod else "",
            "color": "",
            "display-name": client.nick,
            "emote-sets": "0",
        }
        if msg_id:
            tags["id"] = msg_id
        tags |= {"mod": "1" if mod else "0", "subscriber": "0", "user-type": "mod" if mod else ""}
        self._send(client, _tagged(tags, f":{SERVER} USERSTATE #{channel}"))

    def _join(self, client: _Client, channel: str) -> None:
        n = client.nick
        client.joined.add(channel)
        self.joins.append(channel)
        self._send(client, f":{n}!{n}@{n}.{SERVER} JOIN #{channel}")
        self._send(client, f":{n}.{SERVER} 353 {n} = #{channel} :{n}")
        self._send(client, f":{n}.{SERVER} 366 {n} #{channel} :End of /NAMES list")
        self._userstate(client, channel)
        if "twitch.tv/commands" in client.caps:
            tags = {"emote-only": "0", "followers-only": "-1", "r9k": "0", "room-id": self._room(channel)}
            tags |= {"slow": "0", "subs-only": "0"}
            self._send(client, _tagged(tags, f":{SERVER} ROOMSTATE #{channel}"))
        self._notify()

    def _privmsg(self, client: _Client, channel: str, text: str, tags: dict[str, str]) -> None:
        now = time.monotonic()
        window = self._windows.setdefault(channel, deque())
        while window and now - window[0] >= WINDOW:
            window.popleft()
        cap = 100 if channel in self.mod_in else self.rate
        previous = next((s for s in reversed(self.sent) if s.channel == channel and not s.refused), None)
        refused = ""
        if self._refuse:
            refused = self._refuse.popleft()
        elif len(window) >= cap:
            refused = "msg_ratelimit"
        elif previous is not None and previous.text == text and now - previous.at < WINDOW:
            refused = "msg_duplicate"
        window.append(now)
        sent = Sent(channel, text, tags, str(uuid.uuid4()), now, refused)
        self.sent.append(sent)
        if refused:
            self.notices.append(refused)
            reason = {
                "msg_ratelimit": "Your message was not sent because you are sending messages too quickly.",
                "msg_duplicate": "Your message was not sent because it is identical to the previous one "
                "you sent, less than 30 seconds ago.",
                "msg_banned": f"You are permanently banned from talking in {channel}.",
            }.get(refused, f"Your message was not sent ({refused}).")
            self._send(client, _tagged({"msg-id": refused}, f":{SERVER} NOTICE #{channel} :{reason}"))
        else:
            self._userstate(client, channel, sent.id)
        self._notify()

    # ---- HTTP ----------------------------------------------------------------------------------
    async def _validate(self, request: web.Request) -> web.Response:
        """``GET /oauth2/validate`` with ``Authorization: OAuth <token>``: who the token is for."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("oauth", "bearer") or token.strip() not in self.valid_tokens:
            return web.json_response({"status": 401, "message": "invalid access token"}, status=401)
        body = {
            "client_id": self.client_id,
            "login": self.bot_name,
            "scopes": ["chat:edit", "chat:read"],
            "user_id": self._user(self.bot_name),
            "expires_in": self.expires_in,
        }
        return web.json_response(body)

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if form.get("grant_type") != "refresh_token":
            return web.json_response({"status": 400, "message": "unsupported grant_type"}, status=400)
        if form.get("client_id") != self.client_id:
            self.refresh_failures += 1
            self._notify()
            return web.json_response({"status": 400, "message": "invalid client"}, status=400)
        if form.get("client_secret") != self.client_secret:
            self.refresh_failures += 1
            self._notify()
            return web.json_response({"status": 403, "message": "invalid client secret"}, status=403)
        if form.get("refresh_token") != self.refresh_token:
            self.refresh_failures += 1
            self._notify()
            return web.json_response({"status": 400, "message": "Invalid refresh token"}, status=400)
        n = next(self._ids)
        access, self.refresh_token = f"fake-access-{n}", f"fake-refresh-{n}"
        self.valid_tokens.add(access)
        self.refreshes += 1
        self._notify()
        return web.json_response(
            {
                "access_token": access,
                "refresh_token": self.refresh_token,
                "expires_in": self.expires_in,
                "scope": ["chat:edit", "chat:read"],
                "token_type": "bearer",
            }
        )

    async def _test_api(self, request: web.Request) -> web.Response:
        return await json_action(request, self._test_action, self.counts)

    async def _test_action(self, action: str, body: dict[str, Any]) -> Any:
        match action:
            case "state":
                return self.state()
            case "counts":
                return self.counts()
            case "post":
                msg = self.post(
                    body["channel"],
                    body["user"],
                    body["text"],
                    reply_to=body.get("reply_to"),
                    mod=body.get("mod", False),
                )
                return asdict(msg)
            case "refuse":
                self.refuse(str(body.get("kind", "msg_ratelimit")), int(body.get("times", 1)))
                return {}
            case "expire_tokens":
                self.expire_tokens()
                return {}
            case "ping":
                self.ping()
                return {}
            case "reconnect":
                self.reconnect()
                return {}
            case "drop":
                self.drop()
                return {}
            case "wait":
                # {"counter": "bot_messages", "at_least": 2, "timeout": 10}: a long poll for another
                # process, answered when the counter gets there.
                name = str(body["counter"])
                low = int(body.get("at_least", 1))

                def reached() -> bool:
                    return self.counts().get(name, 0) >= low

                await self.wait_for(reached, timeout=float(body.get("timeout", 10)))
                return self.counts()
        raise ValueError(f"unknown test action {action!r}")


# ---- CLI ---------------------------------------------------------------------------------------
def fake_twitch_handler(args: argparse.Namespace) -> int:
    """Run the fake until SIGINT/SIGTERM; the first line printed names its addresses."""

    def make() -> FakeTwitch:
        return FakeTwitch(
            host=args.host,
            irc_port=args.irc_port,
            port=args.port,
            token=args.token,
            bot_name=args.bot_name,
            refresh_token=args.refresh_token,
            client_id=args.client_id,
            client_secret=args.client_secret,
        )

    def announce(fake: FakeServer) -> str:
        assert isinstance(fake, FakeTwitch)
        return (
            f"fake-twitch listening: gateway_url {fake.gateway_url} api_base {fake.api_url} "
            f"(test API {fake.api_url}/_fake/)"
        )

    return serve_until_stopped("twitch", make, announce, args.host)
