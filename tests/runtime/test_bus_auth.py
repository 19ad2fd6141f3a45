"""Only Spacebot's processes and the operator's clients get through the bus, events and ctl sockets.

Each refusal is proven positively: the supervisor publishes ``sec.refused.<domain>`` for it, the
attacker's socket got nothing, and a legitimate request made afterwards still works.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import zmq
import zmq.asyncio

from spacebot.ipc import codec
from spacebot.ipc.bus import BusClient
from spacebot.ipc.credentials import Credentials, derive, operator_bus, read_key
from spacebot.ipc.events import EventStream
from spacebot.ipc.messages import (
    ControlFrame,
    Envelope,
    Event,
    Kind,
    MemoryDraft,
    MemRecall,
    MemSave,
    Notice,
    Ping,
    RecallHit,
    SpawnSpec,
    StatusRequest,
)
from spacebot.testing import SupervisorProcess, fast_config
from spacebot.tools import sandbox

pytestmark = pytest.mark.timeout(240)

PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
"""An interpreter the sandbox can run (the system one: /usr is readable under Landlock)."""
ESCAPE = SpawnSpec(kind=Kind.WORKER, target="spacebot.procs.testkit:idle", id="worker:esc")


def _refusal(domain: str, reason: str = "") -> object:
    def match(event: Event) -> bool:
        body = event.body
        return (
            event.topic == f"sec.refused.{domain}"
            and isinstance(body, Notice)
            and reason in str(body.fields.get("reason", ""))
        )

    return match


def _raw(
    ctx: zmq.asyncio.Context, kind: int, creds: Credentials | None = None, *, keep: list[zmq.asyncio.Socket]
) -> zmq.asyncio.Socket:
    """A plain pyzmq socket (closed by the test's ``finally`` through ``keep``)."""
    sock = ctx.socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if creds is not None:
        creds.apply(sock)
    keep.append(sock)
    return sock


async def _offer(sock: zmq.asyncio.Socket, *frames: bytes) -> None:
    """Queue ``frames`` without waiting. A refused handshake may already have ended the connection
    by the time the test gets here (libzmq does not reconnect after a handshake refusal), and a
    DEALER with no connection waits in ``send`` for ever: then there is nothing to send to, which is
    the point being tested."""
    with contextlib.suppress(zmq.Again):
        await sock.send_multipart(list(frames), flags=zmq.DONTWAIT)


async def _assert_nothing_received(*socks: zmq.asyncio.Socket) -> None:
    for sock in socks:
        assert await sock.poll(0) == 0, "a refused peer received something"


async def test_peers_without_credentials_get_nothing(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    events = await supervisor.ctl.events("sec.refused.")
    ctx = zmq.asyncio.Context()
    ep = supervisor.endpoints
    socks: list[zmq.asyncio.Socket] = []
    try:
        # NULL mechanism (any ZeroMQ client with no credentials) on each of the three sockets.
        ctl = _raw(ctx, zmq.DEALER, keep=socks)
        ctl.connect(ep.ctl)
        await _offer(ctl, codec.encode(ControlFrame(1, ESCAPE)))
        await events.wait_for(_refusal("ctl", "handshake failed"), timeout=30)  # type: ignore[arg-type]

        bus = _raw(ctx, zmq.DEALER, keep=socks)
        bus.setsockopt(zmq.IDENTITY, b"worker:esc")
        bus.connect(ep.bus)
        await _offer(bus, b"supervisor", codec.encode(Envelope("worker:esc", "supervisor", 1, 0, ESCAPE)))
        await events.wait_for(_refusal("bus", "handshake failed"), timeout=30)  # type: ignore[arg-type]

        sub = _raw(ctx, zmq.SUB, keep=socks)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(ep.events)
        await events.wait_for(_refusal("events", "handshake failed"), timeout=30)  # type: ignore[arg-type]

        # PLAIN with a made-up password: refused by the ZAP handler, with its reason.
        wrong = _raw(ctx, zmq.DEALER, Credentials("spacebotctl", "0" * 64), keep=socks)
        wrong.connect(ep.ctl)
        await _offer(wrong, codec.encode(ControlFrame(2, StatusRequest())))
        await events.wait_for(_refusal("ctl", "wrong credentials"), timeout=30)  # type: ignore[arg-type]

        # The operator still gets through, and nothing was spawned.
        status = await supervisor.status()
        assert "worker:esc" not in {p.id for p in status.processes}
        await _assert_nothing_received(ctl, bus, sub, wrong)
    finally:
        for sock in socks:
            sock.close(linger=0)
        events.close()
        ctx.term()


async def test_key_file_is_private_and_per_run(supervisor: SupervisorProcess) -> None:
    key_file = supervisor.endpoints.dir / "ctl.key"
    mode = stat.S_IMODE(os.stat(key_file).st_mode)
    assert mode == 0o600, f"ctl.key has mode {mode:o}"
    assert len(read_key(supervisor.endpoints.dir)) == 32
    # Operator credentials may not claim the name of a Spacebot process.
    assert supervisor.ctl is not None
    events = await supervisor.ctl.events("sec.refused.")
    client = BusClient("memory:main", supervisor.endpoints.bus)
    client.start()
    try:
        await events.wait_for(_refusal("bus", "may not use the name"), timeout=30)  # type: ignore[arg-type]
    finally:
        await client.close(linger=0)
        events.close()


@pytest.fixture
async def with_memory(short_tmp: Path) -> AsyncIterator[SupervisorProcess]:
    sup = SupervisorProcess(short_tmp, config_text=fast_config(("main",), memory={"ready_timeout": 60.0}))
    await sup.start(timeout=120)
    try:
        yield sup
    finally:
        await sup.stop()


async def test_memory_main_cannot_be_taken_over(with_memory: SupervisorProcess) -> None:
    sup = with_memory
    assert sup.ctl is not None
    events = await sup.ctl.events("sec.refused.")
    ctx = zmq.asyncio.Context()
    ep = sup.endpoints
    key = read_key(ep.dir)
    socks: list[zmq.asyncio.Socket] = []
    try:
        # 1. memory's name with a made-up password.
        guess = _raw(ctx, zmq.DEALER, Credentials("memory:main", "f" * 64), keep=socks)
        # 2. memory's name with the operator derivation: a real key, but not a child's credential.
        operator = _raw(
            ctx, zmq.DEALER, Credentials("memory:main", derive(key, "operator", "memory:main")), keep=socks
        )
        for sock, reason in ((guess, "wrong credentials"), (operator, "may not use the name")):
            sock.setsockopt(zmq.IDENTITY, b"memory:main")
            sock.connect(ep.bus)
            await events.wait_for(_refusal("bus", reason), timeout=30)  # type: ignore[arg-type]
        # 3. a valid foreign credential declaring memory's routing identity (ROUTER_HANDOVER would
        #    have handed memory's route to it): accepted as "tester:foreign", never as memory.
        foreign = _raw(ctx, zmq.DEALER, operator_bus(ep.dir, "tester:foreign"), keep=socks)
        foreign.setsockopt(zmq.IDENTITY, b"memory:main")
        foreign.connect(ep.bus)
        await foreign.send_multipart(
            [b"supervisor", codec.encode(Envelope("tester:foreign", "supervisor", 7, 0, Ping(b"x")))]
        )
        reply = await asyncio.wait_for(foreign.recv_multipart(), 30)
        assert reply[0] == b"supervisor"  # it is on the bus, under its own name

        # The real memory process still gets its requests.
        client = BusClient("tester", ep.bus)
        client.start()
        try:
            saved = await client.request(
                "memory:main", MemSave([MemoryDraft(content="Ana drinks tea")]), timeout=60
            )
            assert len(saved) == 1
            hits = msgspec.convert(
                await client.request("memory:main", MemRecall("what does Ana drink?", limit=3), timeout=60),
                list[RecallHit],
            )
            assert any("tea" in h.memory.content for h in hits)
        finally:
            await client.close(linger=0)
        assert await foreign.poll(0) == 0, "the foreign peer received memory's traffic"
        await _assert_nothing_received(guess, operator)
        assert (await sup.info("memory:main")).state.value in ("ready", "idle", "busy")
    finally:
        for sock in socks:
            sock.close(linger=0)
        events.close()
        ctx.term()


# -- from inside the real sandbox ----------------------------------------------------------------

ZMTP_PROBE = r"""
import socket, sys
path, frames_hex, key_file = sys.argv[1], sys.argv[2], sys.argv[3]
try:
    open(key_file).read()
    print("key: READ")
except OSError as exc:
    print("key: denied", type(exc).__name__)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)
s.connect(path)
def prop(name, value):
    return bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value
ready = b"\x05READY" + prop(b"Socket-Type", b"DEALER") + prop(b"Identity", b"worker:esc")
frames = [bytes.fromhex(f) for f in frames_hex.split(",")]
try:  # the server may drop us at any step of the handshake: every OSError is a refusal
    # ZMTP 3.0 greeting: signature, version 3.0, mechanism NULL, as-server 0, filler.
    s.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31)
    s.sendall(b"\x04" + bytes([len(ready)]) + ready)
    for i, frame in enumerate(frames):
        flags = 0x01 if i < len(frames) - 1 else 0x00
        s.sendall(bytes([flags | 0x02]) + len(frame).to_bytes(8, "big") + frame)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    print("closed after", len(got), "bytes")
except OSError as exc:
    print("refused:", type(exc).__name__)
"""


@pytest.fixture
def native_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    if sandbox._native is None:
        if os.environ.get("CI"):
            pytest.fail("the native sandbox extension was not built (gcc and Python headers are needed)")
        pytest.skip("native sandbox extension not built: Landlock is not applied")
    monkeypatch.delenv("SPACEBOT_SANDBOX", raising=False)
    assert sandbox.mode() == "native" and sandbox.landlock_abi() > 0


async def test_a_sandboxed_zmtp_client_cannot_spawn(
    supervisor: SupervisorProcess, native_sandbox: None, tmp_path: Path
) -> None:
    assert supervisor.ctl is not None
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "probe.py").write_text(ZMTP_PROBE)
    ep = supervisor.endpoints
    key_file = str(ep.dir / "ctl.key")
    events = await supervisor.ctl.events("sec.refused.")
    try:
        attempts = {
            "ctl": (ep.dir / "ctl", [codec.encode(ControlFrame(1, ESCAPE))]),
            "bus": (
                ep.dir / "bus",
                [b"supervisor", codec.encode(Envelope("worker:esc", "supervisor", 1, 0, ESCAPE))],
            ),
        }
        for domain, (path, frames) in attempts.items():
            result = await sandbox.run(
                [PYTHON, "probe.py", str(path), ",".join(f.hex() for f in frames), key_file],
                cwd=ws,
                workspace=ws,
                limits=sandbox.Limits(timeout=60),
            )
            assert result.exit_code == 0, result.stderr
            assert "key: denied" in result.stdout, result.stdout  # Landlock: the runtime dir is not granted
            await events.wait_for(_refusal(domain, "handshake failed"), timeout=30)  # type: ignore[arg-type]
        status = await supervisor.status()
        assert "worker:esc" not in {p.id for p in status.processes}
    finally:
        events.close()


async def test_event_subscribers_authenticate(supervisor: SupervisorProcess) -> None:
    # A subscriber with the operator key works (the confirmation needs a live subscription).
    creds = Credentials("spacebotctl", read_key(supervisor.endpoints.dir).hex())
    stream = EventStream(supervisor.endpoints.events, ("proc.",), credentials=creds)
    assert supervisor.ctl is not None
    try:
        await stream.sync(lambda nonce: _sync(supervisor, nonce))
        await supervisor.spawn("spacebot.procs.testkit:idle", id="worker:seen")
        event = await stream.wait_for(lambda e: e.topic.startswith("proc.worker.worker:seen."), timeout=30)
        assert event.src
    finally:
        stream.close()


async def _sync(sup: SupervisorProcess, nonce: str) -> None:
    from spacebot.ipc.messages import SyncEvents

    assert sup.ctl is not None
    await sup.ctl.call(SyncEvents(nonce), timeout=2.0)
