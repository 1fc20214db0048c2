"""``Registrar.CheckKubernetes``: the Kubernetes API asked now with the agent's own
credentials: reachable, its version, and each permission the agent needs by a
SelfSubjectAccessReview (what the http-api's connectivity check reports)."""

from __future__ import annotations

from pathlib import Path

import grpc

from kubesim.testing import Kubesim
from pipeops.agent.v1 import registrar_pb2, registrar_pb2_grpc
from tests.helpers import free_port, wait_for
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import RegistrarRun


def check(registrar: RegistrarRun) -> registrar_pb2.KubernetesCheck:
    with grpc.insecure_channel(registrar.grpc_address) as channel:
        reply: registrar_pb2.KubernetesCheck = registrar_pb2_grpc.RegistrarStub(
            channel).CheckKubernetes(registrar_pb2.CheckKubernetesRequest(), timeout=15)
    return reply


def test_reachable_with_the_permissions_reviewed(start_registrar: StartRegistrar,
                                                 kubesim: Kubesim, namespace: str) -> None:
    registrar = start_registrar()
    registrar.wait_registered()
    reply = check(registrar)
    assert reply.reachable and reply.error == ""
    assert reply.version.startswith("v1.")
    assert str(kubesim.port) in reply.server
    assert reply.latency_seconds > 0
    wanted = {(p.verb, p.resource, p.namespace) for p in reply.permissions}
    assert ("list", "pods", "") in wanted
    assert ("get", "secrets", namespace) in wanted
    assert all(p.allowed for p in reply.permissions), reply.permissions  # the admin token
    assert registrar.metric("pipeops_kubernetes_api_calls_total",
                            operation="self_subject_access_review", code="201") == len(wanted)


def test_an_unreachable_api_server_is_named(start_registrar: StartRegistrar, kubesim: Kubesim,
                                            tmp_path: Path) -> None:
    dead = tmp_path / "dead.kubeconfig"
    dead.write_text(Path(kubesim.kubeconfig).read_text().replace(
        f":{kubesim.port}", f":{free_port()}"))
    registrar = start_registrar(kubeconfig=str(dead))
    registrar.wait_started()
    reply = wait_for(lambda: "not loaded" not in (r := check(registrar)).error and r, 20,
                     what="the registrar to load its client")
    assert not reply.reachable
    assert "get_version" in reply.error
    assert list(reply.permissions) == []
