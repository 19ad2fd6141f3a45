"""A prompt-injected tool attacks what surrounds it; each probe runs the real sandbox on this kernel.

Every probe would succeed without the protection it checks (the controls in each test show it), and
a kernel without the Landlock ABI a protection needs fails the test naming that ABI: none skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from spacebot.config import DelegateSection
from spacebot.llm.types import ToolCall
from spacebot.tools import sandbox
from spacebot.tools.egress import EgressProxy, refusal
from spacebot.tools.errors import SandboxError
from spacebot.tools.sandbox import Limits, Network
from spacebot.tools.task_tools import Policy, TaskTools


def _need_abi(abi: int, what: str) -> None:
    if sandbox.landlock_abi() < abi:
        pytest.fail(
            f"missing protection: {what} needs Landlock ABI {abi}, kernel has {sandbox.landlock_abi()}"
        )


@pytest.fixture(autouse=True)
def native(monkeypatch: pytest.MonkeyPatch) -> None:
    if sandbox._native is None:
        pytest.fail("the native sandbox extension was not built (gcc and Python headers are needed)")
    monkeypatch.delenv("SPACEBOT_SANDBOX", raising=False)
    assert sandbox.isolated(), "the kernel has no Landlock: tools would run unconfined"


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture
def decoy() -> Iterator[subprocess.Popen[bytes]]:
    """A process outside the sandbox, standing in for the worker / supervisor."""
    proc = subprocess.Popen(["sleep", "1000"])
    yield proc
    proc.kill()
    proc.wait()


class Listener:
    """A loopback TCP service the tool must not reach; counts the connections it accepted."""

    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Listener:
        async def on_client(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.accepted += 1
            w.write(b"HTTP/1.0 200 OK\r\nContent-Length: 6\r\n\r\nSECRET")
            await w.drain()
            w.close()

        self.server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def proxy() -> AsyncIterator[EgressProxy]:
    egress = await EgressProxy().start()
    yield egress
    await egress.close()


async def sh(ws: Path, command: str, network: Network | None = None, **limits: object) -> sandbox.RunResult:
    return await sandbox.run(
        ["/bin/sh", "-c", command],
        cwd=ws,
        workspace=ws,
        network=network,
        limits=Limits(**limits),  # type: ignore[arg-type]
    )


def py(code: str) -> str:
    """A shell word running ``code`` with the system's python3 (inside the sandbox)."""
    return "python3 -c " + shlex.quote(textwrap.dedent(code))


# -- signals and abstract sockets (Landlock ABI 6) --------------------------------------------


async def test_a_tool_cannot_signal_its_worker_or_any_other_process(
    ws: Path, decoy: subprocess.Popen[bytes]
) -> None:
    _need_abi(sandbox.ABI_SCOPES, "signal scoping")
    r = await sh(
        ws,
        f"kill -0 $PPID; echo parent=$?; kill -9 {decoy.pid}; echo decoy=$?; "
        "sleep 1000 & kill -9 $!; echo own=$?",
    )
    assert "parent=1" in r.stdout and "decoy=1" in r.stdout, r
    assert r.stderr.count("Operation not permitted") == 2
    assert "own=0" in r.stdout  # its own processes it may still signal
    assert decoy.poll() is None


async def test_a_tool_cannot_reach_an_abstract_unix_socket(ws: Path) -> None:
    _need_abi(sandbox.ABI_SCOPES, "abstract unix socket scoping")
    name = f"spacebot-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind("\0" + name)
        server.listen()
        probe = py(f"""
            import socket
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(b"\\0{name}")
                print("CONNECTED")
            except OSError as e:
                print("refused", e.errno)
        """)
        r = await sh(ws, probe)
    assert r.stdout.strip() == "refused 1", r  # EPERM


# -- network (Landlock ABI 4) and the egress proxy --------------------------------------------


def _connect(port: int) -> str:
    return py(f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=10).close()
            print("CONNECTED")
        except OSError as e:
            print("refused", e.errno)
    """)


async def test_network_open_connects(ws: Path) -> None:
    async with Listener() as svc:
        r = await sh(ws, _connect(svc.port), Network("open"))
    assert r.stdout.strip() == "CONNECTED" and svc.accepted == 1, r


async def test_network_none_connects_nowhere_and_binds_nothing(ws: Path, proxy: EgressProxy) -> None:
    _need_abi(sandbox.ABI_NETWORK, "TCP network rules")
    bind = py("""
        import socket
        try:
            socket.socket().bind(("127.0.0.1", 0)); print("BOUND")
        except OSError as e:
            print("refused", e.errno)
    """)
    async with Listener() as svc:
        r = await sh(ws, f"{_connect(svc.port)}; {_connect(proxy.port)}; {bind}", Network("none"))
    assert r.stdout.split("\n")[:3] == ["refused 13"] * 3, r
    assert svc.accepted == 0


async def test_loopback_deny_refuses_loopback_directly_and_through_the_proxy(
    ws: Path, proxy: EgressProxy
) -> None:
    _need_abi(sandbox.ABI_NETWORK, "TCP network rules")
    via_proxy = py("""
        import os, urllib.request, urllib.error
        assert os.environ["HTTP_PROXY"].startswith("http://127.0.0.1:")
        for url in ("http://127.0.0.1:PORT/", "http://localhost:PORT/", "https://[::1]:PORT/",
                    "http://[::ffff:127.0.0.1]:PORT/", "http://0.0.0.0:PORT/"):
            try:
                print("FETCHED", urllib.request.urlopen(url, timeout=10).read())
            except urllib.error.HTTPError as e:
                print("http", e.code, e.read().decode().strip())
            except urllib.error.URLError as e:
                print("tunnel", e.reason)
    """)
    async with Listener() as svc:
        command = f"{_connect(svc.port)}; {via_proxy.replace('PORT', str(svc.port))}"
        r = await sh(ws, command, Network("loopback-deny", proxy.port))
    lines = r.stdout.strip().split("\n")
    assert lines[0] == "refused 13", r
    assert len(lines) == 6 and all("403" in line for line in lines[1:]), r
    assert "127.0.0.1 is a loopback address" in lines[1]
    assert svc.accepted == 0 and proxy.refused == 5


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "2a00:1450:4001:80b::200e",
        "::ffff:8.8.8.8",
    ],
)
def test_the_proxy_allows_public_addresses(address: str) -> None:
    assert refusal(address) is None


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared"),
        ("100.127.255.254", "shared"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", ""),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::7f00:1", "loopback"),
        ("2002:7f00:1::", "loopback"),
        ("2002:a00:1::", "private"),
        ("fec0::1", ""),
        ("198.18.0.1", ""),
        ("192.0.2.1", ""),
        ("not-an-ip", "not an IP"),
    ],
)
def test_the_proxy_refuses_every_non_public_address(address: str, why: str) -> None:
    reason = refusal(address)
    assert reason is not None and why in reason


# -- /dev, files, limits -----------------------------------------------------------------------


async def test_dev_is_reduced_to_a_few_devices(ws: Path) -> None:
    shm = Path("/dev/shm") / f"spacebot-escape-{os.getpid()}"
    r = await sh(
        ws,
        f"echo x > {shm}; echo shm=$?; echo y > /dev/null; echo null=$?; "
        "head -c 8 /dev/zero | wc -c; head -c 8 /dev/urandom | wc -c; ls /dev; echo ls=$?",
    )
    assert "shm=2" in r.stdout and "null=0" in r.stdout and "ls=2" in r.stdout, r
    assert r.stdout.count("8\n") == 2
    assert not shm.exists()


async def test_no_capabilities_even_when_the_service_runs_as_root(ws: Path) -> None:
    r = await sh(ws, "grep -E '^Cap(Prm|Eff|Bnd|Amb)' /proc/self/status")
    values = {line.split(":")[0]: line.split()[1] for line in r.stdout.strip().split("\n")}
    assert values == dict.fromkeys(("CapPrm", "CapEff", "CapBnd", "CapAmb"), "0" * 16), r


async def test_file_size_limit(ws: Path) -> None:
    r = await sh(ws, "head -c 100000 /dev/zero > big; echo rc=$?", file_size_bytes=4096)
    assert "rc=153" in r.stdout  # 128 + SIGXFSZ
    assert (ws / "big").stat().st_size == 4096


# -- deadlines and escapees --------------------------------------------------------------------


def _marked(marker: str, but: int = 0) -> list[psutil.Process]:
    """Live processes whose command line holds ``marker`` (other than pid ``but``)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.pid == but or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if marker in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


async def test_a_background_job_holding_the_output_cannot_stretch_the_call(ws: Path) -> None:
    marker = f"MARK-{os.getpid()}-bg"
    r = await sh(ws, f"setsid sh -c 'sleep 45; : {marker}' & sleep 30", timeout=2)
    # The call's processes are killed together; the shell is either killed itself or, on a loaded
    # machine, sees its `sleep` killed first and exits with 128 + SIGKILL.
    assert r.timed_out and (r.signal == 9 or r.exit_code == 128 + 9), r
    assert _marked(marker) == []


ADOPTING_RUNNER = """
import asyncio, json, sys
from pathlib import Path
from spacebot.tools import sandbox
from spacebot.tools.sandbox import Limits

async def main() -> None:
    sandbox.adopt_orphans()  # as a worker does
    ws = Path(sys.argv[1])
    limits = Limits(timeout=float(sys.argv[3]))
    r = await sandbox.run(["/bin/sh", "-c", sys.argv[2]], cwd=ws, workspace=ws, limits=limits)
    print(json.dumps({"timed_out": r.timed_out, "exit_code": r.exit_code, "stdout": r.stdout}), flush=True)
    sys.stdin.read()  # stay alive (still the escapees' subreaper) until the test has looked

asyncio.run(main())
"""


@pytest.mark.parametrize("ends", ["exits", "times out"])
async def test_a_setsid_escapee_does_not_outlive_its_call(ws: Path, ends: str) -> None:
    marker = f"MARK-{os.getpid()}-{ends.replace(' ', '')}"
    tail = "echo started" if ends == "exits" else "sleep 30"
    command = f"(setsid sh -c 'sleep 45; : {marker}' &); {tail}"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        ADOPTING_RUNNER,
        str(ws),
        command,
        "2",
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={k: v for k, v in os.environ.items() if k != "SPACEBOT_SANDBOX"},
    )
    assert proc.stdout is not None and proc.stdin is not None
    try:
        async with asyncio.timeout(60):
            result = json.loads(await proc.stdout.readline())
        assert result["timed_out"] == (ends == "times out"), result
        if ends == "exits":
            assert result["exit_code"] == 0 and result["stdout"] == "started\n"
        assert _marked(marker, but=proc.pid) == []  # the runner still lives: killed by the call's end
    finally:
        proc.stdin.close()
        await proc.wait()
        for leftover in _marked(marker, but=proc.pid):
            leftover.kill()


# -- policy: clamped timeouts, workspace cap, the fallback fails closed ------------------------


def _call(name: str, **args: object) -> ToolCall:
    return ToolCall(id="c1", name=name, arguments=args)


async def test_the_model_cannot_raise_the_timeout(ws: Path) -> None:
    tools = TaskTools(ws, Limits(timeout=2), lambda *_: None, Policy(timeout_max=2))
    text, error = await tools.call(_call("shell", command="sleep 30", timeout=3600))
    assert not error
    assert "timeout clamped to 2 s (asked 3600 s" in text and "timed out" in text


async def test_the_workspace_cap(ws: Path) -> None:
    cap = 256 * 1024
    tools = TaskTools(ws, Limits(file_size_bytes=2**30), lambda *_: None, Policy(workspace_max_bytes=cap))
    text, error = await tools.call(_call("file_write", path="a.txt", content="x" * (cap + 1)))
    assert error and "would pass the cap" in text and not (ws / "a.txt").exists()
    text, error = await tools.call(_call("shell", command="head -c 1000000 /dev/zero > big; echo rc=$?"))
    assert "rc=153" in text  # RLIMIT_FSIZE set to the room left
    assert (ws / "big").stat().st_size <= cap
    # Fill it up to the cap exactly with a second file: now over it, nothing may grow, rm works.
    (ws / "fill").write_bytes(b"y" * cap)
    text, error = await tools.call(_call("file_write", path="b.txt", content="z"))
    assert error and "Delete files" in text
    text, error = await tools.call(_call("shell", command="/bin/echo more >> big; echo rc=$?; rm fill big"))
    assert "Files cannot grow during this command" in text and "rc=153" in text
    assert "now over its cap" not in text  # rm brought it back under
    text, error = await tools.call(_call("file_write", path="b.txt", content="fits now"))
    assert not error, text


async def test_the_python_fallback_fails_closed(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPACEBOT_SANDBOX", "python")
    tools = TaskTools(ws, Limits(), lambda *_: None, Policy())
    text, error = await tools.call(_call("shell", command="echo ran > ran.txt"))
    assert error and "allow_unsandboxed = true" in text and not (ws / "ran.txt").exists()
    with pytest.raises(SandboxError, match="allow_unsandboxed"):
        await sandbox.run(["/bin/true"], cwd=ws, workspace=ws)
    assert "REFUSED" in sandbox.summary(DelegateSection())
    allowed = TaskTools(ws, Limits(), lambda *_: None, Policy(allow_unsandboxed=True))
    text, error = await allowed.call(_call("shell", command="echo ran"))
    assert not error and "ran" in text
    assert "WITHOUT isolation" in sandbox.summary(DelegateSection(allow_unsandboxed=True))


def test_status_summary_names_what_is_enforced() -> None:
    line = sandbox.summary(DelegateSection())
    assert line.startswith(f"native (landlock ABI {sandbox.landlock_abi()})")
    assert "TCP network=loopback-deny" in line and "signals and abstract sockets scoped" in line
    assert "UDP not restricted" in line


# -- PR_SET_DUMPABLE 0 in processes holding keys -----------------------------------------------

HOLDER = """
import os, runpy, sys, time
if sys.argv[1] == "protect":
    runpy.run_path(sys.argv[2])["forbid_dumps"]()
print(os.getpid(), flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("protect", [True, False])
def test_forbid_dumps_hides_the_environment_from_the_same_user(protect: bool) -> None:
    """The helper the supervisor, zygote and every child call at start-up; the control shows the
    same read succeeds without it. Both processes run as an unprivileged user (root reads all)."""
    import spacebot.supervisor.linux as linux_mod

    python = shutil.which("python3", path="/usr/bin:/bin")
    assert python is not None
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    holder = subprocess.Popen(
        [*drop, python, "-c", HOLDER, "protect" if protect else "plain", linux_mod.__file__],
        stdout=subprocess.PIPE,
        env={"PATH": "/usr/bin:/bin", "SPACEBOT_TEST_KEY": "sk-secret"},
    )
    try:
        assert holder.stdout is not None
        pid = int(holder.stdout.readline())
        read = subprocess.run(
            [*drop, "cat", f"/proc/{pid}/environ"], capture_output=True, timeout=30, check=False
        )
        if protect:
            assert read.returncode != 0 and b"sk-secret" not in read.stdout
            assert b"Permission denied" in read.stderr
        else:
            assert b"sk-secret" in read.stdout
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


# -- the real system: a scripted worker probes its supervisor, its own process and loopback ---------

WORKER = "You are a worker"


async def test_a_prompt_injected_worker_probes_everything(short_tmp: Path) -> None:
    from spacebot.llm.fake import FakeLLM
    from spacebot.llm.fake.rules import FakeToolCall
    from spacebot.testing import ChatSystem

    marker = f"MARK-{os.getpid()}-worker"
    async with FakeLLM() as fake, Listener() as svc:
        delegates: dict[str, object] = {"shell_timeout": 3.0}
        async with ChatSystem(
            short_tmp, fake, channel={"coalesce_debounce": 0.0}, sections_extra={"delegates": delegates}
        ) as system:
            sup = system.sup.pid
            probes = "; ".join(
                [
                    "kill -0 $PPID; echo kill-worker=$?",
                    f"kill -0 {sup}; echo kill-supervisor=$?",
                    "cat /proc/$PPID/environ >/dev/null; echo environ-worker=$?",
                    f"cat /proc/{sup}/environ >/dev/null; echo environ-supervisor=$?",
                    _connect(svc.port) + " | sed 's/^/direct /'",
                    py(f"""
                        import urllib.request, urllib.error
                        try:
                            urllib.request.urlopen("http://127.0.0.1:{svc.port}/", timeout=10)
                            print("proxy FETCHED")
                        except urllib.error.HTTPError as e:
                            print("proxy", e.code)
                    """),
                    f"echo x > /dev/shm/{marker}; echo shm=$?",
                ]
            )
            fake.add(system=WORKER, times=1, tool_calls=[FakeToolCall("shell", {"command": probes})])
            escapee = f"(setsid sh -c 'sleep 45; : {marker}' &); sleep 30"
            fake.add(
                system=WORKER,
                times=1,
                tool_calls=[FakeToolCall("shell", {"command": escapee, "timeout": 3600})],
            )
            fake.add(system=WORKER, text="probes done")
            fake.add(
                user=r"\(new\) Ana: probe",
                tool_calls=[
                    FakeToolCall("spawn_worker", {"task": "probe"}),
                    FakeToolCall("reply", {"content": "ok"}),
                ],
            )
            fake.add(
                user=r"finished \(success\): probes done",
                tool_calls=[FakeToolCall("reply", {"content": "done"})],
            )
            ana = await system.client("Ana")
            conv = await ana.create()
            await ana.open(conv)
            await ana.send(conv, "probe please")
            await ana.wait_for(
                lambda f: (
                    f["type"] == "message"
                    and f["message"]["role"] == "assistant"
                    and f["message"]["text"] == "done"
                ),
                timeout=60,
            )
            results = [
                content
                for r in fake.requests
                if WORKER in r.conversation.system
                for name, content in r.conversation.tool_results
                if name == "shell"
            ]
            first = next(c for c in results if "kill-worker=" in c)
            for line in (
                "kill-worker=1",
                "kill-supervisor=1",
                "environ-worker=1",
                "environ-supervisor=1",
                "direct refused 13",
                "proxy 403",
                "shm=2",
            ):
                assert line in first, first
            second = next(c for c in results if "clamped" in c)
            assert "timeout clamped to 3 s (asked 3600 s" in second and "timed out" in second
            assert _marked(marker) == []  # the setsid escapee died with its call
            assert svc.accepted == 0
            status = await system.sup.status()
            assert "TCP network=loopback-deny" in str(status.sandbox.get("summary"))
    assert not os.path.exists(f"/dev/shm/{marker}")  # noqa: ASYNC240 - one stat
