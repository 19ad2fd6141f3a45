"""Running a tool's program (``shell``, ``exec``) confined, bounded and killable.

One place chooses how: the ``spacebot._sandbox`` C extension (``native/sandbox.c``) when it was
built — fork + exec with a new session, ``PR_SET_PDEATHSIG``, ``no_new_privs``, rlimits, inherited
descriptors closed, and a Landlock ruleset (the workspace read-write, system paths read-only) where
the kernel supports it — else a pure-Python fallback with the same limits but no Landlock.
``SPACEBOT_SANDBOX=python`` forces the fallback. The active mode shows in ``spacebotctl status``.

Every program runs in its own process group; a timeout, an output flood, or cancelling the calling
task kills the whole group (and any descendant that left it), then reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path

import msgspec
import psutil

try:
    from spacebot import _sandbox as _native  # type: ignore[attr-defined]
except ImportError:  # not built (no compiler at install time): the fallback below
    _native = None

READ_ONLY_SYSTEM = [
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib64",
    "/lib32",
    "/etc",
    "/opt",
    "/proc",
    "/sys",
    "/run",
]
"""Readable (and executable) for sandboxed programs under Landlock."""
WRITABLE_DEVICES = ["/dev"]
"""Devices stay usable (``/dev/null``, ``/dev/tty``, ``/dev/urandom``...)."""


class SandboxError(ValueError):
    """A request the sandbox refuses (a working directory outside the workspace...)."""


class Limits(msgspec.Struct, frozen=True):
    """What one program may use."""

    timeout: float = 60.0
    """Wall-clock seconds before the whole process group is killed."""
    output_bytes: int = 64_000
    """Per stream; beyond it the group is killed and the result says ``truncated``."""
    cpu_seconds: int = 60
    """RLIMIT_CPU (0 = leave as is)."""
    address_space_mb: int = 4096
    """RLIMIT_AS in MiB (0 = leave as is)."""
    open_files: int = 256
    """RLIMIT_NOFILE (0 = leave as is)."""
    processes: int = 512
    """RLIMIT_NPROC (0 = leave as is; counts every process of the user)."""


class RunResult(msgspec.Struct, frozen=True):
    """How a program ended and what it printed."""

    exit_code: int | None
    """Exit status, or ``None`` when killed by a signal."""
    signal: int | None
    """The signal that ended it, if one did."""
    stdout: str
    """Standard output (UTF-8, undecodable bytes replaced), at most ``output_bytes``."""
    stderr: str
    """Standard error, same rules."""
    truncated: bool
    """Output went past ``output_bytes`` and the program was killed for it."""
    timed_out: bool
    """It ran past ``timeout`` and was killed."""
    duration: float
    """Wall-clock seconds."""
    mode: str
    """``native`` or ``python``."""


def mode() -> str:
    """``native`` when the C extension is used, else ``python``."""
    forced = os.environ.get("SPACEBOT_SANDBOX", "")
    if forced == "python" or _native is None:
        return "python"
    return "native"


def landlock_abi() -> int:
    """The kernel's Landlock ABI version (0 when unsupported or the extension is missing)."""
    return int(_native.landlock_abi()) if _native is not None else 0


def describe() -> dict[str, object]:
    """For status displays: mode, Landlock ABI, and whether Landlock is applied."""
    m = mode()
    abi = landlock_abi()
    return {"mode": m, "landlock_abi": abi, "landlock": m == "native" and abi > 0}


def inside(path: Path, root: Path) -> Path:
    """``path`` resolved, or :class:`SandboxError` when it is not within ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise SandboxError(f"{path} is outside the workspace {root}")
    return resolved


def _rlimits(limits: Limits) -> list[tuple[int, int]]:
    pairs = [
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_AS, limits.address_space_mb * 1024 * 1024),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes),
    ]
    return [(res, value) for res, value in pairs if value > 0]


def _python_preexec(rlimits: list[tuple[int, int]]) -> None:
    """Runs in the child between fork and exec (fallback mode)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    for res, value in rlimits:
        _soft, hard = resource.getrlimit(res)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (cap, cap))


def _spawn(
    argv: list[str], cwd: Path, env: dict[str, str], limits: Limits, workspace: Path, read_only: list[str]
) -> tuple[int, int, int, int, subprocess.Popen[bytes] | None]:
    """Start the program; returns (pid, stdin fd, stdout fd, stderr fd, Popen in fallback mode)."""
    rlimits = _rlimits(limits)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    popen = None
    try:
        if mode() == "native":
            assert _native is not None
            pid = _native.spawn(
                argv,
                [f"{k}={v}" for k, v in env.items()],
                str(cwd),
                in_r,
                out_w,
                err_w,
                rlimits,
                [str(workspace), *WRITABLE_DEVICES],
                [p for p in read_only if os.path.exists(p)],
            )
        else:
            popen = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=in_r,
                stdout=out_w,
                stderr=err_w,
                start_new_session=True,
                close_fds=True,
                preexec_fn=lambda: _python_preexec(rlimits),
            )
            pid = popen.pid
    except OSError:
        for fd in (in_w, out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    return pid, in_w, out_r, err_r, popen


def kill_group(pid: int) -> None:
    """SIGKILL the program's process group and every descendant that left it."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _read(fd: int, cap: int, over: asyncio.Event) -> bytes:
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    size = 0
    readable = asyncio.Event()
    os.set_blocking(fd, False)
    loop.add_reader(fd, readable.set)
    try:
        while True:
            await readable.wait()
            readable.clear()
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if not data:
                break
            if size < cap:
                chunks.append(data[: cap - size])
            size += len(data)
            if size > cap:
                over.set()
                break
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)


async def _wait(pid: int) -> int:
    """Wait for ``pid`` to exit (pidfd readable), reap it, return its wait status."""
    loop = asyncio.get_running_loop()
    pidfd = os.pidfd_open(pid)
    done = asyncio.Event()
    loop.add_reader(pidfd, done.set)
    try:
        await done.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    _pid, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - it has exited: never blocks
    return status


async def run(
    argv: list[str],
    *,
    cwd: Path,
    workspace: Path,
    env: dict[str, str] | None = None,
    limits: Limits | None = None,
    stdin: bytes | None = None,
    read_only: list[str] | None = None,
) -> RunResult:
    """Run ``argv`` confined to ``workspace``; returns when it has exited and been reaped."""
    limits = limits or Limits()
    if not argv or not argv[0]:
        raise SandboxError("no program given")
    (workspace / ".tmp").mkdir(parents=True, exist_ok=True)  # TMPDIR: /tmp is not writable under Landlock
    cwd = inside(cwd, workspace)
    if not cwd.is_dir():
        raise SandboxError(f"working directory {cwd} does not exist")
    env = env if env is not None else default_env(workspace)
    if "/" not in argv[0]:  # exec() does no PATH search: resolve with the program's own PATH
        found = shutil.which(argv[0], path=env.get("PATH", ""))
        if found is None:
            raise SandboxError(f"program {argv[0]!r} not found on PATH {env.get('PATH', '')!r}")
        argv = [found, *argv[1:]]
    started = time.monotonic()
    # Forked from this (the event loop's) thread on purpose: PR_SET_PDEATHSIG fires when the thread
    # that forked the program ends, so a pool thread would take the program down with it.
    pid, in_fd, out_fd, err_fd, popen = _spawn(
        argv, cwd, env, limits, workspace, read_only or READ_ONLY_SYSTEM
    )
    over = asyncio.Event()
    reaped = False
    try:
        with contextlib.suppress(OSError):
            if stdin:
                os.write(in_fd, stdin[:65536])
        os.close(in_fd)
        out_task = asyncio.ensure_future(_read(out_fd, limits.output_bytes, over))
        err_task = asyncio.ensure_future(_read(err_fd, limits.output_bytes, over))
        exit_task = asyncio.ensure_future(_wait(pid))
        over_task = asyncio.ensure_future(over.wait())
        done, _ = await asyncio.wait(
            {exit_task, over_task}, timeout=limits.timeout, return_when="FIRST_COMPLETED"
        )
        timed_out = not done
        truncated = over.is_set()
        if timed_out or truncated:
            kill_group(pid)
        status = await exit_task
        reaped = True
        kill_group(pid)  # descendants still holding the pipes open
        over_task.cancel()
        out, err = await asyncio.gather(out_task, err_task)
    finally:
        if not reaped:  # cancelled: kill the group, reap without blocking the loop for long
            kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, pid, 0)
        if popen is not None:
            popen.returncode = -1  # we reaped it; keep Popen from trying again
    code = os.waitstatus_to_exitcode(status)
    return RunResult(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        truncated=truncated,
        timed_out=timed_out,
        duration=time.monotonic() - started,
        mode=mode(),
    )


def default_env(workspace: Path) -> dict[str, str]:
    """A minimal environment: never the agent's own (which may hold API keys)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workspace),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TERM": "dumb",
        "TMPDIR": str(workspace / ".tmp"),
    }
