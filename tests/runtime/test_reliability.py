"""Deterministic reproductions of the ways an acknowledged message used to go unanswered.

Each test builds the exact window (a zygote still importing, a process connected but loading,
a supervisor killed after the acknowledgement) and waits on events, never on timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import psutil
import pytest

from spacebot.ipc.bus import BusClient
from spacebot.ipc.messages import (
    Echo,
    ErrorCode,
    Kind,
    Notice,
    ProcessExited,
    ProcState,
    StateChanged,
)
from spacebot.ipc.replies import BusError, retry_transient
from spacebot.llm.fake import FakeLLM
from spacebot.llm.fake.rules import FakeToolCall, Fault
from spacebot.testing import ChatSystem, SupervisorProcess, fast_config

TK = "spacebot.procs.testkit"


def _state(ident: str, new: ProcState):  # type: ignore[no-untyped-def]
    def match(event: object) -> bool:
        body = getattr(event, "body", None)
        return isinstance(body, StateChanged) and body.id == ident and body.new is new

    return match


async def test_a_process_still_loading_answers_not_ready_and_callers_retry(
    supervisor: SupervisorProcess, short_tmp: Path
) -> None:
    """F3: connected but without a handler yet means "retry", never the final ``unsupported``."""
    gate = short_tmp / "gate"
    await supervisor.spawn(f"{TK}:gated_start", id="worker:loading", args={"gate": str(gate)})
    bus = BusClient("tester", supervisor.endpoints.bus)
    bus.start()
    try:
        with pytest.raises(BusError) as err:
            await bus.request("worker:loading", Echo(1), timeout=10.0)
        assert err.value.code is ErrorCode.NOT_READY
        events = await bus.subscribe("testkit.worker:loading.")
        # A caller that retries transient errors gets its answer once loading is done.
        answer = asyncio.ensure_future(
            retry_transient(
                lambda: bus.request("worker:loading", Echo(7), timeout=10.0), attempts=200, what="echo"
            )
        )
        gate.touch()
        await events.wait_for(lambda e: isinstance(e.body, Notice) and e.body.text == "serving", timeout=30)
        assert (await asyncio.wait_for(answer, 60))["seq"] == 7
        events.close()
    finally:
        await bus.close()


async def test_core_process_killed_while_the_zygote_is_replaced_comes_back(short_tmp: Path) -> None:
    """F1 + F4: a new zygote that is still importing cannot fork; a core process killed in that
    window waits for it (no fork time-out, no ``failed``), and the record is never left
    ``stopping`` or checked against the dead incarnation."""
    gate = short_tmp / "zygote-gate"
    config = fast_config(
        preload_first=["spacebot.procs.testkit_import_gate"],
        # Without a spare: this is the window a spare zygote closes (see test_spare_zygote.py).
        sections={"supervisor": {"fork_timeout": 1.0, "spare_zygote": False}},
    )
    sup = SupervisorProcess(short_tmp, config_text=config, env={"SPACEBOT_TEST_IMPORT_GATE": str(gate)})
    await sup.start()
    try:
        assert sup.ctl is not None
        first = await sup.spawn(f"{TK}:idle", kind=Kind.GATEWAY, id="gateway:front")
        old_zygote = next(p.pid for p in (await sup.status()).processes if p.id == "zygote")
        events = await sup.ctl.events("proc.gateway.gateway:front.")
        gate.touch()  # the next zygote will hang in its imports until the gate goes
        os.kill(old_zygote, signal.SIGKILL)
        # Wait until the replacement zygote runs (importing, blocked on the gate).
        async with asyncio.timeout(60):
            while True:
                kids = [
                    p
                    for p in psutil.Process(sup.pid).children()
                    if p.pid != old_zygote and "spacebot.supervisor.zygote" in " ".join(p.cmdline())
                ]
                if kids:
                    break
                await asyncio.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=30)
        await events.wait_for(lambda e: isinstance(e.body, Notice) and e.body.text == "restart", timeout=30)
        # Hold the window open past the fork time-out: the restart must wait, not time out. The
        # property is about a budget, so this one wait is on the clock: the restart began before
        # the notice, so the supervisor has been waiting at least this long (3x fork_timeout) when
        # the state is read; a slow machine can only make this check weaker, never fail it.
        await asyncio.sleep(3.0)
        info = await sup.info("gateway:front")
        assert info.state is not ProcState.FAILED and info.state is not ProcState.STOPPING, info
        gate.unlink()
        await events.wait_for(_state("gateway:front", ProcState.READY), timeout=60)
        info = await sup.info("gateway:front")
        assert info.state in (ProcState.READY, ProcState.IDLE) and info.pid not in (0, first.pid)
        assert psutil.Process(info.pid).is_running()
        events.close()
    finally:
        gate.unlink(missing_ok=True)
        await sup.stop()


async def test_front_door_keeps_restarting_past_the_flapping_guard(supervisor: SupervisorProcess) -> None:
    """F5: a gateway killed again and again backs off but is never declared failed; status says it is down."""
    assert supervisor.ctl is not None
    spawned = await supervisor.spawn(f"{TK}:idle", kind=Kind.GATEWAY, id="gateway:door")
    events = await supervisor.ctl.events("proc.gateway.gateway:door.")
    pid = spawned.pid
    # FAST_CONFIG: 2 immediate restarts, then 2 back-offs, then a worker would be failed.
    for _ in range(6):
        os.kill(pid, signal.SIGKILL)
        await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=30)
        down = await events.wait_for(
            lambda e: isinstance(e.body, Notice) and e.body.text == "down", timeout=30
        )
        assert isinstance(down.body, Notice) and "restart_in" in down.body.fields
        await events.wait_for(_state("gateway:door", ProcState.READY), timeout=30)
        pid = (await supervisor.info("gateway:door")).pid
    info = await supervisor.info("gateway:door")
    assert info.state is not ProcState.FAILED and info.restarts == 6
    events.close()


def _reply(content: str) -> list[FakeToolCall]:
    return [FakeToolCall("reply", {"content": content})]


async def test_acked_message_is_answered_after_a_supervisor_kill_without_new_messages(
    short_tmp: Path,
) -> None:
    """F2: the whole service dies after the acknowledgement; the next start answers it unprompted."""
    async with FakeLLM(token_latency=0.01) as fake:
        fake.add(name="stuck", fault=Fault(kind="hang"), times=1)
        fake.add(name="answer", tool_calls=_reply("here is your answer"))
        system = ChatSystem(short_tmp, fake)
        async with system:
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            ack = await ana.send(conv, "what is the plan?")
            assert ack["type"] == "ack"
            async with asyncio.timeout(60):
                while fake.hits("stuck") < 1:  # noqa: ASYNC110 - state of the in-process fake
                    await asyncio.sleep(0.02)
            old = system.sup.proc
            assert old is not None
            tree = [p.pid for p in psutil.Process(old.pid).children(recursive=True)]
            old.kill()
            await asyncio.to_thread(old.wait)
            procs = []
            for pid in tree:
                with contextlib.suppress(psutil.NoSuchProcess):
                    procs.append(psutil.Process(pid))
            _, alive = await asyncio.to_thread(psutil.wait_procs, procs, 30)
            assert not alive, f"survivors of the killed supervisor: {alive}"
            await system.start()  # same home, same runtime dir; nobody writes anything
            bob = await system.client("Bob")
            async with asyncio.timeout(90):  # read the stored history until the answer is in it
                while True:
                    history = await bob.open(conv)
                    if any(m["role"] == "assistant" for m in history["messages"]):
                        break
                    await asyncio.sleep(0.2)
            roles = [(m["role"], m["text"]) for m in history["messages"]]
            assert roles == [("user", "what is the plan?"), ("assistant", "here is your answer")]
            assert fake.hits("answer") == 1


async def test_graceful_stop_needs_no_sigkill_and_prints_no_traceback(short_tmp: Path) -> None:
    """F6: idle conversations, the gateway and memory all exit on SIGTERM by themselves."""
    async with FakeLLM() as fake:
        fake.add(tool_calls=_reply("ok"))
        system = ChatSystem(short_tmp, fake)
        async with system:
            ana = await system.client("Ana")
            for _ in range(5):
                conv = await ana.create()
                await ana.open(conv)
                await ana.send(conv, "hello")
                await ana.wait_for(
                    lambda f, c=conv: (
                        f["type"] == "message"
                        and f["conversation"] == c
                        and f["message"]["role"] == "assistant"
                    ),
                    timeout=60,
                )
            code = await system.sup.stop(timeout=60)
            assert code == 0
            log = system.sup.log_file.read_text()
            assert "Traceback" not in log, log[-4000:]
            exits = [line for line in log.splitlines() if "→exited" in line]
            assert len(exits) >= 7, exits  # 5 conversations, the gateway, memory
            assert not [line for line in exits if "exit code 0" not in line], exits
