"""An agent's identity: ``SOUL.md``, ``IDENTITY.md`` and ``ROLE.md`` under ``agents/<id>/``.

``spacebot init`` writes them (and ``spacebot run`` writes any that are missing), so an operator
always has a file to edit. A file that is missing or unreadable at run time falls back to the
built-in default; an empty file means "nothing to say here".
"""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec

from spacebot.agent.defaults import IDENTITY_MD, ROLE_MD, SOUL_MD

log = logging.getLogger("spacebot.agent")

IDENTITY_FILES: dict[str, str] = {"SOUL.md": SOUL_MD, "IDENTITY.md": IDENTITY_MD, "ROLE.md": ROLE_MD}
"""File name → built-in default text."""

MAX_FILE_CHARS = 20_000


class Identity(msgspec.Struct, frozen=True):
    """The agent's own description of itself."""

    agent: str
    """Agent id."""
    soul: str
    """Personality and values."""
    identity: str
    """Name and what it is."""
    role: str
    """What it does here."""


def agent_dir(home: str | Path, agent: str) -> Path:
    """``$SPACEBOT_HOME/agents/<agent>``."""
    return Path(home) / "agents" / agent


def ensure_files(home: str | Path, agent: str) -> list[Path]:
    """Create the agent's folders and any missing identity file; returns the files written."""
    root = agent_dir(home, agent)
    written = []
    for sub in ("data", "ingest", "workspace"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, default in IDENTITY_FILES.items():
        path = root / name
        if not path.exists():
            path.write_text(default)
            written.append(path)
    return written


def load(home: str | Path, agent: str) -> Identity:
    """Read the identity files (defaults for missing ones; over-long files are cut with a warning)."""
    root = agent_dir(home, agent)
    texts = []
    for name, default in IDENTITY_FILES.items():
        path = root / name
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            text = default
        except OSError as exc:
            log.warning("identity file unreadable path=%s error=%s; using the default", path, exc)
            text = default
        if len(text) > MAX_FILE_CHARS:
            log.warning("identity file too long path=%s chars=%d; cut to %d", path, len(text), MAX_FILE_CHARS)
            text = text[:MAX_FILE_CHARS]
        texts.append(text.strip())
    return Identity(agent, *texts)
