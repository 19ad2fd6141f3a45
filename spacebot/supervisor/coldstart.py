"""Starting a child in a fresh interpreter instead of forking it from the zygote.

Used when ``supervisor.spawn_mode = "cold"`` (debugging, or a platform where the zygote cannot
run) and by ``bench/spawn.py`` as the baseline the zygote is measured against. The child reads
its :class:`ZygoteSpawn` from stdin, imports the same preload modules the zygote would, and then
runs exactly the same child runtime.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

import msgspec

from spacebot.config import Config
from spacebot.ipc.codec import encode
from spacebot.ipc.messages import SpawnSpec, ZygoteSpawn
from spacebot.supervisor import auth, framing, linux


def spawn(spec: SpawnSpec, config: Config, runtime_dir: str) -> int:
    """Start ``python -m spacebot.supervisor.coldstart`` in a new session; returns its pid."""
    read_end, write_end = os.pipe()
    argv = [sys.executable, "-m", "spacebot.supervisor.coldstart", ",".join(config.supervisor.preload)]
    try:
        pid = os.posix_spawn(
            sys.executable,
            argv,
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0), (os.POSIX_SPAWN_CLOSE, write_end)],
            setsid=True,
        )
    finally:
        os.close(read_end)
    with os.fdopen(write_end, "wb") as pipe:
        req = ZygoteSpawn(spec, encode(config), runtime_dir, os.getpid(), auth.child_password(spec.id))
        pipe.write(framing.pack(req))
    return pid


def main() -> int:
    """Read the spawn request from stdin, import, run the child."""
    linux.set_pdeathsig(signal.SIGKILL)  # our parent is the supervisor itself here
    with os.fdopen(0, "rb") as stdin:
        data = stdin.read()
    req = msgspec.msgpack.decode(data[4:], type=ZygoteSpawn)
    if os.getppid() != req.supervisor_pid:
        return 1
    for name in (sys.argv[1] if len(sys.argv) > 1 else "").split(","):
        if name:
            try:
                importlib.import_module(name)
            except Exception as exc:
                print(f"coldstart: cannot preload {name}: {exc}", file=sys.stderr)
    from spacebot.runtime.child import run_child

    return run_child(req)


if __name__ == "__main__":
    sys.exit(main())
