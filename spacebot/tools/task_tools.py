"""The tools a worker offers its model: shell, exec, workspace files, and status lines."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

from spacebot.llm.types import ToolCall, ToolSpec
from spacebot.tools import sandbox
from spacebot.tools.sandbox import Limits, RunResult, SandboxError
from spacebot.tools.schema import ToolArgumentError, check, spec
from spacebot.tools.workspace import TOOL_SPECS as WORKSPACE_SPECS
from spacebot.tools.workspace import ToolError, Workspace

SHELL = spec(
    "shell",
    "Run a shell command (/bin/sh -c) in the workspace. Output is capped; a command that runs past "
    "its timeout is killed.",
    {
        "command": {"type": "string", "description": "The command line."},
        "cwd": {
            "type": "string",
            "description": "Working directory relative to the workspace (default: its root).",
        },
        "timeout": {"type": "number", "minimum": 1, "maximum": 3600, "description": "Seconds (default 60)."},
    },
    ["command"],
)
EXEC = spec(
    "exec",
    "Run one program with arguments, no shell (safer for arguments with spaces or quotes).",
    {
        "program": {"type": "string"},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "object", "description": "Extra environment variables."},
        "cwd": {"type": "string"},
        "timeout": {"type": "number", "minimum": 1, "maximum": 3600},
    },
    ["program"],
)
# The file tools' descriptions live with their implementation (``workspace.TOOL_SPECS``).
FILE_READ, FILE_WRITE, FILE_EDIT, FILE_LIST = (
    ToolSpec(s["name"], s["description"], s["parameters"]) for s in WORKSPACE_SPECS
)
SET_STATUS = spec(
    "set_status",
    "Tell the conversation what you are doing (progress) or what you have achieved so far (outcome).",
    {"text": {"type": "string"}, "kind": {"type": "string", "enum": ["progress", "outcome"]}},
    ["text"],
)

TASK_TOOLS = [SHELL, EXEC, FILE_READ, FILE_WRITE, FILE_EDIT, FILE_LIST, SET_STATUS]


def _format(result: RunResult) -> str:
    head = (
        f"exit code {result.exit_code}"
        if result.exit_code is not None
        else f"killed by signal {result.signal}"
    )
    if result.timed_out:
        head += " (timed out: the command was killed)"
    if result.truncated:
        head += " (output over the limit: the command was killed and its output cut)"
    parts = [head]
    if result.stdout:
        parts.append("stdout:\n" + result.stdout)
    if result.stderr:
        parts.append("stderr:\n" + result.stderr)
    return "\n".join(parts)


class TaskTools:
    """Runs the task tools for one worker."""

    def __init__(self, workspace: Path, limits: Limits, on_status: Callable[[str, str], None]) -> None:
        self.files = Workspace(workspace)
        self.limits = limits
        self.on_status = on_status
        self.specs = {t.name: t for t in TASK_TOOLS}

    async def call(self, call: ToolCall) -> tuple[str, bool]:
        """Run one call; returns (text for the model, is_error)."""
        spec_ = self.specs.get(call.name)
        try:
            if spec_ is None:
                raise ToolArgumentError(f"unknown tool {call.name!r} (tools: {', '.join(self.specs)})")
            args = check(spec_, call)
            return await self._run(call.name, args), False
        except (ToolArgumentError, ToolError, SandboxError) as exc:
            return str(exc), True
        except OSError as exc:
            return f"{call.name}: {exc}", True

    async def _run(self, name: str, args: dict[str, Any]) -> str:
        if name in ("shell", "exec"):
            cwd = self.files.resolve(args.get("cwd") or ".")
            limits = self.limits
            if "timeout" in args:
                limits = Limits(**{**_fields(limits), "timeout": float(args["timeout"])})
            if name == "shell":
                argv = ["/bin/sh", "-c", args["command"]]
                env = None
            else:
                extra = args.get("env") or {}
                if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
                    raise ToolArgumentError("exec: env must map strings to strings")
                argv = [args["program"], *map(str, args.get("args") or [])]
                env = {**sandbox.default_env(self.files.root), **extra}
            result = await sandbox.run(argv, cwd=cwd, workspace=self.files.root, env=env, limits=limits)
            return _format(result)
        if name == "set_status":
            self.on_status(args["text"], args.get("kind", "progress"))
            return "status set"
        files = self.files
        if name == "file_read":
            return await asyncio.to_thread(files.read, args["path"], args.get("offset", 0), args.get("limit"))
        if name == "file_write":
            return await asyncio.to_thread(
                files.write, args["path"], args["content"], append=args.get("append", False)
            )
        if name == "file_edit":
            return await asyncio.to_thread(
                files.edit, args["path"], args["old"], args["new"], count=args.get("count", 1)
            )
        return await asyncio.to_thread(
            files.list,
            args.get("path", "."),
            recursive=args.get("recursive", False),
            pattern=args.get("pattern"),
        )


def _fields(limits: Limits) -> dict[str, Any]:
    return {f: getattr(limits, f) for f in limits.__struct_fields__}
