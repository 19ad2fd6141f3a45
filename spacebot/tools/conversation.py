"""The tools a conversation process offers its model to act in the conversation."""

from __future__ import annotations

from spacebot.tools.schema import spec

REPLY = spec(
    "reply",
    "Send a message to the people in this conversation. This is the only way they see what you say.",
    {"content": {"type": "string", "description": "The message, in Markdown."}},
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

DELEGATION_TOOLS = [BRANCH, SPAWN_WORKER, ROUTE, CANCEL, SEND_MESSAGE, SEND_FILE]
"""Offered on every turn as well: the channel never does the work itself."""

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
