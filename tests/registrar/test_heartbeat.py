"""What a heartbeat carries and what the registrar exports about it.

The siblings (tunnel, gateway) are stood in for by small gRPC servers in this process
that answer the real contract, so the test can bring them up, change their answers and
take them down.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from pipeops.agent.v1 import gateway_pb2, gateway_pb2_grpc, service_pb2, tunnel_pb2, tunnel_pb2_grpc
from pipeops_controlplane.testing import ControlPlane
from tests.clusters import Cluster
from tests.helpers import wait_for
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import cluster_with_beats


def _counts(ks: Cluster) -> tuple[int, int]:
    nodes = ks.request("GET", "/api/v1/nodes")[1]["items"]
    pods = ks.request("GET", "/api/v1/pods")[1]["items"]
    return len(nodes), len(pods)


def test_every_metric_moves(start_registrar: StartRegistrar, controlplane: ControlPlane,
                            cluster: Cluster, namespace: str) -> None:
    registrar = start_registrar()
    cluster_id = registrar.wait_registered()["cluster_id"]
    cluster_with_beats(controlplane, cluster_id, 2)
    nodes, pods = _counts(cluster)
    metric = registrar.metric
    assert metric("pipeops_registration_attempts_total", result="success") == 1
    assert metric("pipeops_agent_status") == 1
    wait_for(lambda: metric("pipeops_cluster_pods_total") == pods, what="the pod gauge")
    assert metric("pipeops_cluster_nodes_total") == nodes
    beats_sent = metric("pipeops_heartbeat_total")
    assert beats_sent >= 2
    calls = metric("pipeops_kubernetes_api_calls_total", operation="list_pods", code="200")
    assert calls >= 2
    uptime = metric("pipeops_agent_uptime_seconds")
    assert uptime > 0

    status, body = cluster.request("POST", f"/api/v1/namespaces/{namespace}/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one-more"},
        "spec": {"containers": [{"name": "app", "image": "example.test/app:1"}]}})
    assert status == 201, body
    node_name = f"node-{namespace}"
    status, body = cluster.request("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node_name}})
    assert status == 201, body
    try:
        wait_for(lambda: metric("pipeops_cluster_pods_total") == pods + 1,
                 what="the pod gauge to count the new pod")
        wait_for(lambda: metric("pipeops_cluster_nodes_total") == nodes + 1,
                 what="the node gauge to count the new node")
    finally:
        cluster.request("DELETE", f"/api/v1/nodes/{node_name}")
    assert metric("pipeops_heartbeat_total") > beats_sent
    assert metric("pipeops_kubernetes_api_calls_total", operation="list_pods") > calls
    assert metric("pipeops_agent_uptime_seconds") > uptime
    # pipeops_heartbeat_errors_total and the status gauge dropping to 0 move in
    # test_faults.py, under each fault switch.
    view = controlplane.cluster(cluster_id)
    assert view is not None and view["heartbeat_count"] >= beats_sent


class FakeTunnel(tunnel_pb2_grpc.TunnelServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.state = tunnel_pb2.TUNNEL_STATE_CONNECTED

    def GetStatus(self, request: Any, context: Any) -> tunnel_pb2.TunnelStatus:
        return tunnel_pb2.TunnelStatus(state=self.state)


class FakeGateway(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    def GetStatus(self, request: Any, context: Any) -> gateway_pb2.GatewayStatus:
        return gateway_pb2.GatewayStatus(
            enabled=True, cluster_type=gateway_pb2.CLUSTER_TYPE_PUBLIC,
            routing_mode=gateway_pb2.ROUTING_MODE_DIRECT, route_count=3)


class Sibling:
    def __init__(self, add: Any, servicer: Any) -> None:
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        add(servicer, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait(5)


@pytest.fixture
def siblings() -> Iterator[tuple[FakeTunnel, Sibling, Sibling]]:
    tunnel = FakeTunnel()
    tunnel_server = Sibling(tunnel_pb2_grpc.add_TunnelServicer_to_server, tunnel)
    gateway_server = Sibling(gateway_pb2_grpc.add_GatewayServicer_to_server, FakeGateway())
    yield tunnel, tunnel_server, gateway_server
    tunnel_server.stop()
    gateway_server.stop()


def test_sibling_facts_and_a_sibling_down_is_disconnected_not_an_error(
        start_registrar: StartRegistrar, controlplane: ControlPlane,
        siblings: tuple[FakeTunnel, Sibling, Sibling]) -> None:
    tunnel, tunnel_server, gateway_server = siblings
    registrar = start_registrar(extra=[
        "--set", f"grpc.tunnel={tunnel_server.port}",
        "--set", f"grpc.gateway={gateway_server.port}",
        "--set", "grpc.deadline=1"])
    cluster_id = registrar.wait_registered()["cluster_id"]

    def last_beat() -> dict[str, Any]:
        view = controlplane.cluster(cluster_id)
        return (view or {}).get("last_heartbeat") or {}

    beat = wait_for(lambda: (b := last_beat()) and b["tunnel_status"] == "connected" and b,
                    what="a heartbeat with the tunnel connected")
    assert beat["metadata"]["is_private"] is False
    assert beat["metadata"]["routing_mode"] == "direct"
    assert beat["metadata"]["gateway_routes"] == 3

    tunnel.state = tunnel_pb2.TUNNEL_STATE_CONNECTING
    wait_for(lambda: last_beat().get("tunnel_status") == "connecting",
             what="a heartbeat with the tunnel connecting")

    tunnel_server.stop()
    gateway_server.stop()
    beat = wait_for(lambda: (b := last_beat()) and b["tunnel_status"] == "disconnected"
                    and b["metadata"]["gateway_routes"] == 0 and b,
                    what="a heartbeat with both siblings gone")
    assert beat["status"] == "active"
    assert beat["metadata"]["is_private"] is True and beat["metadata"]["routing_mode"] == "tunnel"
    view = controlplane.cluster(cluster_id)
    assert view is not None
    cluster_with_beats(controlplane, cluster_id, view["heartbeat_count"] + 2)  # beats on
    assert registrar.warnings() == [], "a sibling down is not a problem to report"
    assert registrar.describe().state == service_pb2.SERVICE_STATE_READY
    assert registrar.heartbeat_state().tunnel_status == "disconnected"
