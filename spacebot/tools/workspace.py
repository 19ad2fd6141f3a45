"""File tools for workers (``file_read``, ``file_write``, ``file_edit``, ``file_list``), confined to
the agent's workspace directory.

Confinement, in order:

* a path from the model is relative to the workspace root (an absolute path is accepted only if it
  names something inside the root); empty paths and NUL bytes are refused;
* ``..`` may not climb above the root, even if later components would come back in;
* the path is then resolved with every symlink followed (``os.path.realpath``) and the result must
  be inside the root (``Path.is_relative_to`` on resolved paths, never a string prefix test: a
  sibling ``/ws-evil`` is not inside ``/ws``);
* the file is finally opened by walking down from a descriptor of the root, one component at a
  time, with ``O_NOFOLLOW`` and ``dir_fd``: a symlink swapped in after the check (for a directory
  on the way or for the file itself) makes the open fail instead of redirecting it.

Every refusal is logged on ``spacebot.tools`` at WARNING with the path and the reason, and raised as
:class:`~spacebot.tools.errors.ToolError`, whose message is written for the model. The functions are
synchronous; callers run them in a thread.

A model's call reaches these methods through ``task_tools.TaskTools.call``, which first checks its
arguments against :data:`TOOL_SPECS` with ``schema.check``.
"""

from __future__ import annotations

import builtins
import errno
import fnmatch
import logging
import os
import posixpath
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from spacebot.tools.errors import ToolError

# ToolError stays importable from here for the callers outside spacebot.tools that still do.
__all__ = ["TOOL_SPECS", "ToolError", "Workspace"]

log = logging.getLogger("spacebot.tools")

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_BINARY_SAMPLE = 8192
_CONTROL_OK = frozenset("\t\n\r\f\b\x1b")


def _utf8_boundary(data: bytes | bytearray) -> int:
    """The length of ``data`` without an incomplete UTF-8 sequence at its end."""
    end = len(data)
    back = 0
    while back < 4 and end - back > 0 and (data[end - back - 1] & 0xC0) == 0x80:
        back += 1
    if end - back > 0:
        lead = data[end - back - 1]
        need = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
        if need > back + 1:
            return end - back - 1
    return end


def _looks_binary(sample: bytes) -> bool:
    """True for data that is not text: a NUL byte, or many undecodable or control characters."""
    if b"\0" in sample:
        return True
    if not sample:
        return False
    text = sample[: _utf8_boundary(sample)].decode("utf-8", errors="replace")
    odd = sum(1 for ch in text if ch == "\ufffd" or (ch < " " and ch not in _CONTROL_OK))
    return odd > max(8, len(text) // 10)


def _refuse_symlinks(root: Path) -> None:
    """Raise :class:`ToolError` if any existing component of ``root`` is a symbolic link."""
    path = Path(os.path.abspath(root))
    for part in (*reversed(path.parents), path):
        try:
            if stat.S_ISLNK(os.lstat(part).st_mode):
                raise ToolError(
                    f"workspace root {str(path)!r} is or passes through a symbolic link at {str(part)!r}; "
                    "a workspace root must be a real directory"
                )
        except FileNotFoundError:
            return  # the rest does not exist yet: mkdir creates real directories
        except NotADirectoryError:
            raise ToolError(f"workspace root {str(path)!r}: {str(part)!r} is not a directory") from None


class Workspace:
    """The directory a worker may touch, and the file tools that act on it."""

    def __init__(
        self,
        root: Path,
        *,
        max_read_bytes: int = 200_000,
        max_write_bytes: int = 2_000_000,
        max_list_entries: int = 500,
    ) -> None:
        """Use ``root`` (created if missing) as the workspace; the limits bound each call.

        Raises :class:`ToolError` if ``root`` is, or passes through, a symbolic link: a root is
        refused, never resolved, since a link planted by a tool would move the whole workspace
        (and the sandbox built on it) elsewhere.
        """
        root = Path(root)
        _refuse_symlinks(root)
        root.mkdir(parents=True, exist_ok=True)
        _refuse_symlinks(root)  # nothing was swapped in while the missing parts were made
        self._given_root = Path(os.path.abspath(root))
        self.root = root.resolve()
        self.max_read_bytes = max_read_bytes
        self.max_write_bytes = max_write_bytes
        self.max_list_entries = max_list_entries

    # -- paths ---------------------------------------------------------------------------------

    def _refuse(self, op: str, path: object, reason: str) -> ToolError:
        """Log a refusal and build the error for the model."""
        log.warning("%s refused: path=%r reason=%s root=%s", op, path, reason, self.root)
        return ToolError(f"{path!r}: {reason}")

    def relative(self, path: Path) -> str:
        """``path`` (inside the root) as shown to the model: relative, with ``/``; the root is ``.``."""
        return Path(path).relative_to(self.root).as_posix()

    def resolve(self, path: str, *, for_write: bool = False) -> Path:
        """The absolute, symlink-free path that ``path`` names inside the workspace.

        Raises :class:`ToolError` (and logs) if ``path`` is empty, has a NUL byte, or leads outside
        the workspace by ``..``, by being absolute elsewhere, or through a symlink. With
        ``for_write`` the path must also name a file: not the root, not an existing directory.
        """
        return self._resolve("resolve", path, for_write=for_write)

    def _resolve(self, op: str, path: str, *, for_write: bool = False) -> Path:
        if not isinstance(path, str):
            raise self._refuse(op, path, f"the path must be a string, got {type(path).__name__}")
        if not path:
            raise self._refuse(op, path, "empty path (use '.' for the workspace root)")
        if "\0" in path:
            raise self._refuse(op, path, "the path contains a NUL byte")
        outside = "is outside the workspace (paths are relative to the workspace root)"
        if path.startswith("/"):
            for base in (self.root, self._given_root):
                if Path(posixpath.normpath(path)).is_relative_to(base):
                    rel = Path(posixpath.normpath(path)).relative_to(base).as_posix()
                    break
            else:
                raise self._refuse(op, path, outside)
        else:
            rel = path
        depth = 0
        for part in rel.split("/"):
            if part == "..":
                depth -= 1
                if depth < 0:
                    raise self._refuse(op, path, f"{outside}: '..' climbs above the workspace root")
            elif part not in ("", "."):
                depth += 1
        try:
            resolved = Path(os.path.realpath(self.root / rel))
        except (OSError, ValueError) as exc:
            raise self._refuse(op, path, f"cannot be resolved: {exc}") from None
        if not resolved.is_relative_to(self.root):
            raise self._refuse(op, path, f"{outside}: it leads out through a symbolic link")
        # realpath stops resolving at a symlink loop and joins the rest of the path unresolved, so
        # make sure what it gave back really is free of links (and of '..') as it stands.
        parts = resolved.relative_to(self.root).parts
        if ".." in parts or "." in parts:
            raise self._refuse(op, path, "cannot be resolved (a symbolic link loop on the way)")
        probe = self.root
        for part in parts:
            probe = probe / part
            try:
                is_link = stat.S_ISLNK(os.lstat(probe).st_mode)
            except FileNotFoundError:
                break
            except NotADirectoryError:
                where = self.relative(probe.parent)
                raise self._refuse(op, path, f"{where!r} is a file, not a directory") from None
            except OSError as exc:
                raise self._refuse(op, path, f"cannot be resolved: {exc.strerror}") from None
            if is_link:
                raise self._refuse(op, path, "goes through a symbolic link loop; refused")
        if for_write:
            if resolved == self.root:
                raise self._refuse(op, path, "is the workspace root itself; give a file name")
            if path.endswith("/"):
                raise self._refuse(op, path, "ends with '/'; give a file name, not a directory")
            if resolved.is_dir():
                raise self._refuse(op, path, "is a directory; give a file name")
        return resolved

    def _open_dir(self, op: str, path: str, parts: Sequence[str], *, create: bool = False) -> int:
        """A descriptor of ``root/parts...``, walked down without following any symlink.

        With ``create``, missing directories are made on the way. The caller closes the descriptor.
        """
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for i, part in enumerate(parts):
                if create:
                    try:
                        os.mkdir(part, 0o777, dir_fd=fd)
                    except FileExistsError:
                        pass
                    except OSError as exc:
                        where = "/".join(parts[: i + 1])
                        raise self._refuse(
                            op, path, f"cannot create directory {where!r}: {exc.strerror}"
                        ) from None
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    raise self._component_error(op, path, fd, part, "/".join(parts[: i + 1]), exc) from None
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _component_error(
        self, op: str, path: str, dir_fd: int, name: str, where: str, exc: OSError
    ) -> ToolError:
        """The refusal for a path component that could not be opened as a directory."""
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            mode = None
        if mode is not None and stat.S_ISLNK(mode):
            return self._refuse(op, path, f"{where!r} became a symbolic link while in use; refused")
        if mode is not None and not stat.S_ISDIR(mode):
            return self._refuse(op, path, f"{where!r} is a file, not a directory")
        if exc.errno == errno.ENOENT:
            return self._refuse(op, path, f"no such file or directory ({where!r} does not exist)")
        return self._refuse(op, path, f"cannot open {where!r}: {exc.strerror}")

    def _open_file(self, op: str, path: str, target: Path, flags: int, *, create_dirs: bool = False) -> int:
        """Open the resolved ``target`` with ``O_NOFOLLOW`` under a walked-down parent descriptor."""
        parts = target.relative_to(self.root).parts
        if not parts:
            raise self._refuse(op, path, "is the workspace root directory, not a file; use file_list")
        dir_fd = self._open_dir(op, path, parts[:-1], create=create_dirs)
        try:
            try:
                fd = os.open(
                    parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o666, dir_fd=dir_fd
                )
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise self._refuse(
                        op, path, "is a symbolic link here (a loop, or swapped in while in use); refused"
                    ) from None
                if exc.errno == errno.ENOENT:
                    raise self._refuse(op, path, "no such file") from None
                if exc.errno == errno.EISDIR:
                    raise self._refuse(op, path, "is a directory; use file_list") from None
                raise self._refuse(op, path, f"cannot open: {exc.strerror}") from None
        finally:
            os.close(dir_fd)
        try:
            mode = os.fstat(fd).st_mode
            if stat.S_ISDIR(mode):
                raise self._refuse(op, path, "is a directory; use file_list")
            if not stat.S_ISREG(mode):
                raise self._refuse(op, path, "is not a regular file (a device, pipe or socket)")
        except BaseException:
            os.close(fd)
            raise
        return fd

    def read_bytes(self, path: str, limit: int, op: str = "send_file") -> tuple[Path, bytes]:
        """The resolved path and the bytes of a regular file of at most ``limit`` bytes, read from
        a descriptor opened with ``O_NOFOLLOW`` under walked-down parents: a file swapped for a
        link between the check and the read is refused, never followed."""
        target = self.resolve(path)
        fd = self._open_file(op, path, target, os.O_RDONLY)
        with os.fdopen(fd, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise self._refuse(op, path, f"is {size} bytes; the limit is {limit}")
            return target, f.read(limit + 1)[:limit]

    # -- the tools -----------------------------------------------------------------------------

    def read(self, path: str, offset: int = 0, limit: int | None = None) -> str:
        """The text of a file (``file_read``); ``offset`` (0-based) and ``limit`` count lines.

        Binary files are refused. At most ``max_read_bytes`` are returned; a longer selection is
        cut at a line boundary with a note giving the ``offset`` to continue from.
        """
        op = "file_read"
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise self._refuse(op, path, f"offset must be an integer >= 0, got {offset!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise self._refuse(op, path, f"limit must be an integer >= 1, got {limit!r}")
        target = self._resolve(op, path)
        fd = self._open_file(op, path, target, os.O_RDONLY)
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fd).st_size
            if _looks_binary(os.pread(fd, _BINARY_SAMPLE, 0)):
                raise self._refuse(
                    op, path, f"is a binary file ({size} bytes); it is not shown (inspect it with the shell)"
                )
            return self._read_lines(fh, offset, limit, size)

    def _read_lines(self, fh: BinaryIO, offset: int, limit: int | None, size: int) -> str:
        """Skip ``offset`` lines of ``fh``, then return up to ``limit`` lines within the byte budget."""
        chunk = 65536
        line = 0
        partial = False
        while line < offset:
            piece = fh.readline(chunk)
            if not piece:
                total = line + (1 if partial else 0)
                if size == 0:
                    return "(empty file)"
                return f"[offset {offset} is past the end: the file has {total} lines]"
            partial = not piece.endswith(b"\n")
            if not partial:
                line += 1
        budget = self.max_read_bytes
        out = bytearray()
        taken = 0
        note = ""
        while limit is None or taken < limit:
            room = budget - len(out)
            piece = fh.readline(room + 1)
            if not piece:
                break
            if len(piece) > room:
                if taken == 0:
                    out += piece[: _utf8_boundary(piece[:room])]
                    note = (
                        f"[line {offset} is longer than {budget} bytes and was cut; the next line is "
                        f"offset={offset + 1} (use the shell to see the whole line)]"
                    )
                else:
                    note = (
                        f"[cut at {budget} bytes (lines {offset}-{offset + taken - 1} shown); "
                        f"read further with offset={offset + taken}]"
                    )
                break
            out += piece
            taken += 1
        if not out and not note:
            if size == 0:
                return "(empty file)"
            return f"[offset {offset} is past the end: the file has {offset} lines]"
        text = out.decode("utf-8", errors="replace")
        if note:
            text += ("" if text.endswith("\n") else "\n") + note
        return text

    def write(self, path: str, content: str, *, append: bool = False) -> str:
        """Create, replace or (``append``) extend a file (``file_write``); parent directories are made."""
        op = "file_write"
        if not isinstance(content, str):
            raise self._refuse(op, path, f"content must be a string, got {type(content).__name__}")
        data = content.encode("utf-8", errors="replace")
        if len(data) > self.max_write_bytes:
            raise self._refuse(
                op,
                path,
                f"content is {len(data)} bytes, over the {self.max_write_bytes}-byte limit per write",
            )
        target = self._resolve(op, path, for_write=True)
        total = self._write_bytes(op, path, target, data, append=append)
        rel = self.relative(target)
        if append:
            return f"wrote {len(data)} bytes to {rel} (appended; the file is now {total} bytes)"
        return f"wrote {len(data)} bytes to {rel}"

    def _write_bytes(self, op: str, path: str, target: Path, data: bytes, *, append: bool) -> int:
        """Write ``data`` to the resolved ``target``; returns the file's size afterwards."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else 0)
        fd = self._open_file(op, path, target, flags, create_dirs=True)
        with os.fdopen(fd, "wb") as fh:
            if not append:
                os.ftruncate(fd, 0)
            fh.write(data)
            fh.flush()
            return os.fstat(fd).st_size

    def edit(self, path: str, old: str, new: str, *, count: int = 1) -> str:
        """Replace the exact text ``old`` with ``new`` (``file_edit``).

        Refused when ``old`` is not found, or is found more than ``count`` times (``count=-1``
        replaces every occurrence); the message says how many matches there were.
        """
        op = "file_edit"
        if not isinstance(old, str) or not old:
            raise self._refuse(op, path, "'old' must be a non-empty string (the exact text to replace)")
        if not isinstance(new, str):
            raise self._refuse(op, path, f"'new' must be a string, got {type(new).__name__}")
        if isinstance(count, bool) or not isinstance(count, int) or not (count == -1 or count >= 1):
            raise self._refuse(op, path, f"count must be -1 (all) or an integer >= 1, got {count!r}")
        target = self._resolve(op, path, for_write=True)
        fd = self._open_file(op, path, target, os.O_RDONLY)
        with os.fdopen(fd, "rb") as fh:
            size = os.fstat(fd).st_size
            if size > self.max_write_bytes:
                raise self._refuse(
                    op, path, f"is {size} bytes, over the {self.max_write_bytes}-byte edit limit"
                )
            raw = fh.read()
        if _looks_binary(raw[:_BINARY_SAMPLE]):
            raise self._refuse(op, path, "is a binary file; it cannot be edited as text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self._refuse(op, path, "is not UTF-8 text; it cannot be edited safely") from None
        found = text.count(old)
        if found == 0:
            hint = ""
            if "\r\n" in text and "\n" in old and "\r\n" not in old:
                hint = " (the file has Windows line endings, \\r\\n)"
            elif old.strip() and old.strip() in text:
                hint = " (it occurs without the leading/trailing whitespace you gave)"
            raise self._refuse(
                op, path, f"the text to replace was not found: 0 matches{hint}; check spaces and line breaks"
            )
        if count != -1 and found > count:
            raise self._refuse(
                op,
                path,
                f"the text to replace has {found} matches but count={count}; include more surrounding "
                f"text to make it unique, or pass count=-1 to replace all {found}",
            )
        replaced = found if count == -1 else min(found, count)
        data = text.replace(old, new, replaced).encode("utf-8")
        if len(data) > self.max_write_bytes:
            raise self._refuse(
                op, path, f"the result would be {len(data)} bytes, over the {self.max_write_bytes}-byte limit"
            )
        self._write_bytes(op, path, target, data, append=False)
        return (
            f"replaced {replaced} occurrence{'s' if replaced != 1 else ''} in {self.relative(target)} "
            f"({found} match{'es' if found != 1 else ''} found)"
        )

    def list(self, path: str = ".", *, recursive: bool = False, pattern: str | None = None) -> str:
        """Entries of a directory (``file_list``), one per line: type (dir/file/link), size, path.

        Paths are relative to the workspace root, sorted. ``recursive`` descends into directories
        but never through symlinks; a link is shown with its target, marked when it points outside
        the workspace. ``pattern`` is a glob on the entry name (or on the path if it has a ``/``).
        At most ``max_list_entries`` rows are returned, with a note when the listing was cut.
        """
        op = "file_list"
        if pattern is not None and not isinstance(pattern, str):
            raise self._refuse(op, path, f"pattern must be a string, got {type(pattern).__name__}")
        base = self._resolve(op, path)
        parts = base.relative_to(self.root).parts
        if base.exists() and not base.is_dir():
            fd = self._open_file(op, path, base, os.O_RDONLY)
            try:
                return self._row("file", os.fstat(fd).st_size, self.relative(base))
            finally:
                os.close(fd)
        rows: builtins.list[str] = []
        fd = self._open_dir(op, path, parts)
        try:
            full = self._walk(fd, base, recursive, pattern, rows)
        finally:
            os.close(fd)
        if full:
            rows.append(
                f"[listing cut at {self.max_list_entries} entries; narrow it with a path or a pattern]"
            )
        if not rows:
            return f"(no entries match {pattern!r})" if pattern else "(empty directory)"
        return "\n".join(rows)

    @staticmethod
    def _row(kind: str, size: int | None, rel: str, extra: str = "") -> str:
        """One listing line."""
        return f"{kind:<4} {('-' if size is None else str(size)):>10}  {rel}{extra}"

    def _walk(
        self, fd: int, directory: Path, recursive: bool, pattern: str | None, rows: builtins.list[str]
    ) -> bool:
        """Append the rows of the directory open as ``fd``; True once the cap is reached."""
        with os.scandir(fd) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            rel = self.relative(directory / entry.name)
            extra = ""
            descend = False
            size: int | None = None
            if entry.is_symlink():
                kind = "link"
                try:
                    link = os.readlink(entry.name, dir_fd=fd)
                except OSError:
                    link = "?"
                real = Path(os.path.realpath(directory / entry.name))
                inside = real.is_relative_to(self.root)
                extra = f" -> {link}" + ("" if inside else " (outside workspace)")
            elif entry.is_dir(follow_symlinks=False):
                kind, rel, descend = "dir", rel + "/", recursive
            else:
                kind = "file" if entry.is_file(follow_symlinks=False) else "other"
                try:
                    size = entry.stat(follow_symlinks=False).st_size
                except OSError:
                    size = None
            name_or_path = rel.rstrip("/") if pattern and "/" in pattern else entry.name
            if pattern is None or fnmatch.fnmatchcase(name_or_path, pattern):
                if len(rows) >= self.max_list_entries:
                    return True
                rows.append(self._row(kind, size, rel, extra))
            if descend:
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    rows.append(f"[cannot open {rel}: {exc.strerror}]")
                    continue
                try:
                    if self._walk(child, directory / entry.name, recursive, pattern, rows):
                        return True
                finally:
                    os.close(child)
        return False


# -- tool descriptions (run by ``task_tools.TaskTools``) -------------------------------------------

_PATH = {"type": "string", "description": "Path relative to the workspace root."}

TOOL_SPECS: list[dict[str, Any]] = [
    {
        "name": "file_read",
        "description": (
            "Read a text file of the workspace. Long output is cut with a note giving the offset to "
            "continue from. Binary files are refused."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "offset": {"type": "integer", "minimum": 0, "description": "First line to return (0-based)."},
                "limit": {"type": "integer", "minimum": 1, "description": "Most lines to return."},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
    {
        "name": "file_write",
        "description": (
            "Create or replace a file of the workspace (missing folders are created), or append to it."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "content": {"type": "string", "description": "The full text to write."},
                "append": {"type": "boolean", "description": "Add to the end instead of replacing."},
            },
            "required": ["path", "content"],
            "additionalProperties": False,
        },
    },
    {
        "name": "file_edit",
        "description": (
            "Replace exact text in a file of the workspace. The text must match exactly (spaces, line "
            "breaks); if it occurs more than `count` times the edit is refused, so give enough context."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "path": _PATH,
                "old": {"type": "string", "description": "The exact text to replace."},
                "new": {"type": "string", "description": "The replacement text."},
                "count": {
                    "type": "integer",
                    "minimum": -1,
                    "description": "Most occurrences to replace; -1 = all (default 1).",
                },
            },
            "required": ["path", "old", "new"],
            "additionalProperties": False,
        },
    },
    {
        "name": "file_list",
        "description": (
            "List a folder of the workspace: type (dir/file/link), size in bytes, path. Symlinks are "
            "shown, not followed."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "description": "Folder relative to the workspace root (default '.').",
                },
                "recursive": {"type": "boolean", "description": "Include subfolders."},
                "pattern": {"type": "string", "description": "Glob on names, e.g. '*.py'."},
            },
            "required": [],
            "additionalProperties": False,
        },
    },
]
