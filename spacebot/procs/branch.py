"""``branch:<id>``: a fork of a conversation's context that thinks and returns one conclusion.

It sees what the channel saw (identity, transcript), has memory tools (recall in every mode, save
with type/importance/associations, delete) and can read other conversations. People never see its
working: only its final answer goes back to the channel, as a :class:`DelegateResult`.
"""

from __future__ import annotations

import asyncio
import logging

import spacebot.llm.client  # noqa: F401 - shared from the zygote (see channel.py)
from spacebot.ipc.messages import DelegateResult
from spacebot.llm.types import Message, SystemMessage, UserMessage
from spacebot.procs.delegate import TurnCapReached, model_loop, report
from spacebot.procs.llm_link import connect_llm
from spacebot.supervisor.child import ChildContext
from spacebot.tools.memory_tools import MEMORY_TOOLS, MemoryTools

log = logging.getLogger("spacebot.branch")

BRANCH_PROMPT = """\
You are a branch: a private line of thought of the agent described below, started to work out one
thing for a conversation. Nobody reads what you write except your final answer, which goes back to
the conversation as your conclusion.

Your question: {description}

Use the memory tools to look things up (memory_recall; channel_recall for other conversations) and
to keep what is worth keeping (memory_save; memory_delete for what is wrong). When you know enough,
answer with your conclusion in a few sentences, without calling a tool. If you cannot find out,
say so plainly.

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
    outcome, text = "failed", "the branch could not start"
    llm = None
    try:
        llm = await connect_llm(ctx)
        tools = MemoryTools(
            lambda body: ctx.request(f"memory:{agent}", body, timeout=30.0),
            conversation=conversation,
            source=f"branch:{conversation}",
        )
        messages: list[Message] = [
            SystemMessage(BRANCH_PROMPT.format(description=description, system=system)),
            UserMessage(f"The conversation so far:\n{transcript}\n\nNow work out: {description}"),
        ]
        async with asyncio.timeout(settings.branch_timeout):
            text = await model_loop(
                ctx,
                llm,
                messages,
                MEMORY_TOOLS,
                tools.call,
                max_turns=settings.branch_max_turns,
                process="branch",
            )
        outcome = "success"
    except TurnCapReached as exc:
        outcome, text = (
            "partial",
            f"could not conclude within {settings.branch_max_turns} steps. {exc.last_text}",
        )
    except TimeoutError:
        outcome, text = "timed_out", f"could not conclude within {settings.branch_timeout:.0f} s"
    except asyncio.CancelledError:
        outcome, text = "cancelled", f"cancelled ({ctx.stop_reason or 'stopped'})"
    except Exception as exc:
        log.exception("branch failed")
        outcome, text = "failed", f"the branch failed: {exc}"
    finally:
        if llm is not None:
            await llm.aclose()
        await report(ctx, report_to, DelegateResult(ctx.id, outcome, text.strip() or "(no conclusion)"))
