"""The supervisor: the process table, spawning through the zygote, liveness, kills and restarts.

Everything here runs on one asyncio loop. Signal handlers only enqueue a control request; the
command loop runs it through the same dispatch as ``spacebotctl``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import assert_never

import msgspec
import zmq.asyncio

from spacebot import config as config_mod
from spacebot import logs
from spacebot.config import Config
from spacebot.cortex import control as cortex_control
from spacebot.cron import control as cron_control
from spacebot.errors import ConfigError, SpacebotError
from spacebot.ipc import ids
from spacebot.ipc.broker import Broker
from spacebot.ipc.events import SYNC_PREFIX
from spacebot.ipc.messages import (
    ConfigReloaded,
    ControlRequest,
    CronRequest,
    Envelope,
    Err,
    ErrorCode,
    Heartbeat,
    HistoryRequest,
    KillRequest,
    Kind,
    Notice,
    Ok,
    PendingChannel,
    Ping,
    ProcessExited,
    ProcState,
    Ready,
    ReloadEffect,
    ReloadReport,
    ReloadRequest,
    SecretsGet,
    ShutdownRequest,
    Spawned,
    SpawnSpec,
    StatusRequest,
    SyncEvents,
    TranscriptPendingChannels,
    TreeRequest,
)
from spacebot.ipc.replies import Reply
from spacebot.paths import Endpoints, runtime_dir
from spacebot.runtime.child import EXIT_CONFIG
from spacebot.supervisor import coldstart, introspect, linux, reload, targets
from spacebot.supervisor.auth import Authenticator
from spacebot.supervisor.control import ControlServer
from spacebot.supervisor.enforce import Enforcer
from spacebot.supervisor.exits import ExitWatcher
from spacebot.supervisor.kill import kill_tree
from spacebot.supervisor.policy import decide, start_retry_delay
from spacebot.supervisor.resume import Resumer
from spacebot.supervisor.sdnotify import Notifier
from spacebot.supervisor.secrets_service import SecretsService, withdraw_master_key
from spacebot.supervisor.table import LIVE, ProcessRecord, ProcessTable
from spacebot.supervisor.wake import Waker
from spacebot.supervisor.zygote_link import ZygoteLink

log = logging.getLogger("spacebot.supervisor")

SHUTDOWN_ORDER = (Kind.GATEWAY, Kind.CHANNEL, Kind.BRANCH, Kind.WORKER, Kind.CORTEX, Kind.MEMORY)
"""Stop intake first, storage last."""


class Supervisor:
    """One per host; the systemd main process."""

    def __init__(self, config: Config, *, config_file: Path | None = None) -> None:
        self.config = config
        self.config_file = config_file
        self.endpoints = Endpoints(runtime_dir(config))
        self.started = time.monotonic()
        self.helpers: set[int] = set()
        """Pids of processes started beside the supervisor on purpose (``--fake-llm``'s model)."""
        self.notifier = Notifier()
        self.table = ProcessTable(self._publish)
        self.exits = ExitWatcher(
            self._finish_exit,
            is_ours=lambda pid: self.table.by_pid(pid) is not None,
            is_zygote=lambda pid: self.zygote.owns(pid),
        )
        self.zygote = ZygoteLink(
            self.exits.code_arrived,
            self._zygote_lost,
            lambda pid: self._publish("sys.zygote.spare", Notice("spare", {"pid": pid})),
        )
        self.enforcer = Enforcer(
            lambda: self.config,
            self.table,
            self.exits,
            self.notifier,
            lambda: self.broker,
            self._publish,
            self._summary,
            self.spawn_task,
            lambda pid: self.zygote.owns(pid) or pid in self.helpers,
        )
        self.waker = Waker(self)
        self.resumer = Resumer(
            self._pending_channels,
            self.waker.ensure,
            lambda ident: (r := self.table.get(ident)) is not None and r.state in LIVE,
            self._publish,
        )
        self._context: zmq.asyncio.Context | None = None
        self.broker: Broker | None = None
        self.control: ControlServer | None = None
        self.auth: Authenticator | None = None
        self._commands: asyncio.Queue[ControlRequest] = asyncio.Queue()
        self._state_waiters: dict[str, list[asyncio.Future[ProcState]]] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self.shutting_down = False
        self._sigints = 0
        self.ready = False
        self.secrets: SecretsService | None = None
        """The opened secrets store, answering ``SecretsGet`` (secrets_service.py); set by :meth:`run`."""

    # -- running -----------------------------------------------------------------------------

    async def run(self, *, announce: bool = True) -> int:
        """Serve until a shutdown request; returns the process exit code."""
        loop = asyncio.get_running_loop()
        # -- secrets: opened whole before anything starts; one that does not open stops the start,
        # and the master key variable is not inherited by the zygote or anything it forks --
        self.secrets = await SecretsService.open(Path(self.config.home), os.environ)
        withdraw_master_key(os.environ)
        log.info("secrets: %s", self.secrets.describe())
        self.endpoints.prepare()
        self._claim_sockets()
        self._context = zmq.asyncio.Context()
        rt = self.config.runtime
        # -- peer authentication (spacebot/supervisor/auth.py): before any socket binds --
        self.auth = Authenticator(self._context, self.endpoints.dir, self._publish)
        self.auth.start()
        self.broker = Broker(
            self._context,
            self.endpoints.bus,
            self.endpoints.events,
            max_frame=rt.max_frame_bytes,
            hwm=rt.hwm,
            auth=self.auth,
        )
        self.control = ControlServer(
            self._context,
            self.endpoints.ctl,
            self.control_request,
            max_frame=rt.max_frame_bytes,
            auth=self.auth,
        )
        self.broker.on_unroutable = self.waker.unroutable
        self.broker.bind()
        self.control.start()
        self.broker.start(self._on_bus)
        linux.set_child_subreaper()
        linux.forbid_dumps()  # it holds keys: no same-user /proc/<pid>/environ or ptrace
        loop.add_signal_handler(signal.SIGTERM, self._commands.put_nowait, ShutdownRequest())
        loop.add_signal_handler(signal.SIGHUP, self._commands.put_nowait, ReloadRequest())
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        if self.config.supervisor.spawn_mode == "zygote":
            hello = await self.zygote.start(self.config, warm_next=False)
            log.info("zygote up pid=%d preload_s=%.2f", hello.pid, hello.preload_s)
        self.spawn_task(self.enforcer.monitor(), "monitor")
        await self._start_core()
        if self.config.supervisor.spawn_mode == "zygote":
            self.zygote.preload_rest()  # the model SDKs, now that memory and the gateways run
            if self.config.supervisor.spare_zygote:
                self.zygote.warm_spare(self.config)
        if self.notifier.watchdog_interval:
            self.spawn_task(self._watchdog(self.notifier.watchdog_interval), "watchdog")
        self.ready = True
        for agent in self.config.agents:
            self.resumer.sweep_soon(agent)  # answers acknowledged before a restart
        if self.config.supervisor.resume_interval > 0:
            self.spawn_task(self._resume_every(self.config.supervisor.resume_interval), "resume")
        self.notifier.ready(self._summary())
        if announce:
            print(
                f"spacebot supervisor pid {os.getpid()} ready; control socket {self.endpoints.ctl_path}",
                flush=True,
            )
            self._announce()
        log.info(
            "ready ctl=%s bus=%s events=%s", self.endpoints.ctl, self.endpoints.bus, self.endpoints.events
        )
        while not self.shutting_down:
            request = await self._commands.get()
            assert self.control is not None
            result = await self.control.dispatch(request)
            if isinstance(result, Err):
                log.error("%s failed: %s", type(request).__name__, result.message)
        await self._finish()
        return 0

    def _announce(self) -> None:
        """The start banner: how to inspect it, the sandbox, where the web chat is, a missing model."""
        import shutil

        from spacebot.agent.defaults import NO_MODEL_HINT
        from spacebot.messaging.ports import listening_port
        from spacebot.tools.sandbox import summary as sandbox_summary

        # The command as it can be typed here: the venv's own path when it is not on PATH.
        ctl = Path(sys.executable).parent / "spacebotctl"
        found = shutil.which("spacebotctl")
        ctl_cmd = "spacebotctl" if found and Path(found).resolve() == ctl.resolve() else str(ctl)
        print(f"  try: {ctl_cmd} --runtime-dir {self.endpoints.dir} status", flush=True)
        print(f"  tool sandbox: {sandbox_summary(self.config.delegates)}", flush=True)
        wc = self.config.webchat
        if wc.enabled:
            gateway = self.table.get(ids.gateway("web"))
            port = wc.port or (listening_port(gateway.pid) if gateway is not None and gateway.pid else 0)
            if gateway is None or gateway.state not in (ProcState.READY, ProcState.IDLE, ProcState.BUSY):
                where = "not serving (see the log above)"
            else:
                where = f"http://{wc.host}:{port}/" if port else f"{wc.host}, a free port (see the log)"
            print(f"  web chat: {where} (agent {wc.agent})", flush=True)
        mc = self.config.metrics
        if mc.enabled:
            metrics = self.table.get(ids.gateway("metrics"))
            port = mc.port or (listening_port(metrics.pid) if metrics is not None and metrics.pid else 0)
            print(f"  metrics: http://{mc.host}:{port}/metrics", flush=True)
        ac = self.config.api
        if ac.enabled:
            api = self.table.get(ids.gateway("api"))
            port = ac.port or (listening_port(api.pid) if api is not None and api.pid else 0)
            print(f"  api: http://{ac.host}:{port}/api/ (docs/api.md)", flush=True)
        if not self.config.llm.providers:
            print(f"  model: none. {NO_MODEL_HINT}", flush=True)

    async def _start_core(self) -> None:
        """The processes every agent needs before the service counts as ready."""
        memory = [
            SpawnSpec(
                kind=Kind.MEMORY,
                target="spacebot.procs.memory:serve",
                id=ids.memory(agent),
                args={"agent": agent},
                task=f"memory of agent {agent}",
            )
            for agent in self.config.agents
        ]
        # Beside each memory: it waits for memory by itself (its requests retry while memory starts).
        memory += [
            SpawnSpec(
                kind=Kind.CORTEX,
                target="spacebot.procs.cortex:serve",
                id=ids.cortex(agent),
                args={"agent": agent},
                task=f"cortex of agent {agent}",
            )
            for agent in self.config.agents
        ]
        front = (
            (self.config.webchat.enabled, "web", "webchat", "web chat"),
            (self.config.metrics.enabled, "metrics", "metrics", "prometheus metrics"),
            (self.config.api.enabled, "api", "api", "operator HTTP API"),
        )
        gateways = [
            SpawnSpec(
                kind=Kind.GATEWAY,
                target="spacebot.procs.gateway:serve",
                id=ids.gateway(name),
                args={"adapter": adapter},
                task=task,
            )
            for enabled, name, adapter, task in front
            if enabled
        ]
        gateways += [
            SpawnSpec(
                kind=Kind.GATEWAY,
                target="spacebot.messaging.gateway_core:run",
                id=f"gateway:{platform}:{inst.name}",
                args={"platform": platform, "instance": inst.name},
                task=f"{platform} ({inst.name})",
            )
            for platform, inst in self.config.messaging.instances()
        ]
        # Started together: a gateway that comes up first retries memory for a few seconds (a
        # person's message is acknowledged once it is stored), which beats the gateway waiting
        # out memory's start-up before it even listens.
        core = memory + gateways
        results = await asyncio.gather(*(self.spawn(spec, parent="supervisor") for spec in core))
        for spec, result in zip(core, results, strict=True):
            if isinstance(result, Err):
                log.error("core process failed to start id=%s error=%s", spec.id, result.message)

    async def _pending_channels(self, dst: str, body: TranscriptPendingChannels) -> list[PendingChannel]:
        assert self.broker is not None
        return await self.broker.request(dst, body, returns=list[PendingChannel], timeout=10.0)

    async def _resume_every(self, interval: float) -> None:
        """The safety net: a message whose delivery gave up is still answered eventually."""
        while True:
            await asyncio.sleep(interval)
            for agent in self.config.agents:
                self.resumer.sweep_soon(agent)

    def _claim_sockets(self) -> None:
        """Refuse to start beside a live supervisor; remove sockets a dead one left behind."""
        ctl = self.endpoints.ctl_path
        if ctl.exists():
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(str(ctl))
            except OSError:
                pass  # nobody listens: stale
            else:
                raise SpacebotError(f"another supervisor is already running (control socket {ctl} answers)")
            finally:
                probe.close()
        for name in ("bus", "events", "ctl"):
            (self.endpoints.dir / name).unlink(missing_ok=True)

    def _on_sigint(self) -> None:
        self._sigints += 1
        if self._sigints > 1:
            log.warning("second SIGINT: exiting now")
            os._exit(130)
        self._commands.put_nowait(ShutdownRequest())

    def spawn_task(self, coro: object, name: str) -> asyncio.Task[object]:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(coro, name=name)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _publish(self, topic: str, body: object) -> None:
        if self.broker is not None:
            self.broker.publish(topic, body)  # type: ignore[arg-type]

    def _summary(self) -> str:
        counts: dict[str, int] = {}
        for rec in self.table:
            counts[rec.state.value] = counts.get(rec.state.value, 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"{len(self.table)} processes" + (f": {parts}" if parts else "")

    # -- control handlers ----------------------------------------------------------------------

    async def control_request(self, request: ControlRequest) -> Reply:
        """The named handler of each control request (``spacebotctl``, signals)."""
        match request:
            case StatusRequest():
                return await self._status(request)
            case TreeRequest():
                return await self._tree(request)
            case KillRequest():
                return await self.enforcer.kill_request(request)
            case ReloadRequest():
                return await self._reload(request)
            case ShutdownRequest():
                return await self._shutdown_request(request)
            case SpawnSpec():
                return await self.spawn(request, parent="supervisor")
            case SyncEvents():
                return self._publish_sync(request)
            case CronRequest():
                return await cron_control.forward(self.broker, self.config, request)
            case HistoryRequest():
                return await cortex_control.history(self.broker, self.config, request)
            case _:
                assert_never(request)

    async def _status(self, _req: StatusRequest) -> Reply:
        return Ok(await introspect.status(self))

    async def _tree(self, _req: TreeRequest) -> Reply:
        return Ok(await asyncio.to_thread(introspect.tree, self))

    def _publish_sync(self, req: SyncEvents) -> Reply:
        """Publish the topic a subscriber waits for to know it is connected (see ipc/events.py)."""
        self._publish(SYNC_PREFIX + req.nonce, Notice("sync"))
        return Ok()

    async def _shutdown_request(self, _req: ShutdownRequest) -> Reply:
        self.shutting_down = True
        self._commands.put_nowait(ShutdownRequest())  # wake the command loop if a client asked
        return Ok()

    async def _reload(self, _req: ReloadRequest) -> Reply:
        self.notifier.reloading()
        try:
            # A file the service started from must still be there: its disappearance is a mistake
            # to report, not a reason to fall back to the defaults.
            named_by = "the running service" if self.config.source else ""
            new = await asyncio.to_thread(config_mod.load, self.config_file, named_by=named_by)
        except ConfigError as exc:
            self._publish("sys.reload", ConfigReloaded(False, str(exc)))
            self.notifier.ready(self._summary())
            return Err(ErrorCode.CONFIG, str(exc))
        if self.secrets is not None:
            try:  # `spacebot secrets set` then a reload: processes started from now on see it
                await self.secrets.reopen()
            except SpacebotError as exc:
                log.error("secrets store not read again (the contents read before stay in use): %s", exc)
        changes = reload.diff(self.config, new)
        self.config = new
        logs.set_level(new.runtime.log_level)
        self._publish("sys.reload", ConfigReloaded(True, changes=changes))
        self.notifier.ready(self._summary())
        log.info("config reloaded source=%s changes=%s", new.source or "(defaults)", reload.describe(changes))
        for change in changes:
            if change.effect is ReloadEffect.NEEDS_RESTART:
                log.warning("config key %s changed; not in effect: %s", change.key, change.note)
        return Ok(ReloadReport(new.source, changes))

    # -- spawning ------------------------------------------------------------------------------

    async def spawn(self, spec: SpawnSpec, *, parent: str) -> Reply:
        """Start a process (from ``spacebotctl``, a child, or the supervisor's own core list)."""
        if self.shutting_down:
            return Err(ErrorCode.OVERLOADED, "supervisor is shutting down")
        if ":" not in spec.target:
            return Err(ErrorCode.BAD_REQUEST, f"target {spec.target!r} must be 'package.module:function'")
        try:  # registered process types and config-checked arguments only (supervisor/targets.py)
            targets.check(spec, self.config)
        except targets.SpawnRefused as exc:
            log.warning("spawn refused parent=%s target=%r reason=%s", parent, spec.target, exc)
            return Err(ErrorCode.BAD_REQUEST, str(exc))
        ident = spec.id or ids.process(spec.kind.value)
        spec = msgspec.structs.replace(spec, id=ident)
        existing = self.table.get(ident)
        if existing is not None and existing.state in LIVE:
            return Err(ErrorCode.BAD_REQUEST, f"process {ident!r} is already running (pid {existing.pid})")
        if existing is not None:
            self.table.remove(ident)
        rec = ProcessRecord(spec, parent, task=spec.task)
        self.table.add(rec)
        self._publish(f"proc.{rec.kind.value}.{ident}.spawn", Notice("spawn", {"parent": parent}))
        try:
            await self._start(rec)
        except SpacebotError as exc:
            self._start_failed(rec, exc)
            return Err(ErrorCode.SPAWN_FAILED, f"{ident!r}: {exc}")
        if spec.wait_ready:
            state = await self.wait_ready(rec, self.config.policy(rec.kind).ready_timeout + 1.0)
            if state not in (ProcState.READY, ProcState.BUSY, ProcState.IDLE):
                return Err(ErrorCode.SPAWN_FAILED, f"{ident!r} did not become ready (state {state.value})")
        return Ok(Spawned(ident, rec.pid, rec.state))

    async def _start(self, rec: ProcessRecord) -> None:
        if rec.state is not ProcState.STARTING:
            self.table.transition(rec, ProcState.STARTING, "restart")
        rec.early_ready = 0
        if self.config.supervisor.spawn_mode == "cold":
            # The spawn request goes down a pipe the new interpreter reads only once it runs.
            pid = await asyncio.to_thread(coldstart.spawn, rec.spec, self.config, str(self.endpoints.dir))
        else:
            pid = await self.zygote.spawn(rec.spec, self.config, str(self.endpoints.dir))
        self.table.attach_pid(rec, pid)
        if rec.early_ready == pid:
            self._mark_ready(rec)
        elif rec.early_ready:
            self._kill_stray(rec.id, rec.early_ready)
        log.info("spawned id=%s kind=%s pid=%d target=%s", rec.id, rec.kind.value, pid, rec.spec.target)
        self.exits.watch(pid)

    async def wait_ready(self, rec: ProcessRecord, timeout: float) -> ProcState:
        """Wait until ``rec`` leaves ``starting``; returns the state it reached."""
        return await self._wait_state(rec, timeout, until_not=frozenset({ProcState.STARTING}))

    async def wait_exit(self, rec: ProcessRecord, timeout: float) -> ProcState:
        """Wait until ``rec``'s exit has been recorded (its exit event is out)."""
        return await self._wait_state(rec, timeout, until_not=LIVE)

    async def _wait_state(
        self, rec: ProcessRecord, timeout: float, until_not: frozenset[ProcState]
    ) -> ProcState:
        """Wait for a state change (woken by :meth:`_wake`) until ``rec`` is outside ``until_not``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while rec.state in until_not and loop.time() < deadline:
            fut: asyncio.Future[ProcState] = loop.create_future()
            self._state_waiters.setdefault(rec.id, []).append(fut)
            try:
                async with asyncio.timeout_at(deadline):
                    await fut
            except TimeoutError:
                break
        return rec.state

    def _wake(self, rec: ProcessRecord) -> None:
        for fut in self._state_waiters.pop(rec.id, []):
            if not fut.done():
                fut.set_result(rec.state)

    # -- bus messages addressed to the supervisor ---------------------------------------------

    def _on_bus(self, env: Envelope) -> Reply | asyncio.Future[Reply] | None:
        body = env.body
        rec = self.table.get(env.src)
        match body:
            case Heartbeat():
                if rec is not None:
                    self._heartbeat(rec, body)
                return None
            case Ready():
                if rec is not None and rec.state is ProcState.STARTING and rec.pid == 0:
                    rec.early_ready = body.pid  # Ready overtook the zygote's fork report; see _start
                elif rec is not None and rec.pid and rec.pid != body.pid:
                    self._kill_stray(env.src, body.pid)
                elif rec is None or rec.pid != body.pid:
                    log.warning("ready from unknown process src=%s pid=%d", env.src, body.pid)
                else:
                    self._mark_ready(rec)
                return None
            case SpawnSpec():
                return asyncio.ensure_future(self.spawn(body, parent=env.src))
            # The HTTP API kills for the operator (token-checked there), as spacebotctl kill does.
            case KillRequest() if (
                env.src == ids.gateway("api") and rec is not None and rec.kind is Kind.GATEWAY
            ):
                return asyncio.ensure_future(self.enforcer.kill_request(body))
            case KillRequest():
                return asyncio.ensure_future(self.enforcer.kill_descendant(env.src, body))
            case SyncEvents():
                return self._publish_sync(body)
            case SecretsGet():
                if self.secrets is None:
                    return Err(ErrorCode.NOT_READY, "the supervisor has not opened the secrets store yet")
                kind = rec.kind if rec is not None else None
                return self.secrets.answer(self.config, kind, env.src, body.names)
            case Ping():
                return Ok(body.payload)
            # The HTTP API's /health and /status; the metrics process's starting point.
            case StatusRequest() if env.src in (ids.gateway("api"), ids.gateway("metrics")) or (
                env.src.startswith("cortex:") and rec is not None and rec.kind is Kind.CORTEX
            ):
                return asyncio.ensure_future(self._status(body))
            case _:
                return Err(ErrorCode.UNSUPPORTED, f"the supervisor does not handle {type(body).__name__}")

    def _kill_stray(self, ident: str, pid: int) -> None:
        """A process claims ``ident`` but is not its current incarnation (a zygote died between
        forking it and reporting it, and the spawn was resent): it must not live on unsupervised."""
        log.warning("killing stray process claiming id=%s pid=%d", ident, pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)  # children lead their own process group

    def _mark_ready(self, rec: ProcessRecord) -> None:
        rec.last_heartbeat = time.monotonic()
        rec.start_failures = 0
        if rec.state is ProcState.STARTING:
            self.table.transition(rec, ProcState.READY, "ready")
            self._wake(rec)
            if rec.kind is Kind.MEMORY and self.ready and not self.shutting_down:
                # Turns that failed while memory was away are retried by their channels; a
                # conversation whose process gave up or was never started is woken here.
                self.resumer.sweep_soon(str(rec.spec.args.get("agent", "")))
        if self.broker is not None and self.broker.holding(rec.id):
            self.broker.release(rec.id)  # messages that woke it, in order, before any newer one

    def _heartbeat(self, rec: ProcessRecord, hb: Heartbeat) -> None:
        rec.last_heartbeat = time.monotonic()
        rec.progress_at = hb.progress_at
        rec.task = hb.task
        c = hb.counters
        rec.frame_errors = c.malformed + c.oversized + c.unknown
        if rec.state in (ProcState.READY, ProcState.BUSY, ProcState.IDLE):
            self.table.transition(rec, ProcState.BUSY if hb.busy else ProcState.IDLE, "heartbeat")

    # -- exits ---------------------------------------------------------------------------------

    def _finish_exit(self, pid: int, code: int | None) -> None:
        rec = self.table.by_pid(pid)
        if rec is None or rec.pid != pid:
            return
        self.table.detach_pid(rec)
        rec.exit_code = code
        policy = self.config.policy(rec.kind)
        if rec.spec.restart:
            policy = msgspec.structs.replace(policy, restart=rec.spec.restart)
        if rec.stop_requested or self.shutting_down:
            self.table.transition(rec, ProcState.EXITED, f"stopped (exit code {code})")
            self._publish(f"proc.{rec.kind.value}.{rec.id}.exit", ProcessExited(rec.id, pid, code, None))
            self._wake(rec)
            return
        if code == EXIT_CONFIG and policy.restart != "never":
            # Credentials refused, a target that does not load: a restart meets the same wall. The
            # process said why in its task line (its last heartbeat, sent before it exited).
            why = rec.task if rec.task.startswith("failed: ") else "failed: configuration error (see the log)"
            self._publish(f"proc.{rec.kind.value}.{rec.id}.exit", ProcessExited(rec.id, pid, code, None))
            rec.task = why
            self.table.transition(rec, ProcState.FAILED, why.removeprefix("failed: "))
            self._wake(rec)
            return
        decision, rec.backoff_step = decide(
            policy, code, rec.restart_times, rec.backoff_step, time.monotonic()
        )
        restart_in = decision.delay if decision.action == "restart" else None
        self._publish(f"proc.{rec.kind.value}.{rec.id}.exit", ProcessExited(rec.id, pid, code, restart_in))
        if decision.action == "fail":
            self.table.transition(rec, ProcState.FAILED, decision.reason)
        else:
            self.table.transition(rec, ProcState.EXITED, decision.reason)
        self._wake(rec)
        if decision.action == "restart":
            if not policy.give_up:
                self._down(rec, f"exited with code {code} ({decision.reason})", decision.delay)
            rec.restart_handle = asyncio.get_running_loop().call_later(decision.delay, self._restart, rec)

    def _restart(self, rec: ProcessRecord) -> None:
        rec.restart_handle = None
        if self.shutting_down or rec.state is not ProcState.EXITED or self.table.get(rec.id) is not rec:
            return
        rec.restarts += 1
        rec.restart_times.append(time.monotonic())
        self._publish(
            f"proc.{rec.kind.value}.{rec.id}.restart", Notice("restart", {"restarts": rec.restarts})
        )

        async def go() -> None:
            try:
                await self._start(rec)
            except SpacebotError as exc:
                self._start_failed(rec, exc)

        self.spawn_task(go(), f"restart:{rec.id}")

    def _start_failed(self, rec: ProcessRecord, exc: Exception) -> None:
        """A start or restart did not produce a process. Most kinds end ``failed``; the ones the
        agent cannot work without (``give_up = false``: memory, gateways, cortex) are tried again
        with back-off for as long as the supervisor runs — a zygote window never leaves them down."""
        policy = self.config.policy(rec.kind)
        if policy.give_up or self.shutting_down or rec.stop_requested:
            self.table.transition(rec, ProcState.FAILED, f"start failed: {exc}")
            self._wake(rec)
            return
        rec.start_failures += 1
        delay = start_retry_delay(policy, rec.start_failures)
        self.table.transition(rec, ProcState.EXITED, f"start failed: {exc}")
        self._wake(rec)
        self._down(rec, f"start failed: {exc}", delay)
        rec.restart_handle = asyncio.get_running_loop().call_later(delay, self._restart, rec)

    def _down(self, rec: ProcessRecord, reason: str, restart_in: float) -> None:
        """Say loudly that a process the agent needs is not running, and when it comes back."""
        rec.task = f"DOWN: {reason[:160]}; restarting in {restart_in:g}s"
        log.error("down id=%s reason=%r restart_in=%.1fs", rec.id, reason, restart_in)
        self._publish(
            f"proc.{rec.kind.value}.{rec.id}.down",
            Notice("down", {"reason": reason, "restart_in": restart_in}),
        )

    def _zygote_lost(self) -> None:
        if self.shutting_down:
            return
        log.error("zygote lost; children keep running; starting a new zygote")

        async def again() -> None:
            if not self.zygote.spare_pid:  # the spare takes over at once; a cold start waits a bit
                await asyncio.sleep(1.0)
            try:
                await self.zygote.start(self.config)
            except SpacebotError as exc:
                log.error("zygote restart failed: %s", exc)
                self._zygote_lost()

        self.spawn_task(again(), "zygote-restart")

    async def _watchdog(self, interval: float) -> None:
        while True:
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    # -- shutdown ------------------------------------------------------------------------------

    async def _finish(self) -> None:
        self.notifier.stopping()
        log.info("shutting down processes=%d", len(self.table))
        try:
            async with asyncio.timeout(self.config.supervisor.shutdown_timeout):
                for kind in SHUTDOWN_ORDER:
                    stage = [r for r in self.table if r.kind is kind and r.pid and r.state in LIVE]
                    await asyncio.gather(*(self.enforcer.kill(r, reason="shutdown") for r in stage))
                    # The next stage starts only once this one's exits are recorded and published.
                    await asyncio.gather(*(self.wait_exit(r, 5.0) for r in stage))
        except TimeoutError:
            log.error("shutdown timed out; killing what is left")
            await asyncio.gather(
                *(
                    kill_tree(r.pid, sig=signal.SIGKILL, ident=r.id)
                    for r in self.table
                    if r.pid and r.state in LIVE
                )
            )
        await self.resumer.close()
        await self.zygote.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.control is not None:
            await self.control.close()
        if self.broker is not None:
            await self.broker.close()
        if self.auth is not None:
            self.auth.close()  # after the sockets it secured; removes ctl.key
        if self._context is not None:
            self._context.term()
        for name in ("bus", "events", "ctl"):
            (self.endpoints.dir / name).unlink(missing_ok=True)
        self.notifier.close()
        log.info("stopped")
