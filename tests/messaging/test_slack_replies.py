"""Slack end to end, what the reply tool can ask for beyond text: a thread, mentions, a card. The
real slack_sdk in ``gateway:slack:main`` talks to the loopback fake; a real supervisor, memory and
conversation processes answer from a scripted model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from spacebot.ipc.messages import KillRequest, Kind, Notice, ProcState
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.fakes.slack import FakeSlack
from tests.channel.test_delegation import GatedLLM
from tests.messaging.test_slack_e2e import GW, WAIT, _reply, _shown, _system


def _call(**args: Any) -> list[FakeToolCall]:
    return [FakeToolCall("reply", args)]


async def test_a_reply_with_a_thread_name_is_posted_in_thread_and_the_thread_is_a_conversation(
    short_tmp: Path,
) -> None:
    async with FakeLLM() as llm, FakeSlack(ack_timeout=WAIT) as slack:
        llm.add(
            user=r"\(new\) ada: @spacebot kick off", tool_calls=_call(content="Started.", thread_name="Build")
        )
        llm.add(user=r"\(new\) ada: how long", tool_calls=_reply("About an hour."))
        slack.add_user("ada", id="U0ADA")
        slack.add_channel("general", id="C0GEN")
        async with _system(short_tmp, llm, slack):
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            asked = slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> kick off the build")
            # In thread on the message answered; nothing left in the channel itself.
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == [("Started.", asked.ts)], timeout=WAIT)
            # A reply in the thread needs no mention (the bot is in it) and is a conversation whose
            # history starts with the message the thread hangs on.
            slack.post("C0GEN", "U0ADA", "how long will it take?", thread_ts=asked.ts)
            want = [("Started.", asked.ts), ("About an hour.", asked.ts)]
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == want, timeout=WAIT)
            assert len(llm.requests) == 2
            seen = json.dumps(llm.requests[-1].body)
            assert "kick off the build" in seen and "Started." in seen, seen
            assert "(new) ada: @spacebot kick off" not in llm.requests[-1].conversation.last_user


async def test_at_names_become_user_mentions_and_channel_wide_ones_stay_text(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeSlack(ack_timeout=WAIT) as slack:
        text = "Hi @ben and @ada! <!channel> <!here> @here @nobody"
        llm.add(user=r"\(new\) ada: .*greet", tool_calls=_reply(text))
        slack.add_user("ada", id="U0ADA")
        slack.add_user("ben", id="U0BEN")
        slack.add_channel("general", id="C0GEN")
        async with _system(short_tmp, llm, slack):
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            slack.post("C0GEN", "U0BEN", "lunch, anyone?")  # not for the bot; ben can be named
            slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> greet everyone")
            want = "Hi <@U0BEN> and <@U0ADA>! &lt;!channel&gt; &lt;!here&gt; @here @nobody"
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == [(want, None)], timeout=WAIT)


async def test_a_card_is_shown_as_blocks_with_a_plain_text_fallback(short_tmp: Path) -> None:
    card = {
        "title": "Build 42",
        "text": "All <green> & fine.",
        "fields": [{"name": "Tests", "value": "120 passed"}],
        "url": "https://ci.example/42",
    }
    async with FakeLLM() as llm, FakeSlack(ack_timeout=WAIT) as slack:
        llm.add(user="report", tool_calls=_call(content="Build report", card=card))
        slack.add_user("ada", id="U0ADA")
        slack.add_channel("general", id="C0GEN")
        async with _system(short_tmp, llm, slack):
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> report")
            await slack.wait_for(
                lambda: any(m.blocks for m in slack.bot_messages("C0GEN") if not m.deleted), timeout=WAIT
            )
            [reply] = [m for m in slack.bot_messages("C0GEN") if not m.deleted]
            assert reply.blocks == [
                {"type": "section", "text": {"type": "mrkdwn", "text": "Build report"}},
                {"type": "header", "text": {"type": "plain_text", "text": "Build 42", "emoji": True}},
                {
                    "type": "section",
                    "text": {
                        "type": "mrkdwn",
                        "text": "All &lt;green&gt; &amp; fine.\n<https://ci.example/42>",
                    },
                },
                {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Tests*\n120 passed"}]},
            ]
            # The text is what notifications and clients without blocks show: the reply, then the card.
            assert reply.text.startswith(
                "Build report\n\n**Build 42**\nhttps://ci.example/42\nAll &lt;green&gt;"
            )


async def test_a_card_in_a_thread_stored_while_the_gateway_was_down_is_posted_so_after_restart(
    short_tmp: Path,
) -> None:
    card = {"title": "Build 42", "fields": [{"name": "Tests", "value": "120 passed"}]}
    async with GatedLLM() as llm, FakeSlack(ack_timeout=WAIT) as slack:
        llm.add(
            name="held", user="report", tool_calls=_call(content="Report", card=card, thread_name="Build")
        )
        held = llm.gate("held")
        slack.add_user("ada", id="U0ADA")
        slack.add_channel("general", id="C0GEN")
        async with _system(short_tmp, llm, slack) as system:
            assert system.sup.ctl is not None
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            turns = await system.sup.ctl.events("channel.")
            try:
                asked = slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> report")
                await llm.reached("held")
                # Stored while the gateway is stopped: only storage keeps the card and the thread.
                await system.sup.ctl.call(KillRequest(GW, restart=False), timeout=WAIT)
                await system.sup.wait_state(GW, ProcState.EXITED, timeout=WAIT)
                held.set()
                await turns.wait_for(
                    lambda e: isinstance(e.body, Notice) and e.body.text == "turn", timeout=WAIT
                )
            finally:
                turns.close()
            assert slack.bot_messages("C0GEN") == []
            await system.sup.spawn(
                "spacebot.messaging.gateway_core:run",
                kind=Kind.GATEWAY,
                id=GW,
                args={"platform": "slack", "instance": "main"},
                timeout=WAIT,
            )
            await slack.wait_for(lambda: bool(slack.bot_messages("C0GEN")), timeout=WAIT)
            [reply] = [m for m in slack.bot_messages("C0GEN") if not m.deleted]
            assert reply.thread_ts == asked.ts
            assert reply.blocks == [
                {"type": "section", "text": {"type": "mrkdwn", "text": "Report"}},
                {"type": "header", "text": {"type": "plain_text", "text": "Build 42", "emoji": True}},
                {"type": "section", "fields": [{"type": "mrkdwn", "text": "*Tests*\n120 passed"}]},
            ]
            assert len(llm.requests) == 1
