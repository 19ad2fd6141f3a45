"""Telegram end to end: fake Telegram → ``gateway:telegram:main`` (real telethon) → supervisor →
channel → fake model → Telegram."""

from __future__ import annotations

import os
import signal
import stat
from pathlib import Path

from spacebot.ipc.messages import ProcState
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.fakes.telegram import FakeTelegram
from spacebot.messaging.telegram_adapter import session_path
from spacebot.testing import ChatSystem

WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""


GW = "gateway:telegram:main"


def _system(root: Path, llm: FakeLLM, tg: FakeTelegram, token: str = "") -> ChatSystem:
    sections = {
        "messaging": {
            "telegram": [
                {
                    "name": "main",
                    "token": "env:TEST_TELEGRAM_TOKEN",
                    "api_id": 12345,
                    "api_hash": "fake-api-hash",
                    "gateway_url": f"tcp://127.0.0.1:{tg.port}",
                }
            ]
        },
        "bindings": [{"agent": "main", "platform": "telegram"}],
    }
    # Connecting to a platform is slower than the other test processes' start-up.
    system = ChatSystem(root, llm, sections_extra=sections, gateway={"ready_timeout": 60.0})  # type: ignore[arg-type]
    system.sup.env["TEST_TELEGRAM_TOKEN"] = token or tg.bot_token
    session = session_path(root / "home", "main")
    session.parent.mkdir(parents=True, exist_ok=True)
    tg.write_session(str(session))  # the key a first login against Telegram would have left
    return system


def _reply(content: str) -> list[FakeToolCall]:
    return [FakeToolCall("reply", {"content": content})]


async def test_a_mention_in_a_group_gets_exactly_one_reply_there(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeTelegram(privacy=False) as tg:
        llm.add(tool_calls=_reply("hello from the agent"))
        ana = tg.add_user("Ana", username="ana")
        group = tg.add_group("Team")
        session = session_path(short_tmp / "home", "main")
        async with _system(short_tmp, llm, tg):
            await tg.wait_for(lambda: tg.connected == 1, timeout=WAIT)
            tg.post(group.id, ana.id, "no mention: not for the bot")
            tg.post(group.id, ana.id, "@spacebot_bot hi there")
            await tg.wait_for(
                lambda: any(m.text == "hello from the agent" for m in tg.bot_messages()), timeout=WAIT
            )
            assert [(m.chat, m.text) for m in tg.bot_messages()] == [(group.id, "hello from the agent")]
            [request] = llm.requests  # the message without a mention was dropped, not answered
            assert "@spacebot_bot hi there" in request.conversation.last_user
            assert "no mention" not in request.conversation.last_user
        assert stat.S_IMODE(session.stat().st_mode) == 0o600


async def test_a_message_sent_while_the_gateway_was_down_is_answered_once(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeTelegram() as tg:
        llm.add(user="first", tool_calls=_reply("answer one"))
        llm.add(user="second", tool_calls=_reply("answer two"))
        ana = tg.add_user("Ana")
        group = tg.add_group("Team")
        async with _system(short_tmp, llm, tg) as system:
            await tg.wait_for(lambda: tg.connected == 1, timeout=WAIT)
            tg.post(group.id, ana.id, "@spacebot_bot first")
            await tg.wait_for(lambda: [m.text for m in tg.bot_messages()] == ["answer one"], timeout=WAIT)
            os.kill((await system.sup.info(GW)).pid, signal.SIGKILL)
            await tg.wait_for(lambda: tg.connected == 0, timeout=WAIT)
            tg.post(group.id, ana.id, "@spacebot_bot second")  # only a catch-up can bring it
            shown = ["answer one", "answer two"]
            await tg.wait_for(lambda: [m.text for m in tg.bot_messages(group.id)] == shown, timeout=WAIT)
            assert len(llm.requests) == 2
            assert tg.calls["updates.getDifference"] >= 1


async def test_a_rejected_token_fails_with_the_reason_and_is_not_restarted(short_tmp: Path) -> None:
    async with FakeLLM() as llm, FakeTelegram() as tg:
        system = _system(short_tmp, llm, tg, token=f"{tg.bot.id}:not-the-token")
        async with system:
            row = await system.sup.wait_state(GW, ProcState.FAILED, timeout=WAIT)
            assert row.task.startswith("failed: telegram token rejected"), row.task
            assert row.restarts == 0
