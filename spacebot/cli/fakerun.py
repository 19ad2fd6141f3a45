"""``spacebot run --fake-llm``: the bundled fake model server, for an offline smoke test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from importlib import resources

import msgspec

from spacebot.config import Config
from spacebot.errors import SpacebotError
from spacebot.llm.config import LLMConfig
from spacebot.supervisor import linux


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_fake_llm(config: Config, timeout: float = 20.0) -> tuple[subprocess.Popen[bytes], Config]:
    """Start the fake server with the smoke-test script; returns it and ``config`` pointed at it.

    The server dies with this process (``PR_SET_PDEATHSIG``); ``SPACEBOT_FAKE_LLM=1`` tells the web
    chat to label its answers as scripted.
    """
    port = _free_port()
    script = resources.files("spacebot.llm.fake").joinpath("smoke.toml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "spacebot.llm.fake", "--port", str(port), "--script", str(script)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        preexec_fn=lambda: linux.set_pdeathsig(9),
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SpacebotError(f"the fake LLM server did not start on port {port}") from None
            time.sleep(0.05)
    url = f"http://127.0.0.1:{port}/v1"
    env = {"SPACEBOT_LLM_BASE_URL": url, "SPACEBOT_LLM_MODEL": "fake-model"}
    os.environ.update(env)
    os.environ["SPACEBOT_FAKE_LLM"] = "1"
    print(f"spacebot: fake LLM (scripted answers, for smoke tests) on {url}", flush=True)
    return proc, msgspec.structs.replace(config, llm=LLMConfig.from_env(env))
