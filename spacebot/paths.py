"""Where Spacebot's sockets live."""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

from spacebot.config import Config
from spacebot.errors import ConfigError

IPC_PATH_MAX = 107
"""Longest socket path the kernel accepts for ``ipc://`` (sun_path is 108 bytes with the NUL)."""


def runtime_dir(config: Config | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The socket directory: config, ``$SPACEBOT_RUNTIME_DIR``, ``$RUNTIME_DIRECTORY`` (systemd),
    ``$XDG_RUNTIME_DIR/spacebot``, else ``/tmp/spacebot-<uid>``."""
    env = os.environ if environ is None else environ
    if config is not None and config.runtime.runtime_dir:
        return Path(config.runtime.runtime_dir).expanduser()
    if env.get("SPACEBOT_RUNTIME_DIR"):
        return Path(env["SPACEBOT_RUNTIME_DIR"]).expanduser()
    if env.get("RUNTIME_DIRECTORY"):
        # systemd may list several directories separated by ':'; ours is the first.
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "spacebot"
    return Path(f"/tmp/spacebot-{os.getuid()}")


class Endpoints:
    """The three socket addresses under one runtime directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.bus = f"ipc://{directory}/bus"
        self.events = f"ipc://{directory}/events"
        self.ctl = f"ipc://{directory}/ctl"
        longest = max(len(str(directory / n)) for n in ("bus", "events", "ctl"))
        if longest > IPC_PATH_MAX:
            raise ConfigError(
                f"runtime_dir {str(directory)!r} is too long for unix sockets "
                f"({longest} > {IPC_PATH_MAX} bytes)"
            )

    def prepare(self) -> None:
        """Create the directory with mode 0700, or check that an existing one is safe to use.

        An existing directory must be a real directory (not a symlink) owned by this user; one
        that others could write to (group/other ``w``) is refused because they may have planted
        entries in it, while merely readable bits are tightened to 0700. Anything else raises
        ``ConfigError`` naming the directory and the fix: the default ``/tmp/spacebot-<uid>`` sits in
        a world-writable directory where another local user can create it first.
        """
        try:
            self.dir.mkdir(parents=True, mode=0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ConfigError(f"runtime_dir {str(self.dir)!r}: cannot create it: {exc}") from None
        try:
            st = os.lstat(self.dir)
        except OSError as exc:
            raise ConfigError(f"runtime_dir {str(self.dir)!r}: {exc}") from None
        fix = "remove it, or choose another directory with SPACEBOT_RUNTIME_DIR or [runtime] runtime_dir"
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
            raise ConfigError(
                f"runtime_dir {str(self.dir)!r} is not a directory (a symlink or a file): {fix}"
            )
        if st.st_uid != os.geteuid():
            raise ConfigError(
                f"runtime_dir {str(self.dir)!r} is owned by uid {st.st_uid}, not by this user "
                f"(uid {os.geteuid()}); refusing to put sockets there: {fix}"
            )
        if st.st_mode & 0o022:
            raise ConfigError(
                f"runtime_dir {str(self.dir)!r} has mode {stat.S_IMODE(st.st_mode):04o}: others could "
                f"have placed files in it; refusing to use it: {fix}"
            )
        if stat.S_IMODE(st.st_mode) != 0o700:
            os.chmod(self.dir, 0o700)

    @property
    def ctl_path(self) -> Path:
        """Filesystem path of the control socket."""
        return self.dir / "ctl"
