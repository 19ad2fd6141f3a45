"""``spacebot doctor``'s platform token checks, against the loopback fakes of Discord, Slack and
Twitch (each instance's ``api_base`` points at its fake, as the gateways' tests do)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from spacebot.messaging.fakes.discord import FakeDiscord
from spacebot.messaging.fakes.slack import FakeSlack
from spacebot.messaging.fakes.twitch import FakeTwitch
from tests.test_doctor import SETTINGS, _doctor, _failed


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir(mode=0o700)
    return path


PLATFORMS = """
[messaging]
default_agent = "main"
[[messaging.discord]]
token = "{discord}"
api_base = "{discord_api}"
[[messaging.slack]]
bot_token = "{slack}"
app_token = "{slack_app}"
api_base = "{slack_api}"
[[messaging.twitch]]
token = "{twitch}"
api_base = "{twitch_api}"
bot_name = "spacebot"
channels = ["somechannel"]
"""


async def _run(home: Path, **tokens: str) -> tuple[list[str], str, int]:
    async with FakeDiscord() as discord, FakeSlack() as slack, FakeTwitch(bot_name="spacebot") as twitch:
        values = {
            "discord": discord.token,
            "slack": slack.bot_token,
            "slack_app": slack.app_token,
            "twitch": twitch.token,
            **tokens,
        }
        config = SETTINGS.format(port=0) + PLATFORMS.format(
            discord_api=discord.api_url, slack_api=slack.api_url, twitch_api=twitch.api_url, **values
        )
        run = await asyncio.to_thread(_doctor, home, config, "--json")
    report = json.loads(run.out)
    lines = [f"{c['status']} {c['name']}: {c['detail']} | {c['fix']}" for c in report["checks"]]
    return [line for line in lines if " token: " in line], run.out, run.code


async def test_accepted_platform_tokens_pass(home: Path) -> None:
    lines, out, _code = await _run(home)
    by_name = {line.split(":")[0]: line for line in lines}
    assert by_name["ok discord main token"].startswith(
        "ok discord main token: accepted as spacebot by http"
    ), out
    assert "/users/@me" in by_name["ok discord main token"]
    assert "accepted as spacebot in Fake Team" in by_name["ok slack main token"], out
    assert "auth.test" in by_name["ok slack main token"]
    assert "Socket Mode opens with it" in by_name["ok slack main app token"], out
    assert "apps.connections.open" in by_name["ok slack main app token"]
    assert "accepted as spacebot by" in by_name["ok twitch main token"], out
    assert "/oauth2/validate" in by_name["ok twitch main token"]


async def test_rejected_platform_tokens_fail_with_the_fix(home: Path) -> None:
    lines, out, code = await _run(
        home, discord="not-the-token", slack="xoxb-wrong", slack_app="xapp-wrong", twitch="oauth:wrong"
    )
    assert code == 1, out
    failed = [line for line in lines if line.startswith("fail ")]
    assert len(failed) == 4, lines
    app = next(f for f in failed if f.startswith("fail slack main app token"))
    assert "apps.connections.open" in app and "invalid_auth" in app and "xapp-" in app, app
    failed.remove(app)
    discord, slack, twitch = (
        next(f for f in failed if f.startswith(f"fail {p} ")) for p in ("discord", "slack", "twitch")
    )
    assert "rejected by" in discord and "(401)" in discord and "Reset Token" in discord, discord
    assert "invalid_auth" in slack and "xoxb-" in slack, slack
    assert "(401)" in twitch and "new chat token" in twitch, twitch


def test_the_text_output_marks_a_rejected_token(home: Path) -> None:
    async def run() -> list[str]:
        async with FakeDiscord() as discord:
            config = SETTINGS.format(port=0) + (
                f'[messaging]\ndefault_agent = "main"\n[[messaging.discord]]\ntoken = "wrong"\n'
                f'api_base = "{discord.api_url}"\n'
            )
            done = await asyncio.to_thread(_doctor, home, config)
        assert done.code == 1, done
        return _failed(done)

    failed = asyncio.run(run())
    assert any(line.startswith("✘ discord main token: rejected by ") for line in failed), failed
