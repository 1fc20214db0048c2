"""OPEN to a Service: allowed and resolved to its clusterIP by the gateway (a real gRPC
CheckTarget server in the test, answering from Service objects as the gateway's watch
holds them), then dialled, with no Kubernetes client in the tunnel; and the dial
timeout."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from agentkit.mux import OpenFailed
from kubesim.testing import Kubesim
from tests.tunnel.agent_helpers import (
    FakeControlPlane,
    FakeGateway,
    TcpServer,
    TunnelRun,
    echo,
    https_get_through,
    kubesim_with_namespace,
    write_identity,
)


@pytest.fixture(scope="module")
def kubesim() -> Iterator[Kubesim]:
    with kubesim_with_namespace("apps") as ks:
        yield ks


def service(cluster_ip: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "spec": {"clusterIP": cluster_ip, "ports": [{"port": port, "targetPort": port}]}}


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane().start()
    yield plane
    await plane.stop()


async def test_allowed_service_is_resolved_by_the_gateway_and_dialled(
    cp: FakeControlPlane, state_dir: Path
) -> None:
    target = await TcpServer(echo).start()
    other = await TcpServer(echo).start()
    # 127.0.0.1 as the clusterIP makes the resolved address dialable here, and proves the
    # address came from the gateway's answer (no DNS name resolves to it)
    gateway = await FakeGateway({("apps", "web", target.port),
                                 ("apps", "ghost", 80),
                                 ("apps", "web", 81),
                                 ("apps", "headless", 80)},
                                {("apps", "web"): service("127.0.0.1", target.port),
                                 ("apps", "hidden"): service("127.0.0.1", other.port),
                                 ("apps", "headless"): service("None", 80)}).start()
    run = TunnelRun(cp.url, state_dir, forwards={"agent-http": "127.0.0.1:9"},
                    gateway_port=gateway.port).start()
    try:
        await run.started()
        write_identity(state_dir)
        session = await cp.wait_connected()

        stream = await session.open_stream({"service": "web", "namespace": "apps",
                                            "port": target.port})
        await stream.send(b"through the service")
        stream.write_eof()
        assert await stream.read() == b"through the service"
        assert target.accepted == 1

        # allowed by the gateway, but no such Service
        with pytest.raises(OpenFailed) as info:
            await session.open_stream({"service": "ghost", "namespace": "apps", "port": 80})
        assert "not found" in info.value.reason
        # allowed, but the Service has no such port
        with pytest.raises(OpenFailed) as info:
            await session.open_stream({"service": "web", "namespace": "apps", "port": 81})
        assert "no port 81" in info.value.reason
        # allowed, but headless: nothing to dial
        with pytest.raises(OpenFailed) as info:
            await session.open_stream({"service": "headless", "namespace": "apps",
                                       "port": 80})
        assert "has no clusterIP" in info.value.reason
        # exists, but no route points at it: the gateway says no, nothing is dialled
        with pytest.raises(OpenFailed) as info:
            await session.open_stream({"service": "hidden", "namespace": "apps",
                                       "port": other.port})
        assert info.value.reason == "target not allowed"
        assert other.accepted == 0
        assert ("apps", "hidden", other.port) in gateway.calls

        # the gateway is gone: fail closed
        await gateway.stop()
        with pytest.raises(OpenFailed) as info:
            await session.open_stream({"service": "web", "namespace": "apps",
                                       "port": target.port})
        assert info.value.reason == "target not allowed"
        assert target.accepted == 1
        metrics = await run.metrics()
        assert metrics["pipeops_tunnel_opens_refused_total{reason=resolve_failed}"] == 3
        assert "kubernetes" not in await run.imported(), "a route's OPEN loaded the client"
    finally:
        await asyncio.to_thread(run.stop)
        await gateway.stop()
        await target.stop()
        await other.stop()


async def test_a_dial_that_hangs_is_refused_after_the_dial_timeout(
    cp: FakeControlPlane, state_dir: Path
) -> None:
    # a listener whose backlog is full: further connects hang in SYN-SENT
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    filler = socket.create_connection(hole.getsockname(), timeout=2)
    port = hole.getsockname()[1]
    run = TunnelRun(cp.url, state_dir, forwards={"slow": f"127.0.0.1:{port}"},
                    extra=["--set", "tunnel.dial_timeout=0.5"]).start()
    try:
        await run.started()
        write_identity(state_dir)
        session = await cp.wait_connected()
        with pytest.raises(OpenFailed) as info:
            await session.open_stream({"forward": "slow"}, timeout=5)
        assert "timed out after 0.5s" in info.value.reason
        metrics = await run.metrics()
        assert metrics["pipeops_tunnel_opens_refused_total{reason=dial_timeout}"] == 1
    finally:
        await asyncio.to_thread(run.stop)
        filler.close()
        hole.close()


async def test_default_forwards_reach_the_api_server_through_the_pod_environment(
    cp: FakeControlPlane, state_dir: Path
) -> None:
    api = await TcpServer(echo).start()  # stands in for the API server's TLS port
    run = TunnelRun(cp.url, state_dir, forwards=None,
                    extra=["--set", "agent.port=18080", "--set", "agent.node_ip=127.0.0.2"],
                    env={"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                         "KUBERNETES_SERVICE_PORT": str(api.port)}).start()
    try:
        await run.started()
        write_identity(state_dir)
        session = await cp.wait_connected()
        assert cp.hellos[0]["forwards"] == [{"name": "kubernetes-api"}, {"name": "kubelet"},
                                            {"name": "agent-http"}]
        status = await run.grpc("pipeops.agent.v1.Tunnel/GetStatus")
        assert [(f["name"], f["local_addr"]) for f in status["forwards"]] == [
            ("kubernetes-api", f"127.0.0.1:{api.port}"), ("kubelet", "127.0.0.2:10250"),
            ("agent-http", "127.0.0.1:18080")]
        stream = await session.open_stream({"forward": "kubernetes-api"})
        await stream.send(b"\x16\x03\x01 not really TLS")
        stream.write_eof()
        assert await stream.read() == b"\x16\x03\x01 not really TLS"
        assert api.accepted == 1
    finally:
        await asyncio.to_thread(run.stop)
        await api.stop()


async def test_out_of_cluster_the_api_forward_is_the_kubeconfig_server_with_tls_passthrough(
    kubesim: Kubesim, cp: FakeControlPlane, state_dir: Path
) -> None:
    run = TunnelRun(cp.url, state_dir, forwards=None, kubeconfig=kubesim.kubeconfig).start()
    try:
        await run.started()
        write_identity(state_dir)
        session = await cp.wait_connected()
        status = await run.grpc("pipeops.agent.v1.Tunnel/GetStatus")
        api = next(f for f in status["forwards"] if f["name"] == "kubernetes-api")
        assert api["local_addr"] == f"127.0.0.1:{kubesim.port}"
        stream = await session.open_stream({"forward": "kubernetes-api"})
        code, body = await https_get_through(stream, kubesim.ssl_context(), "127.0.0.1",
                                             "/api/v1/namespaces/apps", kubesim.token)
        assert code == 200, body
        assert body["metadata"]["name"] == "apps"
    finally:
        await asyncio.to_thread(run.stop)


def test_node_ip_forwards_follow_agent_node_ip() -> None:
    """``NODE_IP`` in a forward is the node's IP; with none known the forward is left out
    instead of dialling a kubelet that is not there."""
    from agentkit.config import Config, from_mapping
    from pipeops_tunnel.targets import resolve_forwards

    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    assert resolve_forwards(Config(), env) == {
        "kubernetes-api": "10.0.0.1:6443", "agent-http": "127.0.0.1:8080"}
    config = from_mapping({"agent": {"node_ip": "fd00::7"}})
    assert resolve_forwards(config, env)["kubelet"] == "[fd00::7]:10250"
