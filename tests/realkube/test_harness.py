"""The real control plane itself: built by `make setup`, up in seconds, a working cluster.

The session's shared RealKube must have Ready kwok nodes; a Deployment becomes a Pod the
real scheduler binds to one of them and kwok marks Running and Ready; a TokenRequest token
is a real ServiceAccount identity that RBAC refuses by default; the API server restarts on
its port with its data; and a missing binary is a clear error naming `make setup`.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from realkube.testing import BINARIES, RealKube, RealKubeError, tools_dir


def test_every_binary_is_built_and_reports_its_version() -> None:
    for name in BINARIES:
        assert (tools_dir() / name).is_file(), f"{name} missing: run `make setup`"
    out = subprocess.run([str(tools_dir() / "kube-apiserver"), "--version"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.strip() == "Kubernetes v1.34.4"
    out = subprocess.run([str(tools_dir() / "etcd"), "--version"], capture_output=True,
                         text=True, timeout=30, check=True).stdout
    assert "etcd Version: 3.6." in out


def test_a_missing_binary_is_a_setup_error_naming_make_setup(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REALKUBE_BIN", str(tmp_path))
    with pytest.raises(RealKubeError, match=r"missing .*kube-apiserver.*make setup"):
        RealKube().start()


def test_the_nodes_are_kwok_nodes_and_ready(real_kube: RealKube) -> None:
    status, body = real_kube.request("GET", "/api/v1/nodes")
    assert status == 200
    nodes = {n["metadata"]["name"]: n for n in body["items"]}
    assert set(nodes) == set(real_kube.node_names)
    for node in nodes.values():
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True"
        assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    status, version = real_kube.request("GET", "/version")
    assert status == 200 and version["gitVersion"] == "v1.34.4"


def _deployment(name: str, namespace: str, replicas: int = 2) -> dict[str, Any]:
    labels = {"app": name}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": "c", "image": "x"}]}}}}


def test_a_deployment_becomes_pods_bound_to_kwok_nodes_and_ready(real_kube: RealKube) -> None:
    real_kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "h1"}})
    real_kube.apply(_deployment("web", "h1"))

    def available() -> dict[str, Any] | None:
        _, dep = real_kube.request("GET", "/apis/apps/v1/namespaces/h1/deployments/web")
        return dep if dep.get("status", {}).get("readyReplicas") == 2 else None

    real_kube.wait_for(available, timeout=60)
    _, pods = real_kube.request("GET", "/api/v1/namespaces/h1/pods?labelSelector=app%3Dweb")
    assert len(pods["items"]) == 2
    for pod in pods["items"]:
        assert pod["spec"]["nodeName"] in real_kube.node_names  # bound by the scheduler
        assert pod["status"]["phase"] == "Running"
        assert pod["status"]["podIP"].startswith("10.244.")
        # the ServiceAccount admission gave it a projected token volume
        assert any("projected" in v for v in pod["spec"]["volumes"])
    events = real_kube.request("GET", "/api/v1/namespaces/h1/events")[1]["items"]
    assert any(e["reason"] == "Scheduled" for e in events)


def test_a_token_request_token_is_a_service_account_rbac_refuses(
        real_kube: RealKube) -> None:
    token = real_kube.service_account_token("h2", "robot")
    assert token.count(".") == 2  # a JWT
    status, body = real_kube.request("GET", "/api/v1/namespaces/h2/pods", token=token)
    assert status == 403
    assert body["message"].startswith(
        'pods is forbidden: User "system:serviceaccount:h2:robot" cannot list')
    status, review = real_kube.request(
        "POST", "/apis/authentication.k8s.io/v1/tokenreviews",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
         "spec": {"token": token}})
    assert status == 201 and review["status"]["authenticated"] is True
    assert real_kube.request("GET", "/api/v1/pods", token="not-a-token")[0] == 401


def test_the_api_server_restarts_on_its_port_with_its_data() -> None:
    with RealKube(nodes=1) as rk:
        assert rk.startup_seconds < 60, rk.startup_seconds
        rk.apply({"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "kept", "namespace": "default"}})
        started = time.monotonic()
        rk.restart_apiserver()
        assert time.monotonic() - started < 30
        assert rk.request("GET", "/api/v1/namespaces/default/configmaps/kept")[0] == 200
        out = subprocess.run([*rk.kubectl_args, "get", "nodes", "-o", "name"],
                             capture_output=True, text=True, timeout=30, check=True)
        assert out.stdout.split() == ["node/kwok-node-0"]
