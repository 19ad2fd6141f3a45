"""Files people attach: names made safe, sorted by kind, and images read only from their folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from spacebot.agent.context import image_loader
from spacebot.ipc.messages import ReplyState, StoredMessage
from spacebot.messaging.attachments import INLINE_CHARS, kind_of, safe_name, take
from spacebot.messaging.platform import Attachment


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".bashrc", "bashrc"),
        ("..", "file"),
        ("", "file"),
        ("my photo (1).png", "my_photo_1_.png"),
        ("a" * 300 + ".txt", "a" * 100),
    ],
)
def test_a_strangers_file_name_becomes_a_safe_one(name: str, safe: str) -> None:
    assert safe_name(name) == safe


def test_kinds_follow_the_type_or_the_extension() -> None:
    assert kind_of("x.png", "application/octet-stream") == "image"
    assert kind_of("x", "image/jpeg; q=1") == "image"
    assert kind_of("main.py", "") == "text"
    assert kind_of("data", "application/json") == "text"
    assert kind_of("report.pdf", "application/pdf") == "other"


def _fetch(data: bytes):
    async def fetch() -> bytes:
        return data

    return fetch


async def test_text_is_inlined_with_a_note_when_cut_and_other_files_are_only_named(tmp_path: Path) -> None:
    long = "x" * (INLINE_CHARS + 10)
    files = (
        Attachment("log.txt", "u1", "text/plain", len(long), _fetch(long.encode())),
        Attachment("report.pdf", "u2", "application/pdf", 3, _fetch(b"%PD")),
    )
    got = await take(files, agent_home=tmp_path, message_key="discord-1", save=False)
    assert f"[file log.txt (first {INLINE_CHARS} of {INLINE_CHARS + 10} characters)]" in got.text
    assert [m["kind"] for m in got.meta] == ["text", "other"]
    assert "path" not in got.meta[1] and "saved" not in got.meta[1]
    assert not (tmp_path / "workspace").exists()


def _stored(attachments: list[dict[str, object]]) -> StoredMessage:
    return StoredMessage(
        id=1,
        channel_id="discord:1:2",
        platform_message_id="9",
        author_id="discord:3",
        author_name="ana",
        role="user",
        text="look",
        attachments=attachments,
        created_at=0.0,
        reply_state=ReplyState.PENDING,
        replied_at=None,
    )


def test_images_are_read_only_from_the_attachments_folder(tmp_path: Path) -> None:
    folder = tmp_path / "attachments"
    (folder / "m").mkdir(parents=True)
    (folder / "m" / "a.png").write_bytes(b"png")
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"secret")
    load = image_loader(folder)
    inside: dict[str, object] = {"kind": "image", "path": str(folder / "m" / "a.png"), "mime": "image/png"}
    escape: dict[str, object] = {
        "kind": "image",
        "path": str(folder / "m" / ".." / ".." / "secret.png"),
        "mime": "image/png",
    }
    parts = load(_stored([inside, escape, {"kind": "text", "path": str(outside)}]))
    assert [p.data for p in parts] == ["cG5n"]  # base64 of b"png": the one inside the folder
