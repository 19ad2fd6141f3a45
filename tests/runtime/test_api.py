"""The operator's HTTP API: a whole service with ``[api]`` on, read by a real HTTP client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from spacebot import config as config_mod
from spacebot.errors import ConfigError
from spacebot.ipc import ids
from spacebot.ipc.messages import Event, KillRequest, Kind, Notice, ProcState, SpawnSpec
from spacebot.messaging.ports import listening_port
from spacebot.procs.api import Reader
from spacebot.supervisor.secrets_service import secret_uses
from spacebot.testing import ChatSystem, ctl_in_thread

WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""
TOKEN = "operator-s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_api_config_needs_a_token_off_loopback() -> None:
    with pytest.raises(ConfigError, match=r"api\.host.*requires api\.token"):
        config_mod.from_dict({"api": {"enabled": True, "host": "0.0.0.0"}}, {})
    cfg = config_mod.from_dict({"api": {"enabled": True, "host": "0.0.0.0", "token": "env:API_TOKEN"}}, {})
    assert cfg.api.port == 8788 and cfg.api.token == "env:API_TOKEN"
    with pytest.raises(ConfigError, match=r"api\.port"):
        config_mod.from_dict({"api": {"port": -1}}, {})
    with pytest.raises(ConfigError, match=r"api\.public_hosts"):
        config_mod.from_dict({"api": {"public_hosts": ["ops.example.com:80"]}}, {})


def test_api_token_secret_goes_to_gateways_only() -> None:
    cfg = config_mod.from_dict({"api": {"enabled": True, "token": "secret:API_TOKEN"}}, {})
    (use,) = secret_uses(cfg)["API_TOKEN"]
    assert (use.where, use.category, use.kinds) == ("api.token", "system", frozenset({Kind.GATEWAY}))


async def test_slow_reader_loses_the_oldest_events_and_is_told_how_many() -> None:
    reader = Reader("proc.", size=10)
    for n in range(25):
        reader.offer(Event(f"proc.worker.w{n}.spawn", "supervisor", float(n), Notice("spawn")))
        reader.offer(Event("llm.usage.x", "worker:x", float(n), Notice("other")))  # filtered out
    dropped, events = reader.take()
    assert dropped == 15
    assert [e.topic for e in events] == [f"proc.worker.w{n}.spawn" for n in range(15, 25)]
    assert reader.take() == (0, [])


@pytest.fixture
async def system(short_tmp: Path) -> AsyncIterator[ChatSystem]:
    api = {"enabled": True, "port": 0, "token": TOKEN}
    async with ChatSystem(short_tmp, None, model=False, sections_extra={"api": api}) as chat:
        yield chat


async def api_url(system: ChatSystem) -> str:
    row = await system.sup.info(ids.gateway("api"))
    assert row.state in (ProcState.READY, ProcState.IDLE, ProcState.BUSY), row
    port = await asyncio.to_thread(listening_port, row.pid)
    assert port, f"gateway:api (pid {row.pid}) listens on no TCP port"
    return f"http://127.0.0.1:{port}/api"


async def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=AUTH if headers is None else headers) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def health_until(url: str, status: int, what: str, memory: str = "") -> dict[str, Any]:
    """Ask ``/health`` until it answers ``status`` (and, if given, shows memory in state
    ``memory``), bounded by :data:`WAIT`."""
    body: Any = None
    try:
        async with asyncio.timeout(WAIT):
            while True:
                code, body = await get(f"{url}/health")
                if code == status and (not memory or body["processes"][ids.memory("main")] == memory):
                    return dict(body)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"/health never answered {status} ({what}); last: {body}") from None


async def test_health_status_auth_and_openapi(system: ChatSystem) -> None:
    url = await api_url(system)

    code, body = await get(f"{url}/health", headers={})
    assert code == 401 and "token" in body["error"]
    code, body = await get(f"{url}/health", headers={"Authorization": "Bearer wrong"})
    assert code == 401
    code, body = await get(f"{url}/health", headers={**AUTH, "Host": "rebind.attacker.example"})
    assert code == 403 and "public_hosts" in body["error"]
    code, body = await get(f"{url}/health", headers={**AUTH, "Origin": "http://evil.example"})
    assert code == 403 and "cross-origin" in body["error"]

    healthy = await health_until(url, 200, "every core process up")
    assert set(healthy["processes"]) == {ids.memory("main"), ids.gateway("web"), ids.gateway("api")}
    assert set(healthy["processes"].values()) <= {"ready", "idle", "busy"}
    assert healthy["version"] and healthy["uptime_s"] > 0

    code, status = await get(f"{url}/status")
    assert code == 200
    rc, out, err = await ctl_in_thread("--runtime-dir", str(system.sup.endpoints.dir), "status", "--json")
    assert rc == 0, (out, err)
    assert {p["id"] for p in status["processes"]} == {p["id"] for p in json.loads(out)["processes"]}
    assert status["supervisor_pid"] == system.sup.pid

    # Memory down (and left down): unhealthy, and the body says which process.
    assert system.sup.ctl is not None
    await system.sup.ctl.call(KillRequest(ids.memory("main"), restart=False), timeout=30.0)
    down = await health_until(url, 503, "memory killed", memory="exited")
    assert down["processes"][ids.gateway("api")] in ("ready", "idle", "busy")
    await system.sup.spawn(
        "spacebot.procs.memory:serve",
        kind=Kind.MEMORY,
        id=ids.memory("main"),
        args={"agent": "main"},
        timeout=WAIT,
    )
    await health_until(url, 200, "memory back")

    code, doc = await get(f"{url}/openapi.json")
    assert code == 200 and doc["openapi"].startswith("3.1")
    assert {"/api/health", "/api/status", "/api/events", "/api/openapi.json"} <= set(doc["paths"])
    assert {"Health", "StatusReply", "ProcessInfo"} <= set(doc["components"]["schemas"])
    assert "supervisor_pid" in doc["components"]["schemas"]["StatusReply"]["properties"]


async def test_events_stream_a_spawn_in_order(system: ChatSystem) -> None:
    url = await api_url(system)
    timeout = aiohttp.ClientTimeout(total=WAIT)
    seen: list[dict[str, Any]] = []
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url}/events", params={"prefix": "proc.worker."}, headers=AUTH) as resp,
    ):
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        # The headers came: this reader is registered, so nothing published from now on is missed.
        spawn = SpawnSpec(kind=Kind.WORKER, target="spacebot.procs.testkit:idle", id="worker:seen")
        assert system.sup.ctl is not None
        await system.sup.ctl.call(spawn, timeout=30.0)
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                seen.append(json.loads(line[len("data: ") :]))
            mine = [e for e in seen if ".worker:seen." in e["topic"]]
            if any(e["body"].get("new") == "ready" for e in mine):
                break
    assert all(e["topic"].startswith("proc.worker.") for e in seen), seen
    topics = [e["topic"] for e in seen if ".worker:seen." in e["topic"]]
    assert topics[0] == "proc.worker.worker:seen.spawn", topics
    states = [e["body"]["new"] for e in seen if e["topic"] == "proc.worker.worker:seen.state"]
    assert states and states[-1] == "ready", topics  # after the spawn, as the supervisor published them
