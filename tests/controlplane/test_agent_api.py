"""The dev control plane's own checks on the agent API (PROTOCOL.md section 1).

One real ``pipeops-dev-controlplane`` process per module, driven over HTTP: tokens,
body validation, resume-by-id, the read-only debug view, fault switches and ``--state``.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

from pipeops_controlplane.testing import ControlPlane, ControlPlaneError
from tests.helpers import BIN

TOKENS = ["pit_first_" + uuid.uuid4().hex, "pit_second_" + uuid.uuid4().hex]


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with ControlPlane(TOKENS) as plane:
        yield plane


@pytest.fixture(autouse=True)
def _no_faults(cp: ControlPlane) -> Iterator[None]:
    cp.clear_fault()
    yield
    cp.clear_fault()


def register_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "agent_id": "agent-" + uuid.uuid4().hex[:12], "name": "test-cluster",
        "hostname": "pod-1", "agent_version": "0.1.0", "k8s_version": "v1.32.0",
        "server_ip": "10.0.0.1", "labels": {"env": "test"},
        "k8s_service_token": "sa-token-" + uuid.uuid4().hex,
        "tunnel_port_config": {"kubernetes_api": 0, "kubelet": 0, "agent_http": 0},
        "features": {"tunnel": True},
    }
    body.update(changes)
    return body


def heartbeat_body(cluster_id: str, agent_id: str, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "cluster_id": cluster_id, "agent_id": agent_id, "status": "active",
        "tunnel_status": "connecting", "timestamp": "2026-01-02T03:04:05.678Z",
        "metadata": {"node_count": 3, "pod_count": 42, "k8s_version": "v1.32.0",
                     "agent_version": "0.1.0", "uptime_seconds": 12.5, "is_private": True,
                     "routing_mode": "tunnel", "gateway_routes": 0},
    }
    body.update(changes)
    return body


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def register(cp: ControlPlane, install_token: str = TOKENS[0], **changes: Any
             ) -> tuple[int, Any]:
    return cp.request("POST", "/api/v1/clusters/agent/register", register_body(**changes),
                      headers=bearer(install_token))


def registered(cp: ControlPlane, **changes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    body = register_body(**changes)
    status, reply = cp.request("POST", "/api/v1/clusters/agent/register", body,
                               headers=bearer(TOKENS[0]))
    assert status == 201, reply
    return body, reply


def heartbeat(cp: ControlPlane, cluster_id: str, token: str, body: Any) -> tuple[int, Any]:
    return cp.request("POST", f"/api/v1/clusters/agent/{cluster_id}/heartbeat", body,
                      headers=bearer(token))


def test_register_creates_a_cluster_and_the_view_hides_credentials(cp: ControlPlane) -> None:
    body, reply = registered(cp)
    assert uuid.UUID(reply["cluster_id"])
    assert reply["token"].startswith("pct_") and reply["name"] == "test-cluster"
    assert set(reply) == {"cluster_id", "name", "status", "workspace_id", "token",
                          "tunnel_url", "gateway_url"}
    view = cp.cluster(reply["cluster_id"])
    assert view is not None
    assert view["agent_id"] == body["agent_id"] and view["heartbeat_count"] == 0
    assert view["registration"]["labels"] == {"env": "test"}
    text = json.dumps(cp.clusters())
    assert reply["token"] not in text and body["k8s_service_token"] not in text
    assert view["token_sha256"] == hashlib.sha256(reply["token"].encode()).hexdigest()[:16]
    # each install token has its own workspace
    _, other = register(cp, TOKENS[1])
    assert other["workspace_id"] != reply["workspace_id"]


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer nope"},
                                     {"authorization": "Basic abc"},
                                     {"authorization": "Bearer "}])
def test_register_refuses_a_missing_or_wrong_install_token(
        cp: ControlPlane, headers: dict[str, str]) -> None:
    before = len(cp.clusters())
    status, reply = cp.request("POST", "/api/v1/clusters/agent/register", register_body(),
                               headers=headers)
    assert status == 401, reply
    assert "token" in reply["detail"]
    assert len(cp.clusters()) == before


@pytest.mark.parametrize("changes", [
    {"agent_id": ""},
    {"cluster_id": "not-a-uuid"},
    {"tunnel_port_config": {"kubernetes_api": 70000, "kubelet": 0, "agent_http": 0}},
    {"features": {"tunnel": "sometimes"}},
    {"unexpected": 1},
    {"token": "a token field is a client bug"},
])
def test_register_refuses_invalid_bodies(cp: ControlPlane, changes: dict[str, Any]) -> None:
    status, reply = register(cp, **changes)
    assert status == 422, reply
    assert reply["detail"], "the 422 says what is wrong"


def test_register_refuses_a_missing_field_and_non_json(cp: ControlPlane) -> None:
    body = register_body()
    del body["k8s_version"]
    status, reply = cp.request("POST", "/api/v1/clusters/agent/register", body,
                               headers=bearer(TOKENS[0]))
    assert status == 422
    assert any(e["loc"][-1] == "k8s_version" for e in reply["detail"])
    url = urlparse(cp.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=5)
    try:
        conn.request("POST", "/api/v1/clusters/agent/register", body=b"{not json",
                     headers={**bearer(TOKENS[0]), "content-type": "application/json"})
        assert conn.getresponse().status == 422
    finally:
        conn.close()


def test_resume_by_offered_cluster_id_or_agent_id_keeps_one_cluster(cp: ControlPlane) -> None:
    body, first = registered(cp)
    cluster_id = first["cluster_id"]
    status, again = register(cp, agent_id=body["agent_id"], cluster_id=cluster_id)
    assert status == 200 and again["cluster_id"] == cluster_id
    status, by_agent = register(cp, agent_id=body["agent_id"])
    assert status == 200 and by_agent["cluster_id"] == cluster_id
    mine = [c for c in cp.clusters() if c["agent_id"] == body["agent_id"]]
    assert len(mine) == 1 and mine[0]["registration_count"] == 3
    # another workspace may not take the cluster over
    status, reply = register(cp, TOKENS[1], agent_id=body["agent_id"], cluster_id=cluster_id)
    assert status == 403, reply


def test_a_forgotten_cluster_offered_again_comes_back_with_its_id(cp: ControlPlane) -> None:
    body, first = registered(cp)
    cluster_id = first["cluster_id"]
    cp.forget(cluster_id)
    assert cp.cluster(cluster_id) is None
    status, reply = heartbeat(cp, cluster_id, first["token"],
                              heartbeat_body(cluster_id, body["agent_id"]))
    assert status == 404 and reply["detail"] == "cluster not found"
    status, back = register(cp, agent_id=body["agent_id"], cluster_id=cluster_id)
    assert status == 201 and back["cluster_id"] == cluster_id


def test_heartbeat_is_recorded_and_counted(cp: ControlPlane) -> None:
    body, reply = registered(cp)
    cluster_id = reply["cluster_id"]
    for count in (1, 2):
        status, answer = heartbeat(cp, cluster_id, reply["token"],
                                   heartbeat_body(cluster_id, body["agent_id"]))
        assert status == 200 and answer == {"status": "ok"}
        view = cp.cluster(cluster_id)
        assert view is not None and view["heartbeat_count"] == count
    assert view["last_heartbeat"]["metadata"]["pod_count"] == 42
    assert view["last_heartbeat"]["tunnel_status"] == "connecting"
    assert view["last_heartbeat_at"]
    status, _ = heartbeat(cp, cluster_id, reply["token"],
                          heartbeat_body(cluster_id, body["agent_id"], status="disconnected"))
    assert status == 200
    view = cp.cluster(cluster_id)
    assert view is not None and view["status"] == "disconnected"


def test_heartbeat_checks_token_ids_and_body(cp: ControlPlane) -> None:
    body, reply = registered(cp)
    cluster_id, token, agent_id = reply["cluster_id"], reply["token"], body["agent_id"]
    good = heartbeat_body(cluster_id, agent_id)
    assert heartbeat(cp, cluster_id, TOKENS[0], good)[0] == 401  # the install token
    assert heartbeat(cp, cluster_id, "pct_wrong", good)[0] == 401
    assert cp.request("POST", f"/api/v1/clusters/agent/{cluster_id}/heartbeat", good)[0] == 401
    other = str(uuid.uuid4())
    assert heartbeat(cp, cluster_id, token, heartbeat_body(other, agent_id))[0] == 400
    assert heartbeat(cp, cluster_id, token, heartbeat_body(cluster_id, "agent-other"))[0] == 409
    assert heartbeat(cp, other, token, heartbeat_body(other, agent_id))[0] == 404
    bad_bodies = [
        heartbeat_body(cluster_id, agent_id, token=token),  # never a token in the body
        heartbeat_body(cluster_id, agent_id, status="sleeping"),
        heartbeat_body(cluster_id, agent_id, tunnel_status="maybe"),
        heartbeat_body(cluster_id, agent_id, timestamp="yesterday"),
        heartbeat_body(cluster_id, agent_id, metadata={"node_count": -1}),
        [1, 2, 3],
    ]
    for bad in bad_bodies:
        status, answer = heartbeat(cp, cluster_id, token, bad)
        assert status == 422, (bad, answer)
    view = cp.cluster(cluster_id)
    assert view is not None and view["heartbeat_count"] == 0


def _raw_post(cp: ControlPlane, path: str, timeout: float) -> tuple[int, bytes]:
    url = urlparse(cp.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps(register_body()),
                     headers={**bearer(TOKENS[0]), "content-type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_fault_switches_misbehave_and_clear(cp: ControlPlane) -> None:
    path = "/api/v1/clusters/agent/register"
    cp.set_fault("5xx")
    assert _raw_post(cp, path, 5)[0] == 503
    cp.set_fault("malformed")
    status, raw = _raw_post(cp, path, 5)
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(raw)
    cp.set_fault("no_cluster_id")
    status, raw = _raw_post(cp, path, 5)
    assert status == 200 and "cluster_id" not in json.loads(raw)
    cp.set_fault("close")
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        _raw_post(cp, path, 5)
    cp.set_fault("hang")
    with pytest.raises(TimeoutError):
        _raw_post(cp, path, 0.5)
    assert cp.faults()["hits"] == 1
    # a fault aimed at heartbeats leaves registration alone; /debug is never affected
    cp.set_fault("5xx", target="heartbeat")
    assert _raw_post(cp, path, 5)[0] == 201
    assert cp.faults() == {"mode": "5xx", "target": "heartbeat", "hits": 0, "times": None,
                           "retry_after": None}
    cp.clear_fault()
    assert _raw_post(cp, path, 5)[0] == 201
    assert cp.request("POST", "/debug/faults", {"mode": "explode"})[0] == 422
    assert cp.request("POST", "/debug/faults", {"mode": "5xx", "target": "x"})[0] == 422
    assert cp.faults()["mode"] is None


@pytest.mark.parametrize("code", [401, 403, 404])
def test_refusal_faults_on_heartbeats_leave_registration_working(
        cp: ControlPlane, code: int) -> None:
    body, reply = registered(cp)
    cluster_id, agent_id = reply["cluster_id"], body["agent_id"]
    cp.set_fault(str(code), target="heartbeat")
    for _ in range(2):  # until cleared, however often it is asked
        status, answer = heartbeat(cp, cluster_id, reply["token"],
                                   heartbeat_body(cluster_id, agent_id))
        assert status == code and "fault injected" in answer["detail"]
        status, again = register(cp, agent_id=agent_id, cluster_id=cluster_id)
        assert status == 200 and again["cluster_id"] == cluster_id
    assert cp.faults()["hits"] == 2
    view = cp.cluster(cluster_id)
    assert view is not None and view["heartbeat_count"] == 0
    cp.clear_fault()
    assert heartbeat(cp, cluster_id, reply["token"],
                     heartbeat_body(cluster_id, agent_id))[0] == 200


def test_echo_headers_fault_answers_502_with_the_request_headers(cp: ControlPlane) -> None:
    before = len(cp.clusters())
    cp.set_fault("echo_headers", target="register")
    status, raw = _raw_post(cp, "/api/v1/clusters/agent/register", 5)
    assert status == 502
    text = raw.decode()
    assert "POST /api/v1/clusters/agent/register" in text
    assert f"authorization: Bearer {TOKENS[0]}" in text
    assert len(cp.clusters()) == before  # the request never reached the API
    assert cp.faults()["hits"] == 1


def test_state_file_keeps_clusters_across_restarts_and_a_corrupt_one_is_named(
        tmp_path: Path) -> None:
    state = tmp_path / "clusters.json"
    with ControlPlane(TOKENS, extra_args=["--state", str(state)]) as first:
        body, reply = registered(first)
    assert state.stat().st_mode & 0o777 == 0o600
    with ControlPlane(TOKENS, extra_args=["--state", str(state)]) as second:
        view = second.cluster(reply["cluster_id"])
        assert view is not None and view["agent_id"] == body["agent_id"]
        status, _ = heartbeat(second, reply["cluster_id"], reply["token"],
                              heartbeat_body(reply["cluster_id"], body["agent_id"]))
        assert status == 200  # the cluster token survived the restart
    state.write_text("{not json")
    with pytest.raises(ControlPlaneError, match="not a state file"):
        ControlPlane(TOKENS, extra_args=["--state", str(state)], start_timeout=10).start()


def test_tokens_file_and_no_tokens(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    workspace = str(uuid.uuid4())
    tokens.write_text(f"# install tokens\npit_from_file {workspace}\n\npit_other # note\n")
    with ControlPlane([], extra_args=["--tokens-file", str(tokens)]) as plane:
        status, reply = register(plane, "pit_from_file")
        assert status == 201 and reply["workspace_id"] == workspace
        assert register(plane, "pit_other")[0] == 201
        assert register(plane, "pit_unknown")[0] == 401
    result = subprocess.run([str(BIN / "pipeops-dev-controlplane"), "--tokens-file",
                             str(tmp_path / "missing")], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1
    assert "--tokens-file" in result.stderr and "No such file" in result.stderr
