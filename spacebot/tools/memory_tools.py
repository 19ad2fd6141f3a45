"""The tools a branch offers its model: recall, save and delete memories, read other conversations.

Every call is a request to ``memory:<agent>``; errors come back as text the model can act on.
"""

from __future__ import annotations

from typing import Any

from spacebot.agent import untrusted
from spacebot.ipc.messages import (
    Association,
    MemAssociate,
    MemForget,
    Memory,
    MemoryDraft,
    MemoryType,
    MemRecall,
    MemSave,
    MessageHit,
    RecallHit,
    Relation,
    TranscriptSearch,
)
from spacebot.ipc.replies import BusError
from spacebot.llm.types import ToolCall
from spacebot.memory import people
from spacebot.runtime.memory_link import MemoryLink
from spacebot.tools.errors import ToolArgumentError, ToolError
from spacebot.tools.schema import check, spec

TYPES = [t.value for t in MemoryType]
RELATIONS = [r.value for r in Relation]

MAX_QUERIES = 4
"""Further phrasings a ``memory_recall`` may add to its query."""
NAMES_MAX = 20
"""Most names in ``about`` or ``aliases``."""


MEMORY_RECALL = spec(
    "memory_recall",
    "Search the agent's long-term memory.",
    {
        "query": {"type": "string", "description": "What to look for (hybrid and typed modes)."},
        "queries": {
            "type": "array",
            "items": {"type": "string"},
            "description": f"Up to {MAX_QUERIES} more ways to put the same question (hybrid mode), "
            "recalled too and fused with it: name the concrete things an abstract question is about "
            "('what hobbies does Ana have' -> 'Ana pottery painting', 'Ana weekend plans').",
        },
        "mode": {"type": "string", "enum": ["hybrid", "recent", "important", "typed"]},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        "types": {"type": "array", "items": {"type": "string", "enum": TYPES}},
    },
    [],
)
MEMORY_SAVE = spec(
    "memory_save",
    "Save something worth remembering beyond this conversation.",
    {
        "content": {"type": "string"},
        "type": {"type": "string", "enum": TYPES},
        "importance": {"type": "number", "minimum": 0, "maximum": 1},
        "about": {
            "type": "array",
            "items": {"type": "string"},
            "description": "The people this memory is about, by the name they are usually called; a "
            "later question naming one of them is also searched among their memories.",
        },
        "aliases": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Other names and handles of the one person in 'about' (nicknames, @handles "
            "on each platform): questions using them find that person's memories.",
        },
        "associations": {
            "type": "array",
            "description": "Links to existing memories: [{id, relation}]; relation: " + ", ".join(RELATIONS),
            "items": {"type": "object"},
        },
    },
    ["content"],
)
MEMORY_DELETE = spec(
    "memory_delete",
    "Forget memories that are wrong or obsolete.",
    {"ids": {"type": "array", "items": {"type": "integer"}}},
    ["ids"],
)
CHANNEL_RECALL = spec(
    "channel_recall",
    "Search what was said in other conversations (full text).",
    {
        "query": {"type": "string"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        "conversation": {"type": "string", "description": "Only this conversation id."},
    },
    ["query"],
)


def _strings(tool: str, name: str, value: object, most: int) -> list[str]:
    """``value`` as a list of at most ``most`` non-empty strings, or an error naming the argument."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ToolArgumentError(f"{tool}: argument {name!r} must be a list of non-empty strings")
    if len(value) > most:
        raise ToolArgumentError(f"{tool}: argument {name!r} takes at most {most} entries, got {len(value)}")
    return [v.strip() for v in value]


MEMORY_TOOLS = [MEMORY_RECALL, MEMORY_SAVE, MEMORY_DELETE, CHANNEL_RECALL]


class MemoryTools:
    """Runs memory tools through ``memory`` (the link to the agent's memory process)."""

    def __init__(self, memory: MemoryLink, *, conversation: str, source: str) -> None:
        self.request = memory.request
        self.conversation = conversation
        self.source = source
        self.specs = {t.name: t for t in MEMORY_TOOLS}

    async def call(self, call: ToolCall) -> tuple[str, bool]:
        """Run one call; returns (text for the model, is_error)."""
        spec_ = self.specs.get(call.name)
        try:
            if spec_ is None:
                raise ToolArgumentError(f"unknown tool {call.name!r} (tools: {', '.join(self.specs)})")
            return await self._run(call.name, check(spec_, call)), False
        except ToolError as exc:
            return str(exc), True
        except BusError as exc:
            return f"{call.name} failed: {exc.message}", True

    async def _run(self, name: str, args: dict[str, Any]) -> str:
        if name == "memory_recall":
            hits = await self.request(
                MemRecall(
                    query=args.get("query", ""),
                    mode=args.get("mode", "hybrid"),
                    limit=args.get("limit", 10),
                    types=args.get("types"),
                    queries=_strings(name, "queries", args.get("queries", []), MAX_QUERIES),
                ),
                returns=list[RecallHit],
            )
            if not hits:
                return "no memories found"
            return "\n".join(f"[{h.memory.id}] ({h.memory.type}) {h.memory.content}" for h in hits)
        if name == "memory_save":
            about = _strings(name, "about", args.get("about", []), NAMES_MAX)
            aliases = _strings(name, "aliases", args.get("aliases", []), NAMES_MAX)
            metadata: dict[str, Any] = {"people": about} if about else {}
            if aliases:
                if len(about) != 1:
                    raise ToolArgumentError(
                        f"{name}: 'aliases' are the names of one person: give exactly that person in "
                        f"'about' (got {len(about)})"
                    )
                for alias in aliases:
                    if people.common(people.words(alias)):
                        raise ToolArgumentError(
                            f"{name}: alias {alias!r} is a common word: it would stand for "
                            f"{about[0]!r} in nearly every question; give a name or handle instead"
                        )
                metadata |= {"person": about[0], "aliases": aliases}
            draft = MemoryDraft(
                content=args["content"],
                type=MemoryType(args.get("type", "fact")),
                importance=args.get("importance"),
                source=self.source,
                channel=self.conversation,
                metadata=metadata,
            )
            saved = await self.request(MemSave([draft]), returns=list[Memory])
            new_id = saved[0].id
            for link in args.get("associations") or []:
                if not isinstance(link, dict) or not isinstance(link.get("id"), int):
                    raise ToolArgumentError("memory_save: each association needs an integer 'id'")
                relation = link.get("relation", "related_to")
                if relation not in RELATIONS:
                    raise ToolArgumentError(f"memory_save: relation must be one of {', '.join(RELATIONS)}")
                await self.request(MemAssociate(new_id, link["id"], relation), returns=Association)
            return f"saved memory [{new_id}]"
        if name == "memory_delete":
            await self.request(MemForget([int(i) for i in args["ids"]]), returns=int)
            return f"forgot {len(args['ids'])} memories"
        hits_ = await self.request(
            TranscriptSearch(
                query=args["query"],
                limit=args.get("limit", 10),
                channel=args.get("conversation"),
                exclude_channel=None if args.get("conversation") else self.conversation,
            ),
            returns=list[MessageHit],
        )
        if not hits_:
            return "nothing found in other conversations"
        return "\n".join(
            f"[{untrusted.label(h.channel_name)}] {untrusted.label(h.message.author_name)}: "
            f"{untrusted.text(h.message.text)}"
            for h in hits_
        )
