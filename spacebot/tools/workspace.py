"""File tools for workers (``file_read``, ``file_write``, ``file_edit``, ``file_list``), confined to
the agent's workspace.

A path from the model is taken relative to the workspace root; ``..`` and symlinks are followed
and the *result* must still be inside the root (``Path.is_relative_to`` on resolved paths, never a
string prefix test). Writes open the last component with ``O_NOFOLLOW`` relative to a descriptor of
the already-checked parent directory, so a symlink swapped in after the check cannot redirect
them. Every refusal is logged. Errors are :class:`ToolError` with a message the model can act on.
"""

from __future__ import annotations

import fnmatch
import logging
import os
from pathlib import Path

log = logging.getLogger("spacebot.tools")


class ToolError(ValueError):
    """A tool call that cannot be done as asked; the message is for the model."""


class Workspace:
    """The directory a worker may touch."""

    def __init__(
        self,
        root: Path,
        *,
        max_read_bytes: int = 200_000,
        max_write_bytes: int = 2_000_000,
        max_list_entries: int = 500,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root.resolve()
        self.max_read_bytes = max_read_bytes
        self.max_write_bytes = max_write_bytes
        self.max_list_entries = max_list_entries

    def _refuse(self, path: str, reason: str) -> ToolError:
        log.warning("path refused path=%r reason=%s root=%s", path, reason, self.root)
        return ToolError(f"{path!r}: {reason}")

    def resolve(self, path: str) -> Path:
        """The absolute, symlink-free path of ``path``, or :class:`ToolError` if it escapes the workspace."""
        if not path or "\0" in path:
            raise self._refuse(path, "empty path or NUL byte")
        given = Path(path)
        candidate = given if given.is_absolute() else self.root / given
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root):
            raise self._refuse(path, "outside the workspace (paths are relative to the workspace root)")
        return resolved

    def relative(self, path: Path) -> str:
        """``path`` as shown to the model."""
        rel = path.relative_to(self.root).as_posix()
        return rel if rel != "." else "."

    # -- the tools -----------------------------------------------------------------------------

    def read(self, path: str, offset: int = 0, limit: int | None = None) -> str:
        """Text of a file; ``offset``/``limit`` count lines."""
        target = self.resolve(path)
        if not target.is_file():
            raise ToolError(f"{path!r}: no such file")
        with target.open("rb") as fh:
            data = fh.read(self.max_read_bytes + 1)
        if b"\0" in data[:8192]:
            raise ToolError(f"{path!r}: binary file ({target.stat().st_size} bytes); not shown")
        cut = len(data) > self.max_read_bytes
        text = data[: self.max_read_bytes].decode(errors="replace")
        lines = text.splitlines(keepends=True)
        chosen = lines[offset : offset + limit if limit is not None else None]
        out = "".join(chosen)
        if cut:
            out += f"\n[cut at {self.max_read_bytes} bytes; read further with offset={offset + len(chosen)}]"
        return out

    def write(self, path: str, content: str, *, append: bool = False) -> str:
        """Create or replace (or append to) a file; parent directories are created."""
        data = content.encode()
        if len(data) > self.max_write_bytes:
            raise ToolError(f"{path!r}: {len(data)} bytes is over the {self.max_write_bytes}-byte limit")
        target = self.resolve(path)
        if target == self.root:
            raise ToolError(f"{path!r}: is the workspace directory itself")
        target.parent.mkdir(parents=True, exist_ok=True)
        parent = self.resolve(self.relative(target.parent))  # re-check after creating directories
        flags = (
            os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        )
        dir_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            try:
                fd = os.open(target.name, flags, 0o644, dir_fd=dir_fd)
            except OSError as exc:
                raise self._refuse(path, f"cannot write: {exc.strerror}") from None
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        finally:
            os.close(dir_fd)
        return f"{'appended' if append else 'wrote'} {len(data)} bytes to {self.relative(target)}"

    def edit(self, path: str, old: str, new: str, *, count: int = 1) -> str:
        """Replace the exact text ``old`` with ``new`` (``count`` = -1: every occurrence)."""
        if not old:
            raise ToolError("file_edit: 'old' must not be empty")
        text = self.read(path, 0, None) if self.resolve(path).stat().st_size <= self.max_read_bytes else None
        if text is None:
            raise ToolError(f"{path!r}: too large to edit (over {self.max_read_bytes} bytes)")
        found = text.count(old)
        if found == 0:
            raise ToolError(f"{path!r}: the text to replace was not found (check spaces and line breaks)")
        if count != -1 and found > count:
            raise ToolError(
                f"{path!r}: the text occurs {found} times; give more context to make it unique, "
                f"or count=-1 to replace all"
            )
        self.write(path, text.replace(old, new, -1 if count == -1 else count))
        return f"replaced {found if count == -1 else min(found, count)} occurrence(s) in {path}"

    def list(self, path: str = ".", *, recursive: bool = False, pattern: str | None = None) -> str:
        """Entries of a directory: ``type size path`` per line."""
        base = self.resolve(path)
        if not base.is_dir():
            raise ToolError(f"{path!r}: not a directory")
        rows: list[str] = []
        pending = [base]
        while pending:
            directory = pending.pop(0)
            for entry in sorted(directory.iterdir(), key=lambda p: p.name):
                rel = entry.relative_to(self.root).as_posix()
                if entry.is_symlink():
                    target = entry.resolve()
                    where = "" if target.is_relative_to(self.root) else " (outside workspace)"
                    kind, size = f"link -> {os.readlink(entry)}{where}", ""
                elif entry.is_dir():
                    kind, size = "dir", ""
                    if recursive:
                        pending.append(entry)
                else:
                    kind, size = "file", str(entry.stat().st_size)
                if pattern is None or fnmatch.fnmatch(entry.name, pattern):
                    rows.append(f"{kind:5} {size:>9} {rel}")
                if len(rows) >= self.max_list_entries:
                    return "\n".join(rows) + f"\n[cut at {self.max_list_entries} entries]"
        return "\n".join(rows) if rows else "(empty)"
