"""Errors raised by the memory engine."""

from __future__ import annotations

from spacebot.errors import SpacebotError


class MemoryStoreError(SpacebotError):
    """Base of every error the memory engine raises on purpose."""


class MemoryInputError(MemoryStoreError):
    """A caller passed something the store refuses (empty or oversized content, unknown type or
    relation, a reference to a missing id); nothing was written."""


class MemoryNotFound(MemoryInputError):
    """A memory, message or channel named by id does not exist."""


class SchemaVersionError(MemoryStoreError):
    """The database file was written by a newer schema than this code knows; it is left untouched."""


class EmbedderError(MemoryStoreError):
    """The local embedding model could not be loaded or run."""
