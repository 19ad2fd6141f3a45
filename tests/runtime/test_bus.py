"""The bus through a real broker: routing, errors, bad frames, cancellation."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
import zmq
import zmq.asyncio

from spacebot.ipc import codec
from spacebot.ipc.bus import BusClient, BusError
from spacebot.ipc.messages import (
    Echo,
    Envelope,
    ErrorCode,
    FramesDropped,
    Notice,
    Ping,
    SyncEvents,
)
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
        await asyncio.sleep(0.01)
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
