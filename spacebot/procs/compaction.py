"""``worker:<id>`` running a compaction: summarise a span of a conversation and keep its memories.

Started by a channel's compactor with the span as text. One model call returns JSON with a summary
and the memories worth keeping; the memories are saved through ``memory:<agent>`` before the
summary goes back to the channel (so nothing leaves the context unremembered).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re

import spacebot.llm.client  # noqa: F401 - shared from the zygote (see channel.py)
from spacebot.agent.delegated import report
from spacebot.ipc import ids
from spacebot.ipc.messages import DelegateResult, Memory, MemoryDraft, MemoryType, MemSave
from spacebot.llm.errors import model_failure
from spacebot.llm.types import Request, SystemMessage, UserMessage
from spacebot.runtime.child import ChildContext
from spacebot.runtime.llm_link import connect_llm

log = logging.getLogger("spacebot.compaction")

PROMPT = """\
You compact a chat transcript. Reply with one JSON object and nothing else:
{"summary": "<what was said and decided, who asked for what, open questions; at most 200 words>",
 "memories": [{"content": "<one fact, preference, decision, event, goal or todo worth keeping>",
               "type": "fact|preference|decision|identity|event|observation|goal|todo",
               "importance": 0.0-1.0}]}
"""

TYPES = {t.value for t in MemoryType}


def parse(text: str, channel: str | None = None) -> tuple[str, list[MemoryDraft]]:
    """The summary and memory drafts from the model's answer; raises ``ValueError`` naming the problem."""
    match = re.search(r"\{.*\}", text, re.S)
    if match is None:
        raise ValueError("the answer has no JSON object")
    data = json.loads(match.group(0))
    summary = data.get("summary")
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError("the answer has no 'summary' text")
    drafts = []
    for item in data.get("memories") or []:
        if not isinstance(item, dict) or not isinstance(item.get("content"), str):
            continue
        kind = str(item["type"]) if item.get("type") in TYPES else "fact"
        importance = item.get("importance")
        drafts.append(
            MemoryDraft(
                content=item["content"][:2000],
                type=MemoryType(kind),
                importance=float(importance) if isinstance(importance, int | float) else None,
                source="compaction",
                channel=channel,
            )
        )
    return summary.strip(), drafts


async def serve(ctx: ChildContext, agent: str, report_to: str, conversation: str, transcript: str) -> None:
    """Summarise ``transcript``, save its memories, report the summary to ``report_to``."""
    ctx.set_busy(True, f"compacting {conversation}")
    result = DelegateResult(ctx.id, "failed", "compaction did not run")
    llm = None
    try:
        llm = await connect_llm(ctx)
        request = Request([SystemMessage(PROMPT), UserMessage(transcript)], max_tokens=2048)
        async with asyncio.timeout(ctx.config.delegates.branch_timeout):
            answer = await llm.llm.complete(request, process="worker", task="compaction")
        summary, drafts = parse(answer.text, conversation)
        if drafts:
            await ctx.request(ids.memory(agent), MemSave(drafts), returns=list[Memory], timeout=60.0)
        result = DelegateResult(ctx.id, "success", summary, {"memories": len(drafts)})
    except TimeoutError:
        result = DelegateResult(ctx.id, "timed_out", "the model did not summarise in time")
    except (ValueError, json.JSONDecodeError) as exc:
        result = DelegateResult(ctx.id, "failed", f"unusable summary: {exc}")
    except asyncio.CancelledError:
        result = DelegateResult(ctx.id, "cancelled", "compaction cancelled")
    except Exception as exc:
        failure = model_failure(exc)
        if failure is not None and failure.expected:  # a model down or refusing: no traceback
            log.warning("compaction failed: %s", failure.operator_line())
        else:
            log.exception("compaction failed")
        result = DelegateResult(ctx.id, "failed", f"compaction failed: {exc}")
    finally:
        if llm is not None:
            await llm.aclose()
        await report(ctx, report_to, result)
