"""Files people attach on a platform, taken in by the gateway before the message is stored.

* **Images** (PNG, JPEG, GIF, WebP up to :data:`IMAGE_MAX` bytes) are kept in the agent's
  ``attachments/`` folder; the conversation shows recent ones to the model as image parts.
* **Text-like files** (``text/*``, JSON, and common source and data extensions) up to
  :data:`TEXT_MAX` bytes are inlined into the message text, cut at :data:`INLINE_CHARS`.
* **Anything else** is a metadata line (name, type, size): the model knows it exists.
* With ``[channel] save_attachments`` every file (up to :data:`SAVE_MAX`) is also saved in
  ``agents/<id>/workspace/saved/`` so workers can open it.

A file's name is chosen by a stranger: it is reduced to a safe file name before it touches a path
(docs/security.md), and every file lands under a folder named by the message, never elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spacebot.messaging.platform import Attachment

log = logging.getLogger("spacebot.gateway")

IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
IMAGE_MAX = 5 * 1024 * 1024
"""Largest image shown to the model (the providers' own limit is about 5 MB)."""
TEXT_MAX = 256 * 1024
INLINE_CHARS = 8000
SAVE_MAX = 25 * 1024 * 1024
MAX_FILES = 10
_TEXT_EXT = frozenset(
    {
        ".txt",
        ".md",
        ".markdown",
        ".rst",
        ".csv",
        ".tsv",
        ".json",
        ".jsonl",
        ".yaml",
        ".yml",
        ".toml",
        ".ini",
        ".cfg",
        ".log",
        ".xml",
        ".html",
        ".htm",
        ".py",
        ".js",
        ".ts",
        ".tsx",
        ".jsx",
        ".go",
        ".rs",
        ".java",
        ".kt",
        ".c",
        ".h",
        ".cc",
        ".cpp",
        ".hpp",
        ".cs",
        ".rb",
        ".php",
        ".sh",
        ".bash",
        ".sql",
        ".css",
        ".swift",
        ".lua",
        ".r",
        ".diff",
        ".patch",
    }
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(name: str, fallback: str = "file") -> str:
    """A file name a stranger chose, as a harmless one: ``[A-Za-z0-9._-]``, no leading dot,
    at most 100 characters, never empty, ``.`` or ``..``."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = _UNSAFE.sub("_", base).lstrip(".")[:100].strip("_") or fallback
    return fallback if cleaned in {".", ".."} else cleaned


def kind_of(name: str, mime: str) -> str:
    """``image``, ``text`` or ``other``."""
    mime = (mime or "").split(";")[0].strip().lower()
    if not mime or mime == "application/octet-stream":
        mime = mimetypes.guess_type(name)[0] or ""
    if mime in IMAGE_TYPES:
        return "image"
    suffix = Path(name).suffix.lower()
    if mime.startswith("text/") or mime in {"application/json", "application/xml"} or suffix in _TEXT_EXT:
        return "text"
    return "other"


@dataclass
class Intake:
    """What the attachments of one message add: text to inline, and metadata to store."""

    text: str = ""
    meta: list[dict[str, Any]] = field(default_factory=list)


async def take(files: tuple[Attachment, ...], *, agent_home: Path, message_key: str, save: bool) -> Intake:
    """Download and sort the files of one message (``message_key`` names its folder)."""
    out = Intake()
    key = safe_name(message_key, "message")
    for att in files[:MAX_FILES]:
        name = safe_name(att.name)
        kind = kind_of(att.name, att.mime)
        meta: dict[str, Any] = {"name": name, "mime": att.mime, "size": att.size, "kind": kind}
        wanted = (
            (kind == "image" and att.size <= IMAGE_MAX)
            or (kind == "text" and att.size <= TEXT_MAX)
            or (save and att.size <= SAVE_MAX)
        )
        data = b""
        if wanted and att.fetch is not None:
            try:
                data = await att.fetch()
            except Exception as exc:  # the platform's own errors: the message still goes in
                log.warning("attachment download failed name=%s error=%s", name, exc)
                meta["error"] = f"could not be downloaded ({type(exc).__name__})"
        if data and kind == "image" and len(data) <= IMAGE_MAX:
            meta["path"] = str(await asyncio.to_thread(_write, agent_home / "attachments" / key, name, data))
        if data and kind == "text":
            body = data.decode("utf-8", errors="replace")
            cut = len(body) > INLINE_CHARS
            shown = body[:INLINE_CHARS]
            note = f" (first {INLINE_CHARS} of {len(body)} characters)" if cut else ""
            out.text += f"\n[file {name}{note}]\n{shown}"
            meta["inlined"] = True
        if data and save and len(data) <= SAVE_MAX:
            meta["saved"] = str(
                await asyncio.to_thread(_write, agent_home / "workspace" / "saved" / key, name, data)
            )
        out.meta.append(meta)
    if len(files) > MAX_FILES:
        out.text += f"\n[{len(files) - MAX_FILES} more files not taken]"
    return out


def _write(folder: Path, name: str, data: bytes) -> Path:
    """Write one file (up to 25 MB: called off the event loop)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path
