"""The OpenAPI entries of the routes in :mod:`spacebot.procs.api_routes` (the document itself,
with the core routes, is built by :func:`spacebot.procs.api.openapi_document`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from spacebot.ipc.messages import CronJob, CronRun, KillReport, ProcessRun, RecallHit, StoredMessage
from spacebot.procs.api_ingest import IngestFile
from spacebot.procs.api_routes import (
    ApiError,
    Conversation,
    CronOverview,
    Forgotten,
    KillOptions,
    MemoryDetail,
)
from spacebot.procs.api_usage import UsageSummary


def openapi_paths(
    ref: Callable[[Any], dict[str, Any]],
    content: Callable[[dict[str, Any]], dict[str, Any]],
    refused: dict[str, Any],
) -> dict[str, Any]:
    """The OpenAPI entries of these routes; ``ref(type)`` is the schema of a wire type."""

    def query(name: str, description: str, kind: str = "string") -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": kind},
        }

    def path(name: str, description: str, kind: str = "string") -> dict[str, Any]:
        return {
            "name": name,
            "in": "path",
            "required": True,
            "description": description,
            "schema": {"type": kind},
        }

    agent = query("agent", "The agent (default: the first configured)")
    failed = {"description": "Not found (the body says what)", **content(ref(ApiError))}
    down = {"description": "The owning process is down, starting or did not answer", **content(ref(ApiError))}
    bad = {"description": "A bad parameter (the body names it)", **content(ref(ApiError))}

    def op(summary: str, answer: Any, params: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", **content(ref(answer))},
                "400": bad,
                "404": failed,
                "503": down,
                **refused,
            },
            **extra,
        }

    return {
        "/api/conversations": {
            "get": op(
                "The agent's conversations, newest activity first, with their process's state",
                list[Conversation],
                [agent, query("platform", "Only this platform (web, discord…)")],
            )
        },
        "/api/conversations/{id}/messages": {
            "get": op(
                "A page of a conversation's transcript, oldest first",
                list[StoredMessage],
                [
                    path("id", "Conversation id"),
                    agent,
                    query("before", "Only messages with a smaller id (paging back)", "integer"),
                    query("limit", "Most messages (1-500, default 50)", "integer"),
                ],
            )
        },
        "/api/processes/{id}/kill": {
            "post": op(
                "Kill a process and its tree (as spacebotctl kill)",
                KillReport,
                [path("id", "Process id (channel:main:web:1f2e…, worker:ab12…)")],
                requestBody={"required": False, **content(ref(KillOptions))},
            )
        },
        "/api/memories": {
            "get": op(
                "Search memories (hybrid recall with q), else the most recent or most important",
                list[RecallHit],
                [
                    agent,
                    query("q", "What to look for"),
                    query("type", "Only this memory type (fact, preference…)"),
                    query("sort", "Without q: recent (default) or important"),
                    query("limit", "Most memories (1-200, default 20)", "integer"),
                ],
            )
        },
        "/api/memories/{id}": {
            "get": op(
                "A memory and its associations", MemoryDetail, [path("id", "Memory id", "integer"), agent]
            ),
            "delete": op(
                "Forget a memory (kept in the store, never recalled again)",
                Forgotten,
                [path("id", "Memory id", "integer"), agent],
            ),
        },
        "/api/cron": {
            "get": op(
                "The agent's cron jobs and their latest runs",
                CronOverview,
                [agent, query("runs", "Most runs (1-1000, default 50)", "integer")],
            )
        },
        "/api/cron/{id}/run": {
            "post": op("Start a run of the job now", CronRun, [path("id", "Job id"), agent]),
        },
        "/api/cron/{id}/enable": {
            "post": op("Enable the job (clearing its failures)", CronJob, [path("id", "Job id"), agent]),
        },
        "/api/cron/{id}/disable": {
            "post": op("Disable the job", CronJob, [path("id", "Job id"), agent]),
        },
        "/api/usage": {
            "get": op(
                "Model tokens and estimated cost by day, model, agent and process kind (since gateway:api "
                "started)",
                UsageSummary,
                [query("days", "Days back, today included (1-366, default 14)", "integer")],
            )
        },
        "/api/history": {
            "get": op(
                "The agent's process history (exits, maintenance runs), newest first",
                list[ProcessRun],
                [
                    agent,
                    query("limit", "Most rows (1-1000, default 50)", "integer"),
                    query("kind", "Only this kind (worker, maintenance…)"),
                    query("proc", "Only this process id"),
                ],
            )
        },
        "/api/ingest": {
            "get": op(
                "Files of the agent's ingest folder: chunks stored of the total, state and the last "
                "error, most recently updated first",
                list[IngestFile],
                [agent],
            )
        },
    }


OPENAPI_TYPES: tuple[Any, ...] = (
    ApiError,
    list[Conversation],
    list[StoredMessage],
    KillReport,
    KillOptions,
    list[RecallHit],
    MemoryDetail,
    Forgotten,
    CronOverview,
    CronRun,
    CronJob,
    UsageSummary,
    list[ProcessRun],
    list[IngestFile],
)
"""The wire types the routes above answer or take (their schemas are generated from them)."""
