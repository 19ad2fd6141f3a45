"""CPU per answered message, per process kind, against the raw SDK call that produces the same answer.

A real Spacebot (supervisor + broker, zygote, memory, cortex, the web chat gateway, one conversation
process per conversation) answers a fixed load: N conversations, each with one WebSocket client
that sends M messages in a row (the next once the previous is answered). The fake model runs in its
own process, waits ``L`` ms and streams a ``reply`` tool call ("answer: <question>").

CPU is read from ``/proc/<pid>/stat`` (utime + stime, clock ticks) for every process of the
supervisor's tree just before and just after the load (after the last answer it waits until the
tree is quiet, so work a message leaves behind counts; what the same processes use idle, measured
for 3 s before, is subtracted for the window's length). Processes that start and exit during the
load are covered too: their parent (the zygote for everything it forks, the supervisor for what it
adopts) waits for them, and the kernel adds a waited-for child's whole CPU to the parent's
``cutime``/``cstime``. The growth of those fields over the window, minus what the exited processes
had already used at the first reading, is their CPU in the window; it is attributed to kinds by the
last reading of each such process (sampled every 0.2 s; kinds learnt from the supervisor's
``proc.*`` events). The fake model's and the clients' (this process's) CPU are reported apart and
are not in the total.

The floor: a child process replays, with the official ``openai`` SDK
(``client.chat.completions.create(..., stream=True)``, iterating the chunks), exactly the request
bodies the conversation processes sent during the load, against the same fake model (which answers
them with the same streamed reply), and reports its CPU per message; also the same replay through
``client.post`` with the body as is (no typed-dict transform, as our provider sends it).

    python bench/cost.py [--conversations 10] [--messages 20] [--latency-ms 100] [--profile DIR] [--json]

``--profile DIR`` also records the supervisor, the gateway, memory and one conversation process
with ``py-spy`` (in ``.venv/bin`` or on ``PATH``; not a dependency) for the duration of the load,
as collapsed stacks, and prints the top functions by self and total samples per kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import BENCH_LIMITS, emit, machine, parser
from chat import _ask

from spacebot.ipc.messages import StateChanged
from spacebot.testing import ChatSystem, short_tempdir

KINDS = ("gateway", "channel", "memory", "supervisor", "zygote", "others")
"""Rows of the table; ``supervisor`` includes the broker (it runs in the supervisor process)."""

_TICK_MS = 1000 / os.sysconf("SC_CLK_TCK")


def _kind(name: str) -> str:
    return name if name in KINDS else "others"


def _stat(pid: int) -> tuple[int, int] | None:
    """(own utime+stime, waited-for children's cutime+cstime) in clock ticks; None once gone."""
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()  # fields from the 3rd on; the name may hold spaces
    return int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])


def _tree(root: int) -> list[int]:
    """``root`` and its descendants, from ``/proc/<pid>/task/<tid>/children`` (a few small files)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{pid}/task"):
                with contextlib.suppress(OSError):
                    todo.extend(int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    return out


class _FakeServer:
    """The fake model in its own process (this script in ``--serve-fake`` mode). Its stdin takes
    ``mark`` (forget earlier requests) and ``dump FILE`` (write the OpenAI request bodies received
    since the mark as JSON); each is answered ``ok`` on its stdout."""

    def __init__(self, script: Path, latency: float) -> None:
        self.script, self.latency = script, latency
        self.proc: asyncio.subprocess.Process | None = None
        self.openai_url = ""

    async def start(self) -> None:
        reply = {"name": "reply", "arguments": {"content": "answer: {last_user}"}}
        self.script.write_text(json.dumps({"default": {"name": "bench", "tool_calls": [reply]}}))
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve-fake",
            str(self.script),
            "--latency-ms",
            str(self.latency * 1000),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        line = await self._line(60)
        if "OpenAI base_url: " not in line:
            raise RuntimeError(f"the fake model server did not start: {line!r}")
        self.openai_url = line.split("OpenAI base_url: ")[1].split(")")[0]

    async def _line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            return (await self.proc.stdout.readline()).decode().strip()

    async def command(self, text: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        if (answer := await self._line(60)) != "ok":
            raise RuntimeError(f"the fake model server answered {text!r} with {answer!r}")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def serve_fake(script: Path, latency: float) -> int:
    """``--serve-fake``: run the fake model until stdin closes (see :class:`_FakeServer`)."""
    from spacebot.llm.fake import FakeLLM, load_script

    async def serve() -> None:
        fake = FakeLLM(script=load_script(script), ttft=latency)
        port = await fake.start()
        print(
            f"fake-llm listening on http://127.0.0.1:{port} (OpenAI base_url: {fake.openai_url})", flush=True
        )
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        mark = 0
        while line := (await reader.readline()).decode().split():
            if line[0] == "mark":
                mark = len(fake.requests)
            elif line[0] == "dump":
                bodies = [r.body for r in fake.requests[mark:] if r.path.endswith("/chat/completions")]
                await asyncio.to_thread(Path(line[1]).write_text, json.dumps(bodies))
            print("ok", flush=True)
        await fake.stop()

    asyncio.run(serve())
    return 0


def raw_sdk(bodies_file: Path, url: str, lanes: int) -> int:
    """``--raw-sdk``: replay the bodies with the official SDK, ``lanes`` calls at a time (as many as
    there were conversations); print {"calls", "cpu_s", "post_cpu_s"} as JSON."""
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionChunk

    bodies: list[dict[str, Any]] = json.loads(bodies_file.read_text())

    async def call(client: openai.AsyncOpenAI, body: dict[str, Any]) -> str:
        stream = await client.chat.completions.create(**body)
        text, args = [], []
        async for chunk in stream:  # what any consumer does: read the text and the tool arguments
            for choice in chunk.choices:
                if choice.delta.content:
                    text.append(choice.delta.content)
                for tc in choice.delta.tool_calls or ():
                    if tc.function is not None and tc.function.arguments:
                        args.append(tc.function.arguments)
        return "".join(text) + "".join(args)

    async def post(client: openai.AsyncOpenAI, body: dict[str, Any]) -> str:
        stream = await client.post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )
        args = []
        async for chunk in stream:
            for choice in chunk.choices:
                for tc in choice.delta.tool_calls or ():
                    if tc.function is not None and tc.function.arguments:
                        args.append(tc.function.arguments)
        return "".join(args)

    async def run() -> dict[str, float]:
        client = openai.AsyncOpenAI(base_url=url, api_key="k", max_retries=0)
        out = {"calls": float(len(bodies))}
        for name, fn in (("cpu_s", call), ("post_cpu_s", post)):
            for body in bodies[:5]:  # warm-up: connection, imports, caches
                await fn(client, body)
            cpu = time.process_time()

            async def lane(first: int, fn: Any = fn) -> None:
                for body in bodies[first::lanes]:
                    if "answer: " not in await fn(client, body):
                        raise RuntimeError("the raw SDK call did not get the reply the conversations got")

            await asyncio.gather(*(lane(i) for i in range(lanes)))
            out[name] = time.process_time() - cpu
        await client.close()
        return out

    print(json.dumps(asyncio.run(run())), flush=True)
    return 0


class _Person:
    """One conversation's person. A web chat connection may send 20 messages in 10 s, so the
    person reconnects every 15 messages (the old connection closes once the new one has the
    conversation open; a reconnect is a cost per connection, not per message)."""

    def __init__(self, system: ChatSystem, i: int) -> None:
        self.system, self.i = system, i
        self.chat: Any = None
        self.conv = ""
        self.sent = 0

    async def start(self) -> None:
        self.chat = await self.system.client(f"P{self.i}")
        self.conv = await self.chat.create(f"cost {self.i}")
        await self.chat.open(self.conv)

    async def ask(self, marker: str) -> float | None:
        if self.sent and self.sent % 15 == 0:
            old, self.chat = self.chat, await self.system.client(f"P{self.i}")
            await self.chat.open(self.conv)
            await old.close()
        self.sent += 1
        return await _ask(self.chat, self.conv, marker)


class _Sampler:
    """Readings of the supervisor's tree: a first and a last one, and every 0.2 s in between (the
    last reading of a process that exits is what attributes its share)."""

    def __init__(self, root: int, kinds: dict[int, str]) -> None:
        self.root, self.kinds = root, kinds
        self.last: dict[int, tuple[int, int]] = {}

    def read(self) -> dict[int, tuple[int, int]]:
        now = {pid: s for pid in _tree(self.root) if (s := _stat(pid)) is not None}
        self.last.update(now)
        return now

    async def run(self, events: Any) -> None:
        async def listen() -> None:
            while True:
                body = (await events.next()).body
                if isinstance(body, StateChanged) and body.pid:
                    self.kinds.setdefault(body.pid, _kind(body.kind))

        task = asyncio.create_task(listen())
        try:
            while True:
                await asyncio.sleep(0.2)
                self.read()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def _account(
    before: dict[int, tuple[int, int]],
    after: dict[int, tuple[int, int]],
    last: dict[int, tuple[int, int]],
    kinds: dict[int, str],
) -> tuple[dict[str, float], float]:
    """CPU ms per kind over the window, and how much of it came from processes that exited."""
    per = dict.fromkeys(KINDS, 0.0)
    for pid, (own, _) in after.items():
        per[kinds.get(pid, "others")] += (own - before.get(pid, (0, 0))[0]) * _TICK_MS
    reaped = sum(ch - before.get(pid, (0, 0))[1] for pid, (_, ch) in after.items())
    gone = [pid for pid in last if pid not in after]
    reaped -= sum(sum(before[pid]) for pid in gone if pid in before)
    reaped_ms = max(0, reaped) * _TICK_MS
    seen = {pid: max(1, sum(last[pid]) - sum(before.get(pid, (0, 0)))) for pid in gone}
    total_seen = sum(seen.values())
    for pid, share in seen.items():
        per[kinds.get(pid, "others")] += reaped_ms * share / total_seen
    if not gone:
        per["others"] += reaped_ms  # a grandchild reaped by its own parent, which is still alive
    return per, reaped_ms


async def _settle(sampler: _Sampler, ticks: int, limit: float = 20.0) -> None:
    """Wait (up to ``limit`` s) until the tree uses at most ``ticks`` clock ticks in 0.5 s."""
    prev = sum(sum(v) for v in sampler.read().values())
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        now = sum(sum(v) for v in sampler.read().values())
        if now - prev <= ticks:
            return
        prev = now


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _function(frame: str) -> str:
    """``name (path/to/file.py:12)`` → ``name (file.py)``: functions, not lines."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':')[0].rstrip(')')})" if where else name


def _collapsed_top(path: Path, n: int = 8) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """Top functions of a py-spy ``raw`` (collapsed) file: (self %, total %) of all samples; the
    total list leaves out the frames under nearly every sample (entry points, the event loop)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = [_function(f) for f in stack.split(";")]
        samples += k
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k
    if not samples:
        return [], []
    return (
        [(f, 100 * c / samples) for f, c in own.most_common(n)],
        [(f, 100 * c / samples) for f, c in total.most_common() if c < 0.9 * samples][:n],
    )


async def run(
    conversations: int, messages: int, latency_ms: float, profile: Path | None, idle_s: float = 3.0
) -> tuple[dict[str, Any], list[tuple[str, ...]]]:
    root = short_tempdir("sb-cost-")
    fake = _FakeServer(root / "cost_script.json", latency_ms / 1000)
    await fake.start()
    assert fake.proc is not None
    try:
        limits: dict[str, object] = dict(BENCH_LIMITS)
        async with ChatSystem(root, fake, channel={"idle_timeout": 0}, webchat=limits) as system:
            people = [_Person(system, i) for i in range(conversations)]
            for person in people:
                await person.start()
            # Warm-up, not measured: every conversation's process starts and answers twice.
            for rnd in range(2):
                got = await asyncio.gather(*(person.ask(f"w{rnd}c{i}.") for i, person in enumerate(people)))
                if any(g is None for g in got):
                    raise RuntimeError(f"warm-up message unanswered: {system.sup.log_tail()}")
            assert system.sup.ctl is not None
            kinds = {p.pid: _kind(p.kind) for p in (await system.sup.status()).processes if p.pid}
            events = await system.sup.ctl.events("proc.")
            sampler = _Sampler(system.sup.pid, kinds)
            spies = _start_profiles(profile, kinds) if profile else []
            # What the system costs doing nothing (heartbeats, timers) for as long as the load ran is
            # subtracted: that depends on the wall time, not on the messages.
            await _settle(sampler, 3)
            idle_before, idle_wall = sampler.read(), time.perf_counter()
            await asyncio.sleep(idle_s)
            idle_after, idle_wall = sampler.read(), time.perf_counter() - idle_wall
            idle = {
                k: v / idle_wall for k, v in _account(idle_before, idle_after, idle_after, kinds)[0].items()
            }
            await fake.command("mark")
            fake_before, own_before = _stat(fake.proc.pid), _stat(os.getpid())
            before, window = sampler.read(), time.perf_counter()
            sampling = asyncio.create_task(sampler.run(events))
            wall = time.perf_counter()

            async def talk(i: int) -> list[float | None]:
                return [await people[i].ask(f"m{m}c{i}.") for m in range(messages)]

            answers = [
                a for per in await asyncio.gather(*(talk(i) for i in range(conversations))) for a in per
            ]
            wall = time.perf_counter() - wall
            # Work a message leaves behind after its answer is shown (stores, indexing) is its cost too.
            await _settle(sampler, max(3, round(2 * sum(idle.values()) * 0.5 / _TICK_MS)))
            sampling.cancel()
            await asyncio.gather(sampling, return_exceptions=True)
            after, window = sampler.read(), time.perf_counter() - window
            fake_after, own_after = _stat(fake.proc.pid), _stat(os.getpid())
            events.close()
            flames = _stop_profiles(spies)
            bodies = root / "bodies.json"
            await fake.command(f"dump {bodies}")
    finally:
        await fake.stop()
    answered = sum(1 for a in answers if a is not None)
    if not answered:
        raise RuntimeError("no message was answered")
    gross, reaped_ms = _account(before, after, sampler.last, kinds)
    per = {k: max(0.0, v - idle[k] * window) for k, v in gross.items()}
    assert fake_before and fake_after and own_before and own_after
    fake_ms = (sum(fake_after) - sum(fake_before)) * _TICK_MS
    clients_ms = (sum(own_after) - sum(own_before)) * _TICK_MS

    # The floor: the same requests through the official SDK, in a fresh child, same fake model.
    fake = _FakeServer(root / "cost_script.json", latency_ms / 1000)
    await fake.start()
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--raw-sdk",
            str(bodies),
            fake.openai_url,
            str(conversations),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await child.communicate()
        if child.returncode:
            raise RuntimeError(f"the raw SDK child failed with {child.returncode}")
        raw = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        await fake.stop()
    calls = int(raw["calls"])
    raw_ms = raw["cpu_s"] * 1000 / answered

    per_msg = {k: round(v / answered, 2) for k, v in per.items()}
    total = round(sum(per.values()) / answered, 2)
    result: dict[str, Any] = {
        "cpu_ms_per_message": {"total": total, **per_msg},
        "raw_sdk_cpu_ms": round(raw_ms, 2),
        "raw_sdk_post_cpu_ms": round(raw["post_cpu_s"] * 1000 / answered, 2),
        "idle_cpu_ms": round(sum(idle.values()) * window / answered, 2),
        "total_with_idle": round(sum(gross.values()) / answered, 2),
        "ratio_to_raw": round(total / raw_ms, 2) if raw_ms else None,
        "fake_model_cpu_ms": round(fake_ms / answered, 2),
        "clients_cpu_ms": round(clients_ms / answered, 2),
        "exited_cpu_ms": round(reaped_ms / answered, 2),
        "model_calls_per_message": round(calls / answered, 2),
        "messages": len(answers),
        "answered": answered,
        "conversations": conversations,
        "latency_ms": latency_ms,
        "wall_s": round(wall, 2),
        "machine": machine(),
    }
    if flames:
        result["profile"] = flames
    rows: list[tuple[str, ...]] = [("process kind", "CPU ms / message", "share")]
    for k in KINDS:
        rows.append(
            (
                k + (" (+ broker)" if k == "supervisor" else ""),
                f"{per_msg[k]:.2f}",
                f"{per[k] / max(sum(per.values()), 1e-9):.0%}",
            )
        )
    rows += [
        ("total (Spacebot)", f"{total:.2f}", "100%"),
        ("raw SDK call, same replies (floor)", f"{raw_ms:.2f}", ""),
        ("total / raw", f"{result['ratio_to_raw']}", ""),
        ("raw SDK, body posted as is (no typed-dict transform)", f"{result['raw_sdk_post_cpu_ms']:.2f}", ""),
        ("idle cost over the window (subtracted above)", f"{result['idle_cpu_ms']:.2f}", ""),
        ("fake model (not in total)", f"{result['fake_model_cpu_ms']:.2f}", ""),
        ("clients = this process (not in total)", f"{result['clients_cpu_ms']:.2f}", ""),
        ("of the total: processes that exited", f"{result['exited_cpu_ms']:.2f}", ""),
        (
            "answered / sent; model calls per message",
            f"{answered} / {len(answers)}; {result['model_calls_per_message']}",
            "",
        ),
        ("load wall time", f"{wall:.1f} s", ""),
    ]
    return result, rows


def _start_profiles(profile: Path, kinds: dict[int, str]) -> list[tuple[str, Path, subprocess.Popen[bytes]]]:
    """py-spy on the supervisor, the gateway, memory and one conversation process."""
    spy = _py_spy()
    if spy is None:
        raise SystemExit("--profile needs py-spy (pip install py-spy into the venv; it is not a dependency)")
    profile.mkdir(parents=True, exist_ok=True)
    picked: dict[str, int] = {}
    for pid, kind in sorted(kinds.items()):
        if kind in ("supervisor", "gateway", "memory", "channel"):
            picked.setdefault(kind, pid)
    spies = []
    for kind, pid in picked.items():
        out = profile / f"{kind}.txt"
        cmd = [
            spy,
            "record",
            "--pid",
            str(pid),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "-o",
            str(out),
        ]
        if kind != "memory":
            # Only the thread holding the GIL: Python's CPU, without the event loop's waits (uvloop
            # waits in C, which py-spy counts as running). Memory's work is mostly DuckDB and
            # tantivy in its pool threads without the GIL: sampled as every active thread.
            cmd.append("--gil")
        spies.append((kind, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return spies


def _stop_profiles(spies: list[tuple[str, Path, subprocess.Popen[bytes]]]) -> dict[str, Any]:
    flames: dict[str, Any] = {}
    for kind, out, proc in spies:
        proc.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(30)
        if out.exists():
            own, total = _collapsed_top(out)
            flames[kind] = {"self": own, "total": total, "file": str(out)}
    return flames


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-fake":
        return serve_fake(Path(sys.argv[2]), float(sys.argv[4]) / 1000)
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-sdk":
        return raw_sdk(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--conversations", type=int, default=10)
    p.add_argument("--messages", type=int, default=20, help="measured messages per conversation")
    p.add_argument("--latency-ms", type=float, default=100.0, help="fake model time to first event")
    p.add_argument("--profile", type=Path, default=None, help="record py-spy profiles into this directory")
    args = p.parse_args()
    result, rows = asyncio.run(run(args.conversations, args.messages, args.latency_ms, args.profile))
    for kind, flame in result.get("profile", {}).items():
        print(f"\n{kind}: top self / total (% of samples)")
        for (f1, p1), (f2, p2) in zip(flame["self"], flame["total"], strict=False):
            print(f"  {p1:5.1f}  {f1[:70]:<70}  {p2:5.1f}  {f2[:70]}")
    emit(result, rows, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
