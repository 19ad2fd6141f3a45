"""``worker:<id>`` of type ``opencode``: one task done by OpenCode in a directory of the workspace.

The worker starts (or reuses) ``opencode serve`` for the directory, gives it Spacebot's routed
model for the ``coding`` task type with that provider's key, sends the task, turns OpenCode's
progress into status lines and reports OpenCode's final answer as its result. The server and every
process it started are killed when the worker ends, however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib

from spacebot.agent.delegated import run_and_report, status
from spacebot.agent.identity import agent_dir
from spacebot.ipc.messages import Envelope, Err, ErrorCode
from spacebot.ipc.replies import Reply
from spacebot.llm.errors import LLMConfigError
from spacebot.runtime.child import ChildContext
from spacebot.supervisor.secrets_service import fetch as fetch_secrets
from spacebot.supervisor.secrets_service import model_secret_names
from spacebot.tools import egress, opencode, opencode_session, sandbox
from spacebot.tools.workspace import Workspace


async def serve(
    ctx: ChildContext, agent: str, report_to: str, task: str, task_type: str = "", directory: str = ""
) -> None:
    """Have OpenCode do ``task`` in ``directory`` (relative to the agent's workspace) and report."""
    settings = ctx.config.tools.opencode

    def on_message(env: Envelope) -> Reply:
        return Err(ErrorCode.UNSUPPORTED, f"{ctx.id} (opencode) does not handle {type(env.body).__name__}")

    ctx.on_message(on_message)
    ctx.set_busy(True, f"opencode: {task[:80]}")
    home = agent_dir(ctx.config.home, agent)
    # As a subreaper this process receives what OpenCode's commands leave behind, and kills it.
    sandbox.adopt_orphans()

    async def work(stack: contextlib.AsyncExitStack[bool | None]) -> str:
        command = opencode.require(settings)
        workspace = await asyncio.to_thread(Workspace, home / "workspace")
        where = await asyncio.to_thread(workspace.resolve, directory or ".")
        if not where.is_dir():
            raise opencode.OpenCodeError(f"directory {directory!r} is not a directory of the workspace")
        secrets, refused = await fetch_secrets(ctx, model_secret_names(ctx.config.llm))

        def resolve(name: str) -> str:
            if name not in secrets:
                raise LLMConfigError(f"secret {name!r}: {refused.get(name) or 'not granted'}")
            return secrets[name]

        config = opencode.model_config(
            ctx.config,
            task,
            task_type or settings.task_type,
            resolve,
            max_steps=ctx.config.delegates.worker_max_turns,
            allow_web=ctx.config.delegates.network != "none",
        )
        # OpenCode reaches the model through a relay of this process: it never holds the key.
        relay = await stack.enter_async_context(opencode.model_relay(config))
        network = await egress.network_for(ctx.config.delegates.network, stack)  # its web tools
        pool = opencode.ServerPool(
            command,
            opencode.through(config, relay),
            home / "opencode",
            workspace=workspace.root,
            network=network,
            reach=[relay.port],
            start_timeout=settings.start_timeout,
            allow_unsandboxed=ctx.config.delegates.allow_unsandboxed,
        )
        stack.callback(sandbox.kill_all)  # last on the way out: anything the server's tree left
        stack.push_async_callback(pool.aclose)
        status(ctx, report_to, f"starting OpenCode in {workspace.relative(where)}")
        return await opencode_session.run_task(
            pool, where, task, lambda text: status(ctx, report_to, text), on_activity=ctx.progress
        )

    await run_and_report(
        ctx,
        report_to,
        "worker",
        work,
        max_turns=ctx.config.delegates.worker_max_turns,
        timeout=ctx.config.delegates.worker_timeout,
        empty="(OpenCode gave no answer text)",
    )
