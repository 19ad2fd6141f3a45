"""One log line per event on stderr: time, level, process id, message with ``key=value`` fields.

Secrets registered with :func:`register_secret` are replaced by ``***`` before anything is written.
"""

from __future__ import annotations

import logging
import sys
import time

_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Never print ``value`` (API keys, tokens) in a log line."""
    if len(value) >= 6:
        _secrets.add(value)


class _Formatter(logging.Formatter):
    def __init__(self, proc_id: str) -> None:
        super().__init__()
        self.proc_id = proc_id

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = (
            f"{stamp}.{int(record.msecs):03d}Z {record.levelname:<7} {self.proc_id} "
            f"{record.name}: {record.getMessage()}"
        )
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        for secret in _secrets:
            line = line.replace(secret, "***")
        return line


def setup(proc_id: str, level: str = "info") -> None:
    """Configure the root logger of this process (called again after a fork or a reload)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(proc_id))
    root.addHandler(handler)
    set_level(level)


def set_level(level: str) -> None:
    """Change the log level of this process."""
    logging.getLogger().setLevel(level.upper())
