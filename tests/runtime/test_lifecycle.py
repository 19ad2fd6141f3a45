"""Real supervisor, real zygote, real children: spawning, status, liveness, kills, restarts."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
from contextlib import redirect_stdout
from pathlib import Path

import msgspec
import psutil
import pytest

from spacebot.cli import ctl
from spacebot.ipc.messages import (
    KillReport,
    KillRequest,
    Kind,
    Notice,
    ProcessExited,
    ProcessHung,
    ProcState,
    SpawnSpec,
    StateChanged,
    TreeNode,
    TreeRequest,
)
from spacebot.testing import SupervisorProcess, fast_config

TK = "spacebot.procs.testkit"
WAIT = 60.0
"""Deadline of a wait for something certain to come (reached only when it does not)."""


def _state(event: object, ident: str, new: ProcState) -> bool:
    body = getattr(event, "body", None)
    return isinstance(body, StateChanged) and body.id == ident and body.new is new


async def test_fifty_children_ready_and_listed(supervisor: SupervisorProcess) -> None:
    spawned = await asyncio.gather(
        *(supervisor.spawn(f"{TK}:idle", id=f"worker:n{i}", task=f"idle #{i}") for i in range(50))
    )
    assert {s.state for s in spawned} <= {ProcState.READY, ProcState.IDLE}
    out = io.StringIO()
    with redirect_stdout(out):
        code = await asyncio.to_thread(
            ctl.main, ["--runtime-dir", str(supervisor.endpoints.dir), "status", "--json"]
        )
    assert code == 0
    status = json.loads(out.getvalue())
    rows = {p["id"]: p for p in status["processes"]}
    fields = {
        "id",
        "kind",
        "pid",
        "state",
        "uptime_s",
        "cpu_percent",
        "rss_mb",
        "uss_mb",
        "heartbeat_age_s",
        "progress_age_s",
        "parent",
        "task",
        "restarts",
        "exit_code",
        "frame_errors",
    }
    for i in range(50):
        row = rows[f"worker:n{i}"]
        assert fields <= set(row)
        assert row["state"] in ("ready", "idle")
        assert row["pid"] > 0 and psutil.pid_exists(row["pid"])
        assert row["rss_mb"] > 0
        assert row["parent"] == "supervisor"
        assert row["task"] == f"idle #{i}"
    assert rows["zygote"]["pid"] > 0
    # Every child is a fork of the zygote, not of the supervisor.
    zygote_pid = rows["zygote"]["pid"]
    assert all(psutil.Process(rows[f"worker:n{i}"]["pid"]).ppid() == zygote_pid for i in range(5))


async def test_sigkilled_child_is_detected_and_restarted(short_tmp: Path) -> None:
    # Heartbeats cannot run out during this test (1000 misses): an exit event can only come from
    # watching the process itself, not from its silence.
    sup = SupervisorProcess(short_tmp, config_text=fast_config(channel={"heartbeat_miss_limit": 1000}))
    await sup.start()
    try:
        assert sup.ctl is not None
        child = await sup.spawn(f"{TK}:idle", kind=Kind.CHANNEL, id="channel:victim")
        events = await sup.ctl.events("proc.channel.channel:victim.")
        os.kill(child.pid, signal.SIGKILL)
        seen = []
        async with asyncio.timeout(WAIT):
            while not isinstance((event := await events.next()).body, ProcessExited):
                seen.append(event.body)
        assert isinstance(event.body, ProcessExited)
        assert not [b for b in seen if isinstance(b, ProcessHung)], seen
        assert event.body.exit_code == -signal.SIGKILL
        assert event.body.restart_in == 0.0
        await events.wait_for(lambda e: _state(e, "channel:victim", ProcState.READY), timeout=WAIT)
        info = await sup.info("channel:victim")
        assert info.restarts == 1 and info.pid != child.pid
        events.close()
    finally:
        await sup.stop()


async def test_crash_loop_ends_failed(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    events = await supervisor.ctl.events("proc.channel.channel:crashy.")
    await supervisor.ctl.call(
        SpawnSpec(
            kind=Kind.CHANNEL,
            target=f"{TK}:crash_on_start",
            id="channel:crashy",
            wait_ready=False,
            restart="always",
        )
    )
    failed = await events.wait_for(lambda e: _state(e, "channel:crashy", ProcState.FAILED), timeout=WAIT)
    assert isinstance(failed.body, StateChanged)
    assert "flapping" in failed.body.reason
    info = await supervisor.info("channel:crashy")
    assert info.state is ProcState.FAILED
    # 2 immediate restarts, then 2 back-offs (FAST_CONFIG), then failed.
    assert info.restarts == 4
    assert info.exit_code == 3
    events.close()


async def test_blocked_event_loop_is_killed(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    events = await supervisor.ctl.events("proc.worker.worker:wedged.")
    child = await supervisor.spawn(
        f"{TK}:block_loop", id="worker:wedged", restart="never", args={"after": 0.3}
    )
    hung = await events.wait_for(lambda e: isinstance(e.body, ProcessHung), timeout=WAIT)
    assert isinstance(hung.body, ProcessHung) and hung.body.budget == "heartbeat"
    exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=WAIT)
    assert isinstance(exited.body, ProcessExited)
    # time.sleep blocks the loop, so the SIGTERM handler never runs: only SIGKILL ends it.
    assert exited.body.exit_code == -signal.SIGKILL
    assert not psutil.pid_exists(child.pid) or psutil.Process(child.pid).status() == psutil.STATUS_ZOMBIE
    events.close()


async def test_kill_ignoring_sigterm_escalates(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    child = await supervisor.spawn(f"{TK}:ignore_sigterm", id="worker:stubborn")
    report = msgspec.convert(
        await supervisor.ctl.call(KillRequest("worker:stubborn", grace=0.5), timeout=WAIT), KillReport
    )
    # SIGTERM was ignored, so only the escalation after the grace can have ended it.
    assert [(k.pid, k.how) for k in report.killed] == [(child.pid, "sigkill")]
    assert report.survivors == []
    info = await supervisor.info("worker:stubborn")
    assert info.state in (ProcState.STOPPING, ProcState.EXITED)


async def test_kill_takes_the_whole_tree(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    events = await supervisor.ctl.events("testkit.")
    child = await supervisor.spawn(
        f"{TK}:grandchildren", kind=Kind.CHANNEL, id="channel:tree", args={"count": 3, "own_group": 1}
    )
    note = await events.wait_for(lambda e: isinstance(e.body, Notice), timeout=WAIT)
    assert isinstance(note.body, Notice)
    pids = note.body.fields["pids"]
    tree = msgspec.convert(await supervisor.ctl.call(TreeRequest()), TreeNode)
    node = next(n for n in tree.children if n.id == "channel:tree")
    assert {c.pid for c in node.children} == set(pids)
    report = msgspec.convert(
        await supervisor.ctl.call(KillRequest("channel:tree", grace=2.0), timeout=WAIT), KillReport
    )
    assert {k.pid for k in report.killed} == {child.pid, *pids}
    assert report.survivors == []
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, WAIT)
    assert [p for p in alive if p.status() != psutil.STATUS_ZOMBIE] == []
    events.close()


async def test_child_spawns_a_child(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    events = await supervisor.ctl.events("testkit.")
    await supervisor.spawn(f"{TK}:spawner", kind=Kind.CHANNEL, id="channel:parent", args={"count": 2})
    note = await events.wait_for(lambda e: isinstance(e.body, Notice), timeout=WAIT)
    assert isinstance(note.body, Notice)
    ids = note.body.fields["ids"]
    assert len(ids) == 2
    for ident in ids:
        info = await supervisor.info(ident)
        assert info.parent == "channel:parent" and info.kind == "branch"
    # Killing the parent takes its logical children too.
    report = msgspec.convert(
        await supervisor.ctl.call(KillRequest("channel:parent"), timeout=WAIT), KillReport
    )
    assert {k.name for k in report.killed} >= {"channel:parent", *ids}
    events.close()


async def test_sigkill_supervisor_leaves_no_orphans(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    events = await supervisor.ctl.events("testkit.")
    kids = [await supervisor.spawn(f"{TK}:idle", id=f"worker:o{i}") for i in range(3)]
    kids.append(await supervisor.spawn(f"{TK}:block_loop", id="worker:wedge", args={"after": 0.0}))
    kids.append(
        await supervisor.spawn(
            f"{TK}:grandchildren", kind=Kind.CHANNEL, id="channel:g", args={"count": 2, "own_group": 1}
        )
    )
    note = await events.wait_for(lambda e: isinstance(e.body, Notice), timeout=WAIT)
    assert isinstance(note.body, Notice)
    status = await supervisor.status()
    zygote = next(p.pid for p in status.processes if p.id == "zygote")
    pids = [k.pid for k in kids] + list(note.body.fields["pids"]) + [zygote]
    procs = [psutil.Process(p) for p in pids]
    events.close()
    os.kill(supervisor.pid, signal.SIGKILL)
    _gone, alive = await asyncio.to_thread(psutil.wait_procs, procs, WAIT)
    alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert alive == [], f"survived the supervisor: {[(p.pid, p.cmdline()) for p in alive]}"


async def test_graceful_shutdown_stops_everything_in_order(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    kinds = [Kind.MEMORY, Kind.WORKER, Kind.CHANNEL, Kind.GATEWAY]
    kids = [await supervisor.spawn(f"{TK}:idle", kind=k, id=f"{k.value}:x") for k in kinds]
    events = await supervisor.ctl.events("proc.")
    assert supervisor.proc is not None
    supervisor.proc.send_signal(signal.SIGTERM)
    order = []
    while len(order) < len(kinds):
        event = await events.wait_for(lambda e: isinstance(e.body, StateChanged), timeout=WAIT)
        assert isinstance(event.body, StateChanged)
        if event.body.new is ProcState.EXITED:
            order.append(event.body.kind)
    assert order.index("gateway") < order.index("channel") < order.index("worker") < order.index("memory")
    code = await asyncio.to_thread(supervisor.proc.wait, 15)
    assert code == 0
    for kid in kids:
        assert not psutil.pid_exists(kid.pid) or psutil.Process(kid.pid).status() == psutil.STATUS_ZOMBIE
    events.close()


@pytest.mark.parametrize(
    ("budget", "override", "target", "code"),
    [
        ("progress", {"progress_limit": 0.5}, "busy_without_progress", None),
        ("wall_clock", {"wall_clock_limit": 0.6}, "ignore_sigterm", -signal.SIGKILL),
    ],
)
async def test_budget_kills(
    short_tmp: Path, budget: str, override: dict[str, object], target: str, code: int | None
) -> None:
    sup = SupervisorProcess(short_tmp, config_text=fast_config(worker={**override, "restart": "never"}))
    await sup.start()
    try:
        assert sup.ctl is not None
        events = await sup.ctl.events("proc.worker.")
        await sup.spawn(f"{TK}:{target}", id="worker:over")
        hung = await events.wait_for(lambda e: isinstance(e.body, ProcessHung), timeout=WAIT)
        assert isinstance(hung.body, ProcessHung) and hung.body.budget == budget
        exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=WAIT)
        assert isinstance(exited.body, ProcessExited) and exited.body.restart_in is None
        if code is not None:
            assert exited.body.exit_code == code
        events.close()
    finally:
        await sup.stop()


async def test_cold_spawn_mode(short_tmp: Path) -> None:
    sup = SupervisorProcess(
        short_tmp, config_text=fast_config(sections={"supervisor": {"spawn_mode": "cold"}})
    )
    await sup.start()
    try:
        assert sup.ctl is not None
        child = await sup.spawn(f"{TK}:idle", kind=Kind.CHANNEL, id="channel:cold")
        status = await sup.status()
        assert "zygote" not in {p.id for p in status.processes}
        assert psutil.Process(child.pid).ppid() == sup.pid
        events = await sup.ctl.events("proc.channel.channel:cold.")
        os.kill(child.pid, signal.SIGKILL)
        exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=WAIT)
        assert isinstance(exited.body, ProcessExited) and exited.body.exit_code == -signal.SIGKILL
        await events.wait_for(lambda e: _state(e, "channel:cold", ProcState.READY), timeout=WAIT)
        events.close()
    finally:
        await sup.stop()


async def test_zygote_crash_kills_no_child(supervisor: SupervisorProcess) -> None:
    assert supervisor.ctl is not None
    child = await supervisor.spawn(f"{TK}:idle", kind=Kind.CHANNEL, id="channel:survivor")
    old_zygote = next(p.pid for p in (await supervisor.status()).processes if p.id == "zygote")
    os.kill(old_zygote, signal.SIGKILL)
    # A spawn during the zygote's replacement waits for the new one instead of failing.
    await supervisor.spawn(f"{TK}:idle", id="worker:after-zygote")
    rows = {p.id: p for p in (await supervisor.status()).processes}
    assert rows["zygote"].pid != old_zygote and rows["zygote"].state is ProcState.READY
    assert psutil.Process(child.pid).is_running()
    # The orphaned child now belongs to the supervisor (subreaper): its death is still seen, with its code.
    assert psutil.Process(child.pid).ppid() == supervisor.pid
    events = await supervisor.ctl.events("proc.channel.channel:survivor.")
    os.kill(child.pid, signal.SIGKILL)
    exited = await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=WAIT)
    assert isinstance(exited.body, ProcessExited) and exited.body.exit_code == -signal.SIGKILL
    events.close()


async def test_unregistered_target_is_refused_before_the_zygote(supervisor: SupervisorProcess) -> None:
    from spacebot.ipc.bus import BusError
    from spacebot.ipc.messages import ErrorCode

    with pytest.raises(BusError) as err:
        await supervisor.spawn("spacebot.no_such_module:entry", id="worker:ghost")
    assert err.value.code is ErrorCode.BAD_REQUEST
    assert "spacebot.no_such_module" in err.value.message
    # Nothing was started or recorded, and the zygote keeps forking.
    assert "worker:ghost" not in {p.id for p in (await supervisor.status()).processes}
    await supervisor.spawn(f"{TK}:idle", id="worker:fine")
