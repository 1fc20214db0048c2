"""Helpers for the tunnel agent's tests: the real ``pipeops-tunnel`` process, driven by a
small control plane written here with the same ``agentkit.mux`` library.

* :class:`FakeControlPlane`: one real websockets server on 127.0.0.1 that answers
  ``GET /api/v1/tunnel/status`` (plain HTTP through ``process_request``) and accepts the
  tunnel WebSocket: it checks nothing itself, records everything (status requests,
  handshake headers, hello, control messages) and answers hello with hello_ack. Knobs:
  ``settings`` (its mux settings), ``ack_window`` (the window granted in hello_ack),
  ``ack_gate`` (hello_ack waits until the event is set), ``after_ack`` (called with the
  session right after hello_ack was queued, in the same reader callback).
* :class:`FakeGateway`: a real gRPC server implementing ``Gateway.CheckTarget`` from an
  allowlist (the gateway service itself does not answer it yet).
* :class:`TcpServer`: echo / source servers that count the connections they accepted.
* :class:`TunnelRun`: the tunnel process with its identity file, forwards and short
  intervals; async waits (the fake control plane runs in the test's event loop, so
  nothing here may block it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlparse

import grpc
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from agentkit.mux import SUBPROTOCOL, Multiplexer, MuxSettings, Role
from agentkit.mux import Stream as MuxStream
from agentkit.statefile import identity_file
from kubesim.testing import Kubesim
from pipeops.agent.v1 import gateway_pb2, gateway_pb2_grpc
from pipeops_gateway.servicer import dial_address
from tests.helpers import BIN, ServiceProcess, free_port, grpcurl

T = TypeVar("T")

CLUSTER_TOKEN = "cluster-token-never-printed-6f1d2a9b"
AGENT_ID = "agent-test-0001"
CLUSTER_ID = "2b7c2c1e-4d0a-4c55-9a0e-6c1f3c9d7e11"


async def until(condition: Callable[[], T | None], timeout: float = 15.0,
                what: str = "condition", interval: float = 0.02) -> T:
    """Poll ``condition`` without blocking the loop; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = condition()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


async def eventually(fetch: Callable[[], Awaitable[T]], predicate: Callable[[T], bool],
                     timeout: float = 15.0, what: str = "condition") -> T:
    """Fetch (async) until ``predicate`` holds for the value; return that value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}: {value!r}")
        await asyncio.sleep(0.05)


# --- the control plane's end -------------------------------------------------------------


class FakeControlPlane:
    def __init__(self, remote_ports: dict[str, int] | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.remote_ports = remote_ports or {}
        self.tls = tls  # serve https:// and wss:// with this server context
        self.status_override: tuple[int, Any] | None = None  # (code, JSON body) to answer
        self.reject_handshake: int | None = None  # HTTP status to refuse the upgrade with
        self.status_requests: list[dict[str, Any]] = []
        self.handshakes: list[Headers] = []
        self.sessions: list[Multiplexer] = []
        self.connections: list[ServerConnection] = []
        self.hellos: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.session_messages: list[list[dict[str, Any]]] = []  # per connection
        self.settings: MuxSettings | None = None
        self.ack_window: int | None = None
        self.ack_gate: asyncio.Event | None = None
        self.after_ack: Callable[[Multiplexer], None] | None = None
        self._server: Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def start(self) -> FakeControlPlane:
        self._server = await serve(self._handle, "127.0.0.1", 0,
                                   process_request=self._process_request,
                                   subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                                   compression=None, max_size=1 << 20, ping_interval=None,
                                   ssl=self.tls)
        return self

    async def stop(self) -> None:
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for session in self.sessions:
            await session.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def tunnel_url(self) -> str:
        return f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.port}/tunnel"

    # -- HTTP ---------------------------------------------------------------------------

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        url = urlparse(request.path)
        if url.path == "/api/v1/tunnel/status":
            self.status_requests.append({
                "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                "authorization": request.headers.get("Authorization", ""),
            })
            code, body = self.status_override or (200, {
                "status": "ready", "tunnel_url": self.tunnel_url,
                "forwards": [{"name": n, "remote_port": p} for n, p in self.remote_ports.items()],
            })
            response = conn.respond(HTTPStatus(code), json.dumps(body))
            response.headers["Content-Type"] = "application/json"
            return response
        if url.path == "/tunnel":
            self.handshakes.append(request.headers)
            if self.reject_handshake is not None:
                return conn.respond(HTTPStatus(self.reject_handshake), "refused\n")
            return None
        return conn.respond(HTTPStatus.NOT_FOUND, "not found\n")

    # -- the tunnel ---------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session: Multiplexer | None = None
        mine: list[dict[str, Any]] = []
        self.session_messages.append(mine)

        def ack(hello: dict[str, Any]) -> None:
            assert session is not None
            message: dict[str, Any] = {"type": "hello_ack", "forwards": [
                {"name": f["name"], "remote_port": self.remote_ports.get(f["name"], 0)}
                for f in hello.get("forwards", [])]}
            if self.ack_window is not None:
                message["window"] = self.ack_window
            session.send_control(message)
            if self.after_ack is not None:
                self.after_ack(session)

        async def gated_ack(hello: dict[str, Any], gate: asyncio.Event) -> None:
            await gate.wait()
            ack(hello)

        def on_control(message: dict[str, Any]) -> None:
            self.messages.append(message)
            mine.append(message)
            if message["type"] == "hello" and session is not None:
                self.hellos.append(message)
                if self.ack_gate is None:
                    ack(message)
                else:
                    task = asyncio.create_task(gated_ack(message, self.ack_gate))
                    self._handlers.add(task)
                    task.add_done_callback(self._handlers.discard)

        session = Multiplexer(ws, Role.CONTROL_PLANE, on_control=on_control,
                             settings=self.settings, name="fake-cp")
        self.connections.append(ws)
        self.sessions.append(session)
        await session.run()

    async def wait_connected(self, count: int = 1, timeout: float = 20.0) -> Multiplexer:
        """The ``count``-th session, once its hello arrived (hello_ack is on its way)."""
        await until(lambda: len(self.hellos) >= count and len(self.sessions) >= count,
                    timeout, f"tunnel connection #{count}")
        return self.sessions[count - 1]

    async def wait_message(self, predicate: Callable[[dict[str, Any]], bool],
                           timeout: float = 15.0, what: str = "a control message"
                           ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((m for m in self.messages if predicate(m)), None)

        return await until(find, timeout, what)

    def messages_for(self, command_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("id") == command_id]

    async def command(self, command_id: str, action: str, payload: Any,
                      session: Multiplexer | None = None) -> dict[str, Any]:
        """Send a command and wait for its outcome (complete or failed)."""
        (session or self.sessions[-1]).send_control(
            {"type": "command", "id": command_id, "action": action, "payload": payload})
        return await self.wait_message(
            lambda m: m.get("id") == command_id and m["type"] in ("complete", "failed"),
            what=f"the outcome of command {command_id}")

    def kill(self) -> None:
        """Drop the live TCP connection under the WebSocket, with no close frame."""
        transport = self.connections[-1].transport
        transport.abort()


# --- the gateway's CheckTarget -----------------------------------------------------------


class FakeGateway(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    """Allows the ``allowed`` targets and resolves them from ``services`` ((namespace,
    name) -> a Service object) with the gateway's own ``dial_address``."""

    def __init__(self, allowed: set[tuple[str, str, int]],
                 services: dict[tuple[str, str], dict[str, Any]] | None = None) -> None:
        self.allowed = allowed
        self.services = services or {}
        self.calls: list[tuple[str, str, int]] = []
        self.server: grpc.aio.Server | None = None
        self.port = 0

    async def CheckTarget(self, request: gateway_pb2.CheckTargetRequest,
                          context: grpc.aio.ServicerContext) -> gateway_pb2.CheckTargetResponse:
        key = (request.namespace, request.service, request.port)
        self.calls.append(key)
        if key in self.allowed:
            label = f"{key[0]}/{key[1]}:{key[2]}"
            ip, why = dial_address(self.services.get(key[:2]), label, key[2])
            return gateway_pb2.CheckTargetResponse(allowed=True, reason="route test/route",
                                                   cluster_ip=ip, unresolved=why)
        return gateway_pb2.CheckTargetResponse(allowed=False, reason="no route points at it")

    async def start(self) -> FakeGateway:
        self.server = grpc.aio.server()
        gateway_pb2_grpc.add_GatewayServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        await self.server.start()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(0)


# --- local targets -----------------------------------------------------------------------


class TcpServer:
    """A local target; ``accepted`` counts connections, ``ended`` those that closed."""

    def __init__(self, handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                        Awaitable[None]]) -> None:
        self.handle = handle
        self.accepted = 0
        self.ended = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> TcpServer:
        self._server = await asyncio.start_server(self._on_connect, "127.0.0.1", 0)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self.handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.ended += 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._server.wait_closed()


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1 << 16):
        writer.write(data)
        await writer.drain()
    writer.write_eof()


def source(total: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                    Awaitable[None]]:
    """Writes ``total`` bytes, then closes."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = b"s" * 65536
        sent = 0
        while sent < total:
            writer.write(chunk[: total - sent])
            sent += min(len(chunk), total - sent)
            await writer.drain()

    return handle


async def https_get_through(stream: MuxStream, context: ssl.SSLContext, host: str, path: str,
                            token: str) -> tuple[int, Any]:
    """One HTTPS request over a mux stream (TLS end to end: the tunnel sees only bytes);
    returns (status, parsed JSON body)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=host)

    async def pump_out() -> None:
        data = outgoing.read()
        if data:
            await stream.send(data)

    async def pump_in() -> bool:
        data = await stream.read(65536)
        if data:
            incoming.write(data)
        else:
            incoming.write_eof()
        return bool(data)

    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            await pump_out()
            await pump_in()
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
               "Accept: application/json\r\nConnection: close\r\n\r\n")
    tls.write(request.encode())
    await pump_out()
    response = b""
    while True:
        try:
            chunk = tls.read(65536)
        except ssl.SSLWantReadError:
            if not await pump_in():
                break
            continue
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"chunked" in head.lower():
        body = _dechunk(body)
    return status, json.loads(body)


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


# --- the tunnel process ------------------------------------------------------------------


def write_identity(state_dir: Path, **changes: str) -> None:
    record = {"agent_id": AGENT_ID, "cluster_id": CLUSTER_ID, "cluster_token": CLUSTER_TOKEN,
              "cluster_name": "test", "state": "registered", "generation": 1, **changes}
    identity_file(state_dir).write(record)


class TunnelRun(ServiceProcess):
    def __init__(self, api_url: str, state_dir: Path, *, forwards: dict[str, str] | None,
                 gateway_port: int | None = None, kubeconfig: str | None = None,
                 extra: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        """``forwards=None`` leaves ``tunnel.forwards`` unset (the built-in defaults)."""
        self.state_dir = state_dir
        argv = [
            str(BIN / "pipeops-tunnel"),
            "--api-url", api_url,
            "--state-dir", str(state_dir),
            "--grpc-port", "0",
            "--set", "metrics.tunnel=0",
            *(["--set", "tunnel.forwards=" + json.dumps(
                [{"name": n, "local_addr": a} for n, a in forwards.items()])]
              if forwards is not None else []),
            "--set", f"grpc.gateway={gateway_port or free_port()}",
            "--set", "pipeops.timeout=2",
            "--set", "pipeops.reconnect.backoff_base=0.1",
            "--set", "pipeops.reconnect.backoff_max=1",
            "--set", "tunnel.status_poll_interval=0.1",
            "--set", "kubernetes.in_cluster=false",
            "--set", "kubernetes.session_namespace=pipeops-sessions",
            "--log-level", "debug",
            *(["--kubeconfig", kubeconfig] if kubeconfig else []),
            *(extra or []),
        ]
        super().__init__(argv, env={"KUBERNETES_SERVICE_HOST": "", **(env or {})})

    async def started(self, timeout: float = 20.0) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for record in self.records():
                if record.get("msg") == "started":
                    return record
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError("pipeops-tunnel exited before starting:\n"
                                     + "\n".join(self.lines[-20:] + self.stderr_lines[-20:]))
            return None

        return await until(find, timeout, "the tunnel's started line")

    async def address(self) -> str:
        return str((await self.started())["grpc"])

    async def metrics(self) -> dict[str, float]:
        """``name{label=value,...}`` -> value, from the live /metrics endpoint."""
        url = str((await self.started())["metrics"])

        def fetch() -> str:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return str(resp.read().decode())

        text = await asyncio.to_thread(fetch)
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    async def grpc(self, method: str, data: str = "{}") -> dict[str, Any]:
        address = await self.address()
        result = await asyncio.to_thread(grpcurl, "-plaintext", "-d", data, address, method)
        assert result.returncode == 0, result.stderr
        parsed: dict[str, Any] = json.loads(result.stdout or "{}")
        return parsed

    async def imported(self) -> list[str]:
        """The third-party packages the live process has imported (``Describe``)."""
        info = await self.grpc("pipeops.agent.v1.Service/Describe")
        return list(info["runtime"].get("packages", []))

    async def wait_log(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 15.0,
                       what: str = "a log record") -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((r for r in self.records() if predicate(r)), None)

        return await until(find, timeout, what)

    async def aterminate(self, timeout: float = 10.0) -> int:
        return await asyncio.to_thread(self.terminate, timeout)

    def all_output(self) -> str:
        return "\n".join(self.lines + self.stderr_lines)


@contextlib.contextmanager
def kubesim_with_namespace(name: str) -> Iterator[Kubesim]:
    """A kubesim of its own, with namespace ``name`` made."""
    with Kubesim() as ks:
        status, body = ks.request("POST", "/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
        assert status == 201, body
        yield ks
