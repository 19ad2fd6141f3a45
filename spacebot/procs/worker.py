"""``worker:<id>``: one task, a focused prompt, task tools; no soul, never talks to people.

Fire-and-forget workers report one result. Interactive workers, after answering, say they wait for
input (``DelegateStatus(kind="waiting")``) and resume when the channel routes a follow-up to them
(``DelegateInput``); they finish when the model calls ``finish``. Every way out reports an outcome
— success, partial, cancelled, timed_out or failed — so a worker is never left "running".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import spacebot.llm.client  # noqa: F401 - shared from the zygote (see channel.py)
from spacebot.agent.capabilities import worker_capabilities
from spacebot.agent.delegated import Finished, model_loop, run_and_report, status
from spacebot.agent.identity import agent_dir
from spacebot.ipc.messages import DelegateInput, Envelope, Err, ErrorCode, Ok
from spacebot.ipc.replies import Reply
from spacebot.llm.types import Message, SystemMessage, ToolCall, UserMessage
from spacebot.runtime.child import ChildContext
from spacebot.runtime.llm_link import connect_llm
from spacebot.tools import browser, egress, mcp_tools, sandbox, web_search
from spacebot.tools.schema import check, spec
from spacebot.tools.task_tools import TaskTools, from_settings, worker_secrets

log = logging.getLogger("spacebot.worker")

WORKER_PROMPT = """\
You are a worker: you carry out one task and report the result. You work in a private workspace
directory (your tools' paths are relative to it). Use set_status to say what you are doing during
long steps. When the task is done, answer with the result: what you did and what came out, briefly
and precisely (people will read it).
{capabilities}{interactive}
Task type: {task_type}
"""

INTERACTIVE = """\
This task is interactive: after you answer, the person may send follow-up instructions, which
arrive as new messages. Call `finish` with the final result when the whole task is complete.
"""

FINISH = spec(
    "finish",
    "End the task and report its result (interactive tasks).",
    {"result": {"type": "string"}, "outcome": {"type": "string", "enum": ["success", "partial", "failed"]}},
    ["result"],
)


async def serve(
    ctx: ChildContext, agent: str, report_to: str, task: str, task_type: str = "", interactive: bool = False
) -> None:
    """Do ``task`` and report its outcome to ``report_to``."""
    settings = ctx.config.delegates
    inputs: asyncio.Queue[str] = asyncio.Queue()

    def on_message(env: Envelope) -> Reply:
        if isinstance(env.body, DelegateInput):
            if not interactive:
                return Err(ErrorCode.BAD_REQUEST, f"{ctx.id} is not interactive")
            inputs.put_nowait(env.body.text)
            return Ok()
        return Err(ErrorCode.UNSUPPORTED, f"{ctx.id} does not handle {type(env.body).__name__}")

    ctx.on_message(on_message)
    ctx.set_busy(True, f"worker: {task[:80]}")
    workspace = agent_dir(ctx.config.home, agent) / "workspace"
    # Sandbox helpers for this worker's commands: escapees (``setsid``) are re-parented here and
    # killed when their call ends; with "loopback-deny" an egress proxy outside the sandbox is the
    # only TCP port the commands may reach.
    sandbox.adopt_orphans()

    async def wait_for_input(answer: str) -> str | None:
        if not interactive:
            return None
        status(ctx, report_to, answer or "waiting for input", "waiting")
        ctx.set_busy(False, "waiting for input")
        text = await inputs.get()
        ctx.set_busy(True, f"worker: {task[:80]}")
        return text

    own_specs = [FINISH] if interactive else []
    messages: list[Message] = [UserMessage(task)]  # the system prompt first, once the tools are known

    async def work(stack: contextlib.AsyncExitStack[bool | None]) -> str:
        network = await egress.network_for(settings.network, stack)
        limits, policy = from_settings(settings, network)
        llm = await connect_llm(ctx)
        stack.push_async_callback(llm.aclose)
        # Tool secrets for the programs; every secret this worker holds is scrubbed from results.
        search = await web_search.connect(ctx)
        mcp = await mcp_tools.connect(ctx, Path(workspace), agent_dir(ctx.config.home, agent) / "data")
        if mcp is not None:
            stack.push_async_callback(mcp.aclose)
        web_browser = browser.connect(ctx.config.tools.browser, Path(workspace))  # started on first use
        if web_browser is not None:
            stack.push_async_callback(web_browser.aclose)
        secrets = await worker_secrets(
            ctx, known={**llm.secrets, **(search.known if search else {}), **(mcp.known if mcp else {})}
        )
        tools = TaskTools(
            Path(workspace),
            limits,
            lambda text, kind: status(ctx, report_to, text, kind),
            policy,
            secrets,
            web_search=search,
            web_fetch=ctx.config.tools.web_fetch,
            mcp=mcp,
            browser=web_browser,
        )

        # The prompt names what this worker's tools can do: only what is configured and started.
        capabilities = worker_capabilities(tools.specs, [s.name for s in mcp.servers] if mcp else [])
        prompt = WORKER_PROMPT.format(
            capabilities=capabilities,
            interactive=INTERACTIVE if interactive else "",
            task_type=task_type or "general",
        )
        messages.insert(0, SystemMessage(prompt))

        async def run_tool(call: ToolCall) -> tuple[str, bool]:
            if call.name == "finish":
                args = check(FINISH, call)
                raise Finished(args["result"], args.get("outcome", "success"))
            return await tools.call(call)

        stack.callback(sandbox.kill_all)  # first on the way out: no command outlives the worker
        return await model_loop(
            ctx,
            llm,
            messages,
            [*tools.specs.values(), *own_specs],
            run_tool,
            max_turns=settings.worker_max_turns,
            process="worker",
            task=task_type or None,
            on_text=wait_for_input,
            take_images=tools.take_images,
        )

    await run_and_report(
        ctx,
        report_to,
        "worker",
        work,
        max_turns=settings.worker_max_turns,
        timeout=settings.worker_timeout,
        empty="(no result text)",
    )
