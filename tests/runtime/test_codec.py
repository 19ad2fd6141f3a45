"""The frame decoder never raises, whatever arrives; the wire types keep their tags apart and
refuse values outside their sets."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spacebot.ipc import codec, messages
from spacebot.ipc.messages import (
    ControlFrame,
    ControlReply,
    DelegateResult,
    Echo,
    Envelope,
    Event,
    FromZygote,
    Ok,
    Ping,
    SpawnSpec,
    ToZygote,
)
from spacebot.llm import types as llm_types


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


# -- tags ----------------------------------------------------------------------------------------

WIRE_ROOTS: tuple[Any, ...] = (Envelope, Event, ControlFrame, ControlReply, ToZygote, FromZygote)
"""What is decoded off a socket. Reply values travel as ``Ok.value: Any``, so every struct of the
messages module is a root too."""


def _structs_of(module: Any) -> list[type[msgspec.Struct]]:
    return [
        v
        for v in vars(module).values()
        if inspect.isclass(v) and issubclass(v, msgspec.Struct) and v.__module__ == module.__name__
    ]


def _tags(roots: tuple[Any, ...]) -> dict[str, set[type]]:
    """Every tag of a struct reachable from ``roots`` (fields, unions, containers, recursion)."""
    found: dict[str, set[type]] = {}
    seen: set[int] = set()

    def walk(node: object) -> None:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, msgspec.inspect.StructType) and node.tag is not None:
            found.setdefault(str(node.tag), set()).add(node.cls)
        if isinstance(node, msgspec.Struct):
            for field in msgspec.structs.fields(node):
                walk(getattr(node, field.name))
        elif isinstance(node, tuple):
            for item in node:
                walk(item)

    walk(tuple(msgspec.inspect.multi_type_info(roots)))
    return found


def _duplicates(tags: dict[str, set[type]]) -> dict[str, list[str]]:
    return {tag: sorted(c.__qualname__ for c in classes) for tag, classes in tags.items() if len(classes) > 1}


def test_every_wire_tag_names_one_struct() -> None:
    tags = _tags(WIRE_ROOTS + tuple(_structs_of(messages)))
    # The walk reaches requests, events, control replies, reply values and memory values alike.
    for tag in ("stop", "mem_save", "out_message", "status_reply", "tree_node", "llm_usage", "z_spawn"):
        assert tag in tags, tag
    assert _duplicates(tags) == {}


class _Clash(msgspec.Struct, frozen=True, tag="stop"):
    """Shares a wire tag, as the LLM stream's end once did."""


class _Holder(msgspec.Struct, frozen=True):
    nested: list[dict[str, messages.Stop | messages.Ping]]
    other: _Clash | None = None


def test_the_tag_check_sees_a_duplicate_deep_inside() -> None:
    assert _duplicates(_tags((_Holder,))) == {"stop": ["Stop", "_Clash"]}


def test_in_process_llm_tags_differ_from_wire_tags() -> None:
    """Stream events never travel, but a log line or a dump must not read one as a wire message."""
    wire = _tags(WIRE_ROOTS + tuple(_structs_of(messages)))
    local = _tags(tuple(c for c in _structs_of(llm_types)))
    assert local, "no tagged LLM types found"
    assert {t: sorted(c.__qualname__ for c in local[t]) for t in local.keys() & wire.keys()} == {}


def test_wire_types_depend_on_no_other_spacebot_module() -> None:
    """One home: the messages module imports only the standard library and msgspec."""
    tree = ast.parse(inspect.getsource(messages))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert {m for m in imported if m and m.startswith("spacebot")} == set()


# -- values outside their sets are refused at decode, and the sender is told why ------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (msgspec.structs.replace(DelegateResult("worker:1", "success", "done"), outcome="won"), "outcome"),
        (msgspec.structs.replace(SpawnSpec(messages.Kind.WORKER, "a.b:c"), restart="sometimes"), "restart"),
        (msgspec.structs.replace(messages.OutTyping("web:1", "idle"), state="dozing"), "state"),
        (msgspec.structs.replace(messages.MemRecall("q"), mode="psychic"), "mode"),
    ],
)
def test_a_value_outside_its_set_is_refused_with_its_field_named(body: Any, field: str) -> None:
    guard = codec.FrameGuard("me")
    refused: list[tuple[codec.EnvelopeHead, str, str]] = []
    payload = codec.encode(Envelope("peer", "me", 7, 0, body))
    env = guard.envelope([b"peer", payload], "peer", lambda h, why, text: refused.append((h, why, text)))
    assert env is None and guard.malformed == 1
    [(head, why, text)] = refused
    assert (head.src, head.id, head.reply_to, why) == ("peer", 7, 0, "malformed")
    assert f"`body.{field}`" in text


def test_an_unknown_message_type_is_refused_as_unknown() -> None:
    guard = codec.FrameGuard("me")
    refused: list[str] = []
    payload = msgspec.msgpack.encode(["peer", "me", 3, 0, {"type": "no-such-message"}])
    assert guard.envelope([b"peer", payload], "peer", lambda h, why, text: refused.append(why)) is None
    assert refused == ["unknown"] and guard.unknown == 1


def test_a_refusal_claiming_another_sender_is_not_answered() -> None:
    guard = codec.FrameGuard("me")
    refused: list[str] = []
    body = msgspec.structs.replace(DelegateResult("worker:1", "success", "done"), outcome="won")
    payload = codec.encode(Envelope("somebody-else", "me", 7, 0, body))
    assert guard.envelope([b"peer", payload], "peer", lambda h, why, text: refused.append(why)) is None
    assert refused == [] and guard.malformed == 1


def test_a_control_frame_refusal_keeps_its_request_id() -> None:
    bad = msgspec.structs.replace(SpawnSpec(messages.Kind.WORKER, "a.b:c"), restart="sometimes")
    payload = codec.encode(ControlFrame(41, bad))
    with pytest.raises(msgspec.ValidationError):
        codec.control_decoder.decode(payload)
    assert codec.control_id(payload) == 41
    assert codec.control_id(b"\xc1 garbage") == 0
