"""Request/reply through the broker vs a raw pyzmq DEALER↔ROUTER pair, and broker throughput.

* RTT, broker: this process's :class:`BusClient` → broker → an echo child → broker → back.
* RTT, raw: a ``zmq.asyncio`` DEALER in this process → a ROUTER echo loop in another process.
  Both are measured in the same run; the ratio is what the goal is about (≤ 2×).
* Throughput: 1, 8 and 64 flood children send one-way messages through the broker to one sink
  child; the sink's own first/last timestamps give messages per second. Raw: one process
  sending on a DEALER straight to a ROUTER sink in another.

Run: ``python bench/bus.py [--json] [--rtt-only]`` (``--rtt-only``: the round trips, a short run).
Every client authenticates as the operator (``<runtime_dir>/ctl.key``), as on a real install.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import zmq
import zmq.asyncio

sys.path.insert(0, str(Path(__file__).parent))
from _common import emit, machine, parser, percentile

from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import Echo, KillRequest, Notice, Ping
from spacebot.testing import SupervisorProcess, short_tempdir

# A deep queue towards the sink: the flood is a burst far larger than the default high-water mark
# (10k), and past it the broker sheds (counted) rather than block. Shed counts are reported.
CONFIG = """
[runtime]
log_level = "warning"
hwm = 1000000
[supervisor]
preload = ["msgspec", "zmq", "zmq.asyncio", "psutil"]
allow_test_targets = true
"""


def _raw_echo(endpoint: str) -> None:
    """The raw pair's server: a ``zmq.asyncio`` ROUTER echoing every message (one await each)."""

    async def serve() -> None:
        ctx = zmq.asyncio.Context()
        sock = ctx.socket(zmq.ROUTER)
        sock.bind(endpoint)
        while True:
            frames = await sock.recv_multipart()
            if frames[1] == b"stop":
                break
            await sock.send_multipart(frames)
        sock.close(linger=0)
        ctx.term()

    asyncio.run(serve())


def _raw_sink(endpoint: str, count: int, result: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.RCVHWM, 100_000)
    sock.bind(endpoint)
    sock.recv_multipart()
    first = time.perf_counter()
    for _ in range(count - 1):
        sock.recv_multipart()
    result.put((count - 1) / (time.perf_counter() - first))
    sock.close(linger=0)
    ctx.term()


def _raw_sender(endpoint: str, count: int) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.connect(endpoint)
    payload = b"x" * 40  # about the size of an encoded Echo envelope
    for _ in range(count):
        sock.send(payload)
    sock.close(linger=5000)
    ctx.term()


async def raw_rtt(root: Path, n: int) -> list[float]:
    endpoint = f"ipc://{root}/raw-echo"
    proc = multiprocessing.get_context("spawn").Process(target=_raw_echo, args=(endpoint,))
    proc.start()
    ctx = zmq.asyncio.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    for _ in range(200):  # warm-up (and wait for the bind)
        await sock.send(b"ping")
        await sock.recv()
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await sock.send(b"ping")
        await sock.recv()
        samples.append((time.perf_counter() - started) * 1e6)
    await sock.send(b"stop")
    sock.close(linger=1000)
    ctx.term()
    proc.join(10)
    return samples


def raw_throughput(root: Path, count: int) -> float:
    endpoint = f"ipc://{root}/raw-sink"
    mp = multiprocessing.get_context("spawn")
    result: multiprocessing.Queue = mp.Queue()  # type: ignore[type-arg]
    sink = mp.Process(target=_raw_sink, args=(endpoint, count, result))
    sink.start()
    time.sleep(0.5)  # the sink binds; a sender connecting first would just wait
    sender = mp.Process(target=_raw_sender, args=(endpoint, count))
    sender.start()
    rate = float(result.get(timeout=120))
    sender.join(30)
    sink.join(30)
    return rate


async def broker_rtt(sup: SupervisorProcess, client: BusClient, n: int) -> list[float]:
    await sup.spawn("spacebot.procs.testkit:echo", id="worker:echo")
    for _ in range(200):
        await client.request("worker:echo", Ping(b"ping"))
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await client.request("worker:echo", Ping(b"ping"))
        samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def broker_throughput(
    sup: SupervisorProcess, client: BusClient, senders: int, total: int
) -> dict[str, float]:
    assert sup.ctl is not None
    sink = f"worker:sink{senders}"
    await sup.spawn("spacebot.procs.testkit:sink", id=sink)
    per = total // senders
    ids = [f"worker:flood{senders}-{i}" for i in range(senders)]
    await asyncio.gather(
        *(sup.spawn("spacebot.procs.testkit:flood", id=i, args={"target": sink, "count": per}) for i in ids)
    )
    events = await sup.ctl.events("testkit.")
    shed_before = (await sup.status()).broker.shed
    for ident in ids:
        await client.request(ident, Echo(0))  # go
    done = 0
    async with asyncio.timeout(300):
        while done < senders:
            event = await events.next()
            if isinstance(event.body, Notice) and event.body.text == "sent":
                done += 1
        expected = per * senders
        seen, still = -1, 0
        while True:  # the last messages may still be in flight through the broker
            count, first, last = await client.request(sink, Echo(0))
            if count >= expected or still > 40:  # complete, or nothing new for 2 s: some were shed
                break
            still = still + 1 if count == seen else 0
            seen = count
            await asyncio.sleep(0.05)
    events.close()
    shed = (await sup.status()).broker.shed - shed_before
    for ident in [*ids, sink]:
        await sup.ctl.call(KillRequest(ident))
    return {
        "msgs_per_s": round((count - 1) / (last - first)),
        "messages": count,
        "lost": expected - count,
        "shed": shed,
    }


async def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument("--rtt-samples", type=int, default=5000)
    p.add_argument("--messages", type=int, default=256_000, help="messages per throughput run")
    p.add_argument("--rtt-only", action="store_true", help="measure the round trips only (a short run)")
    args = p.parse_args()
    root = short_tempdir("sb-bench-bus-")
    sup = SupervisorProcess(root, config_text=CONFIG)
    await sup.start()
    client = BusClient("bench", sup.endpoints.bus, hwm=100_000)
    client.start()
    try:
        raw = await raw_rtt(root, args.rtt_samples)
        brk = await broker_rtt(sup, client, args.rtt_samples)
        flows: dict[str, dict[str, float]] = {k: {"msgs_per_s": 0} for k in ("1", "8", "64")}
        raw_rate = 0.0
        if not args.rtt_only:
            for senders in (1, 8, 64):
                flows[str(senders)] = await broker_throughput(sup, client, senders, args.messages)
            raw_rate = raw_throughput(root, args.messages)
    finally:
        await client.close()
        await sup.stop()
        shutil.rmtree(root, ignore_errors=True)
    result = {
        "broker": {
            "rtt_p50_us": round(percentile(brk, 50), 1),
            "rtt_p99_us": round(percentile(brk, 99), 1),
            "msgs_per_s": flows["8"]["msgs_per_s"],
            "senders": flows,
        },
        "raw": {
            "rtt_p50_us": round(percentile(raw, 50), 1),
            "rtt_p99_us": round(percentile(raw, 99), 1),
            "msgs_per_s": round(raw_rate),
        },
        "machine": machine(),
    }
    result["ratio_rtt_p50"] = round(result["broker"]["rtt_p50_us"] / result["raw"]["rtt_p50_us"], 2)
    b, r = result["broker"], result["raw"]
    rows = [
        ("path", "rtt p50 µs", "rtt p99 µs", "msgs/s (1 / 8 / 64 senders)"),
        (
            "broker",
            f"{b['rtt_p50_us']}",
            f"{b['rtt_p99_us']}",
            " / ".join(f"{flows[k]['msgs_per_s']:,}" for k in ("1", "8", "64")),
        ),
        ("raw pyzmq", f"{r['rtt_p50_us']}", f"{r['rtt_p99_us']}", f"{r['msgs_per_s']:,} (1 sender)"),
        ("broker/raw", f"{result['ratio_rtt_p50']}x", "", ""),
    ]
    emit(result, rows, args.json)


if __name__ == "__main__":
    asyncio.run(main())
