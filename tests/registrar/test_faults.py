"""Every fault switch of the dev control plane: the registrar survives it, says so once
per kind of failure (repeats only at debug level), reports not-ready, and recovers when
the fault clears. A refused install token is the one failure that ends the process."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import pytest

from kubesim.testing import Kubesim
from pipeops.agent.v1 import service_pb2
from pipeops_controlplane.testing import ControlPlane
from tests.helpers import wait_for
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import RegistrarRun, beats, cluster_with_beats

# mode -> what the one warning line must say so that an operator knows what happened
FAULTS = {
    "5xx": "HTTP 503",
    "hang": "no reply in time",
    "close": "connection failed before a reply",
    "malformed": "reply is not JSON",
}
RETRIES = 3  # failures seen before a fault is cleared, to prove repeats stay quiet


def _said(registrar: RegistrarRun, prefix: str) -> list[str]:
    """Every line (any level) that reports a failure of ``prefix``."""
    return [r["msg"] for r in registrar.records()
            if r.get("msg", "").startswith(f"{prefix} failed")]


def _assert_said_once(registrar: RegistrarRun, prefix: str, expected: str) -> None:
    lines = registrar.warnings(lambda r: r["msg"].startswith(f"{prefix} failed"))
    assert len(lines) == 1, [r["msg"] for r in lines]
    assert expected in lines[0]["msg"], lines[0]["msg"]
    assert lines[0]["level"] == "warning"
    # the repeats are at debug level, which the default (info) does not print
    assert len(_said(registrar, prefix)) == 1


@pytest.mark.parametrize("mode", list(FAULTS))
def test_fault_on_registration_then_on_heartbeats(
        mode: str, start_registrar: StartRegistrar, controlplane: ControlPlane) -> None:
    expected = FAULTS[mode]
    controlplane.set_fault(mode, target="register")  # set before the registrar starts
    # a hang costs a whole timeout per attempt: keep it short
    registrar = start_registrar(extra=["--set", "pipeops.timeout=0.5"] if mode == "hang" else [])
    wait_for(lambda: registrar.metric("pipeops_registration_attempts_total",
                                      result="error") >= RETRIES,
             timeout=20, what=f"{RETRIES} failed registration attempts")
    assert controlplane.faults()["hits"] >= RETRIES
    assert registrar.proc is not None and registrar.proc.poll() is None, "it survives"
    assert registrar.describe().state == service_pb2.SERVICE_STATE_DEGRADED
    assert registrar.identity_file()["state"] == "unregistered"  # type: ignore[index]
    _assert_said_once(registrar, "registration", expected)

    controlplane.clear_fault()
    identity = registrar.wait_registered()
    registrar.wait_record(lambda r: r.get("msg") == "registration recovered",
                          what="the recovery line")
    assert registrar.metric("pipeops_registration_attempts_total", result="success") == 1
    cluster_id = identity["cluster_id"]
    cluster_with_beats(controlplane, cluster_id, 1)
    wait_for(lambda: registrar.describe().state == service_pb2.SERVICE_STATE_READY,
             what="ready")

    controlplane.set_fault(mode, target="heartbeat")
    errors = registrar.metric("pipeops_heartbeat_errors_total")
    wait_for(lambda: registrar.metric("pipeops_heartbeat_errors_total") >= errors + RETRIES,
             timeout=20, what=f"{RETRIES} failed heartbeats")
    assert controlplane.faults()["hits"] >= RETRIES
    assert registrar.describe().state == service_pb2.SERVICE_STATE_DEGRADED
    assert registrar.metric("pipeops_agent_status") == 0
    _assert_said_once(registrar, "heartbeat", expected)

    controlplane.clear_fault()
    registrar.wait_record(lambda r: r.get("msg") == "heartbeat recovered",
                          what="the heartbeat recovery line")
    count = beats(controlplane, cluster_id)
    cluster_with_beats(controlplane, cluster_id, count + 2)
    wait_for(lambda: registrar.describe().state == service_pb2.SERVICE_STATE_READY,
             what="ready again")
    assert registrar.metric("pipeops_agent_status") == 1
    # still the one cluster, and still the same identity
    assert [c["cluster_id"] for c in controlplane.clusters()
            if c["agent_id"] == identity["agent_id"]] == [cluster_id]
    assert registrar.identity_file()["cluster_id"] == cluster_id  # type: ignore[index]
    registrar.assert_no_secrets(controlplane.token, identity["cluster_token"])


def test_registration_reply_without_cluster_id_is_refused_and_retried(
        start_registrar: StartRegistrar, controlplane: ControlPlane) -> None:
    controlplane.set_fault("no_cluster_id")
    registrar = start_registrar()
    wait_for(lambda: registrar.metric("pipeops_registration_attempts_total",
                                      result="error") >= RETRIES,
             timeout=20, what=f"{RETRIES} failed registration attempts")
    _assert_said_once(registrar, "registration", "required field cluster_id is missing")
    assert registrar.describe().state == service_pb2.SERVICE_STATE_DEGRADED
    controlplane.clear_fault()
    identity = registrar.wait_registered()
    assert uuid.UUID(identity["cluster_id"])
    cluster_with_beats(controlplane, identity["cluster_id"], 1)


def test_sigterm_while_the_control_plane_hangs_still_exits_0_within_2s(
        start_registrar: StartRegistrar, controlplane: ControlPlane) -> None:
    registrar = start_registrar(extra=["--set", "pipeops.timeout=10"])
    cluster_id = registrar.wait_registered()["cluster_id"]
    cluster_with_beats(controlplane, cluster_id, 1)
    controlplane.set_fault("hang", target="heartbeat")
    hits = controlplane.faults()["hits"]
    wait_for(lambda: controlplane.faults()["hits"] > hits, what="a heartbeat that hangs")
    assert registrar.terminate() == 0
    assert registrar.stop_seconds() < 2.0
    assert any(r.get("msg") == "final heartbeat not delivered" for r in registrar.records())


@pytest.mark.parametrize(("token", "expected"), [
    ("pit_wrong_" + uuid.uuid4().hex, "refused the install token (HTTP 401)"),
    ("", "no install token"),
])
def test_a_bad_install_token_exits_1_naming_the_problem(
        token: str, expected: str, start_registrar: StartRegistrar,
        controlplane: ControlPlane) -> None:
    before = len(controlplane.clusters())
    registrar = start_registrar(install_token=token)
    assert registrar.wait_exit() == 1
    errors = registrar.warnings(lambda r: r["level"] == "error")
    assert len(errors) == 1, errors
    assert expected in errors[0]["msg"] and "PIPEOPS_TOKEN" in errors[0]["msg"]
    assert len(controlplane.clusters()) == before
    if token:
        registrar.assert_no_secrets(token)


def test_a_missing_service_account_token_is_waited_for_not_fatal(
        start_registrar: StartRegistrar, controlplane: ControlPlane, kubesim: Kubesim,
        tmp_path: Path) -> None:
    token_path = tmp_path / "projected" / "token"
    registrar = start_registrar(extra=[
        "--set", f"kubernetes.service_account_token_path={token_path}"])
    wait_for(lambda: registrar.metric("pipeops_registration_attempts_total",
                                      result="error") >= RETRIES,
             timeout=20, what=f"{RETRIES} registration attempts without a token")
    _assert_said_once(registrar, "registration", str(token_path))
    assert registrar.describe().state == service_pb2.SERVICE_STATE_DEGRADED
    token_path.parent.mkdir()
    token_path.write_text(kubesim.token)  # the kubelet mounts it late
    identity = registrar.wait_registered()
    view = controlplane.cluster(identity["cluster_id"])
    assert view is not None
    assert view["k8s_service_token_sha256"] == hashlib.sha256(
        kubesim.token.encode()).hexdigest()[:16]
