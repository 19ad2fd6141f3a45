"""Slack end to end, the harder cases: an event redelivered because it was acknowledged late,
threads the bot takes part in, and direct messages. The real slack_sdk in ``gateway:slack:main``
talks to the loopback fake; a real supervisor, memory and conversation processes answer from a
scripted model."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from spacebot.ipc import ids
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import Event, Notice
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.fakes.slack import FakeSlack
from spacebot.testing import ChatSystem

WAIT = 90.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
GW = "gateway:slack:main"


def _reply(content: str) -> list[FakeToolCall]:
    return [FakeToolCall("reply", {"content": content})]


def _system(root: Path, llm: FakeLLM, slack: FakeSlack, **instance: Any) -> ChatSystem:
    inst = {
        "name": "main",
        "app_token": slack.app_token,
        "bot_token": slack.bot_token,
        "api_base": slack.api_url,
        "stream_edit_interval": 0.2,
        **instance,
    }
    sections = {
        "messaging": {"slack": [inst]},
        "bindings": [
            {"agent": "main", "platform": "slack", "dms": True},
            {"agent": "main", "platform": "slack"},
        ],
    }
    # Connecting to a platform is slower than the other test processes' start-up.
    return ChatSystem(root, llm, sections_extra=sections, gateway={"ready_timeout": 60.0})


def _shown(slack: FakeSlack, channel: str) -> list[tuple[str, str | None]]:
    """``(text, thread_ts)`` of the bot's messages in ``channel`` that were not deleted."""
    return [(m.text, m.thread_ts) for m in slack.bot_messages(channel) if not m.deleted]


@contextlib.asynccontextmanager
async def _events(system: ChatSystem, *topics: str) -> AsyncIterator[EventStream]:
    assert system.sup.ctl is not None
    stream = await system.sup.ctl.events(*topics)
    try:
        yield stream
    finally:
        stream.close()


def _dropped(reason: str) -> Callable[[Event], bool]:
    def match(event: Event) -> bool:
        body = event.body
        return isinstance(body, Notice) and body.text == "dropped" and body.fields.get("reason") == reason

    return match


async def test_an_event_acknowledged_late_is_redelivered_and_answered_once(short_tmp: Path) -> None:
    # The gateway acknowledges an event once it stored the message. Here storing waits on a
    # rate-limited users.info (Retry-After: 2 s) far beyond the fake's acknowledgement deadline,
    # so the fake delivers the same event again, and again, while the first is still handled.
    async with FakeLLM() as llm, FakeSlack(ack_timeout=0.5) as slack:
        llm.add(user="late", tool_calls=_reply("Answered once."))
        llm.add(user="settle", tool_calls=_reply("Settled."))
        slack.add_user("ada", id="U0ADA")
        slack.add_channel("general", id="C0GEN")
        async with _system(short_tmp, llm, slack):
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            slack.rate_limit("users.info", times=1, retry_after=2)
            slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> a late one")
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == [("Answered once.", None)], timeout=WAIT)
            await slack.wait_for(lambda: not slack.unacked, timeout=WAIT)
            assert slack.ratelimited["users.info"] == 1
            assert slack.redeliveries >= 1
            # A later question is answered after anything the redeliveries could have started.
            slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> settle")
            want = [("Answered once.", None), ("Settled.", None)]
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == want, timeout=WAIT)
            assert len(llm.requests) == 2
            assert len(slack.bot_messages("C0GEN")) == 2


async def test_a_reply_in_the_bots_thread_is_answered_in_the_thread(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeSlack(ack_timeout=WAIT) as slack:
        llm.add(user="kick off", tool_calls=_reply("Started."))
        llm.add(user="how long", tool_calls=_reply("About an hour."))
        llm.add(user="thanks", tool_calls=_reply("You're welcome."))
        slack.add_user("ada", id="U0ADA")
        slack.add_user("ben", id="U0BEN")
        slack.add_channel("general", id="C0GEN")
        async with _system(short_tmp, llm, slack) as system:
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            slack.post("C0GEN", "U0ADA", f"<@{slack.bot_user}> kick off the build")
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == [("Started.", None)], timeout=WAIT)
            parent = slack.bot_messages("C0GEN")[0].ts
            async with _events(system, f"gateway.{GW}.dropped") as dropped:
                # A thread the bot has no part in still needs a mention...
                other = slack.post("C0GEN", "U0BEN", "lunch anyone?")
                slack.post("C0GEN", "U0ADA", "how long, in someone else's thread", thread_ts=other.ts)
                await dropped.wait_for(_dropped("needs_mention"), timeout=WAIT)
                await dropped.wait_for(_dropped("needs_mention"), timeout=WAIT)
            # ...a reply in the bot's own thread does not, and is answered there.
            slack.post("C0GEN", "U0ADA", "how long will it take?", thread_ts=parent)
            want = [("Started.", None), ("About an hour.", parent)]
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == want, timeout=WAIT)
            # The bot has posted in the thread: the next reply there is for it too.
            slack.post("C0GEN", "U0BEN", "thanks!", thread_ts=parent)
            want.append(("You're welcome.", parent))
            await slack.wait_for(lambda: _shown(slack, "C0GEN") == want, timeout=WAIT)
            assert len(llm.requests) == 3
            assert "how long will it take?" in llm.requests[1].conversation.last_user
            thread = ids.channel("main", f"slack:{slack.team_id}:C0GEN:{parent}")
            running = {p.id for p in (await system.sup.status()).processes}
            assert thread in running, sorted(running)


async def test_direct_messages_are_answered_only_from_allowed_users(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeSlack(ack_timeout=WAIT) as slack:
        llm.add(user="hello from ada", tool_calls=_reply("Hello Ada."))
        llm.add(user="again from ada", tool_calls=_reply("Again, Ada."))
        slack.add_user("ada", id="U0ADA")
        slack.add_user("ben", id="U0BEN")
        slack.add_channel("U0ADA", kind="im", id="D0ADA", user="U0ADA")
        slack.add_channel("U0BEN", kind="im", id="D0BEN", user="U0BEN")
        async with _system(short_tmp, llm, slack, dm_allowed_users=["U0ADA"]) as system:
            await slack.wait_for(lambda: slack.connections == 1, timeout=WAIT)
            async with _events(system, f"gateway.{GW}.dropped") as dropped:
                slack.post("D0BEN", "U0BEN", "ben's secret plan, hello from ben")
                await dropped.wait_for(_dropped("dm_not_allowed"), timeout=WAIT)
            slack.post("D0ADA", "U0ADA", "hello from ada")
            await slack.wait_for(lambda: _shown(slack, "D0ADA") == [("Hello Ada.", None)], timeout=WAIT)
            slack.post("D0ADA", "U0ADA", "again from ada")
            await slack.wait_for(
                lambda: _shown(slack, "D0ADA") == [("Hello Ada.", None), ("Again, Ada.", None)], timeout=WAIT
            )
            assert _shown(slack, "D0BEN") == []
            assert len(llm.requests) == 2
            assert not any("secret plan" in str(r.body) for r in llm.requests)
            running = {p.id for p in (await system.sup.status()).processes}
            assert ids.channel("main", f"slack:{slack.team_id}:D0ADA") in running
            assert ids.channel("main", f"slack:{slack.team_id}:D0BEN") not in running
