"""Webhook end to end: HTTP → ``gateway:webhook:main`` → supervisor → channel → fake model →
``GET /poll``, with real processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import KillRequest, Notice
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.messaging.ports import listening_port
from spacebot.testing import ChatSystem

WAIT = 90.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
GW = "gateway:webhook:main"
CONV = "webhook:main:lights"


def _reply(content: str) -> list[FakeToolCall]:
    return [FakeToolCall("reply", {"content": content})]


def _system(root: Path, llm: FakeLLM) -> ChatSystem:
    sections: dict[str, Any] = {
        "messaging": {"webhook": [{"name": "main", "port": 0}]},
        "bindings": [{"agent": "main", "platform": "webhook"}],
    }
    return ChatSystem(root, llm, sections_extra=sections, gateway={"ready_timeout": 60.0})


async def _url(system: ChatSystem) -> str:
    row = await system.sup.info(GW)
    port = await asyncio.to_thread(listening_port, row.pid) if row.pid else 0
    assert port, f"{GW} is not listening ({row.state.value}): {system.sup.log_tail()}"
    return f"http://127.0.0.1:{port}"


async def _send(http: aiohttp.ClientSession, url: str, text: str, key: str) -> dict[str, Any]:
    body = {
        "conversation_id": "lights",
        "sender_id": "home-assistant",
        "sender_name": "Home Assistant",
        "message": text,
        "idempotency_key": key,
    }
    async with http.post(f"{url}/send", json=body) as resp:
        answer: dict[str, Any] = await resp.json()
        assert resp.status == 202, answer
    return answer


async def _poll_one(http: aiohttp.ClientSession, url: str, after: int) -> dict[str, Any]:
    """The next poll page after ``after`` that has replies (each poll waits up to its timeout)."""
    async with asyncio.timeout(WAIT):
        while True:
            params = {"after": str(after), "timeout": "30"}
            async with http.get(f"{url}/poll/lights", params=params) as resp:
                page: dict[str, Any] = await resp.json()
                assert resp.status == 200, page
            if page["messages"]:
                return page


async def test_a_send_gets_exactly_one_reply_and_a_repeated_send_none_more(short_tmp: Path) -> None:
    async with FakeLLM() as llm:
        llm.add(user="lights off", tool_calls=_reply("Turning the lights off."))
        llm.add(user="lights on", tool_calls=_reply("Turning the lights on."))
        async with _system(short_tmp, llm) as system, aiohttp.ClientSession() as http:
            url = await _url(system)
            answer = await _send(http, url, "lights off", "evt-1")
            assert answer == {"message_id": "evt-1", "conversation": CONV}
            page = await _poll_one(http, url, 0)
            assert [m["text"] for m in page["messages"]] == ["Turning the lights off."]
            assert page["conversation"] == CONV
            # The same send again (a retry) is the same stored message: not answered again. The
            # next message's reply is the next thing the poll sees.
            assert await _send(http, url, "lights off", "evt-1") == answer
            await _send(http, url, "lights on", "evt-2")
            nxt = await _poll_one(http, url, page["cursor"])
            assert [m["text"] for m in nxt["messages"]] == ["Turning the lights on."]
            assert len(llm.requests) == 2


async def test_replies_stay_pollable_across_a_gateway_restart(short_tmp: Path) -> None:
    async with FakeLLM() as llm:
        llm.add(user="lights off", tool_calls=_reply("Turning the lights off."))
        llm.add(user="lights on", tool_calls=_reply("Turning the lights on."))
        async with _system(short_tmp, llm) as system, aiohttp.ClientSession() as http:
            url = await _url(system)
            await _send(http, url, "lights off", "evt-1")
            before = await _poll_one(http, url, 0)
            assert system.sup.ctl is not None
            bus = BusClient("tester", system.sup.endpoints.bus)
            bus.start()
            try:
                listening = await bus.subscribe(f"gateway.{GW}.")
                await system.sup.ctl.call(KillRequest(GW, restart=True), timeout=WAIT)
                # Port 0: the new process listens elsewhere, and says where.
                moved = await listening.wait_for(
                    lambda e: isinstance(e.body, Notice) and e.body.text == "listening", timeout=WAIT
                )
            finally:
                await bus.close()
            assert isinstance(moved.body, Notice)
            url = f"http://127.0.0.1:{moved.body.fields['port']}"
            again = await _poll_one(http, url, 0)
            assert again["messages"] == before["messages"]
            await _send(http, url, "lights on", "evt-2")
            after = await _poll_one(http, url, before["cursor"])
            assert [m["text"] for m in after["messages"]] == ["Turning the lights on."]
            assert len(llm.requests) == 2
