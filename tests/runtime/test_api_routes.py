"""The operator API's data and action routes, against a whole running service with a fake model."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest

from spacebot.ipc import ids
from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import (
    CronCmdAdd,
    CronJob,
    CronJobSpec,
    CronRequest,
    Event,
    MemAssociate,
    Memory,
    MemoryDraft,
    MemSave,
    Notice,
    Relation,
    Usage,
    UsageReport,
)
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall
from spacebot.procs.api_usage import UsageBook
from spacebot.testing import ChatSystem
from tests.runtime.test_api import AUTH, TOKEN, WAIT, api_url

XSS = '<img src=x onerror="window.__pwned=1">'
"""A title and a message that must stay text wherever they are shown."""


class Seeded(msgspec.Struct):
    """What :func:`seed` put into the running system."""

    conversation: str
    memories: list[Memory]
    job: str


async def call(method: str, url: str, headers: dict[str, str] | None = None, **kw: Any) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, headers=AUTH if headers is None else headers, **kw) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def until(what: str, probe: Any) -> Any:
    """Call the async ``probe`` until it returns something truthy, bounded by :data:`WAIT`."""
    last: Any = None
    try:
        async with asyncio.timeout(WAIT):
            while not (last := await probe()):  # noqa: ASYNC110 - another process's state, read over HTTP
                await asyncio.sleep(0.1)
            return last
    except TimeoutError:
        raise AssertionError(f"never happened: {what} (last: {last!r})") from None


async def seed(system: ChatSystem) -> Seeded:
    """A conversation with an answered message (a model call), two linked memories, a cron job."""
    ana = await system.client("Ana")
    conv = await ana.create(XSS)
    await ana.open(conv)
    await ana.send(conv, f"hello {XSS}")
    await ana.wait_for(lambda f: f["type"] == "message" and f["message"]["role"] == "assistant", timeout=WAIT)
    client = BusClient("api-test", system.sup.endpoints.bus)
    client.start()
    try:
        mem = ids.memory("main")
        drafts = [
            MemoryDraft(content="Ana likes green tea", type="preference"),
            MemoryDraft(content="Deploys happen on Friday afternoons", type="fact"),
        ]
        saved = msgspec.convert(await client.request(mem, MemSave(drafts), timeout=WAIT), list[Memory])
        edge = MemAssociate(saved[1].id, saved[0].id, Relation.CAUSED_BY, 0.7)
        await client.request(mem, edge, timeout=WAIT)
    finally:
        await client.close()
    assert system.sup.ctl is not None
    spec = CronJobSpec(id="tea-check", prompt="Ask whether the tea is ready", every=3600.0)
    job = await system.sup.ctl.call(CronRequest("main", CronCmdAdd(spec)), returns=CronJob, timeout=WAIT)
    assert job.id == "tea-check"
    return Seeded(conv, saved, job.id)


@pytest.fixture
async def fake() -> AsyncIterator[FakeLLM]:
    async with FakeLLM() as server:
        server.add(tool_calls=[FakeToolCall("reply", {"content": f"Hi! {XSS}"})])
        yield server


@pytest.fixture
async def system(short_tmp: Path, fake: FakeLLM) -> AsyncIterator[ChatSystem]:
    api = {"enabled": True, "port": 0, "token": TOKEN}
    async with ChatSystem(short_tmp, fake, sections_extra={"api": api}) as chat:
        yield chat


ROUTES = [
    ("GET", "/conversations"),
    ("GET", "/conversations/web:0011223344556677/messages"),
    ("POST", "/processes/memory:main/kill"),
    ("GET", "/memories"),
    ("GET", "/memories/1"),
    ("DELETE", "/memories/1"),
    ("GET", "/cron"),
    ("POST", "/cron/tea-check/disable"),
    ("GET", "/usage"),
    ("GET", "/history"),
]


async def test_every_route_refused_without_token_known_host_or_own_origin(system: ChatSystem) -> None:
    url = await api_url(system)
    for method, route in ROUTES:
        code, body = await call(method, url + route, headers={})
        assert code == 401 and "token" in body["error"], (method, route, code, body)
        code, body = await call(method, url + route, headers={"Authorization": "Bearer nope"})
        assert code == 401, (method, route, code, body)
        code, body = await call(method, url + route, headers={**AUTH, "Host": "rebind.attacker.example"})
        assert code == 403 and "public_hosts" in body["error"], (method, route, code, body)
        code, body = await call(method, url + route, headers={**AUTH, "Origin": "http://evil.example"})
        assert code == 403 and "cross-origin" in body["error"], (method, route, code, body)
    # None of the refused kills reached the supervisor.
    assert (await system.sup.info(ids.memory("main"))).state.value in ("ready", "idle", "busy")

    # The admin page and its code carry no data: served without the token, under its own policy.
    base = url.removesuffix("/api")
    async with aiohttp.ClientSession() as session:
        async with session.get(base + "/admin") as resp:
            assert resp.status == 200 and "admin/static/admin.js" in await resp.text()
            csp = resp.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "sandbox" not in csp
        async with session.get(base + "/admin/static/admin.js") as resp:
            assert resp.status == 200 and resp.content_type == "application/javascript"
            assert "sandbox" in resp.headers["Content-Security-Policy"]
        async with session.get(base + "/admin/static/../api.py") as resp:
            assert resp.status in (401, 404)
        async with session.get(base + "/admin", headers={"Host": "rebind.attacker.example"}) as resp:
            assert resp.status == 403


async def test_routes_read_and_act_on_a_running_system(system: ChatSystem) -> None:
    url = await api_url(system)
    seeded = await seed(system)
    conv, (tea, deploys) = seeded.conversation, seeded.memories

    # Conversations, with the state of their process.
    code, convs = await call("GET", f"{url}/conversations")
    assert code == 200, convs
    (row,) = [c for c in convs if c["id"] == conv]
    assert row["display_name"] == XSS and row["platform"] == "web"
    assert row["process"] == ids.channel("main", conv) and row["live"] is True, row
    code, only_slack = await call("GET", f"{url}/conversations", params={"platform": "slack"})
    assert code == 200 and only_slack == []
    code, body = await call("GET", f"{url}/conversations", params={"agent": "nobody"})
    assert code == 404 and "nobody" in body["error"]

    # Its transcript, paged back.
    code, messages = await call("GET", f"{url}/conversations/{conv}/messages")
    assert code == 200, messages
    said = [(m["role"], m["text"]) for m in messages]
    assert said == [("user", f"hello {XSS}"), ("assistant", f"Hi! {XSS}")]
    before = {"before": messages[1]["id"]}
    code, older = await call("GET", f"{url}/conversations/{conv}/messages", params=before)
    assert code == 200 and [m["id"] for m in older] == [messages[0]["id"]]
    code, body = await call("GET", f"{url}/conversations/{conv}/messages", params={"limit": "0"})
    assert code == 400 and "limit" in body["error"]
    code, body = await call("GET", f"{url}/conversations/nope:1/messages")
    assert code == 400 and "conversation id" in body["error"]

    # Memories: newest first without a query, by type, by search, one with its edges, forgotten.
    code, hits = await call("GET", f"{url}/memories")
    assert code == 200, hits
    assert [h["memory"]["id"] for h in hits][:2] == [deploys.id, tea.id]
    code, hits = await call("GET", f"{url}/memories", params={"type": "preference"})
    assert code == 200 and [h["memory"]["id"] for h in hits] == [tea.id]
    code, hits = await call("GET", f"{url}/memories", params={"q": "green tea"})
    assert code == 200 and hits and hits[0]["memory"]["id"] == tea.id, hits
    code, body = await call("GET", f"{url}/memories", params={"type": "gossip"})
    assert code == 400 and "gossip" in body["error"]
    code, detail = await call("GET", f"{url}/memories/{tea.id}")
    assert code == 200 and detail["memory"]["content"] == "Ana likes green tea"
    edge = next(e for e in detail["edges"] if e["relation"] == "caused_by")
    assert (edge["source_id"], edge["target_id"]) == (deploys.id, tea.id)
    code, body = await call("GET", f"{url}/memories/999999")
    assert code == 404, body
    code, body = await call("DELETE", f"{url}/memories/{deploys.id}")
    assert code == 200 and body == {"id": deploys.id, "forgotten": True}
    code, hits = await call("GET", f"{url}/memories")
    assert deploys.id not in [h["memory"]["id"] for h in hits]
    code, body = await call("DELETE", f"{url}/memories/{deploys.id}")
    assert code == 404, body

    # Cron: the job, a run started now and finished, disable and enable.
    code, cron = await call("GET", f"{url}/cron")
    assert code == 200 and [j["id"] for j in cron["jobs"]] == [seeded.job] and cron["runs"] == []
    code, run = await call("POST", f"{url}/cron/{seeded.job}/run")
    assert code == 200 and run["job_id"] == seeded.job, run

    async def finished() -> Any:
        runs = (await call("GET", f"{url}/cron"))[1]["runs"]
        return runs and runs[0]["ended_at"] is not None and runs[0]

    done = await until("the cron run ends", finished)
    assert done["id"] == run["id"] and done["outcome"] == "success", done
    code, job = await call("POST", f"{url}/cron/{seeded.job}/disable")
    assert code == 200 and job["enabled"] is False
    code, job = await call("POST", f"{url}/cron/{seeded.job}/enable")
    assert code == 200 and job["enabled"] is True
    code, body = await call("POST", f"{url}/cron/no-such-job/run")
    assert code == 404 and "no-such-job" in body["error"]
    code, body = await call("POST", f"{url}/cron/{seeded.job}/explode")
    assert code == 404 and "explode" in body["error"]

    # Usage: the model calls seen since the API started (the chat reply and the cron run).
    code, usage = await call("GET", f"{url}/usage", params={"days": "1"})
    assert code == 200 and usage["requests"] >= 2, usage
    channel_rows = [r for r in usage["rows"] if r["process"] == "channel"]
    assert channel_rows and channel_rows[0]["agent"] == "main" and channel_rows[0]["model"].endswith("main")
    assert sum(r["input_tokens"] for r in usage["rows"]) > 0
    code, body = await call("GET", f"{url}/usage", params={"days": "x"})
    assert code == 400 and "days" in body["error"]

    # Kill the conversation's process through the supervisor; the history records its end.
    process = ids.channel("main", conv)
    code, body = await call("POST", f"{url}/processes/supervisor/kill")
    assert code == 400 and "spacebotctl stop" in body["error"]
    code, body = await call("POST", f"{url}/processes/{process}/kill", data=b"{not json")
    assert code == 400 and "KillOptions" in body["error"]
    code, report = await call("POST", f"{url}/processes/{process}/kill", json={"signal": "TERM"})
    assert code == 200 and report["id"] == process and report["killed"], report
    code, convs = await call("GET", f"{url}/conversations")
    assert next(c for c in convs if c["id"] == conv)["live"] is False
    code, body = await call("POST", f"{url}/processes/worker:nobody/kill")
    assert code == 404 and "worker:nobody" in body["error"]

    async def recorded() -> Any:
        code, runs = await call("GET", f"{url}/history", params={"proc": process})
        assert code == 200, runs
        return [r for r in runs if r["ended_at"] is not None]

    (ended,) = await until("the killed channel in the history", recorded)
    assert ended["kind"] == "channel"
    code, runs = await call("GET", f"{url}/history", params={"limit": "5"})
    assert code == 200 and 0 < len(runs) <= 5

    # Every route is in the generated OpenAPI document, its schemas from the wire types.
    code, doc = await call("GET", f"{url}/openapi.json")
    assert code == 200
    for method, route in ROUTES:
        template = route.replace("web:0011223344556677", "{id}").replace("memory:main", "{id}")
        template = template.replace("/memories/1", "/memories/{id}").replace("tea-check", "{id}")
        assert method.lower() in doc["paths"][f"/api{template}"], (method, template)
    schemas = doc["components"]["schemas"]
    wanted = {"Conversation", "MemoryDetail", "CronOverview", "UsageSummary", "KillOptions", "RecallHit"}
    assert wanted <= set(schemas)
    assert "live" in schemas["Conversation"]["properties"]


def test_usage_is_added_up_by_day_model_agent_and_kind() -> None:
    book = UsageBook(["main", "ops"], now=0.0)
    day = 86_400.0
    book.seed([])
    spawn = Event(
        "proc.branch.branch:b1.spawn", "supervisor", 1.0, Notice("spawn", {"parent": "channel:ops:web:1"})
    )
    book.feed(spawn)
    book.feed(
        Event("proc.worker.worker:w1.spawn", "supervisor", 1.0, Notice("spawn", {"parent": "branch:b1"}))
    )

    def used(src: str, ts: float, model: str, kind: str, tokens: int, cost: float) -> Event:
        report = UsageReport(model, kind, None, Usage(tokens, tokens // 2, 0), cost, 100.0)
        return Event(f"llm.usage.{src}", src, ts, report)

    book.feed(used("channel:main:web:1", 10 * day + 5, "a/big", "channel", 100, 0.5))
    book.feed(used("channel:main:web:1", 10 * day + 9, "a/big", "channel", 10, 0.25))
    book.feed(used("worker:w1", 10 * day + 9, "a/small", "worker", 40, 0.0))  # ops, through two parents
    book.feed(used("worker:stranger", 11 * day, "a/small", "worker", 1, 0.0))
    book.feed(used("channel:main:web:1", 3 * day, "a/big", "channel", 1000, 9.0))  # too old below
    summary = book.summary(days=2, now=11 * day + 60)
    rows = [
        (r.day, r.model, r.agent, r.process, r.requests, r.input_tokens, r.cost_usd) for r in summary.rows
    ]
    assert rows == [
        ("1970-01-11", "a/big", "main", "channel", 2, 110, 0.75),
        ("1970-01-11", "a/small", "ops", "worker", 1, 40, 0.0),
        ("1970-01-12", "a/small", "unknown", "worker", 1, 1, 0.0),
    ]
    assert (summary.requests, summary.cost_usd, summary.since) == (4, 0.75, 0.0)
    assert book.summary(days=10, now=11 * day).requests == 5
