"""The tools a worker offers its model: shell, exec, workspace files, status lines, and (when
configured) ``web_search``, ``web_fetch``, the ``browser_*`` tools (``browser``) and the tools of
MCP servers (``mcp_tools``).

Tool secrets (``[delegates] secrets``) reach the environment of shell/exec programs, and the page
``browser_type`` types one into by name, and nothing else; every result a tool returns to the model
is scrubbed of every secret value the worker holds (:class:`ToolSecrets`), program output already
while it is read (``sandbox.run``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from spacebot.ipc.messages import StatusKind
from spacebot.llm.types import ImagePart, ToolCall, ToolSpec
from spacebot.tools import sandbox
from spacebot.tools.errors import ToolArgumentError, ToolError
from spacebot.tools.sandbox import Limits, Network, RunResult
from spacebot.tools.schema import check, spec
from spacebot.tools.web_fetch import WEB_FETCH, web_fetch
from spacebot.tools.workspace import TOOL_SPECS as WORKSPACE_SPECS
from spacebot.tools.workspace import Workspace

if TYPE_CHECKING:
    from spacebot.config import DelegateSection, WebFetchSettings
    from spacebot.runtime.child import ChildContext
    from spacebot.secrets import Scrubber
    from spacebot.tools.browser import Browser
    from spacebot.tools.mcp_tools import McpTools
    from spacebot.tools.web_search import WebSearch

log = logging.getLogger("spacebot.tools")

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
        "timeout": {
            "type": "number",
            "minimum": 1,
            "maximum": 3600,
            "description": "Seconds (default and maximum set by the operator; longer asks are clamped).",
        },
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


class ToolSecrets:
    """A worker's secrets as its tools see them.

    Args:
        env: the tool secrets (name → value) put in the environment of every shell/exec program.
        known: every other secret value the worker holds (its model api keys): never handed to a
            program, but scrubbed from tool output all the same.
    """

    def __init__(self, env: Mapping[str, str] | None = None, known: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})
        everything = {**(known or {}), **self.env}
        self.scrubber: Scrubber | None = None
        """Redacts every value above (and its encodings); None when there is nothing to redact."""
        if everything:
            from spacebot.secrets import Scrubber  # the store's crypto only where there are secrets

            self.scrubber = Scrubber(everything)

    def scrub(self, text: str) -> str:
        """``text`` with every secret value replaced by ``[REDACTED:NAME]``."""
        return self.scrubber.scrub(text) if self.scrubber is not None else text


async def worker_secrets(ctx: ChildContext, known: Mapping[str, str]) -> ToolSecrets:
    """The tool secrets of ``[delegates] secrets``, asked of the supervisor, scrubbed with ``known``.

    A name the supervisor refuses is left out (its reason is logged as a warning): the programs run
    without it, as they would without the variable.
    """
    from spacebot.supervisor.secrets_service import fetch

    values, _refused = await fetch(ctx, ctx.config.delegates.secrets)
    return ToolSecrets(values, known)


class Policy(msgspec.Struct, frozen=True):
    """What the operator allows beyond one command's limits (``[delegates]``)."""

    timeout_max: float = 0.0
    """Longest ``timeout`` the model may ask for (0 = the default timeout of ``Limits``)."""
    workspace_max_bytes: int = 0
    """Size cap of the workspace (0 = none)."""
    network: Network = Network()
    """Outbound TCP of commands."""
    allow_unsandboxed: bool = False
    """Run commands even without filesystem confinement."""


def workspace_bytes(root: Path) -> int:
    """Bytes the workspace's files take (allocated blocks; hard links counted once; no symlinks)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


class TaskTools:
    """Runs the task tools for one worker."""

    def __init__(
        self,
        workspace: Path,
        limits: Limits,
        on_status: Callable[[str, StatusKind], None],
        policy: Policy | None = None,
        secrets: ToolSecrets | None = None,
        *,
        web_search: WebSearch | None = None,
        web_fetch: WebFetchSettings | None = None,
        mcp: McpTools | None = None,
        browser: Browser | None = None,
    ) -> None:
        self.files = Workspace(workspace)
        self.limits = limits
        self.policy = policy or Policy()
        self.secrets = secrets or ToolSecrets()
        self.on_status = on_status
        self.specs = {t.name: t for t in TASK_TOOLS}
        self.web_fetch = web_fetch
        """``[tools.web_fetch]``: ``web_fetch`` is offered when given and enabled."""
        if web_fetch is not None and web_fetch.enabled:
            self.specs[WEB_FETCH.name] = WEB_FETCH
        self.web_search = web_search
        """``web_search`` (offered only when a provider is configured: ``web_search.connect``)."""
        if web_search is not None:
            from spacebot.tools.web_search import WEB_SEARCH

            self.specs[WEB_SEARCH.name] = WEB_SEARCH
        self.mcp = mcp
        """``[[tools.mcp]]``: the started servers' tools (``mcp_<server>_<tool>``)."""
        if mcp is not None:
            self.specs.update(mcp.specs)
        self.browser = browser
        """``[tools.browser]``: the ``browser_*`` tools (offered only when ``browser.connect`` gave one)."""
        if browser is not None:
            self.specs.update(browser.specs)

    def take_images(self) -> list[ImagePart]:
        """Images the tools produced since the last call (browser screenshots), for the model."""
        return self.browser.take_images() if self.browser is not None else []

    async def _room(self) -> int | None:
        """Bytes left under the workspace cap (may be negative), or ``None`` without a cap."""
        cap = self.policy.workspace_max_bytes
        if not cap:
            return None
        return cap - await asyncio.to_thread(workspace_bytes, self.files.root)

    def _over(self, room: int) -> ToolError:
        cap = self.policy.workspace_max_bytes
        return ToolError(
            f"The workspace holds {_mib(cap - room)} of its {_mib(cap)} cap. "
            "Delete files you no longer need (shell: rm) before writing more."
        )

    async def call(self, call: ToolCall) -> tuple[str, bool]:
        """Run one call; returns (text for the model, is_error).

        The arguments are checked by ``schema.check`` against the tool's spec (JSON ``null`` for
        an optional argument means its default); every :class:`ToolError` becomes an error result.
        Whatever comes back is scrubbed of the worker's secrets: this is the one way a tool's
        result reaches the model, and from there transcripts, logs and people.
        """
        text, is_error = await self._call(call)
        return self.secrets.scrub(text), is_error

    async def _call(self, call: ToolCall) -> tuple[str, bool]:
        spec_ = self.specs.get(call.name)
        try:
            if spec_ is None:
                raise ToolArgumentError(f"unknown tool {call.name!r} (tools: {', '.join(self.specs)})")
            args = check(spec_, call)
            return await self._run(call.name, args), False
        except ToolArgumentError as exc:
            given = call.arguments if isinstance(call.arguments, dict) else {}
            log.warning("%s refused: path=%r reason=%s", call.name, given.get("path"), exc)
            return str(exc), True
        except ToolError as exc:
            return str(exc), True
        except OSError as exc:
            return f"{call.name}: {exc}", True

    async def _run(self, name: str, args: dict[str, Any]) -> str:
        if self.mcp is not None and name in self.mcp.routes:
            return await self.mcp.call(name, args)
        if self.browser is not None and name in self.browser.specs:
            if name == "browser_screenshot":
                return await self._screenshot(self.browser, args)
            return await self.browser.call(name, args, self.secrets.env)
        if name in ("shell", "exec"):
            return await self._command(name, args)
        if name == "set_status":
            self.on_status(args["text"], args.get("kind", "progress"))
            return "status set"
        if name == "web_fetch" and self.web_fetch is not None:
            return await web_fetch(args["url"], self.web_fetch, args.get("max_chars"))
        if name == "web_search" and self.web_search is not None:
            return await self.web_search.search(args)
        files = self.files
        if name in ("file_write", "file_edit"):
            room = await self._room()
            grow = len(args["content" if name == "file_write" else "new"].encode())
            if room is not None and grow > room:
                raise ToolError(f"{name}: writing {grow} bytes would pass the cap. {self._over(room)}")
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

    async def _screenshot(self, browser: Browser, args: dict[str, Any]) -> str:
        """``browser_screenshot`` under the workspace cap: refused when the workspace is full,
        and taken back (file removed, image not shown) when the new file passes the cap."""
        room = await self._room()
        if room is not None and room <= 0:
            raise ToolError(f"browser_screenshot: no room for a screenshot. {self._over(room)}")
        text = await browser.call("browser_screenshot", args, self.secrets.env)
        after = await self._room()
        if after is not None and after < 0:
            size = await browser.discard_screenshot()
            now = await self._room()
            raise ToolError(
                f"browser_screenshot: the screenshot ({size} bytes) would pass the cap, so it was not "
                f"kept. {self._over(after + size if now is None else now)}"
            )
        return text

    async def _command(self, name: str, args: dict[str, Any]) -> str:
        """``shell``/``exec``: the configured limits, the model's timeout clamped to the maximum."""
        cwd = self.files.resolve(args.get("cwd") or ".")
        notes: list[str] = []
        changes: dict[str, Any] = {}
        if "timeout" in args:
            asked = float(args["timeout"])
            ceiling = self.policy.timeout_max or self.limits.timeout
            if asked > ceiling:
                notes.append(f"timeout clamped to {ceiling:g} s (asked {asked:g} s; the configured maximum)")
            changes["timeout"] = min(asked, ceiling)
        room = await self._room()
        if room is not None:
            # RLIMIT_FSIZE: no single file may grow past what is left under the cap, and when
            # nothing is left no file may grow at all (deleting still works).
            fsize = self.limits.file_size_bytes
            if room <= 0:
                changes["file_size_bytes"] = -1
                notes.append(f"Files cannot grow during this command. {self._over(room)}")
            else:
                changes["file_size_bytes"] = room if fsize <= 0 else min(fsize, room)
        limits = Limits(**{**_fields(self.limits), **changes}) if changes else self.limits
        extra: dict[str, str] = {}
        if name == "shell":
            argv = ["/bin/sh", "-c", args["command"]]
        else:
            extra = args.get("env") or {}
            if not all(isinstance(k, str) and isinstance(v, str) for k, v in extra.items()):
                raise ToolArgumentError("exec: env must map strings to strings")
            argv = [args["program"], *map(str, args.get("args") or [])]
        # The clean environment, the tool secrets, then what the model asked for (exec's ``env``).
        env = {**sandbox.default_env(self.files.root), **self.secrets.env, **extra}
        result = await sandbox.run(
            argv,
            cwd=cwd,
            workspace=self.files.root,
            env=env,
            limits=limits,
            network=self.policy.network,
            allow_unsandboxed=self.policy.allow_unsandboxed,
            scrubber=self.secrets.scrubber,
        )
        after = await self._room()
        if after is not None and after < 0:
            notes.append(f"The workspace is now over its cap. {self._over(after)}")
        return "\n".join([*notes, _format(result)])


def _fields(limits: Limits) -> dict[str, Any]:
    return {f: getattr(limits, f) for f in limits.__struct_fields__}


def from_settings(settings: DelegateSection, network: Network) -> tuple[Limits, Policy]:
    """The limits and policy of ``[delegates]`` for one worker."""
    limits = Limits(
        timeout=settings.shell_timeout,
        output_bytes=settings.output_bytes,
        cpu_seconds=settings.cpu_seconds,
        address_space_mb=settings.address_space_mb,
        open_files=settings.open_files,
        processes=settings.processes,
        file_size_bytes=settings.max_file_mb * 2**20,
    )
    policy = Policy(
        timeout_max=settings.shell_timeout_max or settings.shell_timeout,
        workspace_max_bytes=settings.workspace_max_mb * 2**20,
        network=network,
        allow_unsandboxed=settings.allow_unsandboxed,
    )
    return limits, policy
