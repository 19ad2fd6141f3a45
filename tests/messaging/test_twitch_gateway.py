"""Twitch end to end: fake Twitch chat → ``gateway:twitch:main`` → supervisor → channel → fake
model → Twitch."""

from __future__ import annotations

from pathlib import Path

from spacebot.ipc.messages import ProcState
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.fakes.twitch import FakeTwitch
from spacebot.testing import ChatSystem

WAIT = 90.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
GW = "gateway:twitch:main"


def _system(root: Path, llm: FakeLLM, twitch: FakeTwitch, token: str) -> ChatSystem:
    sections = {
        "messaging": {
            "twitch": [
                {
                    "name": "main",
                    "token": "env:TEST_TWITCH_TOKEN",
                    "bot_name": twitch.bot_name,
                    "channels": ["general"],
                    "trigger_prefix": "!ask",
                    "gateway_url": twitch.gateway_url,
                    "api_base": twitch.api_url,
                }
            ]
        },
        "bindings": [{"agent": "main", "platform": "twitch"}],
    }
    # Connecting to a platform is slower than the other test processes' start-up.
    system = ChatSystem(root, llm, sections_extra=sections, gateway={"ready_timeout": 60.0})  # type: ignore[arg-type]
    system.sup.env["TEST_TWITCH_TOKEN"] = token
    return system


async def test_a_prefixed_message_gets_one_reply_and_others_none(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeTwitch() as twitch:
        llm.add(user="deploy", times=1, tool_calls=[FakeToolCall("reply", {"content": "Deploying now."})])
        llm.add(user="status", times=1, tool_calls=[FakeToolCall("reply", {"content": "All green."})])
        async with _system(short_tmp, llm, twitch, twitch.token):
            await twitch.wait_for(lambda: twitch.joined("general"), timeout=WAIT)
            asked = twitch.post("general", "ana", "!ask please deploy")
            await twitch.wait_for(lambda: twitch.bot_messages("general"), timeout=WAIT)
            twitch.post("general", "bob", "deploy talk without the prefix: not for the bot")
            later = twitch.post("general", "ana", "!ask status?")
            # The reply to the later message proves the one between was dropped, not still pending.
            await twitch.wait_for(lambda: len(twitch.bot_messages("general")) == 2, timeout=WAIT)
            shown = twitch.bot_messages("general")
            assert [s.text for s in shown] == ["Deploying now.", "All green."]
            assert [s.tags.get("reply-parent-msg-id") for s in shown] == [asked.id, later.id]
            assert len(llm.requests) == 2
            # Asked without the trigger prefix; the message without it was never stored.
            first, second = (r.conversation.last_user for r in llm.requests)
            assert "(new) Ana: please deploy" in first and "(new) Ana: status?" in second
            assert "without the prefix" not in first + second


async def test_a_refused_token_without_renewal_fails_the_gateway_with_the_reason(short_tmp: Path) -> None:
    async with (
        FakeLLM() as llm,
        FakeTwitch() as twitch,
        _system(short_tmp, llm, twitch, "not-the-token") as system,
    ):
        row = await system.sup.wait_state(GW, ProcState.FAILED, timeout=WAIT)
        assert row.task.startswith("failed: twitch token rejected"), row.task
        assert "Login authentication failed" in row.task
        assert row.restarts == 0 and twitch.login_failures == 1
