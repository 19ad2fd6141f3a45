"""The fake Telegram's JSON test API (``/_fake/<action>`` over HTTP) and ``spacebot fake-telegram``.

Tests in the fake's event loop call :class:`~spacebot.messaging.fakes.telegram.FakeTelegram`'s
methods; a fake running in another process (``spacebot fake-telegram``) is driven through this
API instead: ``POST /_fake/users {"name": "Ana"}``, ``POST /_fake/post {"chat": ..., "user": ...,
"text": ...}``, ``POST /_fake/wait {"counter": "bot_messages", "at_least": 1}``...
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import signal
import socket
import sys
from typing import Any

from aiohttp import web

from spacebot.messaging.fakes.base import json_action
from spacebot.messaging.fakes.telegram.server import FakeTelegram


class TestApi:
    """``/_fake/...`` for one fake, on its own HTTP port."""

    __test__ = False  # not a pytest class

    def __init__(self, fake: FakeTelegram, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake, self.host, self.port = fake, host, port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/_fake/"

    async def start(self) -> int:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/_fake/{action}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        return await json_action(request, self.action, self.fake.counts)

    async def action(self, action: str, body: dict[str, Any]) -> Any:
        fake = self.fake
        match action:
            case "state":
                return fake.state()
            case "counts":
                return fake.counts()
            case "users":
                return fake.add_user(
                    body["name"], username=body.get("username", ""), id=body.get("id")
                ).info()
            case "groups":
                return fake.add_group(body["title"]).info()
            case "supergroups":
                return fake.add_supergroup(body["title"], forum=bool(body.get("forum", False))).info()
            case "topics":
                return {"topic": fake.add_topic(int(body["chat"]), body["title"])}
            case "post":
                file = body.get("file")
                msg = fake.post(
                    int(body["chat"]),
                    int(body["user"]),
                    body["text"],
                    reply_to=body.get("reply_to"),
                    topic=body.get("topic"),
                    file=(
                        file["name"],
                        base64.b64decode(file["data"]),
                        file.get("mime", "application/octet-stream"),
                    )
                    if file
                    else None,
                )
                return msg.info()
            case "edit":
                return fake.edit(int(body["chat"]), int(body["id"]), body["text"]).info()
            case "delete":
                return fake.delete(int(body["chat"]), int(body["id"])).info()
            case "bot_messages":
                chat = body.get("chat")
                return [m.info() for m in fake.bot_messages(int(chat) if chat is not None else None)]
            case "flood_wait":
                fake.flood_wait(body["method"], int(body["seconds"]), int(body.get("times", 1)))
                return {}
            case "drop":
                return {"dropped": fake.drop()}
            case "session":
                if body.get("path"):
                    fake.write_session(str(body["path"]))
                return {"string": fake.session().save()}
            case "wait":
                # {"counter": "bot_messages", "at_least": 2, "timeout": 10} (or "at_most": 0): a
                # long poll for another process, answered when the counter gets there.
                name = str(body["counter"])
                low, high = int(body.get("at_least", 1)), body.get("at_most")

                def reached() -> bool:
                    value = fake.counts().get(name, 0)
                    return value >= low and (high is None or value <= int(high))

                await fake.wait_for(reached, timeout=float(body.get("timeout", 10)))
                return fake.counts()
        raise ValueError(f"unknown test action {action!r}")


# ---- ``spacebot fake-telegram`` -------------------------------------------------------------------


def fake_telegram_handler(args: argparse.Namespace) -> int:
    """Run the fake until SIGINT/SIGTERM; the first line printed names its addresses."""

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with FakeTelegram(
            host=args.host,
            port=args.port,
            bot_token=args.bot_token,
            bot_username=args.bot_username,
            privacy=not args.no_privacy,
        ) as fake:
            api = TestApi(fake, args.host, args.api_port)
            await api.start()
            if args.session:
                fake.write_session(args.session)
            print(
                f"fake-telegram listening: MTProto {args.host}:{fake.port} (gateway_url "
                f"tcp://{args.host}:{fake.port}), bot token {fake.bot_token}, test API {api.url}",
                flush=True,
            )
            try:
                await stop.wait()
            finally:
                await api.stop()

    try:
        asyncio.run(serve())
    except OSError as exc:
        print(f"spacebot fake-telegram: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
