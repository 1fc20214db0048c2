"""What the registrar must not do even when its surroundings misbehave: flood a control
plane that refuses heartbeats, replace its stored identity during an API-server outage,
show a token echoed in an error reply, or crash-loop on another workspace's cluster id."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from pipeops.agent.v1 import service_pb2
from pipeops_controlplane.testing import ControlPlane
from tests.clusters import Cluster
from tests.helpers import free_port, grpcurl, wait_for
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import (
    RegistrarRun,
    cluster_with_beats,
    registered_and_stopped,
    wait_stored,
)

GONE = "the control plane no longer accepts this cluster"


def _secret(ks: Cluster, namespace: str) -> dict[str, str] | None:
    status, body = ks.request("GET", f"/api/v1/namespaces/{namespace}/secrets/"
                                     "pipeops-agent-state")
    if status != 200:
        return None
    return {k: base64.b64decode(v).decode() for k, v in body["data"].items()}


def _registrations(cp: ControlPlane, cluster_id: str) -> int:
    view = cp.cluster(cluster_id)
    assert view is not None
    return int(view["registration_count"])


def _gone(registrar: RegistrarRun) -> list[dict[str, Any]]:
    return [r for r in registrar.records() if r.get("msg", "").startswith(GONE)]


def _at(record: dict[str, Any]) -> float:
    return dt.datetime.fromisoformat(record["time"]).timestamp()


@pytest.mark.parametrize("code", ["404", "401"])
def test_heartbeats_refused_while_registration_works_back_off_and_warn_once(
        code: str, start_registrar: StartRegistrar, controlplane: ControlPlane) -> None:
    # debug level: the repeats, with the wait each one announces, are visible
    registrar = start_registrar(extra=["--set", "logging.level=debug"])
    identity = registrar.wait_registered()
    cluster_id = identity["cluster_id"]
    cluster_with_beats(controlplane, cluster_id, 1)
    before = _registrations(controlplane, cluster_id)

    controlplane.set_fault(code, target="heartbeat")
    wait_for(lambda: _registrations(controlplane, cluster_id) >= before + 7, timeout=30,
             what="seven re-registrations")
    assert registrar.describe().state == service_pb2.SERVICE_STATE_DEGRADED
    rounds = _gone(registrar)
    assert len(rounds) >= 6
    assert f"HTTP {code}" in rounds[0]["msg"]
    # once at warning level; the repeats at debug
    assert [r["level"] for r in rounds] == ["warning"] + ["debug"] * (len(rounds) - 1)
    # The first round follows delivered heartbeats: at once. Each further one in a row
    # waits a full-jitter draw (pipeops.reconnect: up to 0.1 s, 0.2 s, then 0.5 s) and
    # really waits it before registering (and so heartbeating) again.
    waits = [r["retry_in"] for r in rounds]
    assert waits[0] == 0
    assert all(0 <= w <= 0.5 for w in waits) and sum(waits[1:6]) > 0, waits
    for this, following in itertools.pairwise(rounds):
        assert _at(following) - _at(this) >= this["retry_in"] - 0.002, (this, following)

    controlplane.clear_fault()
    beats = cluster_with_beats(controlplane, cluster_id, 2)
    assert beats["agent_id"] == identity["agent_id"]
    wait_for(lambda: registrar.describe().state == service_pb2.SERVICE_STATE_READY,
             what="ready again")
    assert registrar.identity_file()["cluster_id"] == cluster_id  # type: ignore[index]
    assert len([c for c in controlplane.clusters()
                if c["agent_id"] == identity["agent_id"]]) == 1

    # A delivered heartbeat resets it all: said again, and re-registered at once.
    seen = len(_gone(registrar))
    controlplane.set_fault(code, target="heartbeat")
    again = wait_for(lambda: _gone(registrar)[seen:], what="the next refusal")[0]
    assert (again["level"], again["retry_in"]) == ("warning", 0)


def test_an_api_outage_at_start_never_replaces_the_identity_stored_in_the_cluster(
        start_registrar: StartRegistrar, controlplane: ControlPlane, cluster: Cluster,
        namespace: str, tmp_path: Path) -> None:
    identity = registered_and_stopped(start_registrar(), cluster, namespace)
    shutil.rmtree(tmp_path / "state")  # a new pod: the emptyDir is empty

    # The API server answers 503 for longer than any bounded retry of the old code took.
    clusters = len(controlplane.clusters())
    with cluster.outage(10.0):
        second = start_registrar()
        waiting = wait_for(
            lambda: (info := second.describe()).state == service_pb2.SERVICE_STATE_DEGRADED
            and "stored identity" in info.detail and info,
            timeout=15, what="degraded, waiting to read the stored identity")
        assert "Kubernetes API" in waiting.detail
        assert second.identity_file() is None  # nothing decided, nothing written
        assert len(controlplane.clusters()) == clusters

    resumed = second.wait_registered(timeout=40)
    assert (resumed["agent_id"], resumed["cluster_id"]) == (identity["agent_id"],
                                                            identity["cluster_id"])
    second.wait_record(lambda r: r.get("msg") == "resuming the identity stored in the cluster",
                       what="the resume line")
    assert not [r for r in second.records() if r.get("msg") == "generated a new agent id"]
    assert len(controlplane.clusters()) == clusters, "a second cluster was registered"
    cluster_with_beats(controlplane, identity["cluster_id"], 1)
    after = _secret(cluster, namespace)
    assert after is not None
    assert (after["agent_id"], after["cluster_id"]) == (identity["agent_id"],
                                                        identity["cluster_id"])
    lines = second.warnings(lambda r: r["msg"].startswith(
        "reading the identity from the cluster failed"))
    assert len(lines) == 1, [r["msg"] for r in lines]


def _grpcurl_json(registrar: RegistrarRun, method: str) -> str:
    result = grpcurl("-plaintext", "-d", "{}", registrar.grpc_address, method)
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)  # a real answer, not an error text
    return result.stdout


def test_a_reply_echoing_the_request_headers_never_shows_a_token(
        start_registrar: StartRegistrar, controlplane: ControlPlane) -> None:
    controlplane.set_fault("echo_headers", target="register")
    registrar = start_registrar()
    wait_for(lambda: registrar.metric("pipeops_registration_attempts_total",
                                      result="error") >= 2,
             timeout=20, what="failed registrations")
    described = _grpcurl_json(registrar, "pipeops.agent.v1.Service/Describe")
    assert "authorization: Bearer ***" in described, described  # the echo is there...
    assert controlplane.token not in described  # ...without the install token

    controlplane.clear_fault()
    identity = registrar.wait_registered()
    cluster_token = identity["cluster_token"]
    cluster_with_beats(controlplane, identity["cluster_id"], 1)
    controlplane.set_fault("echo_headers", target="heartbeat")
    wait_for(lambda: "HTTP 502" in registrar.heartbeat_state().last_error,
             timeout=20, what="a heartbeat refused with the echo")
    beat = _grpcurl_json(registrar, "pipeops.agent.v1.Registrar/GetHeartbeat")
    assert "authorization: Bearer ***" in beat, beat
    described = _grpcurl_json(registrar, "pipeops.agent.v1.Service/Describe")
    assert "Bearer ***" in described, described
    for text in (beat, described):
        assert cluster_token not in text and controlplane.token not in text
    registrar.assert_no_secrets(controlplane.token, cluster_token)


def test_a_stored_cluster_of_another_workspace_is_dropped_for_a_new_cluster(
        start_registrar: StartRegistrar, controlplane: ControlPlane, cluster: Cluster,
        namespace: str) -> None:
    old = registered_and_stopped(start_registrar(), cluster, namespace)

    # Same volume and Secret, but an install token of another workspace: the stored
    # cluster id gets 403.
    second = start_registrar(install_token=controlplane.tokens[1])
    new = second.wait_registered()
    assert new["cluster_id"] != old["cluster_id"]
    assert new["agent_id"] != old["agent_id"]  # the whole stale identity is dropped
    said = second.warnings()
    assert len(said) == 1, [r["msg"] for r in said]
    assert said[0]["level"] == "warning"
    for part in (old["cluster_id"], "HTTP 403", "secret/pipeops-agent-state",
                 "another workspace", "registering as a new cluster"):
        assert part in said[0]["msg"], said[0]["msg"]
    view = cluster_with_beats(controlplane, new["cluster_id"], 1)
    old_view = controlplane.cluster(old["cluster_id"])
    assert old_view is not None and view["workspace_id"] != old_view["workspace_id"]
    stored = wait_for(lambda: (s := _secret(cluster, namespace))
                      and s["cluster_id"] == new["cluster_id"] and s,
                      what="the Secret to name the new cluster")
    assert stored["agent_id"] == new["agent_id"]
    assert second.terminate() == 0

    # A wrong install token is still fatal, after the one try without the cluster id.
    third = start_registrar(install_token="pit_wrong_0123456789")
    assert third.wait_exit() == 1
    errors = third.warnings(lambda r: r["level"] == "error")
    assert len(errors) == 1, errors
    assert "refused the install token (HTTP 401)" in errors[0]["msg"]
    kept = _secret(cluster, namespace)  # kept for when the token is fixed
    assert kept is not None
    assert (kept["agent_id"], kept["cluster_id"]) == (new["agent_id"], new["cluster_id"])
    assert third.identity_file()["cluster_id"] == new["cluster_id"]  # type: ignore[index]


def test_a_new_api_url_keeps_the_cluster_copy_until_registered_there(
        start_registrar: StartRegistrar, controlplane: ControlPlane, cluster: Cluster,
        namespace: str, tmp_path: Path) -> None:
    identity = registered_and_stopped(start_registrar(), cluster, namespace)

    # A mistyped api_url (nothing answers there); the container restarts on the same
    # volume, twice.
    elsewhere = f"http://127.0.0.1:{free_port()}"
    for attempt in range(2):
        wrong = start_registrar(extra=["--api-url", elsewhere])
        wait_for(lambda run=wrong: run.metric("pipeops_registration_attempts_total",
                                              result="error") >= 1,
                 what="a failed registration at the new URL")
        # The siblings see no cluster of the old plane any more...
        written = wrong.identity_file()
        assert written is not None
        assert (written["api_url"], written["cluster_id"], written["state"]) == (
            elsewhere, "", "unregistered"), attempt
        # ...but the cluster copy still names the old plane's cluster.
        secret, configmap = wait_stored(cluster, namespace, identity)
        assert secret["cluster_token"] == identity["cluster_token"]
        assert configmap["api_url"] == controlplane.url
        assert wrong.terminate() == 0

    # The URL put back, same volume: the same cluster, its id offered.
    again = start_registrar()
    resumed = again.wait_registered()
    assert (resumed["agent_id"], resumed["cluster_id"]) == (identity["agent_id"],
                                                            identity["cluster_id"])
    view = controlplane.cluster(identity["cluster_id"])
    assert view is not None and view["registration"]["cluster_id"] == identity["cluster_id"]
    again.wait_record(lambda r: r.get("msg") == "resuming the identity stored in the cluster",
                      what="the resume line")
