"""Registration, persistence and heartbeats against the real dev control plane, in both
worlds (``cluster``: kubesim and the real Kubernetes control plane)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import grpc

from kubesim.testing import Kubesim
from pipeops.agent.v1 import registrar_pb2, registrar_pb2_grpc
from pipeops_controlplane.testing import ControlPlane
from tests.clusters import Cluster
from tests.helpers import grpcurl, wait_for
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import INTERVAL, registered_and_stopped, wait_stored


def _cluster(cp: ControlPlane, cluster_id: str) -> dict[str, Any] | None:
    return cp.cluster(cluster_id)


def _object(ks: Cluster | Kubesim, namespace: str, kind: str, name: str) -> dict[str, Any] | None:
    status, body = ks.request("GET", f"/api/v1/namespaces/{namespace}/{kind}/{name}")
    return body if status == 200 else None


def _counts(ks: Cluster) -> tuple[int, int]:
    nodes = ks.request("GET", "/api/v1/nodes")[1]["items"]
    pods = ks.request("GET", "/api/v1/pods")[1]["items"]
    return len(nodes), len(pods)


def test_fresh_start_registers_persists_heartbeats_and_serves_identity(
        start_registrar: StartRegistrar, controlplane: ControlPlane, cluster: Cluster,
        namespace: str, tmp_path: Path) -> None:
    registrar = start_registrar()
    identity = registrar.wait_registered()
    cluster_id = identity["cluster_id"]
    assert uuid.UUID(cluster_id)
    assert identity["agent_id"].startswith("agent-default-cluster-")
    assert identity["cluster_token"] and identity["api_url"] == controlplane.url
    assert (tmp_path / "state" / "identity.json").stat().st_mode & 0o777 == 0o600

    # The control plane has it, with the ServiceAccount token we gave the registrar.
    known = wait_for(lambda: _cluster(controlplane, cluster_id), what="the cluster")
    assert known["agent_id"] == identity["agent_id"]
    registration = known["registration"]
    assert registration["k8s_version"].startswith("v1.")
    assert registration["server_ip"] == "127.0.0.1"
    sa_token_digest = known["k8s_service_token_sha256"]
    assert sa_token_digest == hashlib.sha256(cluster.token.encode()).hexdigest()[:16]

    # Secret (credentials) and ConfigMap (ids) in the agent's namespace.
    decoded, configmap = wait_stored(cluster, namespace, identity)
    assert decoded["cluster_token"] == identity["cluster_token"]
    assert decoded["agent_id"] == configmap["agent_id"] == identity["agent_id"]
    assert "cluster_token" not in configmap

    # Heartbeats arrive every interval with the cluster's real counts.
    first = wait_for(lambda: (c := _cluster(controlplane, cluster_id))
                     and c["heartbeat_count"] >= 1 and c, what="a first heartbeat")
    start_count = first["heartbeat_count"]
    started = dt.datetime.now(dt.UTC)
    later = wait_for(lambda: (c := _cluster(controlplane, cluster_id))
                     and c["heartbeat_count"] >= start_count + 4 and c,
                     timeout=10, what="four more heartbeats")
    elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds()
    assert elapsed >= 3 * INTERVAL * 0.85, "heartbeats came faster than the interval"
    beat = later["last_heartbeat"]
    nodes, pods = _counts(cluster)
    assert beat["metadata"]["node_count"] == nodes and nodes > 0
    assert beat["metadata"]["pod_count"] == pods and pods > 0
    assert beat["status"] == "active"
    assert beat["tunnel_status"] == "disconnected"  # no tunnel sibling runs here
    assert beat["metadata"]["k8s_version"] == registration["k8s_version"]
    assert "token" not in json.dumps(beat)

    # grpcurl (the real tool) shows the identity, without the token.
    address = registrar.grpc_address
    result = grpcurl("-plaintext", address, "pipeops.agent.v1.Registrar/GetIdentity")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)  # field names as in the .proto (reflection)
    assert shown["agent_id"] == identity["agent_id"], result.stdout
    assert shown["cluster_id"] == cluster_id
    assert shown["state"] == "REGISTRATION_STATE_REGISTERED"
    assert identity["cluster_token"] not in result.stdout
    result = grpcurl("-plaintext", address, "pipeops.agent.v1.Registrar/GetHeartbeat")
    assert result.returncode == 0, result.stderr
    heartbeat = json.loads(result.stdout)
    assert int(heartbeat["sent_total"]) >= 1 and heartbeat["pod_count"] == pods
    # the registration is an event on the Events stream too
    result = grpcurl("-plaintext", "-max-time", "4", "-d", '{"history": 100}', address,
                     "pipeops.agent.v1.Events/Subscribe")
    assert '"message": "registered"' in result.stdout, result.stdout
    assert cluster_id in result.stdout

    registrar.assert_no_secrets(controlplane.token, identity["cluster_token"], cluster.token)


def test_restart_with_volume_wiped_resumes_from_the_secret(
        start_registrar: StartRegistrar, controlplane: ControlPlane, cluster: Cluster,
        namespace: str, tmp_path: Path) -> None:
    identity = registered_and_stopped(start_registrar(), cluster, namespace)
    shutil.rmtree(tmp_path / "state")  # a new pod: the emptyDir is empty

    second = start_registrar()
    resumed = second.wait_registered()
    assert resumed["agent_id"] == identity["agent_id"]
    assert resumed["cluster_id"] == identity["cluster_id"]
    second.wait_record(lambda r: r.get("msg") == "resuming the identity stored in the cluster",
                       what="the resume line")
    mine = [c for c in controlplane.clusters() if c["agent_id"] == identity["agent_id"]]
    assert len(mine) == 1, "the restart created a second cluster"
    assert mine[0]["registration_count"] == 2
    assert mine[0]["registration"]["cluster_id"] == identity["cluster_id"]  # it was offered
    second.assert_no_secrets(controlplane.token, resumed["cluster_token"], cluster.token)

    # A corrupt state file is moved aside, said once, and the Secret wins again.
    assert second.terminate() == 0
    (tmp_path / "state" / "identity.json").write_text('{"data": {"agent_id": "x"')
    third = start_registrar()
    again = third.wait_registered()
    assert (again["agent_id"], again["cluster_id"]) == (identity["agent_id"],
                                                        identity["cluster_id"])
    said = third.warnings(lambda r: r["msg"].startswith("state file is corrupt"))
    assert len(said) == 1, said
    assert list((tmp_path / "state").glob("identity.json.corrupt-*"))
    assert len([c for c in controlplane.clusters()
                if c["agent_id"] == identity["agent_id"]]) == 1


def test_restart_with_file_kept_resumes_and_configured_id_wins(
        start_registrar: StartRegistrar, controlplane: ControlPlane,
        cluster: Cluster) -> None:
    first = start_registrar()
    identity = first.wait_registered()
    assert first.terminate() == 0
    second = start_registrar()
    assert second.wait_registered()["cluster_id"] == identity["cluster_id"]
    assert second.terminate() == 0
    third = start_registrar(extra=["--agent-id", "agent-configured-1"])
    configured = third.wait_registered()
    assert configured["agent_id"] == "agent-configured-1"
    assert configured["cluster_id"] == identity["cluster_id"]  # the same cluster, renamed agent


def test_sigterm_sends_a_last_heartbeat_disconnected_and_exits_0(
        start_registrar: StartRegistrar, controlplane: ControlPlane,
        cluster: Cluster) -> None:
    registrar = start_registrar()
    cluster_id = registrar.wait_registered()["cluster_id"]
    wait_for(lambda: (c := _cluster(controlplane, cluster_id)) and c["heartbeat_count"] >= 1,
             what="a heartbeat")
    assert registrar.terminate() == 0
    assert registrar.stop_seconds() < 2.0
    assert registrar.records()[-1]["msg"] == "stopped"
    known = _cluster(controlplane, cluster_id)
    assert known is not None
    assert known["last_heartbeat"]["status"] == "disconnected"
    assert known["status"] == "disconnected"


def test_a_stop_while_the_identity_is_saved_lets_the_save_finish(
        start_registrar: StartRegistrar, kubesim: Kubesim, namespace: str) -> None:
    # kubesim-only: set_delay (every answer slowed) has no real equivalent
    # Every API answer takes 0.3 s: the stop lands while the Secret (then the ConfigMap)
    # is written, just after the file said "registered".
    kubesim.set_delay(0.3)
    try:
        registrar = start_registrar()
        identity = registrar.wait_registered(timeout=40)
        assert registrar.terminate() == 0
    finally:
        kubesim.set_delay(0)
    secret = _object(kubesim, namespace, "secrets", "pipeops-agent-state")
    assert secret is not None
    assert base64.b64decode(secret["data"]["cluster_id"]).decode() == identity["cluster_id"]
    configmap = _object(kubesim, namespace, "configmaps", "pipeops-agent-identity")
    assert configmap is not None and configmap["data"]["cluster_id"] == identity["cluster_id"]


def test_cluster_forgotten_reregisters_with_the_same_ids(
        start_registrar: StartRegistrar, controlplane: ControlPlane,
        cluster: Cluster) -> None:
    registrar = start_registrar()
    identity = registrar.wait_registered()
    cluster_id = identity["cluster_id"]
    wait_for(lambda: (c := _cluster(controlplane, cluster_id)) and c["heartbeat_count"] >= 1,
             what="a heartbeat")
    with grpc.insecure_channel(registrar.grpc_address) as channel:
        stream = registrar_pb2_grpc.RegistrarStub(channel).WatchIdentity(
            registrar_pb2.WatchIdentityRequest(), timeout=20)
        first = next(stream)  # the current identity at once
        assert first.cluster_id == cluster_id
        assert first.state == registrar_pb2.REGISTRATION_STATE_REGISTERED
        controlplane.forget(cluster_id)
        registrar.wait_record(lambda r: "registering again" in r.get("msg", ""),
                              what="the re-registration line")
        seen = []
        # then the changes (a watcher may see only the latest of two quick ones):
        # unregistered, then registered again
        for update in stream:
            seen.append(update)
            if update.state == registrar_pb2.REGISTRATION_STATE_REGISTERED:
                break
        stream.cancel()
    assert [u.generation for u in seen] == sorted({u.generation for u in seen})
    assert seen[-1].generation > first.generation
    assert seen[-1].cluster_id == cluster_id and seen[-1].agent_id == identity["agent_id"]
    back = wait_for(lambda: (c := _cluster(controlplane, cluster_id)) and c["heartbeat_count"] >= 1
                    and c, what="heartbeats after re-registering")
    assert back["agent_id"] == identity["agent_id"]
    assert len([c for c in controlplane.clusters() if c["agent_id"] == identity["agent_id"]]) == 1
    assert registrar.metric("pipeops_heartbeat_errors_total", reason="not_found") >= 1
    assert registrar.metric("pipeops_registration_attempts_total", result="success") == 2


def test_without_rbac_for_its_state_it_says_so_once_and_uses_the_file(
        start_registrar: StartRegistrar, cluster: Cluster, controlplane: ControlPlane,
        namespace: str, tmp_path: Path) -> None:
    token = cluster.service_account_token(namespace, "agent")
    cluster.grant_cluster_rules(namespace, "agent", [
        {"apiGroups": [""], "resources": ["pods", "nodes"], "verbs": ["list"]}])
    kubeconfig = tmp_path / "reader.kubeconfig"
    kubeconfig.write_text(Path(cluster.kubeconfig).read_text().replace(cluster.token, token))
    registrar = start_registrar(kubeconfig=str(kubeconfig))
    identity = registrar.wait_registered()
    cluster_id = identity["cluster_id"]
    wait_for(lambda: (c := _cluster(controlplane, cluster_id)) and c["heartbeat_count"] >= 3,
             what="heartbeats")
    said = registrar.warnings(lambda r: "cannot keep the identity in the cluster" in r["msg"])
    assert len(said) == 1, said
    assert "no RBAC permission" in said[0]["msg"]
    assert _object(cluster, namespace, "secrets", "pipeops-agent-state") is None
    beat = controlplane.cluster(cluster_id)
    assert beat is not None and beat["last_heartbeat"]["metadata"]["pod_count"] > 0
