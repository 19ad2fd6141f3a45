"""Nothing that has to start waits for a zygote's imports it does not need: a warm spare takes over
the moment the forking zygote dies, and a (re)started service forks its memory process and gateway
before the zygote imports the model SDKs. The imports are held here for as long as a test needs by
an import gate."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from spacebot.config import SupervisorSection
from spacebot.ipc.messages import Kind, Notice, ProcessExited, ProcState, StateChanged
from spacebot.testing import SupervisorProcess, fast_config

TK = "spacebot.procs.testkit"


async def test_the_spare_takes_over_while_a_new_zygote_is_still_importing(short_tmp: Path) -> None:
    gate = short_tmp / "zygote-gate"
    config = fast_config(
        preload_first=["spacebot.procs.testkit_import_gate"],
        sections={"supervisor": {"spare_zygote": True}},
    )
    sup = SupervisorProcess(short_tmp, config_text=config, env={"SPACEBOT_TEST_IMPORT_GATE": str(gate)})
    await sup.start()
    try:
        assert sup.ctl is not None

        async def zygotes() -> dict[str, int]:
            return {p.id: p.pid for p in (await sup.status()).processes if p.kind == "zygote"}

        # The spare warms in the background after start-up and says so once it is up.
        spares = await sup.ctl.events("sys.zygote.")
        seen = await zygotes()
        if "zygote:spare" not in seen:
            await spares.wait_for(lambda e: isinstance(e.body, Notice) and e.body.text == "spare", timeout=60)
            seen = await zygotes()
        spares.close()
        active, spare = seen["zygote"], seen["zygote:spare"]
        first = await sup.spawn(f"{TK}:idle", kind=Kind.GATEWAY, id="gateway:front")
        events = await sup.ctl.events("proc.gateway.gateway:front.")
        gate.touch()  # any zygote started from now on hangs in its imports until the test ends
        os.kill(active, signal.SIGKILL)
        os.kill(first.pid, signal.SIGKILL)
        await events.wait_for(lambda e: isinstance(e.body, ProcessExited), timeout=30)
        ready = await events.wait_for(
            lambda e: isinstance(e.body, StateChanged) and e.body.new is ProcState.READY, timeout=60
        )
        assert isinstance(ready.body, StateChanged)
        # It was forked by the former spare, while the next spare is still held in its imports.
        info = await sup.info("gateway:front")
        assert info.pid not in (0, first.pid)
        assert psutil.Process(info.pid).ppid() == spare
        now = await zygotes()
        assert now["zygote"] == spare and "zygote:spare" not in now
        assert gate.exists()
        events.close()
    finally:
        gate.unlink(missing_ok=True)
        await sup.stop()


async def test_core_processes_start_before_the_model_sdks_are_imported(short_tmp: Path) -> None:
    """``preload`` (the model SDKs in production) is imported only after memory and the gateway
    were forked: with its import held, the service still comes up ready and serving."""
    gate = short_tmp / "zygote-gate"
    gate.touch()
    config = fast_config(
        ("main",),
        preload=["msgspec", "zmq", "spacebot.procs.testkit_import_gate"],
        preload_first=SupervisorSection().preload_first,
        memory={"ready_timeout": 60.0},
        sections={"webchat": {"port": 0}},
    )
    sup = SupervisorProcess(short_tmp, config_text=config, env={"SPACEBOT_TEST_IMPORT_GATE": str(gate)})
    await sup.start()
    try:
        states = {p.id: p.state for p in (await sup.status()).processes}
        assert states["memory:main"] in (ProcState.READY, ProcState.IDLE), states
        assert states["gateway:webchat"] in (ProcState.READY, ProcState.IDLE), states
        assert gate.exists()  # the zygote is still in its later imports
        gate.unlink()
        spawned = await sup.spawn(f"{TK}:idle", kind=Kind.WORKER, id="worker:after")
        assert psutil.Process(spawned.pid).is_running()
    finally:
        gate.unlink(missing_ok=True)
        await sup.stop()
