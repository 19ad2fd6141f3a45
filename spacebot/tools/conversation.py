"""The tools a conversation process offers its model to act in the conversation."""

from __future__ import annotations

import functools

from spacebot.config import OpenCodeSettings
from spacebot.llm.types import ToolSpec
from spacebot.tools import opencode
from spacebot.tools.schema import spec

REPLY = spec(
    "reply",
    "Send a message to the people in this conversation. This is the only way they see what you say. "
    "Write @Name to mention someone who wrote here (it becomes a platform mention on Discord and "
    "Slack; @everyone and @here never notify anyone).",
    {
        "content": {"type": "string", "description": "The message, in Markdown."},
        "thread_name": {
            "type": "string",
            "description": "Open a thread of this name on the message you answer and reply in it "
            "(Discord: a new thread; Slack: a reply in thread; the thread's name is not shown on "
            "Slack). Ignored on other platforms and inside a thread: the reply is posted normally.",
            "minLength": 1,
            "maxLength": 100,
            "pattern": r"\S",
        },
        "card": {
            "type": "object",
            "description": "Optional structured part shown under the message (a Discord embed, "
            "Slack blocks, plain text elsewhere): {title, text, fields: [{name, value}], url, "
            "color}. At least a title, text or one field; title <= 256 characters, text <= 4096, "
            "at most 25 fields (name <= 256, value <= 1024), url http(s), color '#RRGGBB', 6000 "
            "characters in all.",
            "properties": {
                "title": {"type": "string"},
                "text": {"type": "string"},
                "fields": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
                        "required": ["name", "value"],
                    },
                },
                "url": {"type": "string"},
                "color": {"type": "string", "description": "#RRGGBB"},
            },
        },
    },
    ["content"],
)
REACT = spec(
    "react",
    "Add an emoji reaction to a message (default: the newest message you are answering).",
    {
        # The same limits memory enforces, so a bad reaction is a tool error the model can fix,
        # not a failed turn.
        "emoji": {
            "type": "string",
            "description": "One emoji, e.g. 👍 (at most 32 characters).",
            "minLength": 1,
            "maxLength": 32,
            "pattern": r"\S",
        },
        "message_id": {
            "type": "integer",
            "description": "The [#id] of the message to react to.",
            "minimum": 1,
            "maximum": 2**63 - 1,
        },
    },
    ["emoji"],
)
SKIP = spec(
    "skip",
    "Say nothing: the new messages need no answer from you (people talking among themselves).",
    {"reason": {"type": "string", "description": "Why no answer is needed (kept in the log)."}},
    [],
)

CONVERSATION_TOOLS = [REPLY, REACT, SKIP]
"""Offered on every turn of a conversation."""

BRANCH = spec(
    "branch",
    "Think something through in the background (look things up in memory, other conversations) "
    "without making people wait; its conclusion comes back to you as a new event.",
    {"description": {"type": "string", "description": "The question to work out."}},
    ["description"],
)
SPAWN_WORKER = spec(
    "spawn_worker",
    "Start a worker for a task that takes real work (run commands, write files); you keep talking "
    "while it runs and its result comes back to you as a new event.",
    {
        "task": {
            "type": "string",
            "description": "Everything the worker needs to know; it cannot see this chat.",
        },
        "task_type": {"type": "string", "description": "e.g. coding, research, ops (chooses the model)."},
        "interactive": {
            "type": "boolean",
            "description": "It will need follow-up input (send it with route).",
        },
    },
    ["task"],
)
ROUTE = spec(
    "route",
    "Send follow-up input to an interactive worker that is waiting for it.",
    {
        "worker_id": {"type": "string", "description": "Optional when exactly one worker is waiting."},
        "message": {"type": "string"},
    },
    ["message"],
)
CANCEL = spec(
    "cancel",
    "Stop a branch or worker you started (and everything it runs).",
    {"process_id": {"type": "string"}, "reason": {"type": "string"}},
    ["process_id"],
)
SEND_MESSAGE = spec(
    "send_message",
    "Post a message in another conversation of this agent.",
    {
        "target_channel": {"type": "string", "description": "Conversation id, e.g. web:4f2a…"},
        "text": {"type": "string"},
    },
    ["target_channel", "text"],
)
SEND_FILE = spec(
    "send_file",
    "Share a file from the workspace in this conversation.",
    {
        "path": {"type": "string", "description": "Path relative to the workspace."},
        "caption": {"type": "string"},
    },
    ["path"],
)


def spawn_worker_spec(worker_types: list[str]) -> ToolSpec:
    """``spawn_worker`` with ``worker_type`` offering ``worker_types`` (``builtin`` first) and the
    ``directory`` an ``opencode`` worker works in."""
    props = dict(SPAWN_WORKER.parameters["properties"])
    if "opencode" in worker_types:
        kinds = "builtin (default): Spacebot's own worker; opencode: the OpenCode coding agent, for changes "
        kinds += "in a code repository (not interactive)."
    else:
        kinds = f"builtin only (opencode is not installed here: {opencode.INSTALL})."
    props["worker_type"] = {"type": "string", "enum": worker_types, "description": kinds}
    props["directory"] = {
        "type": "string",
        "description": "opencode: the directory to work in, relative to the workspace (default: "
        "the workspace).",
    }
    return ToolSpec(
        SPAWN_WORKER.name, SPAWN_WORKER.description, {**SPAWN_WORKER.parameters, "properties": props}
    )


DELEGATION_TOOLS = [BRANCH, SPAWN_WORKER, ROUTE, CANCEL, SEND_MESSAGE, SEND_FILE]
"""Offered on every turn as well: the channel never does the work itself (``spawn_worker`` as
:func:`delegation_tools` completes it with the worker types of the configuration)."""


@functools.cache
def spawn_worker_tool(settings: OpenCodeSettings) -> ToolSpec:
    """``spawn_worker`` offering the worker types ``[tools.opencode]`` enables and this machine has
    installed (looked up once per settings and process): a conversation's and a branch's."""
    return spawn_worker_spec(opencode.worker_types(settings))


@functools.cache
def delegation_tools(settings: OpenCodeSettings) -> tuple[ToolSpec, ...]:
    """:data:`DELEGATION_TOOLS` with ``spawn_worker`` as :func:`spawn_worker_tool` makes it."""
    worker = spawn_worker_tool(settings)
    return tuple(worker if t.name == SPAWN_WORKER.name else t for t in DELEGATION_TOOLS)


CRON = spec(
    "cron",
    "Schedule work for later: create a job that asks you (in a fresh conversation) to do something at "
    "set times and posts your answer here (or in deliver_to); list this agent's jobs; delete a job "
    "made here.",
    {
        "action": {"type": "string", "enum": ["create", "list", "delete"]},
        "id": {
            "type": "string",
            "description": "Job id (create, delete): 1-64 of A-Z a-z 0-9 _ -.",
            "pattern": "^[A-Za-z0-9_-]{1,64}$",
        },
        "prompt": {"type": "string", "description": "create: what to do at each run, self-contained."},
        "cron": {"type": "string", "description": "create: 5-field cron expression, e.g. '0 9 * * 1-5'."},
        "every_minutes": {"type": "number", "description": "create: an interval instead of cron (>= 1)."},
        "timezone": {"type": "string", "description": "create: IANA zone, e.g. Europe/Berlin."},
        "active_hours": {"type": "string", "description": "create: only run inside HH:MM-HH:MM."},
        "run_once": {"type": "boolean", "description": "create: run at the first due time only."},
        "deliver_to": {"type": "string", "description": "create: conversation id (default: this one)."},
    },
    ["action"],
)
CRON_TOOLS = [CRON]
"""Offered in every conversation but a cron run's own (a run does not schedule more runs)."""
