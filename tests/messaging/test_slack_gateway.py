"""Slack end to end: fake Slack → ``gateway:slack:main`` → supervisor → channel → fake model → Slack."""

from __future__ import annotations

from pathlib import Path

from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.fakes.slack import FakeSlack
from spacebot.testing import ChatSystem

WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""


async def test_a_mention_in_a_channel_gets_exactly_one_reply_there(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeSlack(ack_timeout=WAIT) as slack:
        llm.add(tool_calls=[FakeToolCall("reply", {"content": "hello from the agent"})])
        slack.add_user("ada", id="U0ADA")
        slack.add_channel("general", id="C0GEN")
        slack.add_channel("random", id="C0RND")
        sections = {
            "messaging": {
                "slack": [
                    {
                        "name": "main",
                        "app_token": slack.app_token,
                        "bot_token": slack.bot_token,
                        "api_base": slack.api_url,
                    }
                ]
            },
            "bindings": [{"agent": "main", "platform": "slack"}],
        }
        async with ChatSystem(short_tmp, llm, sections_extra=sections):  # type: ignore[arg-type]
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            slack.post("C0RND", "U0ADA", "no mention: not for the bot")
            slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> hi there")
            await slack.wait_for(
                lambda: any(m.text == "hello from the agent" for m in slack.bot_messages()), timeout=WAIT
            )
            await slack.wait_for(lambda: not slack.unacked, timeout=WAIT)
            shown = [m for m in slack.bot_messages() if not m.deleted]
            assert [(m.channel, m.text, m.thread_ts) for m in shown] == [
                ("C0GEN", "hello from the agent", None)
            ]
            [request] = llm.requests  # the message without a mention was dropped, not answered
            assert "@spacebot hi there" in request.conversation.last_user  # the mention, rendered
            assert "no mention" not in request.conversation.last_user
            assert slack.redeliveries == 0
