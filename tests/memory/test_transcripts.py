from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from spacebot.ipc.messages import Card, CardField, Shown
from spacebot.memory import MemoryEngine, MemoryInputError, ReplyState
from spacebot.memory import store as store_module


def test_append_is_idempotent_and_pages(engine: MemoryEngine) -> None:
    t = engine.transcripts
    t.upsert_channel("discord:1:2", "discord", "#general")
    ids = []
    for n in range(7):
        m = t.append(
            "discord:1:2", f"message {n}", author_id="u1", author_name="Bob", platform_message_id=f"p{n}"
        )
        ids.append(m.id)
    again = t.append(
        "discord:1:2", "message 3 edited", author_id="u1", author_name="Bob", platform_message_id="p3"
    )
    assert again.id == ids[3] and again.text == "message 3"
    newest = t.page("discord:1:2", limit=3)
    assert [m.text for m in newest] == ["message 4", "message 5", "message 6"]
    older = t.page("discord:1:2", limit=3, before_id=newest[0].id)
    assert [m.text for m in older] == ["message 1", "message 2", "message 3"]
    assert t.channel("discord:1:2").display_name == "#general"


def test_reply_state_and_unanswered(engine: MemoryEngine) -> None:
    t = engine.transcripts
    q1 = t.append("slack:T:C", "can you check the build?", author_id="u1", author_name="Ann")
    q2 = t.append("slack:T:C", "also the docs", author_id="u1", author_name="Ann")
    reply = t.append("slack:T:C", "on it", author_id="bot", author_name="Spacebot", role="assistant")
    other = t.append("web:x", "hello", author_id="u2", author_name="Zed")
    assert reply.reply_state is ReplyState.NONE and q1.reply_state is ReplyState.PENDING
    assert [m.id for m in t.unanswered()] == [q1.id, q2.id, other.id]
    t.mark_reply(q1.id, ReplyState.ANSWERED)
    t.mark_reply(other.id, ReplyState.SKIPPED)
    assert [m.id for m in t.unanswered("slack:T:C")] == [q2.id]
    assert [m.id for m in t.unanswered()] == [q2.id]
    with pytest.raises(MemoryInputError, match="no message with id 999"):
        t.mark_reply(999, ReplyState.ANSWERED)
    with pytest.raises(MemoryInputError, match="unknown role"):
        t.append("web:x", "hi", author_id="u", author_name="U", role="robot")


def test_cross_channel_search_with_names(engine: MemoryEngine) -> None:
    t = engine.transcripts
    t.upsert_channel("discord:1:2", "discord", "#ops")
    t.upsert_channel("slack:T:C", "slack", "#release")
    a = t.append("discord:1:2", "We deployed the payments service at noon", author_id="u1", author_name="Bob")
    b = t.append("slack:T:C", "Deploying payments again tomorrow", author_id="u2", author_name="Cy")
    t.append("slack:T:C", "Lunch plans anyone?", author_id="u2", author_name="Cy")
    hits = t.search("deploy payments")
    assert {h.message.id for h in hits} == {a.id, b.id}
    assert {h.channel_name for h in hits} == {"#ops", "#release"}
    assert [h.message.id for h in t.search("deploy payments", exclude_channel="slack:T:C")] == [a.id]
    assert [h.message.id for h in t.search("deploy payments", channel_id="slack:T:C")] == [b.id]
    channels = t.channels()
    assert [c.id for c in channels] == ["slack:T:C", "discord:1:2"]
    assert channels[0].display_name == "#release" and channels[0].platform == "slack"


def test_transcript_index_rebuilt_after_restart(
    engine: MemoryEngine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    t = engine.transcripts
    m = t.append("web:a", "the octopus escaped the aquarium", author_id="u", author_name="U")
    data_dir = engine.data_dir
    engine.close()
    import shutil

    shutil.rmtree(data_dir / "transcripts")
    reopened = MemoryEngine(data_dir, engine.config, embedder=engine.embedder)
    try:
        assert [h.message.id for h in reopened.transcripts.search("octopuses")] == [m.id]
    finally:
        reopened.close()


def test_activity_follows_the_newest_message_and_replies_mark_what_they_answer(engine: MemoryEngine) -> None:
    t = engine.transcripts
    for ch in ("web:a", "web:b", "web:c"):  # the first message creates each channel's row
        t.append(ch, "first", author_id="u", author_name="U", created_at=100.0)
    t.append("web:b", "later", author_id="u", author_name="U", created_at=300.0)  # a known channel
    t.append("web:a", "later still", author_id="u", author_name="U", created_at=200.0)
    t.append("web:b", "late arrival", author_id="u", author_name="U", created_at=150.0)  # never moves back
    assert [(c.id, c.last_activity_at) for c in t.channels("web")] == [
        ("web:b", 300.0),
        ("web:a", 200.0),
        ("web:c", 100.0),
    ]
    q1, q2, q3 = (t.append("web:c", f"q{n}", author_id="u", author_name="U") for n in range(3))
    t.mark_reply(q3.id, ReplyState.SKIPPED)
    bot: dict[str, Any] = {"author_id": "bot", "author_name": "B", "role": "assistant"}
    t.append("web:c", "one answer", **bot, answers=[q1.id])
    t.append("web:c", "two answers", **bot, answers=[q2.id, q3.id])
    states = {m.id: m.reply_state for m in t.page("web:c")}
    assert states[q1.id] is ReplyState.ANSWERED and states[q2.id] is ReplyState.ANSWERED
    assert states[q3.id] is ReplyState.SKIPPED  # only pending messages are marked
    assert t.channels("web")[0].id == "web:c"  # the replies (stored now) made it the most recent


def test_no_duckdb_result_is_left_half_read() -> None:
    """A DuckDB result not read to its end keeps its statement's transaction open, and every later
    write keeps row versions for it: with ``fetchone()`` on the thread cursors, transcript appends
    got slower with every message until the memory process fell behind. Rows are read with
    ``store.one``; nothing in the code that talks to DuckDB calls ``fetchone``/``fetchmany``."""
    import ast
    from pathlib import Path

    import spacebot

    root = Path(spacebot.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        if path.parent.name not in ("memory", "cron") and "duckdb" not in path.read_text():
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("fetchone", "fetchmany"):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert found == []


SHOWN = Shown(
    card=Card(title="Build", text="All **green**", fields=[CardField("tests", "812")], color=0x2EB67D),
    thread_name="Build 42",
    thread_on=7,
)


def test_a_reply_keeps_how_it_is_shown(engine: MemoryEngine) -> None:
    t = engine.transcripts
    bot: dict[str, Any] = {"author_id": "bot", "author_name": "B", "role": "assistant"}
    plain = t.append("discord:1:2", "plain answer", **bot)
    shown = t.append("discord:1:2", "the build report", **bot, platform_message_id="reply:7:0", shown=SHOWN)
    assert plain.shown is None and shown.shown == SHOWN
    assert [m.shown for m in t.page("discord:1:2")] == [None, SHOWN]
    # The same reply stored again is the stored one, card and thread included.
    again = t.append("discord:1:2", "the build report", **bot, platform_message_id="reply:7:0")
    assert again.id == shown.id and again.shown == SHOWN
    [hit] = t.search("build report")
    assert hit.message.shown == SHOWN and hit.channel_name == "discord:1:2"


def test_a_store_from_before_shown_replies_upgrades_in_place(
    engine: MemoryEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data_dir, config, embedder = tmp_path / "older", engine.config, engine.embedder
    with monkeypatch.context() as old:
        old.setattr(store_module, "MIGRATIONS", [m for m in store_module.MIGRATIONS if m[0] <= 3])
        before = MemoryEngine(data_dir, config, embedder=embedder)
        try:
            columns = {r[0] for r in before.store.cursor().execute("DESCRIBE messages").fetchall()}
            assert "shown" not in columns
            before.store.cursor().execute(
                "INSERT INTO messages (id, channel_id, author_id, author_name, role, text, created_at, "
                "reply_state) VALUES (nextval('message_id_seq'), 'web:a', 'bot', 'B', 'assistant', "
                "'an old reply', 1.0, 'none')"
            )
        finally:
            before.close()
    after = MemoryEngine(data_dir, config, embedder=embedder)
    try:
        t = after.transcripts
        [old_reply] = t.page("web:a")
        assert (old_reply.text, old_reply.shown) == ("an old reply", None)
        new = t.append("web:a", "a new one", author_id="bot", author_name="B", role="assistant", shown=SHOWN)
        assert [m.shown for m in t.page("web:a")] == [None, SHOWN] and new.shown == SHOWN
    finally:
        after.close()
