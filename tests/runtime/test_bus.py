"""The bus through a real broker: routing, typed replies, errors, bad frames, cancellation."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import zmq
import zmq.asyncio

from spacebot.ipc import codec
from spacebot.ipc.bus import BusClient, BusError
from spacebot.ipc.messages import (
    ConversationInfo,
    Echo,
    Envelope,
    ErrorCode,
    FramesDropped,
    Kind,
    Notice,
    Ok,
    Ping,
    ReplyState,
    SpawnSpec,
    StatusReply,
    StatusRequest,
    StoredMessage,
    SyncEvents,
    TreeNode,
)
from spacebot.ipc.replies import PendingReplies
from spacebot.testing import SupervisorProcess

TK = "spacebot.procs.testkit"


async def _client(sup: SupervisorProcess, ident: str = "tester") -> BusClient:
    client = BusClient(ident, sup.endpoints.bus)
    client.start()
    # The first request proves the DEALER is connected (ROUTER drops frames for unknown peers).
    await client.request("supervisor", Ping(b"hi"), timeout=5)
    return client


async def test_request_reply_and_no_route(supervisor: SupervisorProcess) -> None:
    await supervisor.spawn(f"{TK}:echo", id="worker:echo")
    client = await _client(supervisor)
    try:
        assert await client.request("worker:echo", Ping(b"abc")) == b"abc"
        for i in range(10):
            assert client.send("worker:echo", Echo(i))
        assert await client.request("worker:echo", Echo(99)) == 11
        with pytest.raises(BusError) as err:
            await client.request("worker:nobody", Ping())
        assert err.value.code is ErrorCode.NO_ROUTE
        assert "worker:nobody" in err.value.message
    finally:
        await client.close()


async def test_cancelled_request_does_not_steal_a_reply(supervisor: SupervisorProcess) -> None:
    await supervisor.spawn(f"{TK}:echo", id="worker:echo")
    client = await _client(supervisor)
    try:
        pending = asyncio.ensure_future(client.request("worker:echo", Ping(b"first")))
        await asyncio.sleep(0)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending
        # The late reply to the cancelled request must not be delivered to the next one.
        results = await asyncio.gather(
            *(client.request("worker:echo", Ping(str(i).encode())) for i in range(20))
        )
        assert results == [str(i).encode() for i in range(20)]
    finally:
        await client.close()


async def test_cancelled_event_receive_does_not_eat_the_event(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    await supervisor.spawn(f"{TK}:echo", id="worker:pub", args={"publish": True})
    stream = await supervisor.ctl.events("echo.")
    client = await _client(supervisor)
    try:
        waiter = asyncio.ensure_future(stream.next())
        await asyncio.sleep(0)  # one loop step: the waiter is now inside its receive
        assert not waiter.done()
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await client.request("worker:pub", Echo(7))
        event = await stream.next(timeout=5)
        assert isinstance(event.body, Echo) and event.body.seq == 7
        assert event.src == "worker:pub"
    finally:
        stream.close()
        await client.close()


async def _wait_for(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    """Poll a status predicate (heartbeats carry child counters) until it holds."""
    async with asyncio.timeout(timeout):
        # Child counters travel in heartbeats, which publish no event: poll the status table.
        while not await check():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_bad_frames_are_counted_and_everyone_keeps_serving(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    await supervisor.spawn(f"{TK}:echo", id="worker:target")
    drops = await supervisor.ctl.events("bus.dropped.")
    ctx = zmq.asyncio.Context()
    raw = ctx.socket(zmq.DEALER)
    raw.setsockopt(zmq.IDENTITY, b"fuzzer")
    raw.setsockopt(zmq.LINGER, 0)
    supervisor.bus_credentials("fuzzer").apply(raw)  # authenticated: the frames, not the peer, are bad
    raw.connect(supervisor.endpoints.bus)
    client = await _client(supervisor, "fuzzer-ok")
    try:
        before = (await supervisor.status()).broker
        valid = codec.encode(Envelope("fuzzer", "supervisor", 1, 0, Ping()))
        wrong_schema = msgspec.msgpack.encode({"not": "an envelope"})
        unknown_tag = msgspec.msgpack.encode(["fuzzer", "supervisor", 1, 0, {"type": "no-such-message"}])
        spoofed = codec.encode(Envelope("somebody-else", "supervisor", 1, 0, Ping()))
        to_broker = [
            [b"one-frame-only"],
            [b"supervisor", b"\xc1\xc1 not msgpack"],
            [b"supervisor", b"x" * 70_000],
            [b"supervisor", wrong_schema],
            [b"supervisor", unknown_tag],
            [b"supervisor", spoofed],
            [b"supervisor", valid, b"extra frame"],
            [b"@pub", b"topic-without-payload"],
        ]
        for frames in to_broker:
            await raw.send_multipart(frames)
        to_child = [
            [b"worker:target", b"\xc1 garbage"],
            [b"worker:target", wrong_schema],
            [b"worker:target", unknown_tag],
            [b"worker:target", codec.encode(Envelope("liar", "worker:target", 0, 0, Echo(1)))],
        ]
        for frames in to_child:
            await raw.send_multipart(frames)

        async def broker_counted() -> bool:
            b = (await supervisor.status()).broker
            return (
                b.malformed + b.oversized + b.unknown - (before.malformed + before.oversized + before.unknown)
                >= 8
            )

        async def child_counted() -> bool:
            return (await supervisor.info("worker:target")).frame_errors >= 4

        await _wait_for(broker_counted)
        await _wait_for(child_counted)
        after = (await supervisor.status()).broker
        assert after.oversized > before.oversized
        assert after.unknown > before.unknown
        dropped = await drops.wait_for(lambda e: isinstance(e.body, FramesDropped), timeout=10)
        assert isinstance(dropped.body, FramesDropped) and dropped.body.source == "broker"
        # Both still serve.
        assert await client.request("worker:target", Ping(b"still here")) == b"still here"
        assert await client.request("supervisor", Ping(b"me too")) == b"me too"
        await client.request("supervisor", SyncEvents("x"))
    finally:
        drops.close()
        raw.close(linger=0)
        ctx.term()
        await client.close()


async def test_client_can_publish_and_subscribe(supervisor: SupervisorProcess) -> None:
    client = await _client(supervisor)
    stream = await client.subscribe("testkit.")
    try:
        assert client.publish("testkit.manual", Notice("hello", {"n": 1}))
        event = await stream.next(timeout=5)
        assert event.topic == "testkit.manual" and event.src == "tester"
        assert isinstance(event.body, Notice) and event.body.fields == {"n": 1}
    finally:
        stream.close()
        await client.close()


# -- typed replies ---------------------------------------------------------------------------------

_ROW = StoredMessage(
    id=7,
    channel_id="web:a",
    platform_message_id=None,
    author_id="web:ana",
    author_name="Ana",
    role="user",
    text="hi",
    attachments=[],
    created_at=1.0,
    reply_state=ReplyState.PENDING,
    replied_at=None,
)


async def _reply_as(value: object, returns: object) -> object:
    """``value`` sent as a reply over the wire format and awaited as ``returns``."""
    replies = PendingReplies()
    rid, fut = replies.open("memory:main")
    env = codec.envelope_decoder.decode(codec.encode(Envelope("memory:main", "me", 0, rid, Ok(value))))
    replies.resolve(env.reply_to, env.body)
    if returns is ...:
        return await replies.wait(rid, fut, 5.0, "memory:main")
    return await replies.wait(rid, fut, 5.0, "memory:main", returns)


async def test_a_reply_arrives_as_the_type_asked_for() -> None:
    assert await _reply_as([_ROW], list[StoredMessage]) == [_ROW]
    assert await _reply_as(None, None) is None
    untyped = await _reply_as([_ROW], ...)
    assert isinstance(untyped, list) and untyped[0]["text"] == "hi"  # as decoded: plain data


@pytest.mark.parametrize(
    ("value", "returns", "named"),
    [
        ([_ROW], list[ConversationInfo], "list[ConversationInfo]"),
        (_ROW, list[StoredMessage], "list[StoredMessage]"),
        (3, None, "None"),
        (None, StoredMessage, "StoredMessage"),
    ],
)
async def test_a_reply_that_does_not_fit_is_a_bad_reply_naming_the_type(
    value: object, returns: object, named: str
) -> None:
    with pytest.raises(BusError) as err:
        await _reply_as(value, returns)
    assert err.value.code is ErrorCode.BAD_REPLY
    assert f"'memory:main' does not fit {named}:" in err.value.message


async def test_typed_requests_over_the_bus_and_the_control_socket(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    await supervisor.spawn(f"{TK}:echo", id="worker:echo")
    client = await _client(supervisor)
    try:
        assert await client.request("worker:echo", Ping(b"abc"), returns=bytes) == b"abc"
        assert await client.request("worker:echo", Echo(1), returns=int) == 1
        with pytest.raises(BusError) as err:
            await client.request("worker:echo", Ping(b"abc"), returns=int)
        assert err.value.code is ErrorCode.BAD_REPLY and "'worker:echo' does not fit int" in err.value.message
        status = await supervisor.ctl.call(StatusRequest(), returns=StatusReply)
        assert isinstance(status, StatusReply)
        assert "worker:echo" in {p.id for p in status.processes}
        with pytest.raises(BusError) as err:
            await supervisor.ctl.call(StatusRequest(), returns=TreeNode)
        assert err.value.code is ErrorCode.BAD_REPLY and "does not fit TreeNode" in err.value.message
    finally:
        await client.close()


class _NoSuchMessage(msgspec.Struct, frozen=True, tag="no-such-message"):
    """A message type no receiver knows."""


async def test_a_request_the_receiver_cannot_read_is_answered_not_dropped(
    supervisor: SupervisorProcess,
) -> None:
    assert supervisor.ctl is not None
    await supervisor.spawn(f"{TK}:echo", id="worker:echo")
    client = await _client(supervisor)
    bad_spawn = msgspec.structs.replace(SpawnSpec(Kind.WORKER, f"{TK}:idle"), restart="sometimes")
    try:
        for dst in ("supervisor", "worker:echo"):
            with pytest.raises(BusError) as err:
                await client.request(dst, bad_spawn, timeout=10)
            assert err.value.code is ErrorCode.BAD_REQUEST, dst
            assert "`body.restart`" in err.value.message and repr(dst) in err.value.message
            with pytest.raises(BusError) as err:
                await client.request(dst, _NoSuchMessage(), timeout=10)  # type: ignore[arg-type]
            assert err.value.code is ErrorCode.UNSUPPORTED, dst
        with pytest.raises(BusError) as err:
            await supervisor.ctl.call(bad_spawn, timeout=10)
        assert err.value.code is ErrorCode.BAD_REQUEST and "`request.restart`" in err.value.message
        # Both still serve.
        assert await client.request("worker:echo", Ping(b"ok"), returns=bytes) == b"ok"
    finally:
        await client.close()
