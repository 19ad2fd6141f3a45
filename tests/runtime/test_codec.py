"""The frame decoder never raises, whatever arrives."""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from spacebot.ipc import codec
from spacebot.ipc.messages import Echo, Envelope, Ok, Ping


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=0, max_size=4))
def test_guard_never_raises_on_random_frames(frames: list[bytes]) -> None:
    guard = codec.FrameGuard("fuzz", max_frame=256)
    result = guard.envelope(frames, "peer")
    assert result is None or isinstance(result, Envelope)
    if result is None:
        assert guard.errors == 1


_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(_values)
def test_guard_never_raises_on_random_msgpack(value: object) -> None:
    guard = codec.FrameGuard("fuzz")
    payload = msgspec.msgpack.encode(value)
    assert guard.envelope([b"peer", payload], "peer") is None or guard.errors == 0


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.integers(0, 2**32), st.binary(max_size=200), st.integers(-(2**40), 2**40))
def test_valid_envelopes_round_trip(rid: int, reply_to: int, payload: bytes, seq: int) -> None:
    guard = codec.FrameGuard("fuzz")
    for body in (Ping(payload), Echo(seq, payload), Ok(payload)):
        env = Envelope("peer", "me", rid, reply_to, body)
        assert guard.envelope([b"peer", codec.encode(env)], "peer") == env
    assert guard.errors == 0


def test_counters_name_the_reason() -> None:
    guard = codec.FrameGuard("me", max_frame=10)
    assert guard.envelope([b"x", b"y" * 11], "peer") is None
    assert guard.oversized == 1 and "peer" in guard.last_reason
    assert guard.envelope([b"x"], "peer") is None
    assert guard.malformed == 1
    unknown = msgspec.msgpack.encode(["peer", "me", 1, 0, {"type": "nope"}])
    assert codec.FrameGuard("me").envelope([b"peer", unknown], "peer") is None
