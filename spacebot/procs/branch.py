"""``branch:<id>``: a fork of a conversation's context that thinks and returns one conclusion.

It sees what the channel saw (identity, transcript), has memory tools (recall in every mode, save
with type/importance/associations, delete) and can read other conversations. It may put one worker
to work, of any type the channel could start (``builtin``, or ``opencode`` when ``[tools.opencode]``
enables it and it is installed), which reports to the branch. People never see its working: only
its final answer goes back to the channel, as a :class:`DelegateResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import spacebot.llm.client  # noqa: F401 - shared from the zygote (see channel.py)
from spacebot.agent.delegated import model_loop, run_and_report
from spacebot.ipc import ids
from spacebot.ipc.messages import (
    DelegateResult,
    DelegateStatus,
    Envelope,
    Err,
    ErrorCode,
    KillReport,
    KillRequest,
    Kind,
    Ok,
    SpawnSpec,
)
from spacebot.ipc.replies import BusError, Reply
from spacebot.llm.types import Message, SystemMessage, ToolCall, UserMessage
from spacebot.runtime.child import ChildContext
from spacebot.runtime.llm_link import connect_llm
from spacebot.runtime.memory_link import MemoryLink
from spacebot.tools import opencode
from spacebot.tools.conversation import spawn_worker_tool
from spacebot.tools.errors import ToolArgumentError
from spacebot.tools.memory_tools import MEMORY_TOOLS, MemoryTools
from spacebot.tools.schema import check

log = logging.getLogger("spacebot.branch")

BRANCH_PROMPT = """\
You are a branch: a private line of thought of the agent described below, started to work out one
thing for a conversation. Nobody reads what you write except your final answer, which goes back to
the conversation as your conclusion.

Your question: {description}

Use the memory tools to look things up (memory_recall; channel_recall for other conversations) and
to keep what is worth keeping (memory_save; memory_delete for what is wrong). When a question is
abstract ("what hobbies does she have"), give memory_recall a few concrete queries too; when you
save something about a person, name them in about. If finding out needs
real work (running a command, reading files), spawn_worker does it and gives you its result. When
you know enough, answer with your conclusion in a few sentences, without calling a tool. If you
cannot find out, say so plainly.

--- The agent and the conversation you branched from ---
{system}
"""


async def serve(
    ctx: ChildContext,
    agent: str,
    report_to: str,
    conversation: str,
    description: str,
    system: str,
    transcript: str,
) -> None:
    """Think about ``description`` and report one conclusion to ``report_to``."""
    settings = ctx.config.delegates
    ctx.set_busy(True, f"branch: {description[:80]}")

    async def work(stack: contextlib.AsyncExitStack[bool | None]) -> str:
        llm = await connect_llm(ctx)
        stack.push_async_callback(llm.aclose)
        memory = MemoryTools(
            MemoryLink(ctx, ids.memory(agent), timeout=30.0),
            conversation=conversation,
            source=f"branch:{conversation}",
        )
        spawn_worker = await asyncio.to_thread(spawn_worker_tool, ctx.config.tools.opencode)
        loop = asyncio.get_running_loop()
        # Keyed by worker id. Only this branch's worker reports here, and it may report before its
        # spawn is answered: a result that comes first waits in its future for the id.
        results: dict[str, asyncio.Future[DelegateResult]] = {}
        started: list[str] = []

        def on_message(env: Envelope) -> Reply | None:
            body = env.body
            if isinstance(body, DelegateResult):
                future = results.setdefault(body.id, loop.create_future())
                if not future.done():
                    future.set_result(body)
                return Ok()
            if isinstance(body, DelegateStatus):
                ctx.progress(f"worker: {body.text[:80]}")
                return None
            return Err(ErrorCode.UNSUPPORTED, f"{ctx.id} does not handle {type(body).__name__}")

        ctx.on_message(on_message)

        async def stop_worker() -> None:
            # A worker the branch no longer waits for (it ran out of time or was stopped) goes too.
            for ident in started:
                future = results[ident]
                if future.cancelled() or not future.done():  # awaiting it was cancelled: no result
                    try:
                        await ctx.request("supervisor", KillRequest(ident), returns=KillReport, timeout=60.0)
                    except BusError as exc:
                        log.warning("worker %s of this branch not stopped: %s", ident, exc)

        stack.push_async_callback(stop_worker)

        async def run_tool(call: ToolCall) -> tuple[str, bool]:
            if call.name != "spawn_worker":
                return await memory.call(call)
            try:
                args = check(spawn_worker, call)
                if started:
                    return "a branch may run one worker; use the result you have", True
                if not args["task"].strip():
                    raise ToolArgumentError("spawn_worker: the task is empty")
                if args.get("worker_type", "builtin") != "builtin":
                    spec = await asyncio.to_thread(opencode.spawn_spec, ctx.config, agent, ctx.id, args)
                else:
                    spec = SpawnSpec(
                        Kind.WORKER,
                        "spacebot.procs.worker:serve",
                        args={
                            "agent": agent,
                            "report_to": ctx.id,
                            "task": args["task"],
                            "task_type": args.get("task_type", ""),
                        },
                        task=args["task"][:120],
                    )
            except ToolArgumentError as exc:
                return str(exc), True
            try:
                spawned = await ctx.spawn(spec, timeout=30.0)
            except BusError as exc:
                return f"could not start the worker: {exc.message}", True
            started.append(spawned.id)
            future = results.setdefault(spawned.id, loop.create_future())
            result = await future  # bounded by the branch's own time limit
            return (
                f"worker {spawned.id} finished ({result.outcome}): {result.text}",
                result.outcome != "success",
            )

        messages: list[Message] = [
            SystemMessage(BRANCH_PROMPT.format(description=description, system=system)),
            UserMessage(f"The conversation so far:\n{transcript}\n\nNow work out: {description}"),
        ]
        return await model_loop(
            ctx,
            llm,
            messages,
            [*MEMORY_TOOLS, spawn_worker],
            run_tool,
            max_turns=settings.branch_max_turns,
            process="branch",
        )

    await run_and_report(
        ctx,
        report_to,
        "branch",
        work,
        max_turns=settings.branch_max_turns,
        timeout=settings.branch_timeout,
        empty="(no conclusion)",
    )
