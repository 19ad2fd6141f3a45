"""What ``spacebot`` loads before it knows which command runs."""

from __future__ import annotations

import subprocess
import sys

from spacebot.messaging.fakes.commands import TELEGRAM_BOT_TOKEN
from spacebot.messaging.fakes.telegram import FakeTelegram


def test_building_the_parser_imports_no_fake_and_no_platform_client() -> None:
    # A fresh interpreter: this test process has long imported everything.
    probe = (
        "import sys\n"
        "from spacebot.cli.main import build_parser\n"
        "build_parser()\n"
        "heavy = ('telethon', 'discord', 'slack_sdk', 'spacebot.messaging.fakes.discord',\n"
        "         'spacebot.messaging.fakes.slack', 'spacebot.messaging.fakes.telegram',\n"
        "         'spacebot.messaging.fakes.twitch')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_fake_commands_parse_and_point_at_their_handlers() -> None:
    from spacebot.cli.main import build_parser

    parser = build_parser()
    for argv in (
        ["fake-discord", "--port", "5"],
        ["fake-slack", "--ack-timeout", "1.5"],
        ["fake-telegram", "--no-privacy"],
        ["fake-twitch", "--irc-port", "6"],
    ):
        args = parser.parse_args(argv)
        assert callable(args.func), argv


def test_the_fake_telegram_default_token_is_the_servers() -> None:
    assert FakeTelegram().bot_token == TELEGRAM_BOT_TOKEN
