"""One log line per event on stderr, as text or as JSON.

``text`` (the default): time, level, process id, logger, message with ``key=value`` fields.
``json``: one object per line with ``ts`` (ISO-8601 UTC, milliseconds), ``level``, ``process``,
``logger``, ``msg`` and, when there is one, ``exc`` (the formatted traceback).

Secrets registered with :func:`register_secret` are replaced by ``***`` before anything is written,
in either format. The per-request INFO lines of the HTTP and model SDK libraries are shown only at
``debug``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Literal

LogFormat = Literal["text", "json"]
"""The values of ``[runtime] log_format``."""

QUIET_LIBRARIES = ("httpx", "httpcore", "httpx2", "httpcore2", "openai", "anthropic")
"""Libraries that log every request at INFO: shown from WARNING unless the level is ``debug``."""

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never print ``value`` (API keys, tokens) in a log line."""
    if len(value) >= 6:
        _secrets.add(value)


def _scrub(text: str) -> str:
    # Longest first: a secret that contains a shorter one is hidden whole, not in part.
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _timestamp(record: logging.LogRecord) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{stamp}.{int(record.msecs):03d}Z"


class _TextFormatter(logging.Formatter):
    def __init__(self, proc_id: str) -> None:
        super().__init__()
        self.proc_id = proc_id

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname:<7} {self.proc_id} {record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return _scrub(line)


class _JsonFormatter(logging.Formatter):
    def __init__(self, proc_id: str) -> None:
        super().__init__()
        self.proc_id = proc_id

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "process": self.proc_id,
            "logger": record.name,
            "msg": _scrub(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = _scrub(self.formatException(record.exc_info))
        # Scrubbed before encoding: JSON escapes (quotes, backslashes, non-ASCII) would hide a
        # secret from a search in the encoded line.
        return json.dumps(entry)


def formatter(proc_id: str, fmt: LogFormat = "text") -> logging.Formatter:
    """The formatter of one process's log lines; ``proc_id`` names the process in each line."""
    match fmt:
        case "text":
            return _TextFormatter(proc_id)
        case "json":
            return _JsonFormatter(proc_id)
        case _:
            raise ValueError(f"unknown log format {fmt!r}: expected 'text' or 'json'")


def setup(proc_id: str, level: str = "info", fmt: LogFormat = "text") -> None:
    """Configure the root logger of this process (called again after a fork or a reload)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(proc_id, fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """Change the log level of this process (the noisy libraries' too: see :data:`QUIET_LIBRARIES`)."""
    logging.getLogger().setLevel(level.upper())
    quiet = logging.NOTSET if level.lower() == "debug" else logging.WARNING
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
