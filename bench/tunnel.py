"""Tunnel benchmark: the mux over a real WebSocket on loopback, next to plain TCP and
``ssh -R``, all measured in one run and reported as ratios (bench/results/tunnel.md).

    .venv/bin/python bench/tunnel.py [--mb 200] [--reps 5]
    .venv/bin/python bench/tunnel.py --latency-only 3    # just the latency, printed

The tunnel path is the product's: a TCP client connects to the control plane's listener,
which opens a mux stream over the WebSocket; the agent's ``on_open`` dials the target and
``pipe``s. The control-plane end and the agent end run in their own processes (as in
production), the driver (clients and the sink/echo servers) in this one. ``ssh -R`` gets
the same shape: sshd listens, the ssh client dials the target, three processes. The
tunnel ends run on the services' event loop (``agentkit.runner.run_loop``: uvloop).

If ``sshd`` is missing and we run as root, Debian's openssh-server/openssh-client are
installed with apt-get; otherwise the ssh lines say how to install them. Never a test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tunnel.md"
MiB = 1 << 20
CHUNK = os.urandom(MiB)
WS_MAX_SIZE = 1 << 20  # one tunnel frame per message: 64 KiB + 8 fits with room to spare


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the two tunnel ends (child processes) -------------------------------------------


async def _commands(handle: Any) -> None:
    """Serve one-line commands from the driver on stdin until it closes."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        reply = handle(line.strip())
        print(json.dumps(reply), flush=True)


def _report(session: Any, command: str = "report") -> dict[str, Any]:
    import tracemalloc

    if command == "trace":  # Python allocations from now on are counted
        tracemalloc.start()
    elif command == "untrace":
        tracemalloc.stop()
    stats = session.stats if session is not None else None
    return {
        "rss": rss_bytes(),
        "cpu": time.process_time(),
        "traced": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        "tasks": len(asyncio.all_tasks()),
        "streams_active": stats.streams_active if stats else 0,
        "streams_opened": stats.streams_opened if stats else 0,
        "streams_closed": stats.streams_closed if stats else 0,
        "blocked_streams": sum(  # streams with data to send and no credit
            1 for i in (session.stream_info() if session is not None else [])
            if i.send_credit == 0 and i.send_buffered
        ),
    }


async def run_controlplane(forwards: list[str]) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.typing import Subprotocol

    from agentkit.mux import SUBPROTOCOL, Multiplexer, Role, pipe

    session: Multiplexer | None = None
    connected = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def on_ws(conn: ServerConnection) -> None:
        nonlocal session
        session = Multiplexer(conn, Role.CONTROL_PLANE, name="cp")
        connected.set()
        await session.run()

    def listener(name: str) -> Any:
        async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None and session is not None
            tasks.add(task)
            try:
                stream = await session.open_stream({"forward": name})
                await pipe(stream, reader, writer)
            except Exception:
                writer.transport.abort()
            finally:
                tasks.discard(task)

        return accept

    servers = [await asyncio.start_server(listener(n), "127.0.0.1", 0) for n in forwards]
    ports = {n: s.sockets[0].getsockname()[1] for n, s in zip(forwards, servers, strict=True)}
    async with serve(
        on_ws, "127.0.0.1", 0, subprotocols=[Subprotocol(SUBPROTOCOL)], compression=None,
        max_size=WS_MAX_SIZE, ping_interval=None,
    ) as ws:
        print(json.dumps({"ws": ws.sockets[0].getsockname()[1], "listeners": ports}), flush=True)
        await _commands(lambda cmd: _report(session, cmd))
    for s in servers:
        s.close()


async def run_agent(url: str, targets: dict[str, tuple[str, int]]) -> None:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from agentkit.mux import SUBPROTOCOL, Multiplexer, OpenRequest, Role, pipe

    async def on_open(request: OpenRequest) -> None:
        target = targets.get(str(request.payload.get("forward")))
        if target is None:
            request.refuse("target not allowed")
            return
        reader, writer = await asyncio.open_connection(*target)
        with contextlib.suppress(Exception):
            await pipe(request.accept(), reader, writer)

    async with connect(
        url, subprotocols=[Subprotocol(SUBPROTOCOL)], compression=None,
        max_size=WS_MAX_SIZE, ping_interval=None,
    ) as ws:
        async with Multiplexer(ws, Role.AGENT, on_open=on_open, name="agent") as session:
            print(json.dumps({"connected": True}), flush=True)
            await _commands(lambda cmd: _report(session, cmd))


# --- the driver: servers and clients ----------------------------------------------


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Counts bytes until EOF, answers the count."""
    total = 0
    with contextlib.suppress(OSError):
        while data := await reader.read(1 << 18):
            total += len(data)
        writer.write(str(total).encode())
        await writer.drain()
    writer.close()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


STALLED: list[asyncio.StreamWriter] = []


async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never reads: the target of the stalled stream (aborted by the driver:
    a stream stalled both ways only notices that its client left when its target does)."""
    STALLED.append(writer)


async def bulk(port: int, mb: int) -> float:
    """MB/s of ``mb`` MiB to the sink behind ``port``, until its answer arrived."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for _ in range(mb):
        writer.write(CHUNK)
        await writer.drain()
    writer.write_eof()
    answer = await reader.read()
    elapsed = time.perf_counter() - start
    writer.close()
    if int(answer or b"0") != mb * MiB:
        raise RuntimeError(f"sink got {answer!r}, expected {mb * MiB}")
    return mb / elapsed


async def parallel(port: int, streams: int, mb_each: float) -> float:
    size = int(mb_each * MiB)

    async def one() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = 0
        while sent < size:
            n = min(len(CHUNK), size - sent)
            writer.write(CHUNK[:n])
            await writer.drain()
            sent += n
        writer.write_eof()
        answer = await reader.read()
        writer.close()
        if int(answer or b"0") != size:
            raise RuntimeError(f"sink got {answer!r}, expected {size}")

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(streams)))
    return streams * size / MiB / (time.perf_counter() - start)


async def latency(port: int, rounds: int) -> list[float]:
    """Round-trip times (seconds) of 1 KiB request/response through the echo at ``port``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    payload = os.urandom(1024)
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        writer.write(payload)
        await reader.readexactly(1024)
        times.append(time.perf_counter() - start)
    writer.close()
    return times[rounds // 10 :]  # drop the warm-up


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Child:
    """A tunnel end in its own process, driven by one-line commands."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, *args: str) -> Child:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, *args,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        return cls(proc)

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        if not raw:
            raise RuntimeError("tunnel process ended early")
        result: dict[str, Any] = json.loads(raw)
        return result

    async def ask(self, command: str = "report") -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.line()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                await asyncio.wait_for(self.proc.wait(), 5)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


@contextlib.asynccontextmanager
async def tunnel(targets: dict[str, int]) -> AsyncIterator[tuple[dict[str, int], Child, Child]]:
    """Control-plane and agent processes; yields the listener port of every forward."""
    names = sorted(targets)
    cp = await Child.start("--controlplane", ",".join(names))
    agent: Child | None = None
    try:
        ready = await cp.line()
        spec = ",".join(f"{n}=127.0.0.1:{p}" for n, p in targets.items())
        agent = await Child.start("--agent", f"ws://127.0.0.1:{ready['ws']}/tunnel", spec)
        await agent.line()
        yield ready["listeners"], cp, agent
    finally:
        if agent is not None:
            await agent.stop()
        await cp.stop()


# --- ssh -R -------------------------------------------------------------------------


def ensure_openssh() -> str | None:
    """None when ssh and sshd are usable, else why not."""
    if shutil.which("ssh") and Path("/usr/sbin/sshd").exists():
        return None
    if os.geteuid() != 0:
        return "sshd missing: run `sudo apt-get install -y openssh-server openssh-client`"
    print("installing openssh-server/openssh-client with apt-get ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                 "openssh-server", "openssh-client"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return f"apt-get failed: {done.stderr.strip()[-300:]}"
    return None if Path("/usr/sbin/sshd").exists() else "sshd still missing after apt-get"


def _ssh_files(d: Path) -> tuple[int, str]:
    """Throwaway host and user keys and an sshd_config in ``d``: (sshd port, user)."""
    for name in ("host", "user"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)],
                       check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    sshd_port = free_port()
    user = os.environ.get("USER") or subprocess.run(
        ["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
    (d / "sshd_config").write_text(
        f"Port {sshd_port}\nListenAddress 127.0.0.1\nHostKey {d / 'host'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nPidFile {d / 'sshd.pid'}\n"
        "UsePAM no\nStrictModes no\nPasswordAuthentication no\nPermitRootLogin yes\n"
        "AllowTcpForwarding yes\nGatewayPorts no\nLoginGraceTime 20\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    return sshd_port, user


def _spawn(cmd: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def ssh_reverse(target_ports: list[int]) -> AsyncIterator[list[int]]:
    """sshd on a free 127.0.0.1 port with throwaway keys, and ``ssh -R`` to each of
    ``target_ports``; yields the ports sshd listens on for them. Everything stops on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-ssh-") as tmp:
        d = Path(tmp)
        sshd_port, user = _ssh_files(d)
        fwd_ports = [free_port() for _ in target_ports]
        remotes = []
        for fwd, target in zip(fwd_ports, target_ports, strict=True):
            remotes += ["-R", f"127.0.0.1:{fwd}:127.0.0.1:{target}"]
        sshd = _spawn(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")])
        ssh: subprocess.Popen[bytes] | None = None
        try:
            await wait_port(sshd_port)
            ssh = _spawn(
                ["ssh", "-N", "-i", str(d / "user"), "-p", str(sshd_port),
                 "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                 "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR",
                 *remotes, f"{user}@127.0.0.1"]
            )
            for fwd in fwd_ports:
                await wait_port(fwd)
            yield fwd_ports
        finally:
            _stop(ssh)
            _stop(sshd)


async def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


# --- the run ------------------------------------------------------------------------


async def measure(mb: int, reps: int, idle_streams: int) -> tuple[list[str], dict[str, float]]:
    servers = {
        "sink": await asyncio.start_server(sink, "127.0.0.1", 0),
        "echo": await asyncio.start_server(echo, "127.0.0.1", 0),
        "stall": await asyncio.start_server(stall, "127.0.0.1", 0),
    }
    ports = {n: s.sockets[0].getsockname()[1] for n, s in servers.items()}
    out: dict[str, float] = {}
    notes: list[str] = []
    async with tunnel(ports) as (listen, cp, agent), contextlib.AsyncExitStack() as stack:
        problem = ensure_openssh()
        fwd = ssh_echo = None
        if problem is None:
            fwd, ssh_echo = await stack.enter_async_context(
                ssh_reverse([ports["sink"], ports["echo"]]))
            await bulk(fwd, 16)  # warm-up: the first connection sets up the channel
        else:
            notes.append(f"ssh -R not measured: {problem}")
        # Every comparison is interleaved rep by rep, best of ``reps`` each: the box is
        # shared, and load swings must hit both sides of a ratio alike.
        runs: dict[str, list[float]] = {}

        def note(name: str, value: float) -> None:
            runs.setdefault(name, []).append(value)

        for _ in range(reps):
            note("tcp_MBps", await bulk(ports["sink"], mb))
            note("tunnel_MBps", await bulk(listen["sink"], mb))
            if fwd is not None:
                note("ssh_R_MBps", await bulk(fwd, mb))
            note("parallel_100_MBps", await parallel(listen["sink"], 100, mb / 100))
            note("isolation_alone_MBps", await bulk(listen["sink"], mb))
            note("isolation_with_stalled_MBps", await beside_a_stalled_stream(listen, mb, cp))
        out.update({name: max(values) for name, values in runs.items()})
        for name, num, den in (
            ("paired_ratio_vs_ssh_R", "tunnel_MBps", "ssh_R_MBps"),
            ("paired_ratio_parallel", "parallel_100_MBps", "tunnel_MBps"),
            ("paired_ratio_isolation", "isolation_with_stalled_MBps", "isolation_alone_MBps"),
        ):
            if num in runs and den in runs:
                pairs = zip(runs[num], runs[den], strict=True)
                out[name] = statistics.median(x / y for x, y in pairs)
        out["one_stream_MBps"] = out["tunnel_MBps"]
        notes.append("all runs (MB/s): " + "; ".join(
            f"{name} {' '.join(f'{v:.0f}' for v in values)}" for name, values in runs.items()))

        # latency: 1 KiB request/response through the echo, direct and through the tunnel
        direct: list[float] = []
        through: list[float] = []
        via_ssh: list[float] = []
        cpu = 0.0
        for _ in range(2):
            direct += await latency(ports["echo"], 1000)
            before = (await cp.ask())["cpu"] + (await agent.ask())["cpu"]
            through += await latency(listen["echo"], 1000)
            cpu += (await cp.ask())["cpu"] + (await agent.ask())["cpu"] - before
            if ssh_echo is not None:
                via_ssh += await latency(ssh_echo, 1000)
        out["tunnel_cpu_ms"] = cpu / 2000 * 1e3
        for q, name in ((0.5, "p50"), (0.99, "p99")):
            out[f"direct_{name}_ms"] = pct(direct, q) * 1e3
            out[f"tunnel_{name}_ms"] = pct(through, q) * 1e3
            out[f"added_{name}_ms"] = out[f"tunnel_{name}_ms"] - out[f"direct_{name}_ms"]
            if via_ssh:
                out[f"ssh_added_{name}_ms"] = pct(via_ssh, q) * 1e3 - out[f"direct_{name}_ms"]

        # memory per idle open stream: both tunnel ends' RSS growth for idle streams
        await wait_idle(cp, agent)
        before = [await cp.ask("trace"), await agent.ask("trace")]
        conns = []
        for _ in range(idle_streams):
            conns.append(await asyncio.open_connection("127.0.0.1", listen["echo"]))
        await wait_streams(agent, before[1]["streams_active"] + idle_streams)
        after = [await cp.ask("report"), await agent.ask("report")]
        grown = sum(a["traced"] - b["traced"] for a, b in zip(after, before, strict=True))
        out["idle_stream_bytes"] = grown / idle_streams
        rss = sum(a["rss"] - b["rss"] for a, b in zip(after, before, strict=True))
        out["idle_stream_rss_bytes"] = rss / idle_streams
        await cp.ask("untrace")
        await agent.ask("untrace")
        out["idle_streams"] = idle_streams
        for _, w in conns:
            w.close()
        await wait_idle(cp, agent)
        final = [await cp.ask(), await agent.ask()]
        out["streams_opened_cp"] = final[0]["streams_opened"]
        out["streams_closed_cp"] = final[0]["streams_closed"]
    for s in servers.values():
        s.close()
    return notes, out


async def latency_only(rounds: int) -> None:
    """The latency part alone (for quick before/after comparisons while tuning)."""
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    cpu = 0.0
    async with tunnel({"echo": port}) as (listen, cp, agent):
        direct: list[float] = []
        through: list[float] = []
        for _ in range(rounds):
            direct += await latency(port, 1000)
            before = (await cp.ask())["cpu"] + (await agent.ask())["cpu"]
            through += await latency(listen["echo"], 1000)
            cpu += (await cp.ask())["cpu"] + (await agent.ask())["cpu"] - before
    server.close()
    print(f"tunnel CPU per round trip (both ends): {cpu / rounds / 1000 * 1e3:.3f} ms")
    for q in (0.5, 0.99):
        d, t = pct(direct, q) * 1e3, pct(through, q) * 1e3
        print(f"p{q * 100:.0f}: direct {d:.3f} ms, tunnel {t:.3f} ms, added {t - d:.3f} ms")


async def beside_a_stalled_stream(listen: dict[str, int], mb: int, cp: Child) -> float:
    """Bulk MB/s while another stream through the same tunnel is stalled: its client keeps
    writing, its target never reads, so it holds its whole window and blocks its producer."""
    _, stalled_writer = await asyncio.open_connection("127.0.0.1", listen["stall"])

    async def flood() -> None:
        with contextlib.suppress(OSError):
            while True:
                stalled_writer.write(CHUNK)
                await stalled_writer.drain()

    flooder = asyncio.create_task(flood())
    try:
        deadline = time.monotonic() + 30
        while not (await cp.ask())["blocked_streams"]:  # it filled every buffer on the way
            if time.monotonic() > deadline:
                raise RuntimeError("the stalled stream never ran out of credit")
            await asyncio.sleep(0.05)
        return await bulk(listen["sink"], mb)
    finally:
        flooder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flooder
        stalled_writer.transport.abort()
        for w in STALLED:  # the stall ends only when its target goes (see ``stall``)
            w.transport.abort()
        STALLED.clear()


async def wait_idle(cp: Child, agent: Child, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (await cp.ask())["streams_active"] == 0 and (await agent.ask())["streams_active"] == 0:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError("streams did not close")


async def wait_streams(child: Child, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while (await child.ask())["streams_active"] < count:
        if time.monotonic() > deadline:
            raise RuntimeError("idle streams did not open")
        await asyncio.sleep(0.1)


def render(notes: list[str], r: dict[str, float], mb: int, reps: int) -> str:
    def ratio(a: str, b: str) -> str:
        return f"{r[a] / r[b]:.2f}" if r.get(b) else "n/a"

    lines = [
        "# Tunnel benchmark",
        "",
        f"Generated by `bench/tunnel.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" ({os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}); {mb} MiB per bulk"
        f" transfer, best of {reps}. Loopback only; the control-plane end and the agent end"
        " of the tunnel run in their own processes, as do sshd and ssh.",
        "",
        "Path: TCP client -> control-plane listener -> mux stream over a websockets"
        " connection (compression off) -> agent `pipe` -> TCP sink. `ssh -R`: TCP client ->"
        " sshd's forward port -> ssh client -> TCP sink.",
        "",
        "## Results",
        "",
        "```",
        f"tcp_loopback_MBps: {r['tcp_MBps']:.0f}",
        f"tunnel_MBps: {r['tunnel_MBps']:.0f}",
        f"ssh_R_MBps: {r['ssh_R_MBps']:.0f}" if "ssh_R_MBps" in r else "ssh_R_MBps: n/a",
        f"ratio_vs_tcp: {ratio('tunnel_MBps', 'tcp_MBps')}",
        f"ratio_vs_ssh_R: {ratio('tunnel_MBps', 'ssh_R_MBps')}",
        f"latency_1KiB_direct_p50_ms: {r['direct_p50_ms']:.3f}",
        f"latency_1KiB_direct_p99_ms: {r['direct_p99_ms']:.3f}",
        f"latency_1KiB_tunnel_p50_ms: {r['tunnel_p50_ms']:.3f}",
        f"latency_1KiB_tunnel_p99_ms: {r['tunnel_p99_ms']:.3f}",
        f"latency_added_p50_ms: {r['added_p50_ms']:.3f}",
        f"latency_added_p99_ms: {r['added_p99_ms']:.3f}",
        f"latency_tunnel_cpu_per_round_trip_ms: {r['tunnel_cpu_ms']:.3f}"
        "  (CPU time of both tunnel ends per 1 KiB round trip; less load-dependent)",
        *[f"latency_ssh_R_added_{q}_ms: {r[f'ssh_added_{q}_ms']:.3f}" for q in ("p50", "p99")
          if f"ssh_added_{q}_ms" in r],
        f"one_stream_MBps: {r['one_stream_MBps']:.0f}",
        f"parallel_100_streams_MBps: {r['parallel_100_MBps']:.0f}",
        f"ratio_parallel_vs_one: {ratio('parallel_100_MBps', 'one_stream_MBps')}",
        f"idle_stream_KiB: {r['idle_stream_bytes'] / 1024:.1f}"
        f"  (Python heap of both tunnel ends, tracemalloc, / {int(r['idle_streams'])} idle"
        f" streams; RSS growth says {r['idle_stream_rss_bytes'] / 1024:.1f})",
        f"isolation_alone_MBps: {r['isolation_alone_MBps']:.0f}",
        f"isolation_with_stalled_MBps: {r['isolation_with_stalled_MBps']:.0f}",
        f"isolation_ratio: {ratio('isolation_with_stalled_MBps', 'isolation_alone_MBps')}",
        "# the same ratios as medians of rep-by-rep pairs (less sensitive to load swings)",
        *[f"{k}_median: {r[k]:.2f}" for k in
          ("paired_ratio_vs_ssh_R", "paired_ratio_parallel", "paired_ratio_isolation") if k in r],
        f"streams_opened_closed_cp: {int(r['streams_opened_cp'])} / {int(r['streams_closed_cp'])}",
        "```",
        "",
        "Targets (issue 5): ratio_vs_ssh_R >= 0.5; added latency p50 < 0.3 ms, p99 < 1 ms;"
        " ratio_parallel_vs_one >= 0.9; idle stream < 32 KiB; isolation_ratio >= 0.9.",
    ]
    if notes:
        lines += ["", *[f"* {n}" for n in notes]]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MiB per bulk transfer")
    parser.add_argument("--reps", type=int, default=5, help="repetitions, best counts")
    parser.add_argument("--idle-streams", type=int, default=1000)
    parser.add_argument("--latency-only", type=int, metavar="ROUNDS", default=0,
                        help="only the latency, ROUNDS x 1000 round trips; prints, writes nothing")
    parser.add_argument("--controlplane", metavar="FORWARDS", help=argparse.SUPPRESS)
    parser.add_argument("--agent", nargs=2, metavar=("URL", "TARGETS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "libs" / "agentkit" / "src"))
    if args.controlplane or args.agent:
        profile = os.environ.get("BENCH_PROFILE")  # a directory: cProfile each tunnel end
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        from agentkit.runner import run_loop  # the services' event loop (uvloop)

        if args.controlplane:
            run_loop(run_controlplane(args.controlplane.split(",")))
        else:
            url, spec = args.agent
            targets = {}
            for item in spec.split(","):
                name, _, addr = item.partition("=")
                host, _, port = addr.rpartition(":")
                targets[name] = (host, int(port))
            run_loop(run_agent(url, targets))
        if profile:
            profiler.disable()
            profiler.dump_stats(Path(profile) / ("cp.prof" if args.controlplane else "agent.prof"))
        return 0
    started = time.monotonic()
    if args.latency_only:
        asyncio.run(latency_only(args.latency_only))
        return 0
    notes, results = asyncio.run(measure(args.mb, args.reps, args.idle_streams))
    text = render(notes, results, args.mb, args.reps)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text)
    print(text)
    print(f"({time.monotonic() - started:.0f} s; written to {RESULTS.relative_to(HERE.parent)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
