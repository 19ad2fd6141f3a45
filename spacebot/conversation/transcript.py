"""What a conversation process holds: its history and unanswered messages; its memory link; and the
one place the agent's own messages are written (replies, notices, shared files, cross-posts)."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from spacebot.agent import untrusted
from spacebot.ipc.messages import ReplyState, Role, Shown, StoredMessage, TranscriptAppend
from spacebot.runtime.memory_link import PATIENT, MemoryLink


class Transcript:
    """The conversation as the model sees it: the recent history (people, the agent, results of
    branches and workers, summaries) and the messages that still wait for an answer.

    A stored message is in :attr:`history` at most once, whichever way it came: a process often
    gets the same message twice, because what wakes it (a person's message, a branch's or
    worker's result) is stored before it is delivered, so the history page it loads at start-up
    holds it too. Every way in goes through :meth:`_add`, which keeps :attr:`known` (the stored
    ids in the history)."""

    def __init__(self, conversation: str) -> None:
        self.conversation = conversation
        self.history: list[StoredMessage] = []
        self.pending: dict[int, StoredMessage] = {}
        self.known: set[int] = set()
        """Ids of the stored messages in :attr:`history` (lines that are not stored have id < 0)."""

    def _add(self, message: StoredMessage) -> bool:
        """Append ``message`` unless it is stored and already here; True when it was appended."""
        if message.id > 0:
            if message.id in self.known:
                return False
            self.known.add(message.id)
        self.history.append(message)
        return True

    def _order(self) -> None:
        self.history.sort(key=lambda m: (m.created_at, m.id))

    def take(self, message: StoredMessage) -> bool:
        """Add a stored message once; True when it is new here and waits for an answer."""
        if not self._add(message):
            return False
        self._order()
        if message.reply_state is ReplyState.PENDING:
            self.pending[message.id] = message
            return True
        return False

    def load(self, page: list[StoredMessage], unanswered: list[StoredMessage]) -> None:
        """The history page and the unanswered messages read at start-up. Messages that arrived
        while they were read (the one that woke the process, a burst behind it, a result stored
        meanwhile) are in them too, and stay in the history once."""
        for row in [*page, *unanswered]:
            if not self._add(row) and row.reply_state is ReplyState.PENDING:
                self.pending[row.id] = row  # the stored version of a message taken from its delivery
        self._order()
        for row in self.history:
            if row.reply_state is ReplyState.PENDING:
                self.pending.setdefault(row.id, row)

    def add_event(self, event: StoredMessage) -> None:
        """A branch's or worker's result or status line, shown like the others (a stored result
        is added once; a line that is not stored has a negative id)."""
        self._add(event)

    def update(self, message: StoredMessage) -> None:
        """Replace a message by a newer version of it (a reaction was added)."""
        self.history = [message if m.id == message.id else m for m in self.history]

    def settled(self, batch: list[int], state: ReplyState) -> None:
        """``batch`` is answered (or skipped): it no longer waits."""
        for mid in batch:
            if self.pending.pop(mid, None) is not None:
                self.history = [
                    msgspec.structs.replace(m, reply_state=state) if m.id == mid else m for m in self.history
                ]

    def replace_span(self, span: list[StoredMessage], text: str) -> None:
        """Put a summary line where ``span`` was (entries added meanwhile stay after it)."""
        gone = {id(m) for m in span}
        first = span[0] if span else None
        note = StoredMessage(
            id=first.id if first else 0,
            channel_id=self.conversation,
            platform_message_id=None,
            author_id="summary",
            author_name="summary",
            role="system",
            text=text,
            attachments=[],
            created_at=first.created_at if first else time.time(),
            reply_state=ReplyState.NONE,
            replied_at=None,
        )
        self.history = [note, *(m for m in self.history if id(m) not in gone)]

    def text(self, limit: int = 40) -> str:
        """The recent transcript as plain lines, person-supplied text quoted (what a branch reads)."""
        return lines(self.history[-limit:])


def lines(messages: list[StoredMessage], chars: int | None = None, sep: str = "\n") -> str:
    """``name: text`` lines with the untrusted-text rule applied (``chars``: cut each text)."""
    return sep.join(
        f"{untrusted.label(m.author_name)}: {untrusted.text(m.text if chars is None else m.text[:chars])}"
        for m in messages
    )


class AgentVoice:
    """Stores what the agent says: one writer for replies, notices, shared files and messages the
    agent posts in other conversations, so authorship is written the same way everywhere."""

    def __init__(self, memory: MemoryLink, agent: str, name: str, conversation: str) -> None:
        self.memory = memory
        self.author_id = f"agent:{agent}"
        self.name = name
        self.conversation = conversation

    async def say(
        self,
        text: str,
        *,
        conversation: str | None = None,
        role: Role = "assistant",
        answers: list[int] | None = None,
        answers_state: ReplyState = ReplyState.ANSWERED,
        platform_message_id: str | None = None,
        attachments: list[dict[str, Any]] | None = None,
        shown: Shown | None = None,
        attempts: int = PATIENT,
    ) -> StoredMessage:
        """Store one agent message (marking ``answers`` with ``answers_state`` in the same memory
        transaction) and return it as stored; ``shown``: its card and thread, stored with it."""
        return await self.memory.request(
            TranscriptAppend(
                conversation or self.conversation,
                text,
                author_id=self.author_id,
                author_name=self.name,
                role=role,
                platform_message_id=platform_message_id,
                attachments=attachments,
                answers=answers or [],
                answers_state=answers_state,
                shown=shown,
            ),
            returns=StoredMessage,
            attempts=attempts,
        )
