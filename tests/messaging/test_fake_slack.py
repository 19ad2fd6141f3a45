"""The fake Slack, driven by the real ``slack_sdk``: Web API calls and Socket Mode events."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from spacebot.messaging.fakes.slack import FakeSlack

WAIT = 10.0
"""Deadline of every wait (a failure, not a timing goal)."""


class Bot:
    """A Socket Mode client and what it received: every envelope, in order, on a queue."""

    def __init__(self, client: SocketModeClient, *, ack: bool = True) -> None:
        self.client = client
        self.ack = ack
        self.requests: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
        self.hellos: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        client.socket_mode_request_listeners.append(self._on_request)
        client.message_listeners.append(self._on_message)

    async def _on_request(self, client: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        if self.ack:
            await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        await self.requests.put(req)

    async def _on_message(
        self, client: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        if message.get("type") == "hello":
            await self.hellos.put(message)

    async def next_event(self, event_type: str = "message") -> SocketModeRequest:
        """The next envelope whose event has ``event_type`` (others are skipped)."""
        async with asyncio.timeout(WAIT):
            while True:
                req = await self.requests.get()
                if req.payload["event"]["type"] == event_type:
                    return req


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(ack_timeout=0.2, disconnect_grace=WAIT) as fake:
        fake.add_user("ada", id="U0ADA")
        fake.add_channel("general", id="C0GEN")
        yield fake


@pytest.fixture
def web(slack: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(slack.bot_token, base_url=slack.api_url)


async def connect(slack: FakeSlack, web: AsyncWebClient, *, ack: bool = True, **options: Any) -> Bot:
    client = SocketModeClient(app_token=slack.app_token, web_client=web, **options)
    bot = Bot(client, ack=ack)
    await client.connect()
    async with asyncio.timeout(WAIT):
        await bot.hellos.get()
    return bot


@pytest.fixture
async def bots() -> AsyncIterator[list[Bot]]:
    made: list[Bot] = []
    yield made
    for bot in made:
        await bot.client.close()


async def test_connect_gets_hello_over_the_url_from_connections_open(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bots.append(await connect(slack, web))
    assert slack.calls["apps.connections.open"] == 1
    assert slack.connections == 1
    auth = await web.auth_test()
    assert (auth["user_id"], auth["team_id"], auth["bot_id"]) == (slack.bot_user, slack.team_id, slack.bot_id)


async def test_a_post_arrives_as_events_api_and_the_ack_stops_redelivery(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bot = await connect(slack, web)
    bots.append(bot)
    posted = slack.post("C0GEN", "U0ADA", f"hello <@{slack.bot_user}>")
    req = await bot.next_event("message")
    assert req.type == "events_api" and req.retry_attempt == 0
    event = req.payload["event"]
    assert (event["channel"], event["user"], event["ts"]) == ("C0GEN", "U0ADA", posted.ts)
    assert event["channel_type"] == "channel" and "bot_id" not in event
    mention = await bot.next_event("app_mention")
    assert mention.payload["event"]["ts"] == posted.ts
    assert mention.payload["event_id"] != req.payload["event_id"]
    await slack.wait_for(lambda: not slack.unacked, timeout=WAIT)
    assert set(slack.acks) == {req.envelope_id, mention.envelope_id}
    assert slack.redeliveries == 0


async def test_a_missing_ack_is_redelivered_with_retry_attempt(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bot = await connect(slack, web, ack=False)
    bots.append(bot)
    slack.post("C0GEN", "U0ADA", "anyone?")
    first = await bot.next_event()
    bot.ack = True
    again = await bot.next_event()
    assert (first.retry_attempt, again.retry_attempt) == (0, 1)
    assert again.retry_reason == "timeout"
    assert again.payload["event_id"] == first.payload["event_id"]
    assert again.envelope_id != first.envelope_id
    await slack.wait_for(lambda: not slack.unacked, timeout=WAIT)
    assert slack.redeliveries == 1 and slack.acks == [again.envelope_id]


async def test_a_direct_message_has_channel_type_im_and_no_app_mention(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bot = await connect(slack, web)
    bots.append(bot)
    dm = slack.add_channel("U0ADA", kind="im", user="U0ADA")
    slack.post(dm.id, "U0ADA", f"psst <@{slack.bot_user}>")
    slack.post("C0GEN", "U0ADA", "marker")
    seen = [(await bot.next_event()).payload["event"] for _ in range(2)]
    assert [(e["channel_type"], e["text"]) for e in seen] == [
        ("im", f"psst <@{slack.bot_user}>"),
        ("channel", "marker"),
    ]
    assert [e["event"]["type"] for e in slack.events] == ["message", "message"]  # no app_mention


async def test_thread_reply_with_broadcast_is_recorded_and_echoed(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bot = await connect(slack, web)
    bots.append(bot)
    parent = slack.post("C0GEN", "U0ADA", "question")
    await bot.next_event()
    sent = await web.chat_postMessage(
        channel="C0GEN", text="answer", thread_ts=parent.ts, reply_broadcast=True
    )
    [mine] = slack.bot_messages()
    assert (mine.ts, mine.thread_ts, mine.text, mine.reply_broadcast) == (
        sent["ts"],
        parent.ts,
        "answer",
        True,
    )
    echo = (await bot.next_event()).payload["event"]
    assert echo["bot_id"] == slack.bot_id and echo["thread_ts"] == parent.ts
    replies = await web.conversations_replies(channel="C0GEN", ts=parent.ts)
    assert [m["text"] for m in replies["messages"]] == ["question", "answer"]
    history = await web.conversations_history(channel="C0GEN")
    assert [m["text"] for m in history["messages"]] == ["answer", "question"]  # newest first
    assert float(sent["ts"]) > float(parent.ts)


async def test_chat_update_keeps_the_history(slack: FakeSlack, web: AsyncWebClient) -> None:
    sent = await web.chat_postMessage(channel="C0GEN", text="draft")
    await web.chat_update(channel="C0GEN", ts=sent["ts"], text="better")
    done = await web.chat_update(channel="C0GEN", ts=sent["ts"], text="final")
    assert done["text"] == "final"
    [mine] = slack.bot_messages()
    assert mine.text == "final" and [h["text"] for h in mine.history] == ["draft", "better"]
    with pytest.raises(SlackApiError) as exc:
        await web.chat_update(channel="C0GEN", ts="1.000001", text="x")
    assert exc.value.response["error"] == "message_not_found"


async def test_edits_and_deletes_by_people_arrive_as_subtypes(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bot = await connect(slack, web)
    bots.append(bot)
    msg = slack.post("C0GEN", "U0ADA", "tpyo")
    await bot.next_event()
    slack.edit("C0GEN", msg.ts, "typo")
    changed = (await bot.next_event()).payload["event"]
    assert changed["subtype"] == "message_changed"
    assert (changed["message"]["text"], changed["previous_message"]["text"]) == ("typo", "tpyo")
    slack.delete("C0GEN", msg.ts)
    deleted = (await bot.next_event()).payload["event"]
    assert (deleted["subtype"], deleted["deleted_ts"]) == ("message_deleted", msg.ts)
    assert (await web.conversations_history(channel="C0GEN"))["messages"] == []


async def test_reactions_add(slack: FakeSlack, web: AsyncWebClient) -> None:
    msg = slack.post("C0GEN", "U0ADA", "nice")
    await web.reactions_add(channel="C0GEN", timestamp=msg.ts, name="eyes")
    assert msg.reactions == {"eyes": [slack.bot_user]}
    with pytest.raises(SlackApiError) as exc:
        await web.reactions_add(channel="C0GEN", timestamp=msg.ts, name="eyes")
    assert exc.value.response["error"] == "already_reacted"


async def test_files_upload_v2_completes_and_url_private_needs_the_bot_token(
    slack: FakeSlack, web: AsyncWebClient
) -> None:
    parent = slack.post("C0GEN", "U0ADA", "send the report")
    done = await web.files_upload_v2(
        channel="C0GEN", thread_ts=parent.ts, content="a,b\n1,2\n", filename="r.csv", title="Report"
    )
    assert done["file"]["title"] == "Report"
    [upload] = slack.uploads()
    assert (upload.complete, upload.content, upload.channel) == (True, b"a,b\n1,2\n", "C0GEN")
    [shared] = slack.bot_messages()
    assert shared.files == [upload.id] and shared.thread_ts == parent.ts
    url = done["file"]["url_private"]
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"Authorization": f"Bearer {slack.bot_token}"}) as resp:
            assert (resp.status, await resp.read()) == (200, b"a,b\n1,2\n")
        async with http.get(url) as resp:
            assert resp.status == 403


async def test_a_persons_file_is_served_at_url_private(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bot = await connect(slack, web)
    bots.append(bot)
    slack.post("C0GEN", "U0ADA", "see attached", files=[{"name": "n.txt", "content": "notes"}])
    event = (await bot.next_event()).payload["event"]
    [f] = event["files"]
    assert event["subtype"] == "file_share" and f["name"] == "n.txt"
    async with (
        aiohttp.ClientSession() as http,
        http.get(f["url_private"], headers={"Authorization": f"Bearer {slack.bot_token}"}) as resp,
    ):
        assert await resp.read() == b"notes"


async def test_429_is_retried_by_the_rate_limit_handler_and_posts_once(
    slack: FakeSlack, web: AsyncWebClient
) -> None:
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    with pytest.raises(SlackApiError) as exc:
        await web.chat_postMessage(channel="C0GEN", text="no handler")
    assert exc.value.response.status_code == 429 and exc.value.response["error"] == "ratelimited"
    slack.rate_limit("chat.postMessage", times=1, retry_after=0)
    web.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    await web.chat_postMessage(channel="C0GEN", text="once")
    assert [m.text for m in slack.bot_messages()] == ["once"]
    assert slack.ratelimited["chat.postMessage"] == 2 and slack.calls["chat.postMessage"] == 3


@pytest.mark.parametrize("reason", ["refresh_requested", "warning", "link_disabled"])
async def test_disconnect_makes_the_client_reconnect_without_auto_reconnect(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot], reason: str
) -> None:
    # The SDK answers a ``disconnect`` message itself (a fresh apps.connections.open), whatever
    # ``auto_reconnect_enabled`` says; off here so the test shows that path alone.
    bot = await connect(slack, web, auto_reconnect_enabled=False)
    bots.append(bot)
    await slack.disconnect(reason)
    async with asyncio.timeout(WAIT):
        await bot.hellos.get()
    await slack.wait_for(
        lambda: slack.connections == 2 and len(slack.state()["disconnects"]) == 1, timeout=WAIT
    )
    assert slack.calls["apps.connections.open"] == 2
    msg = slack.post("C0GEN", "U0ADA", "after the reconnect")
    assert (await bot.next_event()).payload["event"]["ts"] == msg.ts


async def test_a_dropped_connection_is_restored_by_auto_reconnect(
    slack: FakeSlack, web: AsyncWebClient, bots: list[Bot]
) -> None:
    bot = await connect(slack, web, ping_interval=0.5)
    bots.append(bot)
    assert slack.drop() == 1
    async with asyncio.timeout(WAIT):
        await bot.hellos.get()
    msg = slack.post("C0GEN", "U0ADA", "still there?")
    assert (await bot.next_event()).payload["event"]["ts"] == msg.ts


async def test_token_checks(slack: FakeSlack) -> None:
    with pytest.raises(SlackApiError) as exc:
        await AsyncWebClient("xoxb-wrong", base_url=slack.api_url).chat_postMessage(channel="C0GEN", text="x")
    assert exc.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as exc:
        await AsyncWebClient(slack.app_token, base_url=slack.api_url).auth_test()
    assert exc.value.response["error"] == "not_allowed_token_type"
    with pytest.raises(SlackApiError) as exc:
        await AsyncWebClient(slack.bot_token, base_url=slack.api_url).apps_connections_open(
            app_token="xapp-wrong"
        )
    assert exc.value.response["error"] == "invalid_auth"
    assert slack.bot_messages() == []


async def test_info_methods_and_typing_status(slack: FakeSlack, web: AsyncWebClient) -> None:
    assert (await web.users_info(user="U0ADA"))["user"]["name"] == "ada"
    assert (await web.conversations_info(channel="C0GEN"))["channel"]["is_channel"] is True
    with pytest.raises(SlackApiError) as exc:
        await web.conversations_info(channel="C0NOPE")
    assert exc.value.response["error"] == "channel_not_found"
    parent = slack.post("C0GEN", "U0ADA", "q")
    await web.assistant_threads_setStatus(channel_id="C0GEN", thread_ts=parent.ts, status="is typing...")
    assert slack.statuses == [{"channel_id": "C0GEN", "thread_ts": parent.ts, "status": "is typing..."}]


async def test_the_cli_runs_the_fake_with_an_http_test_api_until_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "spacebot.cli.main", "fake-slack", "--port", "0", stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(WAIT):
            line = (await proc.stdout.readline()).decode()
        api_url = line.split("base_url ")[1].split()[0]
        root = api_url.removesuffix("api/")
        async with aiohttp.ClientSession() as http:
            for action, body in [
                ("users", {"name": "bob", "id": "U0BOB"}),
                ("channels", {"name": "dev", "id": "C0DEV"}),
            ]:
                async with http.post(f"{root}_fake/{action}", json=body) as resp:
                    assert resp.status == 200, await resp.text()
            web = AsyncWebClient("xoxb-fake-bot-token", base_url=api_url)
            await web.chat_postMessage(channel="C0DEV", text="from another process")
            async with http.post(
                f"{root}_fake/wait", json={"counter": "bot_messages", "at_least": 1}
            ) as resp:
                assert resp.status == 200
            async with http.get(f"{root}_fake/state") as resp:
                state = json.loads(await resp.text())
            assert [m["text"] for m in state["bot_messages"]] == ["from another process"]
            async with http.post(f"{root}_fake/bogus", json={}) as resp:
                assert resp.status == 400 and "bogus" in (await resp.json())["error"]
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(WAIT):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
