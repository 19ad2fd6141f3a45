"""Where Spacebot's sockets live."""

from __future__ import annotations

import os
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
        """Create the directory with mode 0700 (tightening it if it exists)."""
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)

    @property
    def ctl_path(self) -> Path:
        """Filesystem path of the control socket."""
        return self.dir / "ctl"
