"""Secrets: the encrypted store behind ``secret:NAME`` (``store``) and output redaction (``scrub``)."""

from __future__ import annotations

from spacebot.secrets.scrub import Scrubber, StreamScrubber
from spacebot.secrets.store import (
    Category,
    KeySource,
    SecretsError,
    SecretStore,
    create_key_file,
    find_master_key,
)

__all__ = [
    "Category",
    "KeySource",
    "Scrubber",
    "SecretStore",
    "SecretsError",
    "StreamScrubber",
    "create_key_file",
    "find_master_key",
]
