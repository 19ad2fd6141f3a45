"""Chaos soak: is every acknowledged message answered exactly once while processes are SIGKILLed?

Drives the real system (``spacebot run`` as a subprocess on a private home and runtime directory)
through the web chat WebSocket protocol (docs/webchat.md), answered by the bundled fake model in
its own process (a scripted policy: ~300 ms to the first streamed event; some questions make the
conversation start a branch or a worker). N conversations, half of them with two people (two
sockets, two display names), send M paced questions each; every question carries a unique token
that the fake model echoes back, so answers are matched to questions.

While it runs, a seeded schedule SIGKILLs processes of every class: channel, branch, worker,
memory, gateway, zygote and the supervisor itself (then ``spacebot run`` is started again on the
same home and runtime directory), plus targeted windows: during zygote replacement (zygote, then
at once a channel or memory), right after a memory restart (then a channel), and during start-up
(memory killed while a restarted supervisor is still starting). Clients reconnect and resend
unacknowledged messages with the same client id (idempotent by protocol).

Afterwards every conversation is audited through the protocol (``open`` → history): per question
sent / acked / stored / answered exactly once / lost (acked, never answered before the system was
quiet again, bounded) / doubled; orphans (processes of a killed tree still alive, or anything left
after the final graceful stop); recovery time per kill class (kill → next stored reply in an
affected conversation), p50 and max.

    python bench/chaos.py [--seed 1 | --seeds 3] [--conversations 20] [--messages 15] [--kills 11]
                          [--burners 2] [--json]
"""

from __future__ import annotations

import importlib.util
import sys

_NEEDED = ("psutil", "aiohttp", "msgspec", "zmq", "spacebot", "spacebot.llm.fake")


def _missing() -> list[str]:
    out = []
    for name in _NEEDED:
        try:
            if importlib.util.find_spec(name) is None:
                out.append(name)
        except ImportError:  # a parent package is missing
            out.append(name)
    return out


if __name__ == "__main__" and (_gone := _missing()):
    print(
        f"chaos: missing Python modules: {', '.join(_gone)}. Install Spacebot with its test extras "
        "(pip install -e '.[test]') and run this script with that interpreter.",
        file=sys.stderr,
    )
    sys.exit(2)

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import msgspec  # noqa: E402
import psutil  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import emit, machine, parser, percentile  # noqa: E402

from spacebot.ipc.control_client import ControlClient  # noqa: E402
from spacebot.ipc.messages import ProcessInfo, StatusReply, StatusRequest  # noqa: E402
from spacebot.messaging.ports import listening_port  # noqa: E402
from spacebot.messaging.webchat_client import ChatClient, Frame  # noqa: E402
from spacebot.paths import Endpoints  # noqa: E402
from spacebot.testing import FakeLLMProcess, llm_table, short_tempdir  # noqa: E402

CLASSES = ("channel", "branch", "worker", "memory", "gateway", "zygote", "supervisor")
WINDOWS = ("zygote+channel", "zygote+memory", "memory-restart+channel", "startup")
LIVE = ("ready", "busy", "idle")
BRANCH_PROMPT = "You are a branch"
WORKER_PROMPT = "You are a worker"
KINDS = ("plain", "branch", "plain", "worker", "plain")
"""Question kinds, cycled per conversation: one in five starts a branch, one in five a worker."""


_T0 = time.monotonic()
VERBOSE = False
"""Progress lines on stderr (``--verbose``; the test turns them on so a failure shows its story)."""


def note(text: str) -> None:
    if VERBOSE:
        print(f"[chaos {time.monotonic() - _T0:7.2f}s] {text}", file=sys.stderr, flush=True)


class Missing(Exception):
    """Something the soak needs is not there (the message says what)."""


# -- the fake model --------------------------------------------------------------------------------


def fake_script(latency: float) -> dict[str, Any]:
    """The model's policy. Replies echo the new lines they answer (``{last_user}``), which carry the
    questions' tokens, so the audit counts answers per question from stored replies alone."""

    def call(name: str, **args: Any) -> dict[str, Any]:
        return {"name": name, "arguments": args}

    echo = call("reply", content="answer: {last_user}")
    return {
        "ttft": latency,
        "token_latency": 0.002,
        "rules": [
            # Inside a branch / worker (their system prompts say so): take a little while, so kills
            # can land while they run.
            {"name": "branch-think", "system": BRANCH_PROMPT, "delay": 1.0, "text": "branch concluded"},
            {"name": "worker-done", "system": WORKER_PROMPT, "tool_result": "shell", "text": "work done"},
            {
                "name": "worker-run",
                "system": WORKER_PROMPT,
                "tool_calls": [call("shell", command="sleep 1.5 && echo WORK-OK")],
            },
            # In the conversation: a question that asks for a branch or a worker delegates and
            # answers at once; the finished notice later gets its own (token-free) answer.
            {
                "name": "ask-branch",
                "user": r"\(new\) [^\n]*: q \S+ branch",
                "tool_calls": [call("branch", description="chaos branch"), echo],
            },
            {
                "name": "ask-worker",
                "user": r"\(new\) [^\n]*: q \S+ worker",
                "tool_calls": [call("spawn_worker", task="chaos work"), echo],
            },
        ],
        "default": {"name": "echo", "tool_calls": [echo]},
    }


class FakeModel(FakeLLMProcess):
    """The scripted fake model of the soak, in its own process."""

    def __init__(self, root: Path, latency: float) -> None:
        script = root / "chaos_model.json"
        script.write_text(json.dumps(fake_script(latency)))
        super().__init__(script, latency)

    async def start(self, timeout: float = 60.0) -> None:
        try:
            await super().start(timeout)
        except RuntimeError as exc:
            raise Missing(str(exc)) from None


# -- the system under test -------------------------------------------------------------------------


def config_text(openai_url: str) -> str:
    """Production budgets; only what a soak needs differs from the defaults."""
    return (
        'agents = ["main"]\n'
        "[runtime]\n"
        'log_level = "info"\n'
        # Memory loads its embedder at start; on two loaded cores that can exceed the default 10 s.
        "[processes.memory]\n"
        "ready_timeout = 30.0\n"
        "[webchat]\n"
        "port = 0\n"  # the gateway picks a free port and publishes it (no racy pre-picked port)
        "history_page = 1000\n"  # the audit reads a whole conversation in one `open`
        # The audit polls history and many clients share 127.0.0.1: lift the per-IP open/list caps.
        "open_per_minute = 1000000\n"
        "list_per_minute = 1000000\n"
        "create_per_minute = 1000000\n" + llm_table(openai_url)
    )


def tree(pid: int) -> dict[int, float]:
    """``pid`` and its descendants as {pid: create_time} (create time guards against PID reuse)."""
    out: dict[int, float] = {}
    with contextlib.suppress(psutil.Error):
        proc = psutil.Process(pid)
        out[pid] = proc.create_time()
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                out[child.pid] = child.create_time()
    return out


def alive(pid: int, created: float) -> bool:
    """The same process (not a reused pid) is still running and not a zombie."""
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Spacebot:
    """``spacebot run`` incarnations on one home and runtime directory."""

    def __init__(self, root: Path, openai_url: str) -> None:
        self.root = root
        self.home = root / "home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.endpoints = Endpoints(root / "rt")
        config_file = self.home / "config.toml"
        config_file.write_text(config_text(openai_url))
        self.env = {
            **os.environ,
            "SPACEBOT_HOME": str(self.home),
            "SPACEBOT_RUNTIME_DIR": str(self.endpoints.dir),
            "SPACEBOT_CONFIG": str(config_file),
            "SPACEBOT_LLM_BASE_URL": "",
            "ANTHROPIC_API_KEY": "",
            "OPENAI_API_KEY": "",
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctl: ControlClient | None = None
        self.incarnation = 0
        self.url = ""
        self.gateway_pid = 0
        self.seen: dict[int, float] = {}
        """Every process of the system we ever saw, for the leftover check after the final stop."""
        self.logs: list[Path] = []
        self._resolve = asyncio.Lock()
        self._resolved_at = 0.0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None else 0

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def start(self, timeout: float = 180.0) -> float:
        """Start ``spacebot run``; seconds until it is ready and the web chat listens."""
        self.incarnation += 1
        log = self.root / f"supervisor-{self.incarnation}.log"
        self.logs.append(log)
        t0 = time.monotonic()
        with log.open("wb") as out:
            self.proc = subprocess.Popen(  # noqa: ASYNC220 - returns once forked
                [sys.executable, "-m", "spacebot.cli.main", "run"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = t0 + timeout
        while True:
            if not self.running():
                raise RuntimeError(f"spacebot run exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError):
                if (await self.status(timeout=1.0)).ready:
                    await self.web_url(fresh=True)
                    return time.monotonic() - t0
            if time.monotonic() > deadline:
                raise RuntimeError(f"not ready with the web chat within {timeout:g}s: {self.log_tail()}")
            await asyncio.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        if not self.logs or not self.logs[-1].exists():
            return ""
        return "\n".join(self.logs[-1].read_text(errors="replace").splitlines()[-lines:])

    async def _drop_ctl(self) -> None:
        ctl, self.ctl = self.ctl, None
        if ctl is not None:
            with contextlib.suppress(Exception):
                await ctl.close()

    async def status(self, timeout: float = 3.0) -> StatusReply:
        """The status table (raises OSError when the supervisor does not answer).

        The whole call is under the deadline, sending included: a control client that read the
        key a killed supervisor left behind fails authentication, and its send would wait for a
        peer forever. On any failure the client is dropped, so the next call reads the key again.
        """
        if not self.running():
            raise OSError("supervisor not running")
        if self.ctl is None:
            self.ctl = ControlClient(self.endpoints)
        ctl = self.ctl
        try:
            async with asyncio.timeout(timeout):
                reply = msgspec.convert(await ctl.call(StatusRequest(), timeout=timeout), StatusReply)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Not this task's cancellation: another caller's failure closed the shared client
            # while this call waited on it. Left as CancelledError it would end whichever task
            # asked (a chat client's reader, which then never reconnects).
            raise OSError("status failed: the control client was closed by another call") from None
        except Exception as exc:
            if self.ctl is ctl:
                await self._drop_ctl()
            raise OSError(f"status failed: {type(exc).__name__}: {exc}") from exc
        for row in reply.processes:
            if row.pid and row.pid not in self.seen:
                with contextlib.suppress(psutil.Error):
                    self.seen[row.pid] = psutil.Process(row.pid).create_time()
        return reply

    async def row(self, ident: str) -> ProcessInfo | None:
        for row in (await self.status()).processes:
            if row.id == ident:
                return row
        return None

    async def web_url(self, *, fresh: bool = False) -> str:
        """The web chat's current address.

        The gateway binds port 0 and publishes the chosen port (``gateway.webchat.listening``), but
        an event subscriber misses that event across supervisor restarts; the listening socket of
        the gateway pid in the status table is the same fact, always readable.
        """
        async with self._resolve:
            if not fresh and self.url and time.monotonic() - self._resolved_at < 0.25:
                return self.url
            row = await self.row("gateway:webchat")
            if row is None or not row.pid or row.state.value not in LIVE:
                raise OSError(f"web chat not running ({row.state.value if row else 'no row'})")
            if row.pid != self.gateway_pid or not self.url:
                port = listening_port(row.pid)
                if not port:
                    raise OSError("web chat not listening yet")
                self.url, self.gateway_pid = f"http://127.0.0.1:{port}", row.pid
            self._resolved_at = time.monotonic()
            return self.url

    def sup_tree(self) -> dict[int, float]:
        """The running supervisor's whole OS tree."""
        found = tree(self.pid) if self.running() else {}
        self.seen.update(found)
        return found

    async def kill_supervisor(self) -> dict[int, float]:
        """SIGKILL ``spacebot run``; returns its tree as it was."""
        assert self.proc is not None
        snapshot = self.sup_tree()
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait)
        await self._drop_ctl()
        self.url, self.gateway_pid = "", 0
        return snapshot

    async def stop(self, timeout: float = 60.0) -> list[int]:
        """Graceful stop (SIGTERM); returns pids of the system still alive shortly after it returned."""
        if self.proc is None:
            return []
        self.sup_tree()
        await self._drop_ctl()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        left = await wait_gone(self.seen, 15.0)
        for pid in left:  # clean up, after counting them
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        return left


async def wait_gone(pids: dict[int, float], timeout: float) -> list[int]:
    """Wait (bounded) for these processes to end; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid, created in pids.items() if alive(pid, created)]
        if not left or time.monotonic() > deadline:
            return left
        await asyncio.sleep(0.1)


# -- clients ---------------------------------------------------------------------------------------


class ChaosClient(ChatClient):
    """A chat client that finds the web chat again wherever (whichever port) it comes back."""

    def __init__(self, system: Spacebot, *, name: str) -> None:
        super().__init__("http://127.0.0.1:1", name=name)
        self.system = system
        self.trouble: list[str] = []
        """Why the last redials and hellos failed (shown with a question that was never acked)."""

    def _trouble(self, what: str, exc: BaseException) -> None:
        self.trouble = [*self.trouble[-5:], f"{what}: {type(exc).__name__}: {str(exc)[:120]}"]

    async def _dial(self, timeout: float) -> None:
        try:
            url = await self.system.web_url(fresh=not self.connected.is_set())
        except OSError as exc:
            raise ConnectionError(str(exc)) from None
        self.url = url + "/ws"
        await super()._dial(timeout)

    async def _redial(self) -> None:
        # The base class gives up on errors other than network ones; a supervisor that is down
        # answers status with ConnectionError, which we keep retrying.
        delay = 0.05
        while not self._closing:
            try:
                await self._dial(5.0)
            except Exception as exc:  # down, restarting, not listening yet: all mean try again
                self._trouble("dial", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            self.reconnects += 1
            asyncio.get_running_loop().create_task(self._resume())
            return

    async def _resume(self) -> None:
        # While memory is down the gateway answers ``hello`` with an ``unavailable`` error and
        # keeps the socket open; the base class would then leave it un-welcomed for good. Say
        # hello again (same socket) until welcomed, or until the socket is replaced.
        ws = self._ws
        delay = 0.1
        while not self._closing and ws is self._ws and not self.connected.is_set():
            try:
                await self._hello(10.0)
            except Exception as exc:  # an error frame or no answer: the gateway is not serving yet
                self._trouble("hello", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            for conv in sorted(self.opened):
                with contextlib.suppress(Exception):
                    await self.send_frame({"type": "open", "conversation": conv})
            return


# -- the workload ----------------------------------------------------------------------------------


@dataclass
class Question:
    conv: int
    name: str
    sender: int
    token: str
    kind: str
    client_id: str = field(default_factory=lambda: secrets.token_hex(8))
    sent_at: float | None = None
    acked_at: float | None = None
    attempts: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return f"q {self.token}" + ("" if self.kind == "plain" else f" {self.kind}")

    @property
    def marker(self) -> str:
        """What a reply that answered this question (as new) contains."""
        return f"(new) {self.name}: {self.text}"


@dataclass
class Kill:
    cls: str
    window: str
    target: str
    pid: int
    at: float
    affected: list[int] | None
    """Conversation indexes whose replies depend on it (None = all)."""
    tree: dict[int, float]
    ready_s: float | None = None
    recovery_s: float | None = None
    after_ready_s: float | None = None
    """Supervisor kills: the new ``spacebot run`` saying ready → the next reply (0 when the reply came
    first: the gateway and channels serve while the start-up finishes)."""


async def send_question(client: ChaosClient, conv_id: str, q: Question, deadline: float) -> None:
    """Send until acknowledged (same client id every time, so a resend never doubles it)."""
    q.sent_at = time.time()
    delay = 0.2
    while time.monotonic() < deadline:
        q.attempts += 1
        try:
            async with asyncio.timeout(30):
                await client.connected.wait()
            mark = len(client.frames)
            await client.send_frame(
                {"type": "send", "conversation": conv_id, "text": q.text, "client_id": q.client_id}
            )
            frame = await client.wait_for(
                lambda f: (
                    f["type"] == "dropped"
                    or (f["type"] in ("ack", "error") and f.get("client_id") == q.client_id)
                ),
                since=mark,
                timeout=10.0,
            )
        except Exception as exc:  # the socket dropped or the ack did not come: resend
            state = f"connected={client.connected.is_set()} reconnects={client.reconnects}"
            q.errors.append(f"{type(exc).__name__} ({state}; {client.trouble[-2:]})")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
            continue
        if frame["type"] == "ack":
            q.acked_at = time.time()
            return
        if frame["type"] == "dropped":  # like the page: resend as soon as it is welcomed again
            q.errors.append("dropped")
            delay = 0.2
            continue
        q.errors.append(str(frame.get("code")))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def conversation(
    clients: list[ChaosClient],
    conv_id: str,
    questions: list[Question],
    pace: float,
    rng: random.Random,
    deadline: float,
) -> None:
    """One conversation's people asking in turn; nothing is sent after ``deadline`` (a system that
    does not come back must end the run, not hang it)."""
    for q in questions:
        await asyncio.sleep(rng.uniform(0.5, 1.5) * pace)
        if time.monotonic() > deadline:
            return
        await send_question(clients[q.sender], conv_id, q, deadline)


# -- the killer ------------------------------------------------------------------------------------


def kill_plan(rng: random.Random, kills: int) -> list[tuple[str, str]]:
    """(class, window) per kill: every class once, then the targeted windows, then random classes."""
    plan = [(c, "") for c in rng.sample(CLASSES, len(CLASSES))]
    plan += [("", w) for w in rng.sample(WINDOWS, len(WINDOWS))]
    while len(plan) < kills:
        plan.append((rng.choice(CLASSES), ""))
    plan = plan[:kills]
    rng.shuffle(plan)
    return plan


class Killer:
    """SIGKILLs processes of the running system on a schedule and records each kill."""

    def __init__(self, system: Spacebot, conv_ids: list[str], rng: random.Random) -> None:
        self.system = system
        self.conv_ids = conv_ids
        self.index = {f"channel:main:{c}": i for i, c in enumerate(conv_ids)}
        self.rng = rng
        self.kills: list[Kill] = []
        self.skipped: list[str] = []

    async def _rows(self) -> list[ProcessInfo]:
        try:
            return list((await self.system.status()).processes)
        except OSError:
            return []

    async def _find(self, cls: str, timeout: float) -> ProcessInfo | None:
        """A live process of ``cls`` (waits, bounded, for one to appear: branches come and go)."""
        deadline = time.monotonic() + timeout
        while True:  # at least one look, even with no time to wait
            rows = [r for r in await self._rows() if r.pid and r.state.value in (*LIVE, "starting")]
            if cls == "channel":
                found = [r for r in rows if r.kind == "channel" and r.id in self.index]
                busy = [r for r in found if r.state.value == "busy"]
                found = busy or found
            elif cls in ("branch", "worker"):
                found = [r for r in rows if r.kind == cls]
            elif cls == "memory":
                found = [r for r in rows if r.id == "memory:main"]
            elif cls == "gateway":
                found = [r for r in rows if r.id == "gateway:webchat"]
            else:  # the forking zygote (killing the warm spare costs nobody anything)
                found = [r for r in rows if r.id == "zygote"]
            if found:
                return self.rng.choice(found)
            if time.monotonic() >= deadline:
                return None
            await asyncio.sleep(0.1)

    def _affected(self, row: ProcessInfo) -> list[int] | None:
        if row.kind == "channel":
            return [self.index[row.id]] if row.id in self.index else []
        if row.kind in ("branch", "worker"):
            return [self.index[row.parent]] if row.parent in self.index else []
        return None

    async def kill(self, cls: str, window: str = "", *, wait: float = 20.0) -> Kill | None:
        """SIGKILL one live process of ``cls``."""
        deadline = time.monotonic() + wait
        while True:
            row = await self._find(cls, max(0.0, deadline - time.monotonic()))
            if row is None:
                self.skipped.append(f"{cls}{'/' + window if window else ''}: none running")
                return None
            snapshot = tree(row.pid)
            if snapshot:
                break
            if time.monotonic() >= deadline:  # it ended between the status read and the kill
                self.skipped.append(f"{cls}: {row.id} pid {row.pid} gone before the kill")
                return None
        with contextlib.suppress(ProcessLookupError):
            os.kill(row.pid, signal.SIGKILL)
        k = Kill(cls, window, row.id, row.pid, time.time(), self._affected(row), snapshot)
        self.kills.append(k)
        note(f"SIGKILL {cls} {row.id} pid={row.pid} state={row.state.value} window={window or '-'}")
        return k

    async def kill_supervisor(self, window: str = "") -> Kill:
        pid = self.system.pid
        at = time.time()
        snapshot = await self.system.kill_supervisor()
        k = Kill("supervisor", window, "supervisor", pid, at, None, snapshot)
        self.kills.append(k)
        note(f"SIGKILL supervisor pid={pid} ({len(snapshot)} processes in its tree) window={window or '-'}")
        t0 = time.monotonic()
        if window == "startup":
            start = asyncio.get_running_loop().create_task(self.system.start())
            # Start-up window: SIGKILL memory as soon as the new supervisor has started it.
            deadline = time.monotonic() + 60
            while not start.done() and time.monotonic() < deadline:
                rows = await self._rows()
                mem = [r for r in rows if r.id == "memory:main" and r.pid]
                if mem:
                    await self.kill("memory", "startup", wait=0.0)
                    break
                await asyncio.sleep(0.02)
            await start
        else:
            await self.system.start()
        k.ready_s = time.monotonic() - t0
        note(f"supervisor ready again after {k.ready_s:.2f}s")
        return k

    async def event(self, cls: str, window: str) -> None:
        """One scheduled kill (a window is a short sequence of kills)."""
        if window == "zygote+channel" or window == "zygote+memory":
            await self.kill("zygote", window)
            await self.kill("channel" if window == "zygote+channel" else "memory", window, wait=5.0)
        elif window == "memory-restart+channel":
            first = await self.kill("memory", window)
            if first is None:
                return
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # the restarted memory: a new pid
                row = next((r for r in await self._rows() if r.id == "memory:main"), None)
                if row is not None and row.pid and row.pid != first.pid:
                    break
                await asyncio.sleep(0.02)
            await self.kill("channel", window, wait=5.0)
        elif window == "startup" or cls == "supervisor":
            await self.kill_supervisor(window)
        else:
            await self.kill(cls, window)

    async def run(self, plan: list[tuple[str, str]], start: float, span: float) -> None:
        slot = span / max(1, len(plan))
        for i, (cls, window) in enumerate(plan):
            at = start + (i + self.rng.uniform(0.2, 0.8)) * slot
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            try:
                await self.event(cls, window)
            except Exception as exc:  # a failed kill step must not stop the soak; it is reported
                self.skipped.append(f"{cls or window}: {type(exc).__name__}: {exc}")
                note(f"kill step {cls or window} failed: {exc}")


# -- the audit -------------------------------------------------------------------------------------


async def histories(auditor: ChaosClient, conv_ids: list[str]) -> list[list[Frame]] | None:
    """Every conversation's stored messages, through the protocol (None: not reachable now)."""
    out = []
    try:
        async with asyncio.timeout(30):
            await auditor.connected.wait()
        for conv in conv_ids:
            hist = await auditor.open(conv)
            if hist["type"] != "history":
                raise RuntimeError(f"open {conv} answered {str(hist)[:200]}")
            out.append(hist["messages"])
    except Exception as exc:  # not reachable right now; the caller reads again
        reader = auditor._reader
        ended = "running" if reader is None or not reader.done() else "ended"
        if reader is not None and reader.done():
            ended = "cancelled" if reader.cancelled() else f"ended {reader.exception()!r:.200}"
        ends = [f for f in auditor.frames if f.get("type") in ("closed", "dropped", "error")][-3:]
        why = (
            f"{type(exc).__name__}: {exc} (connected={auditor.connected.is_set()} "
            f"reconnects={auditor.reconnects} reader {ended} {str(ends)[:300]} "
            f"trouble={auditor.trouble[-3:]})"
        )
        if why != _unread[0]:  # each new reason once: a failure that never clears shows why
            note(f"history not readable now: {why[:300]}")
            _unread[0] = why
        return None
    return out


_unread = [""]
"""The last reason :func:`histories` could not read."""


def answers_of(q: Question, msgs: list[Frame]) -> list[Frame]:
    return [m for m in msgs if m["role"] == "assistant" and q.marker in m["text"]]


async def drain(
    system: Spacebot, auditor: ChaosClient, conv_ids: list[str], qs: list[Question], timeout: float
) -> list[list[Frame]]:
    """Wait until the system is quiet (bounded): every acked question answered, no branch or worker
    running, and nothing new stored between two reads. Returns the last histories read."""
    deadline = time.monotonic() + timeout
    last: list[list[Frame]] = [[] for _ in conv_ids]
    previous = -1
    while time.monotonic() < deadline:
        got = await histories(auditor, conv_ids)
        if got is not None:
            last = got
            total = sum(len(m) for m in got)
            waiting = [q for q in qs if q.acked_at and not answers_of(q, got[q.conv])]
            try:
                rows = (await system.status()).processes
                delegates = [r for r in rows if r.kind in ("branch", "worker") and r.pid]
            except OSError:
                delegates = [None]  # type: ignore[list-item]
            if not waiting and not delegates and total == previous:
                return got
            note(f"drain: {len(waiting)} acked unanswered, {len(delegates)} delegates running")
            previous = total
        await asyncio.sleep(1.0)
    return last


def recovery(
    k: Kill, kills: list[Kill], qs: list[Question], answered_at: dict[str, float]
) -> tuple[float, float] | None:
    """Kill → the next stored reply, in an affected conversation, to a question it held up.

    A reply that came after a later kill which also reached that conversation measures both kills,
    not this one: it does not count (the kill is then ``overlapped`` if nothing else does). A
    question asked after the kill counts from when it was asked: the time nobody was asking is not
    the system's.
    """
    front_door = k.cls in ("gateway", "supervisor")
    times: list[float] = []
    asked: list[float] = []
    for q in qs:
        if k.affected is not None and q.conv not in k.affected:
            continue
        t = answered_at.get(q.token)
        if t is None or t <= k.at:
            continue
        if front_door and q.acked_at is not None and q.acked_at < k.at:
            continue  # answered by a channel the front door's death did not stop
        if any(
            other is not k and k.at < other.at < t and (other.affected is None or q.conv in other.affected)
            for other in kills
        ):
            continue
        times.append(t)
        asked.append(q.sent_at or k.at)
    if not times:
        return None
    # From the kill, or — when nothing affected was waiting for an answer then — from the first
    # question asked after it: the time nobody was asking is not the system's. Returns that and
    # when the reply came.
    return min(times) - max(k.at, min(asked)), min(times)


def audit(qs: list[Question], hist: list[list[Frame]]) -> dict[str, Any]:
    counts = dict.fromkeys(
        ("sent", "acked", "stored", "answered_once", "lost", "doubled", "unacked_unanswered"), 0
    )
    lost, doubled = [], []
    for q in qs:
        msgs = hist[q.conv]
        stored = sum(1 for m in msgs if m["role"] == "user" and m["text"] == q.text)
        answers = len(answers_of(q, msgs))
        counts["sent"] += q.sent_at is not None
        counts["acked"] += q.acked_at is not None
        counts["stored"] += stored > 0
        counts["answered_once"] += answers == 1
        if q.acked_at is not None and answers == 0:
            counts["lost"] += 1
            lost.append(f"{q.token}({q.kind})")
        elif q.acked_at is None and stored and answers == 0:
            counts["unacked_unanswered"] += 1
        if answers > 1 or stored > 1:
            counts["doubled"] += 1
            doubled.append(f"{q.token}(answers={answers},stored={stored})")
    return {**counts, "lost_tokens": lost, "doubled_tokens": doubled}


def log_evidence(logs: list[Path]) -> dict[str, int]:
    """How often tell-tale lines appear in the supervisor logs (all incarnations)."""
    pats = {
        "traceback": r"Traceback",
        "failed_state": r"state=failed|-> failed|giving up|flapping",
        "stray_killed": r"stray",
        "unsupported": r"unsupported",
        "delivery_failed": r"delivery failed",
        "error_lines": r"\bERROR\b",
    }
    text = "\n".join(p.read_text(errors="replace") for p in logs if p.exists())
    return {k: len(re.findall(v, text, re.IGNORECASE)) for k, v in pats.items()}


# -- one seed --------------------------------------------------------------------------------------


async def run_seed(
    seed: int,
    *,
    conversations: int = 20,
    messages: int = 15,
    kills: int = 11,
    pace: float = 1.2,
    latency: float = 0.3,
    drain_timeout: float = 120.0,
    send_grace: float = 120.0,
    keep: bool = False,
    plan: list[tuple[str, str]] | None = None,
    verbose: bool | None = None,
) -> dict[str, Any]:
    """One soak run on a fresh home; returns its counts, recovery times and evidence.

    ``plan`` replaces the seeded kill schedule (a list of (class, window)); ``verbose`` turns the
    progress lines on or off (None: leave as is)."""
    global VERBOSE
    if verbose is not None:
        VERBOSE = verbose
    root = short_tempdir("sb-chaos-")
    model = FakeModel(root, latency)
    system: Spacebot | None = None
    clients: list[ChaosClient] = []
    t_begin = time.monotonic()
    try:
        await model.start()
        system = Spacebot(root, model.openai_url)
        first_ready = await system.start()
        note(f"seed {seed}: ready after {first_ready:.2f}s, home {root}")
        owner = ChaosClient(system, name="Auditor")
        clients.append(owner)
        await owner.connect()
        conv_ids = [await owner.create(f"chaos {i}") for i in range(conversations)]
        people: list[list[ChaosClient]] = []
        qs_by_conv: list[list[Question]] = []
        for ci, conv in enumerate(conv_ids):
            names = [f"Ana{ci}"] + ([f"Bob{ci}"] if ci % 2 == 0 else [])
            cs = [ChaosClient(system, name=n) for n in names]
            for c in cs:
                clients.append(c)
                await c.connect()
                await c.open(conv)
            people.append(cs)
            qs = []
            for mi in range(messages):
                sender = mi % len(cs)
                token = f"s{seed}c{ci:02d}m{mi:02d}{secrets.token_hex(3)}"
                qs.append(Question(ci, names[sender], sender, token, KINDS[(ci + mi) % len(KINDS)]))
            qs_by_conv.append(qs)
        all_qs = [q for qs in qs_by_conv for q in qs]
        killer = Killer(system, conv_ids, random.Random(seed * 7919 + 1))
        schedule = plan if plan is not None else kill_plan(random.Random(seed * 104729 + 3), kills)
        span = messages * pace  # the sending window; kills land inside it
        work_start = time.monotonic()
        workload = asyncio.gather(
            *(
                conversation(
                    people[ci],
                    conv_ids[ci],
                    qs_by_conv[ci],
                    pace,
                    random.Random(seed * 1000 + ci),
                    work_start + 2 * span + send_grace,
                )
                for ci in range(conversations)
            )
        )
        await killer.run(schedule, work_start + min(2.0, span / 4), span)
        await workload
        t_sent = time.monotonic()
        note(f"workload done: {sum(q.acked_at is not None for q in all_qs)}/{len(all_qs)} acked; draining")
        hist = await drain(system, owner, conv_ids, all_qs, drain_timeout)
        drained_s = time.monotonic() - t_sent
        note(f"drained in {drained_s:.2f}s")
        # Orphans: processes of a killed tree still alive that the running system does not own.
        try:
            owned = {r.pid for r in (await system.status()).processes if r.pid}
        except OSError:
            owned = set()
        if system.running():
            owned.add(system.pid)
        killed_trees: dict[int, float] = {}
        for k in killer.kills:
            killed_trees.update({p: c for p, c in k.tree.items() if p not in owned})
        orphan_pids = await wait_gone(killed_trees, 10.0)
        final_rows = []
        with contextlib.suppress(OSError):
            final_rows = [
                f"{r.id} pid={r.pid} state={r.state.value} restarts={r.restarts} exit={r.exit_code}"
                for r in (await system.status()).processes
                if r.state.value not in LIVE
            ]
        for c in clients:
            await c.close()
        clients = []
        left = await system.stop()
        answered_at: dict[str, float] = {}
        for q in all_qs:
            got = answers_of(q, hist[q.conv])
            if got:
                answered_at[q.token] = min(float(m["created_at"]) for m in got)
        for k in killer.kills:
            measured = recovery(k, killer.kills, all_qs, answered_at)
            if measured is not None:
                k.recovery_s, replied_at = measured
                if k.ready_s is not None:
                    k.after_ready_s = max(0.0, replied_at - (k.at + k.ready_s))
        result = audit(all_qs, hist)
        result["unacked"] = [
            f"{q.token} attempts={q.attempts} errors={q.errors[-4:]}"
            for q in all_qs
            if q.sent_at is not None and q.acked_at is None
        ]
        result["not_sent"] = sum(q.sent_at is None for q in all_qs)
        result.update(
            {
                "seed": seed,
                "orphans": len(orphan_pids) + len(left),
                "orphan_pids": orphan_pids,
                "left_after_stop": left,
                "first_ready_s": round(first_ready, 2),
                "drain_s": round(drained_s, 2),
                "duration_s": round(time.monotonic() - t_begin, 1),
                "kills": [
                    {
                        "class": k.cls,
                        "window": k.window,
                        "target": k.target,
                        "pid": k.pid,
                        "ready_s": None if k.ready_s is None else round(k.ready_s, 2),
                        "recovery_s": None if k.recovery_s is None else round(k.recovery_s, 2),
                        "after_ready_s": None if k.after_ready_s is None else round(k.after_ready_s, 2),
                    }
                    for k in killer.kills
                ],
                "skipped": killer.skipped,
                "not_running_at_end": final_rows,
                "logs": log_evidence(system.logs),
                "root": str(root),
            }
        )
        return result
    finally:
        for c in clients:
            with contextlib.suppress(Exception):
                await c.close()
        if system is not None and system.running():
            await system.stop()
        await model.stop()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def summarize(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("sent", "acked", "stored", "answered_once", "lost", "doubled", "orphans")
    out: dict[str, Any] = {k: sum(r[k] for r in per_seed) for k in keys}
    by_class: dict[str, list[float]] = {}
    overlapped: dict[str, int] = {}
    ready: list[float] = []
    for r in per_seed:
        for k in r["kills"]:
            if k["recovery_s"] is not None:
                by_class.setdefault(k["class"], []).append(k["recovery_s"])
            else:
                overlapped[k["class"]] = overlapped.get(k["class"], 0) + 1
            if k["ready_s"] is not None:
                ready.append(k["ready_s"])
                if k["after_ready_s"] is not None:  # the goal's measure: from `spacebot run` ready
                    by_class.setdefault("supervisor_after_ready", []).append(k["after_ready_s"])
    out["recovery_s"] = {
        c: {"p50": round(percentile(v, 50), 2), "max": round(max(v), 2), "n": len(v)}
        for c, v in sorted(by_class.items())
    }
    # Kills per class whose every sample was cut short by a later kill of the same conversations.
    out["overlapped"] = overlapped
    out["supervisor_ready_s"] = (
        {"p50": round(percentile(ready, 50), 2), "max": round(max(ready), 2)} if ready else None
    )
    out["kills"] = sum(len(r["kills"]) for r in per_seed)
    out["per_seed"] = per_seed
    out["machine"] = machine()
    return out


async def soak(seeds: list[int], burners: int, **kw: Any) -> dict[str, Any]:
    burn = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", "while True: pass") for _ in range(burners)
    ]
    try:
        per_seed = []
        for seed in seeds:
            r = await run_seed(seed, **kw)
            print(
                f"seed {seed}: sent={r['sent']} acked={r['acked']} once={r['answered_once']} "
                f"lost={r['lost']} doubled={r['doubled']} orphans={r['orphans']} kills={len(r['kills'])} "
                f"({r['duration_s']} s)",
                file=sys.stderr,
                flush=True,
            )
            per_seed.append(r)
        return summarize(per_seed)
    finally:
        for p in burn:
            p.kill()
            await p.wait()


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0] if __doc__ else "chaos soak")
    p.add_argument("--seed", type=int, default=None, help="run this one seed")
    p.add_argument("--seeds", type=int, default=3, help="run seeds 1..N (default 3)")
    p.add_argument("--conversations", type=int, default=20)
    p.add_argument("--messages", type=int, default=15, help="questions per conversation")
    p.add_argument("--kills", type=int, default=11, help="kill events per seed (≥ 11 covers every window)")
    p.add_argument("--burners", type=int, default=0, help="CPU-burning processes beside it")
    p.add_argument(
        "--pace",
        type=float,
        default=2.5,
        help="mean seconds between a conversation's questions (kills are spread over the same window)",
    )
    p.add_argument("--latency", type=float, default=0.3, help="fake model seconds to first event")
    p.add_argument("--drain", type=float, default=120.0, help="bound on the wait for quiet (s)")
    p.add_argument("--keep", action="store_true", help="keep the temp home and logs")
    p.add_argument("--verbose", action="store_true", help="progress lines on stderr")
    args = p.parse_args(argv)
    if args.conversations < 1 or args.messages < 1 or args.kills < 0 or args.seeds < 1:
        p.error("--conversations, --messages and --seeds must be ≥ 1 and --kills ≥ 0")
    seeds = [args.seed] if args.seed is not None else list(range(1, args.seeds + 1))
    global VERBOSE
    VERBOSE = args.verbose
    try:
        r = asyncio.run(
            soak(
                seeds,
                args.burners,
                conversations=args.conversations,
                messages=args.messages,
                kills=args.kills,
                pace=args.pace,
                latency=args.latency,
                drain_timeout=args.drain,
                keep=args.keep,
            )
        )
    except Missing as exc:
        print(f"chaos: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:  # `spacebot run` did not start (the message holds its log tail)
        print(f"chaos: the system under test failed: {exc}", file=sys.stderr)
        return 1
    cols = ("sent", "acked", "answered_once", "lost", "doubled", "orphans")
    rows: list[tuple[str, ...]] = [("seed", *cols, "kills")]
    for s in r["per_seed"]:
        rows.append((str(s["seed"]), *(str(s[c]) for c in cols), str(len(s["kills"]))))
    rows.append(("all", *(str(r[c]) for c in cols), str(r["kills"])))
    pad = ("",) * 4
    rows.append(("", "", "", "", "", "", "", ""))
    rows.append(("recovery", "kills", "p50 s", "max s", "overlapped", *pad[1:]))
    for c, v in r["recovery_s"].items():
        over = str(r["overlapped"].get(c, 0))
        rows.append((c, str(v["n"]), f"{v['p50']:.2f}", f"{v['max']:.2f}", over, *pad[1:]))
    if r["supervisor_ready_s"]:
        sr = r["supervisor_ready_s"]
        rows.append(("sup. ready", "", f"{sr['p50']:.2f}", f"{sr['max']:.2f}", *pad))
    emit(r, rows, args.json)
    return 0 if r["lost"] == 0 and r["doubled"] == 0 and r["orphans"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
