"""Helpers of the tunnel tests: register a cluster, a small agent, local TCP services.

``MiniAgent`` is the agent's end written with the same mux library over a real
``websockets`` client connection, so the control plane's end is tested against the
protocol (PROTOCOL.md section 2) rather than against the agent service: it sends
``hello``, dials the TCP targets it was given for ``{forward}``/``{service...}`` OPENs and
hands every control message to the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from agentkit.mux import SUBPROTOCOL, Multiplexer, OpenRequest, Role, pipe
from pipeops_controlplane.testing import ControlPlane

Address = tuple[str, int]


def register(cp: ControlPlane, *, agent_id: str | None = None,
             ports: dict[str, int] | None = None, tunnel: bool = True) -> dict[str, Any]:
    """Register a cluster with the install token; the reply plus ``agent_id``."""
    agent_id = agent_id or f"agent-{uuid.uuid4().hex[:8]}"
    body = {
        "agent_id": agent_id, "name": "test", "hostname": "h", "agent_version": "0",
        "k8s_version": "v1.30.0", "server_ip": "127.0.0.1", "labels": {},
        "k8s_service_token": "sa-token",
        "tunnel_port_config": {"kubernetes_api": 0, "kubelet": 0, "agent_http": 0,
                               **(ports or {})},
        "features": {"tunnel": tunnel},
    }
    status, reply = cp.request("POST", "/api/v1/clusters/agent/register", body,
                               headers={"Authorization": f"Bearer {cp.token}"})
    assert status == 201, reply
    return {**reply, "agent_id": agent_id}


def tunnel_status(cp: ControlPlane, reg: dict[str, Any], token: str | None = None
                  ) -> tuple[int, Any]:
    query = f"cluster_id={reg['cluster_id']}&agent_id={reg['agent_id']}"
    return cp.request("GET", f"/api/v1/tunnel/status?{query}",
                      headers={"Authorization": f"Bearer {token or reg['token']}"})


def headers_for(reg: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {reg['token']}",
            "X-PipeOps-Cluster-ID": reg["cluster_id"], "X-PipeOps-Agent-ID": reg["agent_id"]}


class MiniAgent:
    """The agent's end of one tunnel connection, for tests."""

    def __init__(self, reg: dict[str, Any], *, forwards: dict[str, Address] | None = None,
                 services: dict[tuple[str, str, int], Address] | None = None,
                 on_command: Callable[[MiniAgent, dict[str, Any]], None] | None = None,
                 window: int | None = None) -> None:
        self.reg = reg
        self.forwards = forwards or {}
        self.services = services or {}
        self.on_command = on_command
        self.window = window
        self.messages: list[dict[str, Any]] = []  # every control message received
        self.opens: list[dict[str, Any]] = []  # every OPEN payload received
        self.ws: ClientConnection | None = None
        self.session: Multiplexer | None = None
        self._arrived = asyncio.Event()

    async def connect(self, url: str | None = None, *, hello: dict[str, Any] | None = None,
                      timeout: float = 10.0) -> dict[str, Any]:
        """Connect, send hello, return the hello_ack (or the first other reply)."""
        self.ws = await connect(url or self.reg["tunnel_url"], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                                additional_headers=headers_for(self.reg), compression=None,
                                ping_interval=None)
        self.session = Multiplexer(self.ws, Role.AGENT, on_open=self._on_open,
                                  on_control=self._on_control, name="mini-agent")
        self.session.start()
        greeting = hello or {"type": "hello", "agent_id": self.reg["agent_id"],
                             "cluster_id": self.reg["cluster_id"], "version": "test",
                             "forwards": [{"name": n} for n in self.forwards],
                             **({"window": self.window} if self.window else {})}
        self.session.send_control(greeting)
        return await self.wait_message(lambda m: True, timeout)

    async def wait_message(self, predicate: Callable[[dict[str, Any]], bool],
                           timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for message in self.messages:
                    if predicate(message):
                        return message
                self._arrived.clear()
                await self._arrived.wait()

    def send(self, message: dict[str, Any]) -> None:
        assert self.session is not None
        self.session.send_control(message)

    def _on_control(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._arrived.set()
        if message["type"] == "command" and self.on_command is not None:
            self.on_command(self, message)

    async def _on_open(self, request: OpenRequest) -> None:
        payload = request.payload
        self.opens.append(payload)
        if "forward" in payload:
            address = self.forwards.get(payload["forward"])
        else:
            key = (str(payload.get("namespace")), str(payload.get("service")),
                   int(payload.get("port") or 0))
            address = self.services.get(key)
        if address is None:
            request.refuse("target not allowed")
            return
        try:
            reader, writer = await asyncio.open_connection(*address)
        except OSError as exc:
            request.refuse(f"dial failed: {exc}")
            return
        with contextlib.suppress(ConnectionError):
            await pipe(request.accept(), reader, writer)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


async def echo_server() -> asyncio.Server:
    """A TCP server that echoes every byte and half-closes after the client does."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        writer.close()

    return await asyncio.start_server(echo, "127.0.0.1", 0)


def port_of(server: asyncio.Server) -> int:
    return int(next(iter(server.sockets)).getsockname()[1])


async def http_json(cp: ControlPlane, method: str, path: str, body: Any = None
                    ) -> tuple[int, Any]:
    """``cp.request`` off the event loop (the control plane may need this loop's agent)."""
    status, payload = await asyncio.to_thread(cp.request, method, path, body)
    return int(status), payload


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


# --- the end-to-end stack: kubesim, control plane, registrar, tunnel --------------------

E2E_TIMEOUTS = {
    # every timeout on a stream's path, shortened (see test_e2e_kubectl's docstring)
    "cp_ping_interval": 0.5, "cp_ping_timeout": 2.0,
    "agent_ping_interval": 0.5, "agent_ping_timeout": 2.0,
}
LONGEST_TIMEOUT = max(E2E_TIMEOUTS.values())


class WebSocketEcho:
    """A local WebSocket echo service (sync websockets server in a thread)."""

    def __init__(self) -> None:
        from websockets.sync.server import ServerConnection as SyncConnection
        from websockets.sync.server import serve as sync_serve

        def echo(ws: SyncConnection) -> None:
            with contextlib.suppress(Exception):
                for message in ws:
                    ws.send(message)

        self.server = sync_serve(echo, "127.0.0.1", 0, compression=None)
        self.port = int(self.server.socket.getsockname()[1])
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


def e2e_config(path: Any, kubesim_port: int, agent_http_port: int) -> Any:
    """The agent's config file, shared by the registrar and the tunnel."""
    import yaml

    t = E2E_TIMEOUTS
    config = {
        "tunnel": {
            "forwards": [
                {"name": "kubernetes-api", "local_addr": f"127.0.0.1:{kubesim_port}",
                 "remote_port": 0},
                {"name": "agent-http", "local_addr": f"127.0.0.1:{agent_http_port}",
                 "remote_port": 0},
            ],
            "ping_interval": t["agent_ping_interval"],
            "ping_timeout": t["agent_ping_timeout"],
            "status_poll_interval": 0.2,
        },
        "pipeops": {"reconnect": {"backoff_base": 0.1, "backoff_max": 0.5}, "timeout": 2},
    }
    path.write_text(yaml.safe_dump(config))
    return path


class E2EStack:
    """A cluster + dev control plane + ``pipeops-registrar`` + ``pipeops-tunnel``, real
    processes on loopback, and a kubeconfig whose server is the tunnel's port.

    The cluster is ``world`` (a ``tests.clusters.Cluster``: the session's real control
    plane, where the agent's namespace is one of its own) or, without one, a kubesim
    of the stack's own."""

    def __init__(self, folder: Any, world: Any = None) -> None:
        self.folder = folder
        self.started: list[Any] = []
        self.world = world

    def start(self) -> E2EStack:
        from kubesim.testing import Kubesim
        from pipeops_controlplane.tunnel import kubeconfig_through_tunnel
        from tests.clusters import Cluster
        from tests.helpers import BIN, ServiceProcess, free_port
        from tests.registrar.harness import RegistrarRun, sa_token_file

        t = E2E_TIMEOUTS
        try:
            if self.world is None:
                kubesim = Kubesim(demo=True).start()
                self.started.append(kubesim)
                self.world = Cluster("kubesim", kubesim)
            # the name the API server's certificate carries
            self.server_name = "kubernetes" if self.world.real else "kubesim.local"
            self.ws_echo = WebSocketEcho()
            self.started.append(self.ws_echo)
            self.cp = ControlPlane(extra_args=[
                "--tunnel-ping-interval", str(t["cp_ping_interval"]),
                "--tunnel-ping-timeout", str(t["cp_ping_timeout"])]).start()
            self.started.append(self.cp)
            self.namespace = self.world.create_namespace("pipeops-e2e")
            config = e2e_config(self.folder / "agent.yaml", self.world.port,
                                self.ws_echo.port)
            state = self.folder / "state"
            state.mkdir()
            self.registrar = RegistrarRun(
                self.cp, self.world.kubeconfig, sa_token_file(self.folder, self.world.token),
                state, self.namespace, extra=["--config", str(config)]).start()
            self.started.append(self.registrar)
            self.identity = self.registrar.wait_registered()
            self.tunnel = ServiceProcess([
                str(BIN / "pipeops-tunnel"), "--config", str(config),
                "--api-url", self.cp.url, "--state-dir", str(state),
                "--kubeconfig", self.world.kubeconfig, "--grpc-port", "0",
                "--set", "kubernetes.in_cluster=false", "--set", "metrics.tunnel=0",
                "--set", f"grpc.gateway={free_port()}",
                "--set", f"kubernetes.session_namespace={self.namespace}",
            ]).start()
            self.started.append(self.tunnel)
            self.kubeconfig = kubeconfig_through_tunnel(
                self.cp.url, self.world.kubeconfig, self.folder / "tunnel.kubeconfig",
                cluster_id=self.identity["cluster_id"], tls_server_name=self.server_name,
                wait=30)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.world is not None and self.world.real and hasattr(self, "namespace"):
            with contextlib.suppress(Exception):  # what the agent made goes with it
                self.world.request("DELETE", f"/api/v1/namespaces/{self.namespace}")
        for thing in reversed(self.started):
            with contextlib.suppress(Exception):
                if hasattr(thing, "stop"):
                    thing.stop()
                else:
                    thing.close()
        self.started.clear()

    @property
    def cluster_id(self) -> str:
        return str(self.identity["cluster_id"])

    def view(self) -> dict[str, Any]:
        status, body = self.cp.request("GET", f"/debug/tunnels/{self.cluster_id}")
        assert status == 200, body
        result: dict[str, Any] = body
        return result

    def forward_port(self, name: str) -> int:
        return next(int(f["remote_port"]) for f in self.view()["forwards"] if f["name"] == name)

    def kubectl(self, *args: str, kubeconfig: Any = None) -> list[str]:
        from tests.helpers import tool

        return [tool("kubectl"), "--kubeconfig", str(kubeconfig or self.kubeconfig),
                "--cache-dir", str(self.folder / "kube-cache"), *args]
