"""Tunnel benchmark: the mux over a real WebSocket on loopback, next to plain TCP and
``ssh -R``, all measured in one run and reported as ratios (bench/results/tunnel.md).

    .venv/bin/python bench/tunnel.py [--mb 200] [--reps 5]
    .venv/bin/python bench/tunnel.py --latency-only 3    # just the latency, printed
                       # (with the ends' CPU, user CPU and context switches per round trip;
                       # bench/mux_calls.py counts the Python calls per round trip)
    .venv/bin/python bench/tunnel.py --bulk-only 5       # one-stream MB/s, wss vs ssh, printed
    BENCH_PROFILE=DIR .venv/bin/python bench/tunnel.py --bulk-only 3   # + cProfile both ends
    BENCH_PYSPY=DIR .venv/bin/python bench/tunnel.py --bulk-only 3     # + py-spy --native
    BENCH_LOOP=asyncio .venv/bin/python bench/tunnel.py --bulk-only 3  # ends on the stdlib loop
    BENCH_WINDOW=1048576 .venv/bin/python bench/tunnel.py --bulk-only 3  # another stream window

The tunnel path is the product's: a TCP client connects to the control plane's listener,
which opens a mux stream over the WebSocket; the agent's ``on_open`` dials the target and
``pipe``s. The WebSocket is ``wss://`` as in production: the control-plane end serves it
with a throwaway CA (``pipeops_controlplane.tunnel.tls``) and the agent trusts that CA
the way the tunnel service does (``agentkit.tls.control_plane_context`` with
``pipeops.tls.ca_file``); a plain ``ws://`` tunnel is measured beside it for one stream.
The control-plane end and the agent end run in their own processes (as in production),
the driver (clients and the sink/echo servers) in this one. ``ssh -R`` gets the same
shape (sshd listens, the ssh client dials the target, three processes), twice: with
ssh's default cipher and with ``-c aes128-gcm@openssh.com`` (its fastest here). The
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
NOTES = HERE / "tunnel_notes.md"  # what each data-path change bought: appended to the results
MiB = 1 << 20
CHUNK = os.urandom(MiB)
WS_MAX_SIZE = 1 << 20  # one tunnel frame per message: 64 KiB + 8 fits with room to spare
# as the products' ends set them (the dev control plane's hub, pipeops_tunnel.connection)
WS_WRITE_LIMIT = 128 * 1024
WS_MAX_QUEUE = 32
# the per-stream window both ends grant (the product's default, `tunnel.window`, unless
# BENCH_WINDOW gives another: the bench then measures that setting)
WINDOW = int(os.environ.get("BENCH_WINDOW", 256 * 1024))
# The TLS 1.3 suite the tunnel ends offer first, so that the tunnel is compared with `ssh
# -c aes128-gcm@openssh.com` under the same cipher (like with like) and as a Go control
# plane negotiates it on hardware with AES instructions (Go's server puts AES-128-GCM
# first). Two Python (OpenSSL) ends left alone pick TLS_AES_256_GCM_SHA384, the first of
# OpenSSL's default list, ~25% slower here (`openssl speed -evp aes-256-gcm`).
# BENCH_TLS13_SUITES="" measures that default. Python 3.11 cannot set TLS 1.3 suites on an
# SSLContext, so it is OpenSSL's own configuration (OPENSSL_CONF) of the two ends.
TLS13_SUITES = os.environ.get(
    "BENCH_TLS13_SUITES",
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256")


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


def _user_cpu() -> float:
    """User CPU seconds of this process so far: our code (Python, TLS, libc) without the
    kernel's share (system calls, the loopback's delivery, waking the peer process)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_utime


def _switches() -> int:
    """Context switches of this process so far (voluntary and not, all threads)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


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
        "switches": _switches(),
        "cpu_user": _user_cpu(),
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


async def run_controlplane(forwards: list[str], tls_dir: str) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.typing import Subprotocol

    from agentkit.mux import SUBPROTOCOL, Multiplexer, MuxSettings, Role, pipe

    session: Multiplexer | None = None
    connected = asyncio.Event()
    tasks: set[asyncio.Task[Any]] = set()

    async def on_ws(conn: ServerConnection) -> None:
        nonlocal session
        session = Multiplexer(conn, Role.CONTROL_PLANE, name="cp",
                              settings=MuxSettings(window=WINDOW))
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
    context = ca_file = None
    if tls_dir:  # wss://, as the dev control plane serves it with --tunnel-tls-dir
        from pipeops_controlplane.tunnel.tls import write_tunnel_tls

        files = write_tunnel_tls(Path(tls_dir), ["127.0.0.1"])
        context, ca_file = files.server_context(), str(files.ca_cert)
    async with serve(
        on_ws, "127.0.0.1", 0, subprotocols=[Subprotocol(SUBPROTOCOL)], compression=None,
        max_size=WS_MAX_SIZE, max_queue=WS_MAX_QUEUE, write_limit=WS_WRITE_LIMIT,
        ping_interval=None, ssl=context,
    ) as ws:
        print(json.dumps({"ws": ws.sockets[0].getsockname()[1], "listeners": ports,
                          "ca_file": ca_file}), flush=True)
        await _commands(lambda cmd: _report(session, cmd))
    for s in servers:
        s.close()


async def run_agent(url: str, targets: dict[str, tuple[str, int]], ca_file: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.typing import Subprotocol

    from agentkit.config import TLSConfig
    from agentkit.mux import SUBPROTOCOL, Multiplexer, MuxSettings, OpenRequest, Role, pipe
    from agentkit.tls import control_plane_context

    async def on_open(request: OpenRequest) -> None:
        target = targets.get(str(request.payload.get("forward")))
        if target is None:
            request.refuse("target not allowed")
            return
        reader, writer = await asyncio.open_connection(*target)
        with contextlib.suppress(Exception):
            await pipe(request.accept(), reader, writer)

    # the tunnel service's own TLS setup (agentkit.tls), trusting the throwaway CA
    extra = {"ssl": control_plane_context(TLSConfig(ca_file=ca_file))} if ca_file else {}
    async with connect(
        url, subprotocols=[Subprotocol(SUBPROTOCOL)], compression=None,
        max_size=WS_MAX_SIZE, max_queue=WS_MAX_QUEUE, write_limit=WS_WRITE_LIMIT,
        ping_interval=None, **extra,  # type: ignore[arg-type]
    ) as ws:
        async with Multiplexer(ws, Role.AGENT, on_open=on_open, name="agent",
                               settings=MuxSettings(window=WINDOW)) as session:
            ssl_object = ws.transport.get_extra_info("ssl_object")
            cipher = ssl_object.cipher()[0] if ssl_object is not None else None
            print(json.dumps({"connected": True, "cipher": cipher}), flush=True)
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
    async def start(cls, *args: str, env: dict[str, str] | None = None) -> Child:
        argv = [sys.executable, __file__, *args]
        spy = os.environ.get("BENCH_PYSPY")  # a directory: py-spy (native frames) each end
        if spy:
            role = "cp" if args[0] == "--controlplane" else "agent"
            tag = "tls" if any(a.startswith("wss://") for a in args) or (
                "--tls-dir" in args and args[args.index("--tls-dir") + 1]) else "ws"
            argv = [str(Path(sys.executable).parent / "py-spy"), "record", "--native",
                    "--format", "raw", "--rate", "1000", "--output",
                    str(Path(spy) / f"{role}-{tag}.txt"), "--", *argv]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env={**os.environ, **(env or {})})
        return cls(proc)

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        while raw and not raw.startswith(b"{"):  # py-spy's own lines (BENCH_PYSPY)
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


CIPHERS: set[str] = set()  # what the wss:// tunnels of this run negotiated
SSH_WANTED = True  # False with --no-ssh


def openssl_conf(directory: Path) -> str:
    """An OpenSSL configuration offering TLS13_SUITES first, with Debian's defaults."""
    path = directory / "openssl.cnf"
    path.write_text(
        "openssl_conf = openssl_init\n[openssl_init]\nssl_conf = ssl_sect\n"
        "[ssl_sect]\nsystem_default = system_default_sect\n[system_default_sect]\n"
        f"MinProtocol = TLSv1.2\nCipherString = DEFAULT@SECLEVEL=2\n"
        f"Ciphersuites = {TLS13_SUITES}\n")
    return str(path)


@contextlib.asynccontextmanager
async def tunnel(targets: dict[str, int], tls: bool = True
                 ) -> AsyncIterator[tuple[dict[str, int], Child, Child]]:
    """Control-plane and agent processes (``wss://`` unless ``tls`` is False); yields the
    listener port of every forward."""
    names = sorted(targets)
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tls_dir:
        env = {"OPENSSL_CONF": openssl_conf(Path(tls_dir))} if tls and TLS13_SUITES else {}
        cp = await Child.start("--controlplane", ",".join(names),
                               "--tls-dir", tls_dir if tls else "", env=env)
        agent: Child | None = None
        try:
            ready = await cp.line()
            spec = ",".join(f"{n}=127.0.0.1:{p}" for n, p in targets.items())
            scheme = "wss" if tls else "ws"
            agent = await Child.start("--agent", f"{scheme}://127.0.0.1:{ready['ws']}/tunnel",
                                      spec, "--ca", ready["ca_file"] or "", env=env)
            connected = await agent.line()
            if tls:
                CIPHERS.add(connected["cipher"])
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
async def ssh_reverse(target_ports: list[int], cipher: str | None = None
                      ) -> AsyncIterator[list[int]]:
    """sshd on a free 127.0.0.1 port with throwaway keys, and ``ssh -R`` (with ``-c
    cipher`` if given, else ssh's default) to each of ``target_ports``; yields the ports
    sshd listens on for them. Everything stops on exit."""
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
                 *(["-c", cipher] if cipher else []),
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


SSH_FAST = "aes128-gcm@openssh.com"
RATIOS = (  # name, numerator, denominator: each reported as the median of rep-by-rep pairs
    ("ratio_wss_vs_ssh_R_aes128gcm", "tunnel_MBps", "ssh_R_aes128gcm_MBps"),
    ("ratio_wss_vs_ssh_R_default", "tunnel_MBps", "ssh_R_default_MBps"),
    ("ratio_ws_vs_ssh_R_aes128gcm", "tunnel_ws_MBps", "ssh_R_aes128gcm_MBps"),
    ("ratio_wss_vs_ws", "tunnel_MBps", "tunnel_ws_MBps"),
    ("ratio_wss_vs_tcp", "tunnel_MBps", "tcp_MBps"),
    ("ratio_ssh_aes128gcm_vs_default", "ssh_R_aes128gcm_MBps", "ssh_R_default_MBps"),
    ("ratio_parallel_vs_one", "parallel_100_MBps", "tunnel_MBps"),
    ("ratio_isolation", "isolation_with_stalled_MBps", "isolation_alone_MBps"),
)


def paired(runs: dict[str, list[float]], out: dict[str, float]) -> None:
    for name, num, den in RATIOS:
        if runs.get(num) and runs.get(den):
            pairs = zip(runs[num], runs[den], strict=True)
            out[name] = statistics.median(x / y for x, y in pairs)


@contextlib.asynccontextmanager
async def ssh_both(ports: dict[str, int], notes: list[str]
                   ) -> AsyncIterator[dict[str, tuple[int, int]]]:
    """``ssh -R`` with the default cipher and with aes128-gcm: name -> (sink, echo) port."""
    out: dict[str, tuple[int, int]] = {}
    problem = ensure_openssh() if SSH_WANTED else "left out (--no-ssh)"
    async with contextlib.AsyncExitStack() as stack:
        if problem is None:
            for name, cipher in (("default", None), ("aes128gcm", SSH_FAST)):
                fwd, echo_port = await stack.enter_async_context(
                    ssh_reverse([ports["sink"], ports["echo"]], cipher))
                await bulk(fwd, 16)  # warm-up: the first connection sets up the channel
                out[name] = (fwd, echo_port)
        else:
            notes.append(f"ssh -R not measured: {problem}")
        yield out


async def cpu_of(*ends: Child) -> float:
    """CPU seconds used so far by the tunnel ends (less load-dependent than MB/s)."""
    return float(sum([(await end.ask())["cpu"] for end in ends]))


async def bulk_only(mb: int, reps: int) -> None:
    """One stream, wss vs ws vs ssh (both ciphers), interleaved; prints the ratios."""
    sink_server = await asyncio.start_server(sink, "127.0.0.1", 0)
    echo_server = await asyncio.start_server(echo, "127.0.0.1", 0)
    ports = {"sink": sink_server.sockets[0].getsockname()[1],
             "echo": echo_server.sockets[0].getsockname()[1]}
    notes: list[str] = []
    runs: dict[str, list[float]] = {}
    async with tunnel(ports) as (wss, cp, agent), tunnel(ports, tls=False) as (ws, cp2, ag2), \
            ssh_both(ports, notes) as ssh:
        await bulk(wss["sink"], 16)
        await bulk(ws["sink"], 16)
        for _ in range(reps):
            for name, port, ends in (("tunnel", wss["sink"], (cp, agent)),
                                     ("tunnel_ws", ws["sink"], (cp2, ag2))):
                cpu = await cpu_of(*ends)
                runs.setdefault(f"{name}_MBps", []).append(await bulk(port, mb))
                runs.setdefault(f"{name}_cpu_ms_per_MiB", []).append(
                    (await cpu_of(*ends) - cpu) * 1e3 / mb)
            for name, (fwd, _) in ssh.items():
                runs.setdefault(f"ssh_R_{name}_MBps", []).append(await bulk(fwd, mb))
    sink_server.close()
    echo_server.close()
    out: dict[str, float] = {}
    paired(runs, out)
    for name, values in runs.items():
        print(f"{name}: {' '.join(f'{v:.1f}' for v in values)}")
    for name, value in out.items():
        print(f"{name}: {value:.2f}")
    for note in notes:
        print(note)
    print(f"wss:// negotiated {', '.join(sorted(CIPHERS))}")


async def measure(mb: int, reps: int, idle_streams: int) -> tuple[list[str], dict[str, float]]:
    servers = {
        "sink": await asyncio.start_server(sink, "127.0.0.1", 0),
        "echo": await asyncio.start_server(echo, "127.0.0.1", 0),
        "stall": await asyncio.start_server(stall, "127.0.0.1", 0),
    }
    ports = {n: s.sockets[0].getsockname()[1] for n, s in servers.items()}
    out: dict[str, float] = {}
    notes: list[str] = []
    async with tunnel(ports) as (listen, cp, agent), \
            tunnel(ports, tls=False) as (listen_ws, _, _), ssh_both(ports, notes) as ssh:
        await bulk(listen["sink"], 16)  # warm-up
        await bulk(listen_ws["sink"], 16)
        ssh_echo = ssh["aes128gcm"][1] if "aes128gcm" in ssh else None
        # Every comparison is interleaved rep by rep: the box is shared, and load swings
        # must hit both sides of a ratio alike. Ratios are medians of the pairs.
        runs: dict[str, list[float]] = {}

        def note(name: str, value: float) -> None:
            runs.setdefault(name, []).append(value)

        for _ in range(reps):
            note("tcp_MBps", await bulk(ports["sink"], mb))
            cpu = await cpu_of(cp, agent)
            note("tunnel_MBps", await bulk(listen["sink"], mb))
            note("tunnel_cpu_ms_per_MiB", (await cpu_of(cp, agent) - cpu) * 1e3 / mb)
            note("tunnel_ws_MBps", await bulk(listen_ws["sink"], mb))
            for name, (fwd, _) in ssh.items():
                note(f"ssh_R_{name}_MBps", await bulk(fwd, mb))
            note("parallel_100_MBps", await parallel(listen["sink"], 100, mb / 100))
            note("isolation_alone_MBps", await bulk(listen["sink"], mb))
            note("isolation_with_stalled_MBps", await beside_a_stalled_stream(listen, mb, cp))
        out.update({name: statistics.median(values) for name, values in runs.items()})
        paired(runs, out)
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
    sink_server = await asyncio.start_server(sink, "127.0.0.1", 0)  # ssh_both's warm-up
    port = server.sockets[0].getsockname()[1]
    cpu = user = 0.0
    switches = 0
    notes: list[str] = []
    async with tunnel({"echo": port}) as (listen, cp, agent), \
            ssh_both({"sink": sink_server.sockets[0].getsockname()[1], "echo": port},
                     notes) as ssh:
        direct: list[float] = []
        through: list[float] = []
        via_ssh: list[float] = []
        for _ in range(rounds):
            direct += await latency(port, 1000)
            if "aes128gcm" in ssh:
                via_ssh += await latency(ssh["aes128gcm"][1], 1000)
            before = [await cp.ask(), await agent.ask()]
            through += await latency(listen["echo"], 1000)
            after = [await cp.ask(), await agent.ask()]
            cpu += sum(a["cpu"] - b["cpu"] for a, b in zip(after, before, strict=True))
            user += sum(a["cpu_user"] - b["cpu_user"] for a, b in zip(after, before,
                                                                      strict=True))
            switches += sum(a["switches"] - b["switches"] for a, b in zip(after, before,
                                                                          strict=True))
    server.close()
    sink_server.close()
    print(f"tunnel CPU per round trip (both ends): {cpu / rounds / 1000 * 1e3:.3f} ms")
    print(f"of it user CPU (Python, TLS, libc; not the kernel): {user / rounds:.3f} ms")
    print(f"tunnel context switches per round trip (both ends): {switches / rounds / 1000:.2f}")
    for q in (0.5, 0.99):
        d, t = pct(direct, q) * 1e3, pct(through, q) * 1e3
        by_ssh = f", ssh -R aes128-gcm added {pct(via_ssh, q) * 1e3 - d:.3f} ms" if via_ssh else ""
        print(f"p{q * 100:.0f}: direct {d:.3f} ms, tunnel {t:.3f} ms, added {t - d:.3f} ms{by_ssh}")
    for note in notes:
        print(note)
    print(f"wss:// negotiated {', '.join(sorted(CIPHERS))}")


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


TARGETS = (  # issue 15: (key, comparison, bound, text)
    ("ratio_wss_vs_ssh_R_aes128gcm", ">=", 0.6, "one stream >= 0.6x of ssh -R aes128-gcm"),
    ("added_p50_ms", "<", 0.2, "1 KiB round trip added latency p50 < 0.2 ms"),
    ("added_p99_ms", "<", 1.0, "1 KiB round trip added latency p99 < 1 ms"),
    ("ratio_parallel_vs_one", ">=", 0.9, "100 streams >= 0.9x of one"),
    ("ratio_isolation", ">=", 0.9, "a stream beside a stalled one >= 0.9x of alone"),
)


def render(notes: list[str], r: dict[str, float], mb: int, reps: int, command: str) -> str:
    def met(key: str, op: str, bound: float) -> str:
        if key not in r:
            return "not measured"
        ok = r[key] >= bound if op == ">=" else r[key] < bound
        return f"{r[key]:.3f}: {'met' if ok else 'MISSED'}"

    lines = [
        "# Tunnel benchmark",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" ({os.cpu_count()} CPUs shared with other work, load {os.getloadavg()[0]:.1f});"
        f" {mb} MiB per bulk transfer, {reps} reps, interleaved. Loopback only; the"
        " control-plane end and the agent end of the tunnel run in their own processes, as"
        " do sshd and ssh. The machine is noisy: read the ratios (medians of rep-by-rep"
        " pairs), not the absolute figures.",
        "",
        "Path: TCP client -> control-plane listener -> mux stream over a websockets"
        " connection (compression off; `wss://` with a throwaway CA, the agent verifying it"
        f" through `agentkit.tls`; negotiated: {', '.join(sorted(CIPHERS)) or 'unknown'})"
        " -> agent `pipe` -> TCP sink. `ssh -R`: TCP client ->"
        " sshd's forward port -> ssh client -> TCP sink, once with ssh's default cipher"
        " (chacha20-poly1305) and once with `-c aes128-gcm@openssh.com`.",
        "",
        "## Targets (issue 15)",
        "",
        *[f"* {text}: {met(key, op, bound)}" for key, op, bound, text in TARGETS],
        "",
        "## Results",
        "",
        "```",
        "# ratios: medians of rep-by-rep pairs",
        *[f"{name}: {r[name]:.2f}" for name, _, _ in RATIOS if name in r],
        "# medians of the runs, MB/s",
        f"tunnel_cpu_ms_per_MiB: {r['tunnel_cpu_ms_per_MiB']:.2f}  (CPU of both wss tunnel"
        " ends per MiB of one stream: less load-dependent than MB/s)",
        *[f"{k}: {r[k]:.0f}" for k in (
            "tcp_MBps", "tunnel_MBps", "tunnel_ws_MBps", "ssh_R_default_MBps",
            "ssh_R_aes128gcm_MBps", "parallel_100_MBps", "isolation_alone_MBps",
            "isolation_with_stalled_MBps") if k in r],
        f"latency_1KiB_direct_p50_ms: {r['direct_p50_ms']:.3f}",
        f"latency_1KiB_direct_p99_ms: {r['direct_p99_ms']:.3f}",
        f"latency_1KiB_tunnel_p50_ms: {r['tunnel_p50_ms']:.3f}",
        f"latency_1KiB_tunnel_p99_ms: {r['tunnel_p99_ms']:.3f}",
        f"latency_added_p50_ms: {r['added_p50_ms']:.3f}",
        f"latency_added_p99_ms: {r['added_p99_ms']:.3f}",
        f"latency_tunnel_cpu_per_round_trip_ms: {r['tunnel_cpu_ms']:.3f}"
        "  (CPU time of both tunnel ends per 1 KiB round trip; less load-dependent)",
        *[f"latency_ssh_R_aes128gcm_added_{q}_ms: {r[f'ssh_added_{q}_ms']:.3f}"
          for q in ("p50", "p99") if f"ssh_added_{q}_ms" in r],
        f"idle_stream_KiB: {r['idle_stream_bytes'] / 1024:.1f}"
        f"  (Python heap of both tunnel ends, tracemalloc, / {int(r['idle_streams'])} idle"
        f" streams; RSS growth says {r['idle_stream_rss_bytes'] / 1024:.1f})",
        f"streams_opened_closed_cp: {int(r['streams_opened_cp'])} / {int(r['streams_closed_cp'])}",
        "```",
    ]
    if notes:
        lines += ["", *[f"* {n}" for n in notes]]
    if NOTES.exists():
        lines += ["", NOTES.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="MiB per bulk transfer")
    parser.add_argument("--reps", type=int, default=5, help="repetitions, best counts")
    parser.add_argument("--idle-streams", type=int, default=1000)
    parser.add_argument("--latency-only", type=int, metavar="ROUNDS", default=0,
                        help="only the latency, ROUNDS x 1000 round trips; prints, writes nothing")
    parser.add_argument("--bulk-only", type=int, metavar="REPS", default=0,
                        help="only one-stream MB/s (wss, ws, ssh both ciphers), REPS times;"
                             " prints paired ratios, writes nothing")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the results file")
    parser.add_argument("--no-ssh", action="store_true",
                        help="leave ssh -R out (its ratios are then 'not measured')")
    parser.add_argument("--controlplane", metavar="FORWARDS", help=argparse.SUPPRESS)
    parser.add_argument("--agent", nargs=2, metavar=("URL", "TARGETS"), help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", default="", help=argparse.SUPPRESS)
    parser.add_argument("--ca", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE.parent / "libs" / "agentkit" / "src"))
    if args.controlplane or args.agent:
        profile = os.environ.get("BENCH_PROFILE")  # a directory: cProfile each tunnel end
        if profile:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        from agentkit.runner import run_loop  # the services' event loop (uvloop)

        if os.environ.get("BENCH_LOOP") == "asyncio":  # the stdlib loop and its SSL, to compare
            run_loop = asyncio.run
        if args.controlplane:
            run_loop(run_controlplane(args.controlplane.split(","), args.tls_dir))
        else:
            url, spec = args.agent
            targets = {}
            for item in spec.split(","):
                name, _, addr = item.partition("=")
                host, _, port = addr.rpartition(":")
                targets[name] = (host, int(port))
            run_loop(run_agent(url, targets, args.ca))
        if profile:
            profiler.disable()
            tag = "tls" if (args.tls_dir or args.ca) else "ws"
            profiler.dump_stats(Path(profile) / (("cp" if args.controlplane else "agent")
                                                 + f"-{tag}.prof"))
        return 0
    started = time.monotonic()
    if args.no_ssh:
        global SSH_WANTED
        SSH_WANTED = False
    if args.latency_only:
        asyncio.run(latency_only(args.latency_only))
        return 0
    if args.bulk_only:
        asyncio.run(bulk_only(args.mb, args.bulk_only))
        return 0
    notes, results = asyncio.run(measure(args.mb, args.reps, args.idle_streams))
    command = " ".join([".venv/bin/python bench/tunnel.py", *sys.argv[1:]])
    text = render(notes, results, args.mb, args.reps, command)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    print(f"({time.monotonic() - started:.0f} s; written to {args.output})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
