"""The small exception hierarchy every part of Spacebot raises from."""

from __future__ import annotations


class SpacebotError(Exception):
    """Base of every error Spacebot raises on purpose."""


class ConfigError(SpacebotError):
    """The configuration is invalid; the message names the key, file and line where it can."""


class ProtocolError(SpacebotError):
    """A frame or message on the bus could not be understood."""


class ProcessTimeout(SpacebotError):
    """A process did not answer or finish within its deadline."""


class CredentialsRefused(SpacebotError):
    """A platform refused the configured credentials (a revoked bot token). Restarting the process
    meets the same refusal: it ends ``failed`` with this message until the operator fixes the key."""
