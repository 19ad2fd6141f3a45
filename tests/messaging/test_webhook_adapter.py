"""The webhook adapter in the test's loop: aiohttp's client against its listener, a recording sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from spacebot.config import ConfigProblems, PlatformInstance, load
from spacebot.errors import ConfigError
from spacebot.messaging.bindings import Decision, Scope
from spacebot.messaging.platform import OutFile, PlatformEdit, PlatformMessage
from spacebot.messaging.webhook_adapter import MAX_MESSAGE, WebhookAdapter

WAIT = 10.0
"""Deadline of every wait (a failure, not a timing goal)."""


class Recorder:
    """A sink that records what it is given, storing each platform message id once (as the gateway
    does); ``gate`` (when set up) holds every ``message`` call."""

    def __init__(self) -> None:
        self.messages: list[PlatformMessage] = []
        self.stored: dict[str, PlatformMessage] = {}
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()

    async def message(self, msg: PlatformMessage) -> None:
        self.messages.append(msg)
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        self.stored.setdefault(msg.message_id, msg)

    async def edit(self, edit: PlatformEdit) -> None:
        raise AssertionError("the webhook never reports edits")


class Running:
    """An adapter listening on loopback, its sink and an HTTP client for it."""

    def __init__(self, adapter: WebhookAdapter, sink: Recorder, task: asyncio.Task[None]) -> None:
        self.adapter, self.sink, self.task = adapter, sink, task
        self.url = f"http://127.0.0.1:{adapter.port}"
        self.http = aiohttp.ClientSession()

    async def send(self, headers: dict[str, str] | None = None, **body: Any) -> tuple[int, Any]:
        async with self.http.post(f"{self.url}/send", json=body, headers=headers) as resp:
            return resp.status, await resp.json()

    async def poll(self, conv: str, **query: Any) -> tuple[int, Any]:
        params = {k: str(v) for k, v in query.items()}
        async with self.http.get(f"{self.url}/poll/{conv}", params=params) as resp:
            return resp.status, await resp.json()


async def start(
    root: Path,
    *,
    token: str = "",
    host: str = "127.0.0.1",
    decide: Any = None,
    **settings: Any,
) -> Running:
    inst = PlatformInstance(name="hooks", host=host, port=0, **settings)
    adapter = WebhookAdapter(inst, token, root / "webhook" / "replies.sqlite", decide=decide)
    sink = Recorder()
    up = asyncio.Event()
    task = asyncio.get_running_loop().create_task(adapter.run(sink, up.set))
    async with asyncio.timeout(WAIT):
        done, _ = await asyncio.wait([task, asyncio.ensure_future(up.wait())], return_when="FIRST_COMPLETED")
    if task in done:
        await adapter.close()
        task.result()  # raises what run() raised
    return Running(adapter, sink, task)


async def stop(run: Running) -> None:
    await run.http.close()
    run.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run.task
    await run.adapter.close()


@pytest.fixture
async def hook(tmp_path: Path) -> AsyncIterator[Running]:
    run = await start(tmp_path)
    yield run
    await stop(run)


def _body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversation_id": "kitchen",
        "sender_id": "door-sensor",
        "sender_name": "Door sensor",
        "message": "the door is open",
        "idempotency_key": "evt-1",
    }
    body.update(over)
    return {k: v for k, v in body.items() if v is not None}


async def test_a_send_is_stored_as_one_platform_message_before_the_202(hook: Running) -> None:
    hook.sink.gate = asyncio.Event()
    sending = asyncio.ensure_future(hook.send(**_body()))
    async with asyncio.timeout(WAIT):
        await hook.sink.entered.wait()
    assert not sending.done()  # held in the sink: no answer before the message is stored
    hook.sink.gate.set()
    status, answer = await sending
    assert (status, answer) == (202, {"message_id": "evt-1", "conversation": "webhook:hooks:kitchen"})
    [msg] = hook.sink.messages
    assert (msg.conversation, msg.message_id, msg.author_name, msg.text) == (
        "webhook:hooks:kitchen",
        "evt-1",
        "Door sensor",
        "the door is open",
    )
    s = msg.scope
    assert (s.platform, s.instance, s.channel, s.author_id, s.is_dm, s.mentions_bot) == (
        "webhook",
        "hooks",
        "kitchen",
        "door-sensor",
        False,
        True,
    )


async def test_the_same_idempotency_key_is_the_same_platform_message(hook: Running) -> None:
    first = await hook.send(**_body())
    again = await hook.send(**_body())
    assert first == again == (202, {"message_id": "evt-1", "conversation": "webhook:hooks:kitchen"})
    assert [m.message_id for m in hook.sink.messages] == ["evt-1", "evt-1"]
    assert list(hook.sink.stored) == ["evt-1"]
    # Without a key each send is a message of its own.
    a = await hook.send(**_body(idempotency_key=None))
    b = await hook.send(**_body(idempotency_key=None))
    assert a[0] == b[0] == 202 and a[1]["message_id"] != b[1]["message_id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (_body(conversation_id=None), "conversation_id"),
        (_body(conversation_id="a/b"), "conversation_id"),
        (_body(conversation_id="x" * 101), "conversation_id"),
        (_body(sender_id=7), "sender_id"),
        (_body(sender_id=""), "sender_id"),
        (_body(sender_name="line\nbreak"), "sender_name"),
        (_body(message=None), "message"),
        (_body(message="   "), "message"),
        (_body(message="x" * (MAX_MESSAGE + 1)), "message"),
        (_body(idempotency_key="k" * 129), "idempotency_key"),
        (_body(idempotency_key=["k"]), "idempotency_key"),
        (_body(callback_url="file:///etc/passwd"), "callback_url"),
        (_body(callback_url="ftp://example.com/x"), "callback_url"),
        (_body(colour="red"), "colour"),
    ],
)
async def test_a_bad_field_is_a_400_naming_it(hook: Running, body: dict[str, Any], field: str) -> None:
    status, answer = await hook.send(**body)
    assert status == 400 and field in answer["error"], answer
    assert hook.sink.messages == []


async def test_a_body_that_is_not_a_json_object_is_a_400(hook: Running) -> None:
    for data in (b"not json", b"[1, 2]"):
        async with hook.http.post(f"{hook.url}/send", data=data) as resp:
            assert resp.status == 400
            assert "JSON object" in (await resp.json())["error"]


async def test_a_body_over_the_cap_is_a_413(hook: Running) -> None:
    async with hook.http.post(f"{hook.url}/send", json=_body(message="x" * 300_000)) as resp:
        assert resp.status == 413 and "request body over" in (await resp.json())["error"]
    assert hook.sink.messages == []


async def test_a_message_no_agent_takes_is_a_403_with_the_reason(tmp_path: Path) -> None:
    def refuse(scope: Scope) -> Decision:
        return Decision(None, "no binding matches and there is no default agent", drop_kind="no_binding")

    run = await start(tmp_path, decide=refuse)
    try:
        status, answer = await run.send(**_body())
        assert status == 403 and "no binding matches" in answer["error"]
        assert len(run.sink.messages) == 1  # the gateway still saw it (and counted the drop)
    finally:
        await stop(run)


async def test_a_poll_returns_what_is_there_at_once_and_moves_its_cursor(hook: Running) -> None:
    conv = "webhook:hooks:kitchen"
    first = await hook.adapter.post(conv, "closing it")
    await hook.adapter.post(conv, "closed")
    await hook.adapter.post("webhook:hooks:garage", "not this conversation")
    status, page = await hook.poll("kitchen", timeout=60)
    assert status == 200 and page["conversation"] == conv
    assert [m["text"] for m in page["messages"]] == ["closing it", "closed"]
    assert page["messages"][0]["message_id"] == first
    status, rest = await hook.poll("kitchen", after=page["messages"][0]["cursor"])
    assert [m["text"] for m in rest["messages"]] == ["closed"] and rest["cursor"] == page["cursor"]
    # The full conversation id names the same conversation.
    assert (await hook.poll(conv))[1]["messages"] == page["messages"]


async def test_a_waiting_poll_wakes_on_a_reply(hook: Running) -> None:
    conv = "webhook:hooks:kitchen"
    # Once the poll looked and found nothing, a reply can only reach it by waking it.
    looked_empty = asyncio.Event()
    after = hook.adapter.replies.after

    def watched(*args: Any, **kw: Any) -> list[dict[str, Any]]:
        found = after(*args, **kw)
        if not found:
            looked_empty.set()
        return found

    hook.adapter.replies.after = watched  # type: ignore[method-assign]
    polling = asyncio.ensure_future(hook.poll("kitchen", timeout=60))
    async with asyncio.timeout(WAIT):
        await looked_empty.wait()
    assert not polling.done()
    await hook.adapter.post(conv, "woken")
    async with asyncio.timeout(WAIT):
        status, page = await polling
    assert status == 200 and [m["text"] for m in page["messages"]] == ["woken"]


async def test_a_poll_with_nothing_times_out_with_an_empty_list(hook: Running) -> None:
    await hook.adapter.post("webhook:hooks:kitchen", "old")
    _, seen = await hook.poll("kitchen")
    status, page = await hook.poll("kitchen", after=seen["cursor"], timeout=0.2)
    assert (status, page["messages"], page["cursor"]) == (200, [], seen["cursor"])


@pytest.mark.parametrize(
    ("query", "name"),
    [({"after": "x"}, "after"), ({"timeout": "-1"}, "timeout"), ({"after": "1.5"}, "after")],
)
async def test_a_bad_poll_query_is_a_400(hook: Running, query: dict[str, str], name: str) -> None:
    status, answer = await hook.poll("kitchen", **query)
    assert status == 400 and name in answer["error"]


async def test_a_retried_post_with_the_same_nonce_is_one_reply(hook: Running) -> None:
    conv = "webhook:hooks:kitchen"
    a = await hook.adapter.post(conv, "once", nonce="sb7p0")
    b = await hook.adapter.post(conv, "once", nonce="sb7p0")
    assert a == b
    assert [m["text"] for m in (await hook.poll("kitchen"))[1]["messages"]] == ["once"]


async def test_replies_and_cursors_survive_a_restart(tmp_path: Path) -> None:
    run = await start(tmp_path)
    conv = "webhook:hooks:kitchen"
    try:
        await run.adapter.post(conv, "before the restart")
        _, page = await run.poll("kitchen")
    finally:
        await stop(run)
    run = await start(tmp_path)
    try:
        _, again = await run.poll("kitchen")
        assert again["messages"] == page["messages"]
        await run.adapter.post(conv, "after the restart")
        _, new = await run.poll("kitchen", after=page["cursor"])
        assert [m["text"] for m in new["messages"]] == ["after the restart"]
        assert new["cursor"] > page["cursor"]
    finally:
        await stop(run)


async def test_a_token_is_required_on_every_request_when_set(tmp_path: Path) -> None:
    run = await start(tmp_path, token="s3cret")
    try:
        assert (await run.send(**_body()))[0] == 401
        assert (await run.send(headers={"Authorization": "Bearer wrong"}, **_body()))[0] == 401
        async with run.http.get(f"{run.url}/poll/kitchen") as resp:
            assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        assert run.sink.messages == []
        good = {"Authorization": "Bearer s3cret"}
        assert (await run.send(headers=good, **_body()))[0] == 202
        async with run.http.get(f"{run.url}/poll/kitchen", headers=good) as resp:
            assert resp.status == 200
    finally:
        await stop(run)


async def test_a_listener_beyond_loopback_without_a_token_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not loopback\) requires token"):
        await start(tmp_path, host="0.0.0.0")


async def test_a_taken_port_is_a_config_error_naming_the_setting(hook: Running, tmp_path: Path) -> None:
    inst = PlatformInstance(name="second", port=hook.adapter.port)
    adapter = WebhookAdapter(inst, "", tmp_path / "second" / "replies.sqlite")
    try:
        with pytest.raises(
            ConfigError, match=rf"port {hook.adapter.port} is in use.*\[messaging.webhook\] port"
        ):
            await adapter.run(Recorder(), lambda: None)
    finally:
        await adapter.close()


class CallbackTarget:
    """A tiny HTTP server that fails its first ``fail`` requests (503) and records the rest."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.attempts = 0
        self.received: list[dict[str, Any]] = []
        self.changed = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        self.changed.set()
        if self.attempts <= self.fail:
            return web.Response(status=503)
        self.received.append(await request.json())
        return web.Response(status=204)

    async def __aenter__(self) -> CallbackTarget:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def wait_for(self, predicate: Any) -> None:
        async with asyncio.timeout(WAIT):
            while not predicate():
                self.changed.clear()
                await self.changed.wait()


async def test_a_callback_gets_each_reply_after_a_failed_attempt(hook: Running) -> None:
    hook.adapter.callback_delay = 0.01
    async with CallbackTarget(fail=1) as target:
        assert (await hook.send(**_body(callback_url=target.url)))[0] == 202
        seq = await hook.adapter.post("webhook:hooks:kitchen", "the door is closed now")
        await target.wait_for(lambda: target.received)
        [got] = target.received
        assert target.attempts == 2
        assert (got["conversation"], got["message_id"], got["text"]) == (
            "webhook:hooks:kitchen",
            seq,
            "the door is closed now",
        )
    # Still pollable too.
    assert [m["text"] for m in (await hook.poll("kitchen"))[1]["messages"]] == ["the door is closed now"]


async def test_a_callback_failing_for_good_is_given_up_and_the_reply_stays_pollable(
    hook: Running, caplog: pytest.LogCaptureFixture
) -> None:
    hook.adapter.callback_delay = 0.01
    async with CallbackTarget(fail=100) as target:
        await hook.send(**_body(callback_url=target.url))
        await hook.adapter.post("webhook:hooks:kitchen", "nobody hears this")
        await target.wait_for(lambda: target.attempts >= 4)
        async with asyncio.timeout(WAIT):
            await asyncio.gather(*hook.adapter._tasks)
        assert target.attempts == 4 and target.received == []
    assert "callback given up" in caplog.text
    assert [m["text"] for m in (await hook.poll("kitchen"))[1]["messages"]] == ["nobody hears this"]


async def test_the_instance_callback_is_used_when_the_send_sets_none(tmp_path: Path) -> None:
    async with CallbackTarget(fail=0) as target:
        run = await start(tmp_path, callback_url=target.url)
        try:
            await run.adapter.post("webhook:hooks:lobby", "hello")
            await target.wait_for(lambda: target.received)
            assert [r["text"] for r in target.received] == ["hello"]
        finally:
            await stop(run)


def test_config_checks_the_listener_and_the_callback(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        'agents = ["main"]\n'
        "[[messaging.webhook]]\n"
        'name = "open"\n'
        'host = "0.0.0.0"\n'  # line 4: beyond loopback without a token
        "port = 70000\n"
        'callback_url = "file:///etc/passwd"\n'
        "[[messaging.webhook]]\n"
        'name = "guarded"\n'
        'host = "0.0.0.0"\n'
        'token = "env:HOOK_TOKEN"\n'
        'callback_url = "https://example.com/hook"\n'
        "[[bindings]]\n"
        'agent = "main"\n'
        'platform = "webhook"\n'
        'instance = "guarded"\n'
    )
    with pytest.raises(ConfigProblems) as caught:
        load(path, {})
    found = {p.key: p.message for p in caught.value.problems}
    assert "requires token" in found["messaging.webhook[0].host"]
    assert "0-65535" in found["messaging.webhook[0].port"]
    assert "http:// or https://" in found["messaging.webhook[0].callback_url"]
    assert len(found) == 3
    path.write_text('agents = ["main"]\n[[messaging.webhook]]\nport = 8765\n')
    config = load(path, {})
    assert [(p, i.name, i.host, i.port) for p, i in config.messaging.instances()] == [
        ("webhook", "main", "127.0.0.1", 8765)
    ]


async def test_files_are_named_in_a_reply_and_the_rest_is_a_no_op(hook: Running, tmp_path: Path) -> None:
    conv = "webhook:hooks:kitchen"
    await hook.adapter.send_files(conv, [OutFile("plan.pdf", tmp_path / "plan.pdf")], "here it is")
    await hook.adapter.edit(conv, "1", "changed")
    await hook.adapter.delete(conv, "1")
    await hook.adapter.react(conv, "1", "👍")
    await hook.adapter.typing(conv)
    assert await hook.adapter.history(conv, 50) == []
    [only] = (await hook.poll("kitchen"))[1]["messages"]
    assert only["text"] == "here it is\n[file: plan.pdf]"
