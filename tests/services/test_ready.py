"""``/ready`` tells the truth: 503 with one reason per sibling that is not where it must
be, 200 when all are. Real processes (the four services) for the not-ready pod; a real
http-api against siblings stood in for by a gRPC server in this process for the rest."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from pipeops.agent.v1 import registrar_pb2, registrar_pb2_grpc, tunnel_pb2, tunnel_pb2_grpc
from tests.helpers import ServiceProcess, free_port, tool, wait_for


def ready(port: int) -> tuple[int, dict[str, Any]] | None:
    try:
        reply = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
    except httpx.TransportError:
        return None  # not listening yet
    return reply.status_code, reply.json()


def http_api(state_dir: Path, port: int, ports: dict[str, int], *extra: str) -> ServiceProcess:
    argv = [tool("pipeops-http-api"), "--grpc-port", "0", "--state-dir", str(state_dir),
            "--host", "127.0.0.1", "--port", str(port), *extra]
    for sibling, sibling_port in ports.items():
        argv += ["--set", f"grpc.{sibling}={sibling_port}"]
    return ServiceProcess(argv)


def test_ready_is_503_with_reasons_while_the_registrar_is_not_registered(
        state_dir: Path) -> None:
    """The whole pod as real processes, with no control plane to register with."""
    ports = {name: free_port() for name in ("registrar", "tunnel", "gateway")}
    wiring = [arg for name, p in ports.items() for arg in ("--set", f"grpc.{name}={p}")]
    common = ["--state-dir", str(state_dir), "--api-url", f"http://127.0.0.1:{free_port()}",
              "--set", "metrics.registrar=0", "--set", "metrics.tunnel=0",
              "--set", "metrics.gateway=0", "--set", "agent.enable_ingress_sync=true",
              "--set", "pipeops.reconnect.backoff_max=1", *wiring]
    port = free_port()
    with ExitStack() as stack:
        for name in ports:
            proc = ServiceProcess([tool(f"pipeops-{name}"), *common],
                                  env={"PIPEOPS_TOKEN": "install-token"})
            stack.enter_context(proc).wait_started()
        api = stack.enter_context(http_api(state_dir, port, ports,
                                           "--set", "agent.enable_ingress_sync=true"))
        api.wait_started()
        code, body = wait_for(lambda: ready(port), 15, what="/ready to answer")
        assert code == 503
        assert body["status"] == "not ready"
        reasons = body["reasons"]
        assert reasons[0] == "registrar: not registered (unregistered)"
        assert reasons[1].startswith("tunnel: not connected (disconnected)")
        # no cluster to list (no kubeconfig here): the gateway says what it is doing
        assert reasons[2] == ("gateway: routes not synced yet: connecting to the "
                              "Kubernetes API")
        assert len(reasons) == 3
        # each sibling's own account is still there
        assert body["services"]["registrar"]["name"] == "registrar"
        assert api.terminate(timeout=10) == 0
    assert not [r for r in api.records() if r["level"] == "error"]


class FakeSiblings(registrar_pb2_grpc.RegistrarServicer, tunnel_pb2_grpc.TunnelServicer
                   ):  # type: ignore[misc]
    """The registrar and the tunnel on one port, in the states the test sets."""

    def __init__(self) -> None:
        self.registration = registrar_pb2.REGISTRATION_STATE_REGISTERED
        self.tunnel = tunnel_pb2.TUNNEL_STATE_CONNECTED

    def GetIdentity(self, request: Any, context: Any) -> registrar_pb2.Identity:
        return registrar_pb2.Identity(state=self.registration)

    def GetStatus(self, request: Any, context: Any) -> tunnel_pb2.TunnelStatus:
        return tunnel_pb2.TunnelStatus(state=self.tunnel, last_error="handshake refused")


@pytest.fixture
def fake_siblings() -> Iterator[tuple[FakeSiblings, int]]:
    fake = FakeSiblings()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    registrar_pb2_grpc.add_RegistrarServicer_to_server(fake, server)
    tunnel_pb2_grpc.add_TunnelServicer_to_server(fake, server)
    sibling_port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, sibling_port
    server.stop(0)


def test_ready_is_200_when_registered_and_connected_and_503_when_not(
        state_dir: Path, fake_siblings: tuple[FakeSiblings, int]) -> None:
    fake, sibling_port = fake_siblings
    port = free_port()
    # the gateway is not asked: route sync is not enabled (its port has nothing anyway)
    ports = {"registrar": sibling_port, "tunnel": sibling_port, "gateway": free_port()}
    with http_api(state_dir, port, ports) as api:
        api.wait_started()
        code, body = wait_for(lambda: ready(port), 15, what="/ready to answer")
        assert (code, body["status"], body["reasons"]) == (200, "ready", [])

        fake.tunnel = tunnel_pb2.TUNNEL_STATE_CONNECTING
        code, body = ready(port) or (0, {})
        assert (code, body["reasons"]) == (
            503, ["tunnel: not connected (connecting): handshake refused"])

        fake.tunnel = tunnel_pb2.TUNNEL_STATE_DISABLED  # the control plane said so
        fake.registration = registrar_pb2.REGISTRATION_STATE_REJECTED
        code, body = ready(port) or (0, {})
        assert (code, body["reasons"]) == (503, ["registrar: not registered (rejected)"])
        assert api.terminate(timeout=10) == 0


def test_ready_without_the_tunnel_does_not_ask_it(
        state_dir: Path, fake_siblings: tuple[FakeSiblings, int]) -> None:
    fake, sibling_port = fake_siblings
    fake.tunnel = tunnel_pb2.TUNNEL_STATE_DISCONNECTED
    port = free_port()
    ports = {"registrar": sibling_port, "tunnel": sibling_port, "gateway": free_port()}
    with http_api(state_dir, port, ports, "--set", "tunnel.enabled=false") as api:
        api.wait_started()
        code, body = wait_for(lambda: ready(port), 15, what="/ready to answer")
        assert (code, body["reasons"]) == (200, [])
        assert api.terminate(timeout=10) == 0
