"""Route sync end to end, the whole pod's processes: kubesim, the dev control plane, the
registrar, the tunnel, the gateway, and a real HTTP app behind the Service.

``kubectl apply`` an Ingress -> it is in ``/debug/routes`` -> ``curl -H 'Host: ...'``
against the control plane's public listener answers from the app, through the tunnel
(whose OPEN the gateway's CheckTarget allowed); a host edited out answers 404; the
Ingress deleted removes the route. The heartbeat's gateway facts come from the gateway.
The tunnel never imports pydantic (issue 15: ~10 MiB) for the replies and payloads it
decodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.harness import PodStack, apply, ingress, kubectl, namespace, wait_table
from tests.helpers import grpcurl, wait_for


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PodStack]:
    stack = PodStack(tmp_path_factory.mktemp("pod")).start()
    yield stack
    stack.stop()


def test_an_ingress_answers_through_the_public_listener(pod: PodStack, tmp_path: Path
                                                       ) -> None:
    ks, cid = pod.kubesim, pod.cluster_id
    # the port by name: the Service's "http" port is the app's (clusterIP 127.0.0.1)
    apply(ks, ingress("web", "demo.example.test", "extra.example.test", port="http"))
    held = wait_table(pod.cp, cid, {("demo.example.test", "/"), ("extra.example.test", "/")})
    assert held[("demo.example.test", "/")]["routing_mode"] == "tunnel"
    code, body = wait_for(lambda: (r := pod.curl("demo.example.test", "/hello"))[0] == 200
                          and r, 20, what="the demo host to answer")
    answer = json.loads(body)
    assert answer["app"] == "backend" and answer["path"] == "/hello"
    assert answer["host"] == "demo.example.test"
    # the gateway's answer carried the clusterIP: the tunnel dialled without a Kube client
    tunnel = str(pod.tunnel.wait_started()["grpc"])
    described = grpcurl("-plaintext", tunnel, "pipeops.agent.v1.Service/Describe")
    assert described.returncode == 0, described.stderr
    packages = json.loads(described.stdout)["runtime"]["packages"]
    assert "grpc" in packages and "kubernetes" not in packages
    # a host edited out of the Ingress: unregistered, so the public listener says 404
    apply(ks, ingress("web", "demo.example.test", port="http"))
    wait_table(pod.cp, cid, {("demo.example.test", "/")})
    code, body = pod.curl("extra.example.test")
    assert code == 404 and "no route" in body
    # uploads and SSE through the whole path
    upload = tmp_path / "upload"
    upload.write_bytes(b"x" * 300_000)
    code, body = pod.curl("demo.example.test", "/upload", "-X", "POST",
                          "--data-binary", f"@{upload}")
    assert code == 200 and json.loads(body)["bytes"] == 300_000
    code, body = pod.curl("demo.example.test", "/events?n=3&delay=0.01")
    assert code == 200 and body.count("event: tick") == 3
    # the heartbeat's gateway facts come from the gateway now
    wait_for(lambda: ((pod.cp.cluster(cid) or {}).get("last_heartbeat") or {})
             .get("metadata", {}).get("gateway_routes") == 1, 20,
             what="a heartbeat with gateway_routes 1")
    beat = (pod.cp.cluster(cid) or {})["last_heartbeat"]["metadata"]
    assert beat["is_private"] is True and beat["routing_mode"] == "tunnel"
    # grpcurl ListRoutes and /debug/routes agree
    listed = {(r["hostname"], r["path"]) for r in pod.gateway.grpc("ListRoutes")["routes"]}
    assert listed == {(r["hostname"], r["path"]) for r in pod.cp.routes(cid)}
    # deleted: the route is gone
    kubectl(ks, "delete", "ingress", "web", "-n", "apps")
    wait_table(pod.cp, cid, set())
    code, _ = pod.curl("demo.example.test")
    assert code == 404


def test_a_service_no_route_points_at_is_refused_by_the_tunnel(pod: PodStack,
                                                               tmp_path: Path) -> None:
    """The gateway's CheckTarget is what lets the tunnel dial a Service: a listener opened
    by hand for a Service no route names is refused."""
    ks, cid = pod.kubesim, pod.cluster_id
    pod.service("hidden", pod.app.port)
    apply(ks, ingress("shown", "shown.example.test"))
    wait_table(pod.cp, cid, {("shown.example.test", "/")})
    status, body = pod.cp.request("POST", f"/debug/tunnels/{cid}/listeners",
                                  {"service": "hidden", "namespace": "apps",
                                   "port": pod.app.port})
    assert status == 200, body
    import socket

    with socket.create_connection(("127.0.0.1", body["remote_port"]), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(100) == b""  # closed: the agent refused the stream
    view = pod.cp.request("GET", f"/debug/tunnels/{cid}")[1]
    listener = next(x for x in view["listeners"] if x["target"].get("service") == "hidden")
    assert "target not allowed" in listener["last_error"]
    kubectl(ks, "delete", "ingress", "shown", "-n", "apps")


def test_the_tunnel_has_no_pydantic_after_routes_and_a_command(pod: PodStack) -> None:
    """Allocation (TunnelStatus), a route synced (RoutesPage, SyncReply,
    RegisterRouteReply) and served through the tunnel, and a session command decoded and
    refused for its payload: the tunnel holds neither pydantic nor ``kubernetes`` (whose
    client, 37.x, is built on pydantic: a command that reaches the cluster loads both)."""
    ks, cid = pod.kubesim, pod.cluster_id
    namespace(ks, "lean")
    pod.service("web", pod.app.port, namespace="lean")
    apply(ks, ingress("lean", "lean.example.test", namespace="lean", port="http"))
    wait_table(pod.cp, cid, {("lean.example.test", "/")}, namespace="lean")
    wait_for(lambda: pod.curl("lean.example.test", "/hello")[0] == 200, 20,
             what="the lean host to answer through the tunnel")
    status, record = pod.cp.request(
        "POST", f"/api/v1/agents/{cid}/command",
        {"action": "start_session", "payload": {"sessionId": "lean", "template": "nginx",
                                                "persistentHome": "yes"}, "wait": 20},
        timeout=30)
    assert status == 200 and record["state"] == "failed", record
    assert record["error"] == "invalid payload: field persistentHome: expected bool, got str"
    kubectl(ks, "delete", "ingress", "lean", "-n", "lean")
    wait_table(pod.cp, cid, set(), namespace="lean")  # leaves the table as it found it
    described = grpcurl("-plaintext", pod.tunnel.grpc_address,
                        "pipeops.agent.v1.Service/Describe")
    assert described.returncode == 0, described.stderr
    packages = set(json.loads(described.stdout)["runtime"]["packages"])
    assert {"msgspec", "websockets"} <= packages, packages  # the live list
    assert not (found := {"pydantic", "pydantic_core", "kubernetes"} & packages), found
