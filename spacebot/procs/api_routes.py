"""The operator API's routes over an agent's data and over processes (docs/api.md).

Each handler asks the process that owns the data, over the bus, with the message the CLI or the
agent's own processes already use: ``memory:<agent>`` for conversations, transcripts and memories
(``ChannelList``, ``TranscriptPage``, ``MemRecall``, ``MemGet``, ``MemAssociations``,
``MemForget``), ``cortex:<agent>`` for cron jobs and process history (``CronCmd*``,
``HistoryGet``), and the supervisor for kills (``KillRequest``, which the supervisor takes from
``gateway:api`` as it takes it from ``spacebotctl``). A bus error becomes an HTTP status: not found
404, a bad request 400, a process that is down or starting 503.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from spacebot.ipc import ids
from spacebot.ipc.messages import (
    SUPERVISOR_ID,
    Association,
    ChannelList,
    ConversationInfo,
    CronCmdEnable,
    CronCmdHistory,
    CronCmdList,
    CronCmdRunNow,
    CronJob,
    CronRun,
    ErrorCode,
    HistoryGet,
    KillReport,
    KillRequest,
    MemAssociations,
    MemForget,
    MemGet,
    Memory,
    MemoryType,
    MemRecall,
    ProcessRun,
    RecallHit,
    StatusReply,
    StoredMessage,
    TranscriptPage,
)
from spacebot.ipc.replies import BusError
from spacebot.procs.api_ingest import IngestBook, IngestFile
from spacebot.procs.api_usage import UsageBook, UsageSummary
from spacebot.runtime.child import ChildContext

T = TypeVar("T")

ASK_TIMEOUT = 10.0
"""Seconds memory or the cortex has to answer one request."""
KILL_TIMEOUT = 45.0
"""Seconds the supervisor has to report a kill (the kind's grace, then SIGKILL, as ``spacebotctl kill``)."""
NOT_MANAGED = frozenset({"supervisor", "zygote", "zygote:spare"})
"""Rows of the process table that are not managed processes (``spacebotctl stop`` stops them)."""
HTTP_OF = {
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.NO_ROUTE: 503,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.NOT_READY: 503,
    ErrorCode.TIMEOUT: 503,
    ErrorCode.OVERLOADED: 503,
}
"""HTTP status of a bus error (anything else: 502)."""


class ApiError(msgspec.Struct, frozen=True):
    """The body of every error response."""

    error: str
    """What was wrong, in a sentence."""


class Refused(Exception):
    """A request the API answers with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Conversation(msgspec.Struct, frozen=True, kw_only=True):
    """One row of ``GET /api/conversations``: what memory knows, and whether its process runs."""

    id: str
    """Conversation id (``web:1f2e…``, ``discord:123:456``)."""
    platform: str
    """``web``, ``discord``, ``slack``, ``telegram``, ``twitch``…"""
    display_name: str
    """Its human name."""
    last_activity_at: float
    """Epoch seconds of its last message."""
    created_at: float
    """Epoch seconds it was first seen."""
    process: str
    """Bus id of its process, ``channel:<agent>:<id>``."""
    state: str
    """That process's lifecycle state (``""``: the supervisor has never started it)."""
    live: bool
    """Whether the process is running now (starting, ready, idle, busy or stopping)."""


class MemoryDetail(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/memories/{id}``: a memory and the edges that touch it."""

    memory: Memory
    """The memory."""
    edges: list[Association]
    """Associations from or to it."""


class Forgotten(msgspec.Struct, frozen=True):
    """``DELETE /api/memories/{id}``: the memory is marked forgotten (kept, never recalled)."""

    id: int
    """The memory."""
    forgotten: bool
    """Always true in a 200 answer."""


class CronOverview(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/cron``: an agent's jobs and their latest runs."""

    agent: str
    """Whose jobs."""
    jobs: list[CronJob]
    """Every job, by id."""
    runs: list[CronRun]
    """The latest runs of all jobs, newest first."""


class KillOptions(msgspec.Struct, frozen=True, kw_only=True):
    """The optional JSON body of ``POST /api/processes/{id}/kill`` (as ``spacebotctl kill``'s flags)."""

    signal: str = "TERM"
    """First signal (``TERM``, ``INT``, ``KILL``…); SIGKILL follows after the grace."""
    grace: float | None = None
    """Seconds between the first signal and SIGKILL; ``null``: the kind's budget."""
    restart: bool = False
    """Start it again afterwards (per its restart policy)."""


LIVE = frozenset({"starting", "ready", "idle", "busy", "stopping"})


def json_response(body: object, status: int = 200) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, content_type="application/json")


def error_response(status: int, message: str) -> web.Response:
    return json_response(ApiError(message), status)


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    """Query parameter ``name`` as an int in ``[low, high]``; 400 naming it when it is not one."""
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Refused(400, f"{name}={raw[:40]!r} is not an integer") from None
    if not low <= value <= high:
        raise Refused(400, f"{name}={value} is out of range ({low}..{high})")
    return value


class Routes:
    """The handlers; each one asks a process on the bus and relays its answer."""

    def __init__(
        self,
        ctx: ChildContext,
        status: Callable[[], Awaitable[StatusReply]],
        usage: UsageBook,
        ingest: IngestBook,
    ) -> None:
        self.ctx = ctx
        self.status = status
        self.usage = usage
        self.ingest = ingest

    def add_to(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/api/conversations", self._wrap(self.conversations))
        r.add_get("/api/conversations/{id}/messages", self._wrap(self.messages))
        r.add_post("/api/processes/{id}/kill", self._wrap(self.kill))
        r.add_get("/api/memories", self._wrap(self.memories))
        r.add_get("/api/memories/{id}", self._wrap(self.memory))
        r.add_delete("/api/memories/{id}", self._wrap(self.forget))
        r.add_get("/api/cron", self._wrap(self.cron))
        r.add_post("/api/cron/{id}/{action}", self._wrap(self.cron_action))
        r.add_get("/api/usage", self._wrap(self.usage_summary))
        r.add_get("/api/history", self._wrap(self.history))
        r.add_get("/api/ingest", self._wrap(self.ingest_files))

    @staticmethod
    def _wrap(
        handler: Callable[[web.Request], Awaitable[object]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def run(request: web.Request) -> web.StreamResponse:
            try:
                return json_response(await handler(request))
            except Refused as exc:
                return error_response(exc.status, exc.message)
            except BusError as exc:
                return error_response(HTTP_OF.get(exc.code, 502), exc.message)
            except TimeoutError:
                return error_response(503, "no answer in time; the process may be busy or restarting")

        return run

    # -- helpers ----------------------------------------------------------------------------------

    def agent(self, request: web.Request) -> str:
        agents = self.ctx.config.agents
        name = request.query.get("agent", "") or (agents[0] if agents else "")
        if name not in agents:
            known = ", ".join(agents) or "none"
            raise Refused(404, f"agent {name[:64]!r} is not configured (agents: {known})")
        return name

    async def ask(self, dst: str, body: Any, returns: type[T], timeout: float = ASK_TIMEOUT) -> T:
        return await self.ctx.request(dst, body, returns=returns, timeout=timeout)

    @staticmethod
    def memory_id(request: web.Request) -> int:
        raw = request.match_info["id"]
        if not raw.isdigit() or len(raw) > 18:
            raise Refused(400, f"memory id {raw[:40]!r} is not a number")
        return int(raw)

    # -- conversations ----------------------------------------------------------------------------

    async def conversations(self, request: web.Request) -> list[Conversation]:
        agent = self.agent(request)
        platform = request.query.get("platform") or None
        infos = await self.ask(ids.memory(agent), ChannelList(platform), list[ConversationInfo])
        states = {row.id: row.state.value for row in (await self.status()).processes}
        rows = []
        for info in infos:
            try:
                process = ids.channel(agent, info.id)
            except ids.IdError:
                process = ""
            state = states.get(process, "")
            rows.append(
                Conversation(
                    id=info.id,
                    platform=info.platform,
                    display_name=info.display_name,
                    last_activity_at=info.last_activity_at,
                    created_at=info.created_at,
                    process=process,
                    state=state,
                    live=state in LIVE,
                )
            )
        rows.sort(key=lambda c: c.last_activity_at, reverse=True)
        return rows

    async def messages(self, request: web.Request) -> list[StoredMessage]:
        agent = self.agent(request)
        conversation = request.match_info["id"]
        if not ids.is_conversation(conversation):
            raise Refused(400, f"{conversation[:80]!r} is not a conversation id (e.g. web:1f2e3d4c5b6a7988)")
        limit = int_param(request, "limit", 50, 1, 500)
        before = int_param(request, "before", 0, 0, 2**62) or None
        page = TranscriptPage(conversation, limit=limit, before_id=before)
        return await self.ask(ids.memory(agent), page, list[StoredMessage])

    # -- processes --------------------------------------------------------------------------------

    async def kill(self, request: web.Request) -> KillReport:
        ident = request.match_info["id"]
        if ident in NOT_MANAGED:
            raise Refused(400, f"{ident!r} is not a managed process; it stops with spacebotctl stop")
        if ident == ids.gateway("api"):
            raise Refused(
                400, "the API cannot kill itself (no answer would come): spacebotctl kill gateway:api"
            )
        raw = await request.read()
        try:
            options = msgspec.json.decode(raw, type=KillOptions) if raw.strip() else KillOptions()
        except msgspec.DecodeError as exc:
            raise Refused(400, f"the body is not a KillOptions object: {exc}") from None
        body = KillRequest(ident, options.signal, options.grace, options.restart)
        wait = (options.grace if options.grace is not None else 30.0) + 15.0
        return await self.ask(SUPERVISOR_ID, body, KillReport, timeout=max(KILL_TIMEOUT, wait))

    async def history(self, request: web.Request) -> list[ProcessRun]:
        agent = self.agent(request)
        limit = int_param(request, "limit", 50, 1, 1000)
        body = HistoryGet(
            limit=limit, kind=request.query.get("kind", ""), proc_id=request.query.get("proc", "")
        )
        return await self.ask(ids.cortex(agent), body, list[ProcessRun])

    # -- memories ---------------------------------------------------------------------------------

    async def memories(self, request: web.Request) -> list[RecallHit]:
        agent = self.agent(request)
        limit = int_param(request, "limit", 20, 1, 200)
        query = request.query.get("q", "").strip()
        kind = request.query.get("type", "")
        types = None
        if kind:
            try:
                types = [MemoryType(kind)]
            except ValueError:
                known = ", ".join(t.value for t in MemoryType)
                raise Refused(400, f"type={kind[:40]!r} is not a memory type ({known})") from None
        order = request.query.get("sort", "recent")
        if order not in ("recent", "important"):
            raise Refused(400, f"sort={order[:40]!r}: expected recent or important")
        body = MemRecall(query, "hybrid" if query else order, limit, types)  # type: ignore[arg-type]
        return await self.ask(ids.memory(agent), body, list[RecallHit])

    async def memory(self, request: web.Request) -> MemoryDetail:
        agent = self.agent(request)
        ident = self.memory_id(request)
        found = await self.ask(ids.memory(agent), MemGet(ident), Memory | None)  # type: ignore[arg-type]
        if found is None:
            raise Refused(404, f"no memory {ident} for agent {agent!r}")
        edges = await self.ask(ids.memory(agent), MemAssociations(ident), list[Association])
        return MemoryDetail(memory=found, edges=edges)

    async def forget(self, request: web.Request) -> Forgotten:
        agent = self.agent(request)
        ident = self.memory_id(request)
        changed = await self.ask(ids.memory(agent), MemForget([ident]), int)
        if not changed:
            raise Refused(404, f"no memory {ident} for agent {agent!r} (or it was already forgotten)")
        return Forgotten(ident, True)

    # -- cron -------------------------------------------------------------------------------------

    async def cron(self, request: web.Request) -> CronOverview:
        agent = self.agent(request)
        limit = int_param(request, "runs", 50, 1, 1000)
        jobs = await self.ask(ids.cortex(agent), CronCmdList(), list[CronJob])
        runs = await self.ask(ids.cortex(agent), CronCmdHistory(None, limit), list[CronRun])
        return CronOverview(agent=agent, jobs=jobs, runs=runs)

    async def cron_action(self, request: web.Request) -> CronJob | CronRun:
        agent = self.agent(request)
        job, action = request.match_info["id"], request.match_info["action"]
        cortex = ids.cortex(agent)
        match action:
            case "run":
                return await self.ask(cortex, CronCmdRunNow(job), CronRun)
            case "enable" | "disable":
                return await self.ask(cortex, CronCmdEnable(job, action == "enable"), CronJob)
        raise Refused(404, f"no cron action {action[:40]!r} (run, enable, disable)")

    # -- usage ------------------------------------------------------------------------------------

    async def usage_summary(self, request: web.Request) -> UsageSummary:
        return self.usage.summary(int_param(request, "days", 14, 1, 366))

    # -- ingest -----------------------------------------------------------------------------------

    async def ingest_files(self, request: web.Request) -> list[IngestFile]:
        return await asyncio.to_thread(self.ingest.listing, self.agent(request))
