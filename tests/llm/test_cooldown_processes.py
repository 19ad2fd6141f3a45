"""Two registries in two real OS processes exchange a CooldownNotice; the second skips the model."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from multiprocessing.connection import Connection
from typing import Any

import msgspec

from spacebot.llm import LLM, CooldownNotice, LLMConfig, Request, UserMessage
from spacebot.llm.fake import FakeLLM

from .conftest import make_config

REQ = Request([UserMessage("explain why and compare the designs")])
_codec = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(CooldownNotice)


def _first_process(config_bytes: bytes, conn: Connection) -> None:
    """Calls the chain; its cooldown notices go down the pipe (what the runtime puts on the bus)."""
    config = msgspec.msgpack.decode(config_bytes, type=LLMConfig)

    async def run() -> dict[str, Any]:
        llm = LLM(config, publish_cooldown=lambda n: conn.send_bytes(_codec.encode(n)))
        res = await llm.complete(REQ, process="channel")
        await llm.aclose()
        return {"model": res.model, "fallbacks": res.fallbacks}

    conn.send(("done", asyncio.run(run())))


def _second_process(config_bytes: bytes, conn: Connection) -> None:
    """Applies the notice it receives, then calls the same chain."""
    config = msgspec.msgpack.decode(config_bytes, type=LLMConfig)

    async def run() -> dict[str, Any]:
        llm = LLM(config)
        llm.cooldowns.apply(_dec.decode(conn.recv_bytes()))
        remaining = llm.cooldowns.remaining("oa/main")
        res = await llm.complete(REQ, process="channel")
        await llm.aclose()
        return {"model": res.model, "fallbacks": res.fallbacks, "remaining": remaining}

    conn.send(("done", asyncio.run(run())))


async def _recv(conn: Connection) -> Any:
    def wait() -> Any:
        if not conn.poll(60):
            raise TimeoutError("child sent nothing within 60 s")
        return conn.recv_bytes()

    return await asyncio.to_thread(wait)


async def _recv_obj(conn: Connection) -> Any:
    def wait() -> Any:
        if not conn.poll(60):
            raise TimeoutError("child sent nothing within 60 s")
        return conn.recv()

    return await asyncio.to_thread(wait)


async def test_cooldown_shared_between_two_processes(fake: FakeLLM) -> None:
    fake.fail(429, retry_after="90", times=None, model="^main$")
    fake.add(text="served by backup")
    cfg_bytes = msgspec.msgpack.encode(make_config(fake))
    ctx = mp.get_context("fork")
    a_parent, a_child = ctx.Pipe()
    b_parent, b_child = ctx.Pipe()
    pa = ctx.Process(target=_first_process, args=(cfg_bytes, a_child), daemon=True)
    pb = ctx.Process(target=_second_process, args=(cfg_bytes, b_child), daemon=True)
    pa.start()
    pb.start()
    try:
        notice = _dec.decode(await _recv(a_parent))  # the "bus": relay A's notice to B
        assert notice.model == "oa/main" and "429" in notice.reason
        done_a = await _recv_obj(a_parent)
        assert done_a == ("done", {"model": "an/backup", "fallbacks": ["oa/main"]})
        assert [r.model for r in fake.requests] == ["main", "backup"]
        b_parent.send_bytes(_codec.encode(notice))
        done_b = await _recv_obj(b_parent)
        assert done_b[1]["model"] == "an/backup" and done_b[1]["fallbacks"] == ["oa/main"]
        assert 60 < done_b[1]["remaining"] <= 90
        # B never sent a request to the cooled-down model.
        assert [r.model for r in fake.requests] == ["main", "backup", "backup"]
    finally:
        for p in (pa, pb):
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    assert pa.exitcode == 0 and pb.exitcode == 0
