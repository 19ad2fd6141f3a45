"""The errors a tool raises when a call cannot be done as asked.

The message of every one of them becomes the tool result the model reads, so it is written for the
model: what was wrong, and how to call the tool so that it works (``file_read: argument 'offset'
must be an integer, got string``). A caller catches :class:`ToolError` and hands ``str(exc)`` back
as an error result; the turn goes on and the model can correct itself.
"""

from __future__ import annotations

from spacebot.errors import SpacebotError


class ToolError(SpacebotError, ValueError):
    """A tool call that cannot be done as asked; the message is shown to the model as the result."""


class ToolArgumentError(ToolError):
    """The arguments of a call do not fit the tool (unknown tool, missing, unknown or mistyped
    argument, a value out of range); the message names the argument and what it must be."""


class SandboxError(ToolError):
    """A command the sandbox refuses or cannot start (a working directory outside the workspace, a
    program not found, no confinement available)."""
