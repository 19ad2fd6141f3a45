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
        "emoji": {"type": "string", "description": "One emoji, e.g. 👍"},
        "message_id": {"type": "integer", "description": "The [#id] of the message to react to."},
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
