"""Running a tool's program (``shell``, ``exec``) confined, bounded and killable.

One place chooses how: the ``spacebot._sandbox`` C extension (``native/sandbox.c``) when it was
built — fork + exec with a new session, ``PR_SET_PDEATHSIG``, ``no_new_privs``, no capabilities,
rlimits, inherited descriptors closed, and a Landlock ruleset (the workspace read-write, system
paths read-only, a few devices, TCP by port, signals and abstract sockets scoped) where the kernel
supports it — else a pure-Python fallback with the same limits but no Landlock.
``SPACEBOT_SANDBOX=python`` forces the fallback. A spawner that cannot confine files (the fallback,
or a kernel without Landlock) is refused unless the caller passes ``allow_unsandboxed=True``
(``[delegates] allow_unsandboxed``). What is enforced shows in ``spacebotctl status``.

A call has one deadline, output reads included. When it ends — exit, timeout, output flood, or the
caller cancelled — its process group, every descendant and, in a process that called
:func:`adopt_orphans` (workers do), every orphan it adopted (``setsid`` escapees) are killed and
reaped.

Given a scrubber, a call's output is scrubbed of secret values as it is read, chunk by chunk and
before the output cap cuts it, so a value the cap falls in the middle of is redacted, not halved.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import os
import resource
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from spacebot.tools.errors import SandboxError

if TYPE_CHECKING:
    from spacebot.config import DelegateSection
    from spacebot.secrets import Scrubber, StreamScrubber

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
]
"""Readable (and executable) for sandboxed programs under Landlock."""


# -- /run: only what name resolution needs (docs/security.md, Secrets and the bus).
RUN_READABLE = ("/run/systemd/resolve", "/run/resolvconf", "/run/NetworkManager")
"""Entries of ``/run`` a tool may read (``/etc/resolv.conf`` often links into them). Landlock
grants whole subtrees, so ``/run`` itself is never granted: it holds systemd's credentials
(``LoadCredential=`` provider keys) and the service's runtime directory with ``ctl.key``."""


def _run_entries() -> list[str]:
    return [p for p in RUN_READABLE if os.path.isdir(p)]


READ_ONLY_SYSTEM += _run_entries()
# -- end of /run entries.
WRITABLE_DEVICES = ["/dev/null", "/dev/zero", "/dev/random", "/dev/urandom", "/dev/tty"]
"""The only device files a program may open (not ``/dev/shm``, not disks, not the rest of /dev)."""

NETWORK_MODES = ("none", "loopback-deny", "open")
ABI_NETWORK = 4
"""Landlock ABI that brings TCP bind/connect rules (by port)."""
ABI_SCOPES = 6
"""Landlock ABI that scopes signals and abstract unix sockets to the sandbox."""

_active: set[int] = set()
"""Root pids of calls in flight in this process (never swept as escapees)."""
_adopting = False
"""This process is a subreaper and every other child it has is a tool's escapee."""


class Limits(msgspec.Struct, frozen=True):
    """What one program may use."""

    timeout: float = 60.0
    """Seconds for the whole call (output reads included) before every process of it is killed."""
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
    file_size_bytes: int = 0
    """RLIMIT_FSIZE: the largest file a program may write (0 = leave as is; -1 = no growth)."""


class Network(msgspec.Struct, frozen=True):
    """Outbound TCP for one call (see docs/security.md)."""

    mode: str = "open"
    """``none`` (no TCP connect or bind), ``loopback-deny`` (only through the egress proxy) or ``open``."""
    proxy_port: int = 0
    """The egress proxy's port on 127.0.0.1 (``loopback-deny``)."""


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
    """The call reached its deadline (the program, or a process keeping its output open, was killed)."""
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


def isolated() -> bool:
    """True when programs are confined to their workspace (the native spawner with Landlock)."""
    return mode() == "native" and landlock_abi() > 0


def describe(settings: DelegateSection | None = None) -> dict[str, object]:
    """For status displays: mode, Landlock ABI, what is enforced and what is missing."""
    m = mode()
    abi = landlock_abi()
    info: dict[str, object] = {"mode": m, "landlock_abi": abi, "landlock": m == "native" and abi > 0}
    if settings is not None:
        info["network"] = settings.network
        info["allow_unsandboxed"] = settings.allow_unsandboxed
    info["summary"] = summary(settings)
    return info


def summary(settings: DelegateSection | None = None) -> str:
    """One line: the spawner, what it enforces on this kernel, and what it cannot."""
    network = settings.network if settings is not None else "loopback-deny"
    allow = settings.allow_unsandboxed if settings is not None else False
    if not isolated():
        why = "python fallback" if mode() == "python" else "native, but the kernel has no Landlock"
        verdict = (
            "shell/exec run WITHOUT isolation ([delegates] allow_unsandboxed = true)"
            if allow
            else "shell/exec REFUSED (set [delegates] allow_unsandboxed = true to run them unconfined)"
        )
        return f"{why}: no filesystem confinement; {verdict}"
    abi = landlock_abi()
    enforced = ["files", "/dev limited", "no capabilities", "rlimits"]
    missing: list[str] = []
    if abi >= ABI_SCOPES:
        enforced.append("signals and abstract sockets scoped")
    else:
        missing.append(f"signal/abstract-socket scoping (needs Landlock ABI {ABI_SCOPES})")
    if network == "open":
        enforced.append("network open")
    elif abi >= ABI_NETWORK:
        enforced.append(f"TCP network={network}")
    else:
        missing.append(
            f"TCP network rules (needs Landlock ABI {ABI_NETWORK}; network={network} not enforced)"
        )
    if network != "open":
        missing.append("UDP not restricted")
    text = f"native (landlock ABI {abi}): " + ", ".join(enforced)
    return text + ("; missing: " + ", ".join(missing) if missing else "")


def inside(path: Path, root: Path) -> Path:
    """``path`` resolved, or :class:`SandboxError` when it is not within ``root``."""
    resolved = path.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise SandboxError(f"{path} is outside the workspace {root}")
    return resolved


def adopt_orphans() -> None:
    """Make this process a subreaper whose every child other than a running call is an escapee.

    A program that leaves its session (``setsid``) and whose parent then exits would otherwise be
    re-parented out of reach; as a subreaper this process receives it, and each call's end kills it.
    Only for processes whose children are all tool programs (a worker).
    """
    global _adopting
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    _adopting = True


def _rlimits(limits: Limits) -> list[tuple[int, int]]:
    pairs = [
        (resource.RLIMIT_CPU, limits.cpu_seconds),
        (resource.RLIMIT_AS, limits.address_space_mb * 1024 * 1024),
        (resource.RLIMIT_NOFILE, limits.open_files),
        (resource.RLIMIT_NPROC, limits.processes),
    ]
    out = [(res, value) for res, value in pairs if value > 0]
    if limits.file_size_bytes:
        out.append((resource.RLIMIT_FSIZE, max(0, limits.file_size_bytes)))
    return out


def _python_preexec(rlimits: list[tuple[int, int]]) -> None:
    """Runs in the child between fork and exec (fallback mode)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    for cap in range(64):  # PR_CAPBSET_DROP: fails harmlessly without CAP_SETPCAP
        libc.prctl(24, cap, 0, 0, 0)
    for res, value in rlimits:
        _soft, hard = resource.getrlimit(res)
        cap = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (cap, cap))


def _connect_ports(network: Network) -> list[int] | None:
    if network.mode == "open":
        return None
    if network.mode == "none":
        return []
    if network.mode == "loopback-deny":
        if not 0 < network.proxy_port < 65536:
            raise SandboxError("network 'loopback-deny' needs the egress proxy's port")
        return [network.proxy_port]
    raise SandboxError(f"network mode {network.mode!r} is not one of {', '.join(NETWORK_MODES)}")


def _spawn(
    argv: list[str],
    cwd: Path,
    env: dict[str, str],
    limits: Limits,
    writable: list[Path],
    read_only: list[str],
    ports: list[int] | None,
    *,
    merge_stderr: bool = False,
    binds: list[int] | None = None,
) -> tuple[int, int, int, int, subprocess.Popen[bytes] | None]:
    """Start the program; returns (pid, stdin fd, stdout fd, stderr fd, Popen in fallback mode).

    ``writable``: the directories it may write (with the devices); ``ports``: the TCP ports it may
    connect to (``None``: no network rules), ``binds`` the ones it may listen on (with ``ports``);
    ``merge_stderr``: its stderr goes to the stdout pipe (the stderr fd returned is then -1)."""
    rlimits = _rlimits(limits)
    in_r, in_w = os.pipe2(os.O_CLOEXEC)
    out_r, out_w = os.pipe2(os.O_CLOEXEC)
    if merge_stderr:
        err_r, err_w = -1, os.dup(out_w)
    else:
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
                [*(str(p) for p in writable), *WRITABLE_DEVICES],
                [p for p in read_only if os.path.exists(p)],
                ports,
                binds if ports is not None else None,
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
    except BaseException:  # OSError, or a bad argument the spawner refused
        for fd in (in_w, out_r, err_r):
            if fd >= 0:
                os.close(fd)
        raise
    finally:
        for fd in (in_r, out_w, err_w):
            os.close(fd)
    _active.add(pid)
    return pid, in_w, out_r, err_r, popen


def _scan() -> dict[int, tuple[int, int, int]]:
    """Every live (not zombie) process: pid -> (parent, process group, session), from one /proc pass."""
    if _native is not None:  # the same loop in C: about ten times faster
        return {pid: (ppid, pgrp, sid) for pid, ppid, pgrp, sid in _native.scan()}
    table: dict[int, tuple[int, int, int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split(b" ", 4)  # state ppid pgrp session ...
        if fields[0] in (b"Z", b"X"):
            continue
        table[int(name)] = (int(fields[1]), int(fields[2]), int(fields[3]))
    return table


def _targets(root: int, table: dict[int, tuple[int, int, int]]) -> set[int]:
    """The call's processes: its group and session, every descendant, and adopted escapees."""
    me = os.getpid()
    found = {pid for pid, (_ppid, pgrp, sid) in table.items() if root in (pgrp, sid)}
    if _adopting:
        found |= {pid for pid, (ppid, _g, _s) in table.items() if ppid == me and pid not in _active}
    found.discard(me)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _g, _s) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(found)
    while stack:  # descendants of everything found
        for child in children.get(stack.pop(), ()):
            if child not in found and child != me:
                found.add(child)
                stack.append(child)
    return found


def kill_group(pid: int) -> set[int]:
    """SIGKILL the program's process group, its session, every descendant, and adopted escapees.

    Repeated until a pass finds nothing new, so a process forked between listing and killing is
    caught. Returns the adopted escapees killed (this process must reap them: :func:`reap`).
    """
    return _sweep(pid)[0]


def _sweep(pid: int) -> tuple[set[int], int]:
    """:func:`kill_group`, also returning how many processes were killed."""
    killed: set[int] = set()
    adopted: set[int] = set()
    me = os.getpid()
    for _ in range(8):
        table = _scan()
        targets = _targets(pid, table) - killed
        if not targets:
            break
        for target in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, signal.SIGKILL)
            if target != pid and table[target][0] == me:
                adopted.add(target)
        killed |= targets
    return adopted, len(killed)


async def reap(pids: set[int], timeout: float = 5.0) -> None:
    """Wait for adopted escapees killed by :func:`kill_group` to exit, and collect them."""
    loop = asyncio.get_running_loop()
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue
        done = asyncio.Event()
        loop.add_reader(pidfd, done.set)
        try:
            async with asyncio.timeout(timeout):
                await done.wait()
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks


def kill_all() -> None:
    """Kill every running call and every adopted escapee (a worker on its way out)."""
    for pid in [*_active, -1]:  # -1: no call's root, only the escapees
        for child in kill_group(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(child, os.WNOHANG)


class _Stream:
    """One output pipe read into a capped buffer; what was read survives a cancelled reader.

    With a scrubber, every byte read goes through it (as UTF-8 text) before the cap is applied to
    what comes out; ``size`` still counts the program's own bytes, which the cap is about.
    """

    def __init__(self, fd: int, cap: int, over: asyncio.Event, scrub: StreamScrubber | None = None) -> None:
        self.fd = fd
        self.cap = cap
        self.over = over
        self.chunks: list[bytes] = []
        self.size = 0
        self.kept = 0
        self.scrub = scrub
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace") if scrub is not None else None
        os.set_blocking(fd, False)

    def _take(self, data: bytes) -> None:
        self.size += len(data)
        if self.size > self.cap:
            self.over.set()
        if self.scrub is not None and self.decoder is not None:
            data = self.scrub.feed(self.decoder.decode(data)).encode()
        self._keep(data)

    def _keep(self, data: bytes) -> None:
        room = self.cap - self.kept
        if room > 0 and data:
            self.chunks.append(data[:room])
            self.kept += min(room, len(data))

    def drain(self) -> bool:
        """Read what is buffered now; True at end of file or over the cap."""
        while self.size <= self.cap:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return False
            if not data:
                return True
            self._take(data)
        return True

    async def read(self) -> None:
        loop = asyncio.get_running_loop()
        readable = asyncio.Event()
        loop.add_reader(self.fd, readable.set)
        try:
            while not self.drain():
                await readable.wait()
                readable.clear()
        finally:
            loop.remove_reader(self.fd)

    def close(self) -> bytes:
        with contextlib.suppress(OSError):
            self.drain()
        os.close(self.fd)
        if self.scrub is not None and self.decoder is not None and self.size <= self.cap:
            # The output ended: the held-back tail is complete and is released scrubbed. Past the
            # cap it is dropped instead: it may be the start of a value the kill cut short.
            self._keep((self.scrub.feed(self.decoder.decode(b"", final=True)) + self.scrub.flush()).encode())
        return b"".join(self.chunks)


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


def _why_unconfined() -> str:
    return "the native sandbox is not in use" if mode() == "python" else "the kernel has no Landlock"


def _on_path(argv: list[str], env: dict[str, str]) -> list[str]:
    """``argv`` with its program found on the program's own ``PATH`` (exec() does no search)."""
    if "/" in argv[0]:
        return argv
    found = shutil.which(argv[0], path=env.get("PATH", ""))
    if found is None:
        raise SandboxError(f"program {argv[0]!r} not found on PATH {env.get('PATH', '')!r}")
    return [found, *argv[1:]]


async def run(
    argv: list[str],
    *,
    cwd: Path,
    workspace: Path,
    env: dict[str, str] | None = None,
    limits: Limits | None = None,
    stdin: bytes | None = None,
    read_only: list[str] | None = None,
    network: Network | None = None,
    allow_unsandboxed: bool = False,
    scrubber: Scrubber | None = None,
) -> RunResult:
    """Run ``argv`` confined to ``workspace``; returns when every process of the call is gone.

    ``scrubber`` redacts secret values from stdout and stderr as they are read.
    """
    limits = limits or Limits()
    network = network or Network()
    if not argv or not argv[0]:
        raise SandboxError("no program given")
    if not isolated() and not allow_unsandboxed:
        raise SandboxError(
            f"commands are disabled: {_why_unconfined()}, so a command would run with the service "
            "user's full access. The operator can set [delegates] allow_unsandboxed = true to run "
            "commands anyway."
        )
    ports = _connect_ports(network)
    (workspace / ".tmp").mkdir(parents=True, exist_ok=True)  # TMPDIR: /tmp is not writable under Landlock
    cwd = inside(cwd, workspace)
    if not cwd.is_dir():
        raise SandboxError(f"working directory {cwd} does not exist")
    env = (dict(env) if env is not None else default_env(workspace)) | proxy_env(network)
    argv = _on_path(argv, env)
    loop = asyncio.get_running_loop()
    started = time.monotonic()
    deadline = loop.time() + limits.timeout
    # Forked from this (the event loop's) thread on purpose: PR_SET_PDEATHSIG fires when the thread
    # that forked the program ends, so a pool thread would take the program down with it.
    pid, in_fd, out_fd, err_fd, popen = _spawn(
        argv, cwd, env, limits, [workspace], read_only or READ_ONLY_SYSTEM, ports
    )
    over = asyncio.Event()
    streams = [
        _Stream(fd, limits.output_bytes, over, scrubber.stream() if scrubber is not None else None)
        for fd in (out_fd, err_fd)
    ]
    readers = [asyncio.ensure_future(s.read()) for s in streams]
    exit_task = asyncio.ensure_future(_wait(pid))
    over_task = asyncio.ensure_future(over.wait())
    timed_out = False
    status: int | None = None
    try:
        with contextlib.suppress(OSError):
            if stdin:
                os.write(in_fd, stdin[:65536])
        os.close(in_fd)
        in_fd = -1
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.wait({exit_task, over_task}, return_when="FIRST_COMPLETED")
        except TimeoutError:
            timed_out = True
        # The call is over for the whole session: kill what is left (a finished root's background
        # jobs and escapees too), then reap the root.
        adopted, killed = _sweep(pid)
        status = await exit_task
        _active.discard(pid)
        if killed:  # a second pass for anything re-parented while the killed root was dying
            adopted |= kill_group(pid)
        await reap(adopted)
        # Output still buffered is collected; a holder of the pipes out of reach is not waited
        # for past the deadline.
        if not timed_out:
            try:
                async with asyncio.timeout_at(deadline):
                    await asyncio.gather(*readers)
            except TimeoutError:
                timed_out = True
    finally:
        if in_fd >= 0:
            os.close(in_fd)
        for task in (*readers, over_task):
            task.cancel()
        await asyncio.gather(*readers, over_task, return_exceptions=True)
        out, err = (s.close() for s in streams)
        if status is None:  # cancelled: kill the whole call, reap without blocking the loop for long
            exit_task.cancel()
            kill_group(pid)
            with contextlib.suppress(ChildProcessError):
                await asyncio.to_thread(os.waitpid, pid, 0)
            _active.discard(pid)
            await reap(kill_group(pid))
        if popen is not None:
            popen.returncode = -1  # we reaped it; keep Popen from trying again
    code = os.waitstatus_to_exitcode(status)
    return RunResult(
        exit_code=code if code >= 0 else None,
        signal=-code if code < 0 else None,
        stdout=out.decode(errors="replace"),
        stderr=err.decode(errors="replace"),
        truncated=over.is_set(),
        timed_out=timed_out,
        duration=time.monotonic() - started,
        mode=mode(),
    )


SERVER_LIMITS = Limits(cpu_seconds=0, address_space_mb=0, open_files=0, processes=0)
""":func:`start`'s default: no rlimits of a tool's command. A server and what it runs live as long
as its worker, whose timeout ends them (and a JavaScript runtime reserves far more address space
than it uses)."""


class Program:
    """A long-running program started confined by :func:`start` (a server a worker drives): its
    pid, its output (stdout and stderr together) as a stream, and how it ended.

    It lives until it exits or is killed (:func:`kill_group` on its pid: it leads its own session
    and process group); :meth:`wait` reaps it."""

    def __init__(self, pid: int, stdout: asyncio.StreamReader, popen: subprocess.Popen[bytes] | None) -> None:
        self.pid = pid
        self.stdout = stdout
        self.returncode: int | None = None
        """Exit code (negative: the signal that ended it) once it was reaped."""
        self._popen = popen
        self._end = asyncio.ensure_future(self._reap())

    async def _reap(self) -> int:
        status = await _wait(self.pid)
        _active.discard(self.pid)
        self.returncode = os.waitstatus_to_exitcode(status)
        if self._popen is not None:
            self._popen.returncode = self.returncode  # reaped here; keep Popen from trying again
        return self.returncode

    async def wait(self) -> int:
        """Its exit code, once it has ended (reaped)."""
        return await asyncio.shield(self._end)

    def kill(self) -> None:
        """SIGKILL it and everything of its process group and descendants (see :func:`kill_group`)."""
        if self.returncode is None:
            kill_group(self.pid)


async def start(
    argv: list[str],
    *,
    cwd: Path,
    writable: list[Path],
    env: dict[str, str],
    limits: Limits | None = None,
    read_only: list[str] | None = None,
    network: Network | None = None,
    listen: int = 0,
    reach: list[int] | None = None,
    allow_unsandboxed: bool = False,
) -> Program:
    """Start ``argv`` confined like a tool's program — files (only ``writable`` and the devices
    writable, ``read_only`` readable, nothing else), TCP by ``network`` as for :func:`run`, no new
    privileges or capabilities, its own session, killed with this process, signals and abstract
    sockets scoped — but with no deadline and no output cap: for a server that serves a worker
    (``opencode serve``). Where ``network`` restricts TCP, the program may also listen on port
    ``listen`` (and connect to it) and connect to the ports of ``reach`` (the worker's own loopback
    services for it); the caller sets any proxy variables (:func:`proxy_env`). ``limits`` gives the
    rlimits (default :data:`SERVER_LIMITS`; its timeout and output cap do not apply).

    Refused with :class:`SandboxError`, like :func:`run`, where files cannot be confined unless
    ``allow_unsandboxed``."""
    if not argv or not argv[0]:
        raise SandboxError("no program given")
    if not isolated() and not allow_unsandboxed:
        raise SandboxError(
            f"{_why_unconfined()}, so {Path(argv[0]).name} would run with the service user's full "
            "access. The operator can set [delegates] allow_unsandboxed = true to run it anyway."
        )
    argv = _on_path(argv, env)
    ports = _connect_ports(network or Network())
    binds: list[int] | None = None
    if ports is not None:
        ports = sorted({*ports, *(reach or []), *([listen] if listen else [])})
        binds = [listen] if listen else []
    loop = asyncio.get_running_loop()
    # From the event loop's thread, as in run(): PR_SET_PDEATHSIG follows the forking thread.
    pid, in_fd, out_fd, _err, popen = _spawn(
        argv,
        cwd,
        env,
        limits or SERVER_LIMITS,
        writable,
        read_only or READ_ONLY_SYSTEM,
        ports,
        merge_stderr=True,
        binds=binds,
    )
    os.close(in_fd)  # its stdin reads end of file
    reader = asyncio.StreamReader()
    pipe = os.fdopen(out_fd, "rb", 0)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    except BaseException:
        kill_group(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)  # noqa: ASYNC222 - SIGKILLed just now: returns at once
        _active.discard(pid)
        pipe.close()
        raise
    return Program(pid, reader, popen)


def proxy_env(network: Network, direct: str = "") -> dict[str, str]:
    """The proxy variables of ``network``: with ``loopback-deny`` every proxy variable names the
    egress proxy and only ``direct`` (a ``NO_PROXY`` list) is reached without it; else none."""
    if network.mode != "loopback-deny":
        return {}
    proxy = f"http://127.0.0.1:{network.proxy_port}"
    names = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    return {name: proxy for name in names} | {"NO_PROXY": direct, "no_proxy": direct}


def default_env(workspace: Path) -> dict[str, str]:
    """A minimal environment: never the agent's own (which may hold API keys)."""
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(workspace),
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "TERM": "dumb",
        "TMPDIR": str(workspace / ".tmp"),
    }
