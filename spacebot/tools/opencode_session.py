"""One OpenCode session, driven over the HTTP API of ``opencode serve`` (:mod:`spacebot.tools.opencode`).

:func:`run_task` creates a session (``POST /session``), sends the task (``POST
/session/{id}/message``, which answers with the final assistant message once OpenCode is done) and
meanwhile reads the server's event stream (``GET /event``): each tool OpenCode runs becomes a status
line, and a permission or question it would wait on is refused (nobody could answer it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from spacebot.tools.opencode import OpenCodeError, Server, ServerPool

log = logging.getLogger("spacebot.opencode")

StatusFn = Callable[[str], None]

_TOOL_VERBS = {"running": "running", "completed": "done", "error": "failed"}


async def run_task(
    pool: ServerPool,
    directory: Path,
    task: str,
    on_status: StatusFn,
    on_activity: Callable[[], None] | None = None,
) -> str:
    """Have OpenCode do ``task`` in ``directory``; returns its final answer, status lines on the way.

    ``on_activity`` is called for every event of the session (a sign of life while the model writes).

    Raises :class:`OpenCodeError` when the session ends in an error. Cancelled, it aborts the
    session before passing the cancellation on."""
    server = await pool.get(directory)
    http, auth = pool.http, server.auth
    async with http.post(f"{server.url}/session", json={"title": task[:80]}, headers=auth) as resp:
        session = await _json(resp, "create a session")
    sid = session["id"]
    on_status(f"OpenCode session {sid} in {directory.name or directory}")
    listening = asyncio.Event()
    refused: list[str] = []
    events = asyncio.get_running_loop().create_task(
        _follow(pool, server, sid, on_status, on_activity, listening, refused)
    )
    body = {"parts": [{"type": "text", "text": task}], "tools": {"question": False}}
    try:
        # The task goes out once the event stream is open, so no step of it goes unseen.
        waiter = asyncio.ensure_future(listening.wait())
        try:
            await asyncio.wait(
                [waiter, events], timeout=pool.start_timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not listening.is_set():
            raise OpenCodeError(f"OpenCode's event stream did not open: {_ended(events)}")
        no_deadline = aiohttp.ClientTimeout(total=None, sock_read=None)
        async with http.post(
            f"{server.url}/session/{sid}/message", json=body, headers=auth, timeout=no_deadline
        ) as resp:
            answer = await _json(resp, "send the task")
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                async with http.post(f"{server.url}/session/{sid}/abort", headers=auth):
                    pass
        raise
    finally:
        events.cancel()
        await asyncio.wait([events])
        if not events.cancelled() and events.exception() is not None:  # the stream broke: logged only
            log.warning("OpenCode's event stream ended: %s", _ended(events))
    info = answer.get("info") or {}
    if info.get("error"):
        raise OpenCodeError(f"OpenCode's session failed: {_describe_error(info['error'])}")
    texts = [p.get("text", "") for p in answer.get("parts") or [] if p.get("type") == "text"]
    text = "\n".join(t for t in texts if t).strip()
    if not text and refused:  # OpenCode ends its turn at a refusal
        raise OpenCodeError(
            f"OpenCode stopped when it asked for {', '.join(refused)}, which nobody can grant"
        )
    return text


async def _json(resp: aiohttp.ClientResponse, what: str) -> Any:
    if resp.status != 200:
        raise OpenCodeError(f"OpenCode could not {what}: HTTP {resp.status}: {(await resp.text())[:300]}")
    return await resp.json()


def _ended(task: asyncio.Task[None]) -> str:
    """How a finished (or still running) background task ended, in a few words."""
    if not task.done():
        return "no answer in time"
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"{type(exc).__name__}: {exc}" if exc is not None else "it closed"


def _describe_error(error: Any) -> str:
    if isinstance(error, dict):
        data = error.get("data") or {}
        message = data.get("message") if isinstance(data, dict) else None
        return f"{error.get('name', 'error')}: {message or json.dumps(data)[:300]}"
    return str(error)[:300]


async def _follow(
    pool: ServerPool,
    server: Server,
    sid: str,
    on_status: StatusFn,
    on_activity: Callable[[], None] | None,
    listening: asyncio.Event,
    refused: list[str],
) -> None:
    """Turn the server's events about session ``sid`` into status lines; refuse what would wait.

    ``listening`` is set once the stream is open; what was refused is added to ``refused``."""
    seen: set[tuple[str, str]] = set()
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with pool.http.get(f"{server.url}/event", headers=server.auth, timeout=timeout) as resp:
        if resp.status != 200:
            raise OpenCodeError(f"GET /event answered HTTP {resp.status}")
        listening.set()
        async for raw in resp.content:
            line = raw.decode(errors="replace").strip()
            if not line.startswith("data:"):
                continue
            try:
                event = json.loads(line[5:])
            except ValueError:
                continue
            props = event.get("properties") or {}
            if props.get("sessionID", (props.get("part") or {}).get("sessionID")) != sid:
                continue
            if on_activity is not None:
                on_activity()
            kind = event.get("type", "")
            if kind == "message.part.updated":
                part = props.get("part") or {}
                if part.get("type") != "tool":
                    continue
                state = part.get("state") or {}
                verb = _TOOL_VERBS.get(state.get("status", ""))
                if verb is None or (part.get("id", ""), verb) in seen:
                    continue
                seen.add((part.get("id", ""), verb))
                title = state.get("title") or _summary(state.get("input") or {})
                on_status(f"opencode {part.get('tool', '?')} {verb}: {title}"[:200])
            elif kind == "session.status" and (props.get("status") or {}).get("type") == "retry":
                on_status(f"opencode retrying the model: {props['status'].get('message', '')}"[:200])
            elif kind in ("permission.asked", "question.asked"):
                refused.append(props.get("permission") or "an answer")
                await _refuse(pool, server, kind, props, on_status)


async def _refuse(
    pool: ServerPool, server: Server, kind: str, props: dict[str, Any], on_status: StatusFn
) -> None:
    rid = props.get("id", "")
    if kind == "question.asked":
        url, body = f"{server.url}/question/{rid}/reject", None
    else:
        url, body = f"{server.url}/permission/{rid}/reply", {"reply": "reject"}
    on_status(f"opencode asked for {props.get('permission') or 'an answer'}: refused (nobody can grant it)")
    with contextlib.suppress(aiohttp.ClientError):
        async with pool.http.post(url, json=body, headers=server.auth) as resp:
            if resp.status != 200:
                log.warning("refusing %s %s: HTTP %d", kind, rid, resp.status)


def _summary(args: dict[str, Any]) -> str:
    for key in ("filePath", "command", "pattern", "url", "description"):
        if isinstance(args.get(key), str):
            return str(args[key])
    return ""
