"""The ``spacebot fake-*`` commands: their arguments, with each fake imported only when it runs.

``spacebot`` builds its whole parser for every command, ``spacebot run`` included; importing the
fakes there (telethon, the Discord gateway, …) cost every start about half a second.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

TELEGRAM_BOT_TOKEN = "7000001:fake-telegram-bot-token"
"""The fake Telegram's default bot token (``BOT_ID`` of :mod:`.telegram.server`; a test checks
they agree)."""


def _later(module: str, handler: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        found: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), handler)
        return found(args)

    return run


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``fake-discord``, ``fake-slack``, ``fake-telegram`` and ``fake-twitch``."""
    p = subparsers.add_parser(
        "fake-discord", help="run the loopback fake of Discord (REST + gateway) until SIGTERM"
    )
    p.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    p.add_argument("--token", default="fake-bot-token", help="the only bot token accepted")
    p.add_argument("--heartbeat-ms", type=int, default=41250, help="gateway heartbeat interval")
    p.add_argument("--guild", default="Fake Guild", help="name of the seeded guild (with #general)")
    p.add_argument("--person", default="alice", help="name of the seeded person in that guild")
    p.set_defaults(func=_later("spacebot.messaging.fakes.discord", "fake_discord_handler"))

    p = subparsers.add_parser("fake-slack", help="run the fake Slack (Web API + Socket Mode) on loopback")
    p.add_argument("--port", type=int, default=0, help="port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--bot-token", default="xoxb-fake-bot-token", help="the bot token the Web API accepts")
    p.add_argument("--app-token", default="xapp-fake-app-token", help="the app-level token for Socket Mode")
    p.add_argument(
        "--ack-timeout", type=float, default=3.0, help="seconds before an unacknowledged event is redelivered"
    )
    p.set_defaults(func=_later("spacebot.messaging.fakes.slack", "fake_slack_handler"))

    p = subparsers.add_parser(
        "fake-telegram", help="run the fake Telegram (MTProto for telethon) on loopback"
    )
    p.add_argument("--port", type=int, default=0, help="MTProto port (0 picks a free one)")
    p.add_argument("--api-port", type=int, default=0, help="test API port (0 picks a free one)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--bot-token", default=TELEGRAM_BOT_TOKEN, help="the bot token the fake accepts")
    p.add_argument("--bot-username", default="spacebot_bot", help="the bot's @username")
    p.add_argument(
        "--session",
        default="",
        help="write a telethon session file (…/gateways/telegram-<instance>.session) holding the fake's key",
    )
    p.add_argument("--no-privacy", action="store_true", help="show the bot every group message")
    p.set_defaults(func=_later("spacebot.messaging.fakes.telegram.testapi", "fake_telegram_handler"))

    p = subparsers.add_parser(
        "fake-twitch", help="run the fake Twitch chat (IRC + token endpoint) on loopback"
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--irc-port", type=int, default=0, help="IRC port (0 picks a free one)")
    p.add_argument("--port", type=int, default=0, help="HTTP port: token endpoint and test API (0: free)")
    p.add_argument("--token", default="fake-twitch-token", help="the access token IRC accepts")
    p.add_argument("--bot-name", default="spacebot", help="the bot's login (NICK)")
    p.add_argument("--refresh-token", default="fake-refresh-token")
    p.add_argument("--client-id", default="fake-client-id")
    p.add_argument("--client-secret", default="fake-client-secret")
    p.set_defaults(func=_later("spacebot.messaging.fakes.twitch", "fake_twitch_handler"))
