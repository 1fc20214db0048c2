"""The agent's RBAC, enforced: what the chart grants is enough for the registrar, and no more.

In both worlds (kubesim and the real control plane, tests/clusters.py): the chart is
installed with the real helm; a token for the agent's ServiceAccount, with no rules of
its own (kubesim binds one of ours; the real API server issues it by TokenRequest), is
then authorised from the Roles, ClusterRoles and bindings the chart stored
(resourceNames included). On the session-shared real cluster the release, its namespace
and its session namespace are named for this module, and uninstalled after it.
The real registrar runs on the config the chart renders, with that token, against the
real dev control plane: it must register, keep its state in its namespace and heartbeat
with the cluster's counts, without a single 403. The same token is refused everything
the chart does not grant, the install-token and control-plane token Secrets beside its
own state first of all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubesim.testing import Kubesim
from pipeops_controlplane.testing import ControlPlane
from tests.chart.chart import CHART_DIR, NAMESPACE, RELEASE, Chart, Rendered
from tests.clusters import WORLDS, Cluster
from tests.helpers import BIN, ServiceProcess, free_port, wait_for


@dataclass
class Installed:
    ks: Cluster  # the world, with the chart installed
    cp: ControlPlane
    rendered: Rendered
    token: str  # the agent ServiceAccount's
    folder: Path
    namespace: str  # the release's
    sessions: str  # the session namespace


@pytest.fixture(scope="module", params=WORLDS)
def installed(request: pytest.FixtureRequest, chart: Chart,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The chart installed in one world, the control plane, the render, the agent's token."""
    folder = tmp_path_factory.mktemp("rbac")
    with contextlib.ExitStack() as stack:
        cp = stack.enter_context(ControlPlane())
        values = ["--set", f"pipeops.token={cp.token}", "--set", f"pipeops.apiUrl={cp.url}"]
        if request.param == "real":
            world = Cluster("real", request.getfixturevalue("real_kube"))
            suffix = secrets.token_hex(3)
            release, namespace = f"rbac-{suffix}", f"rbac-{suffix}"
            sessions = f"rbac-{suffix}-sessions"
            values += ["--set", f"agent.sessionNamespace={sessions}"]
        else:
            world = Cluster("kubesim", stack.enter_context(Kubesim(demo=True)))
            release, namespace, sessions = RELEASE, NAMESPACE, "pipeops-sessions"
        chart.run("install", release, str(CHART_DIR), "-n", namespace, "--create-namespace",
                  *values, kubeconfig=world.kubeconfig)
        if world.real:
            stack.callback(world.request, "DELETE", f"/api/v1/namespaces/{sessions}")
            stack.callback(world.request, "DELETE", f"/api/v1/namespaces/{namespace}")
            stack.callback(chart.run, "uninstall", release, "-n", namespace, "--wait",
                           kubeconfig=world.kubeconfig)
        rendered = chart.template(*values, namespace=namespace, release=release)
        # No rules of its own: the world grants what the chart's stored RBAC grants.
        token = world.service_account_token(namespace, rendered.service_account)
        if world.real:  # the controllers make the agent's pod: there before pods are counted
            wait_for(lambda: world.request("GET", f"/api/v1/namespaces/{namespace}/pods")[1][
                "items"], timeout=30, what="the chart's pod")
        yield Installed(world, cp, rendered, token, folder, namespace, sessions)


def _get(ks: Cluster, token: str, path: str) -> int:
    return ks.request("GET", path, token=token)[0]


def _secret_names(rendered: Rendered) -> list[str]:
    """The token Secrets the chart renders: the install token, the dashboard token (the
    http-api's, read by the kubelet for its env only) and the control plane's."""
    opaque = sorted(s["metadata"]["name"] for s in rendered.of_kind("Secret")
                    if s.get("type") == "Opaque")
    control_plane = [s["metadata"]["name"] for s in rendered.of_kind("Secret")
                     if s.get("type") == "kubernetes.io/service-account-token"]
    assert len(opaque) == 2 and opaque[0].endswith("-dashboard"), opaque
    assert len(control_plane) == 1, control_plane
    return [*opaque, *control_plane]


def test_the_agent_token_cannot_read_the_token_secrets_beside_its_state(
        installed: Installed) -> None:
    ks, rendered, token, namespace = (installed.ks, installed.rendered, installed.token,
                                      installed.namespace)
    secrets_path = f"/api/v1/namespaces/{namespace}/secrets"
    for name in _secret_names(rendered):
        assert ks.request("GET", f"{secrets_path}/{name}")[0] == 200, name  # it is there
        status, body = ks.request("GET", f"{secrets_path}/{name}", token=token)
        assert status == 403, name
        assert body["reason"] == "Forbidden"
        assert "system:serviceaccount:" in body["message"], body
        for method, payload in (("DELETE", None), ("PATCH", {"metadata": {"labels": {
                "x": "y"}}}), ("PUT", {"metadata": {"name": name}})):
            kind = "application/merge-patch+json" if method == "PATCH" else "application/json"
            assert ks.request(method, f"{secrets_path}/{name}", payload, token=token,
                              content_type=kind)[0] == 403, (method, name)
    # Nor list or watch them in bulk.
    for path in (secrets_path, f"{secrets_path}?watch=true",
                 f"/api/v1/namespaces/{namespace}/configmaps"):
        assert _get(ks, token, path) == 403, path


def test_the_agent_token_gets_only_what_the_chart_grants(
        installed: Installed) -> None:
    ks, token, namespace = installed.ks, installed.token, installed.namespace
    # Granted: cluster-wide reads of what the gateway watches and the registrar counts.
    for path in ("/api/v1/pods?limit=1", "/api/v1/nodes", "/api/v1/services",
                 "/apis/networking.k8s.io/v1/ingresses",
                 "/apis/networking.k8s.io/v1/ingressclasses",
                 f"/apis/apps/v1/namespaces/{installed.sessions}/deployments"):
        assert _get(ks, token, path) == 200, path
    # Its own two state objects, by name: allowed (404 until the registrar writes them).
    for path in (f"/api/v1/namespaces/{namespace}/secrets/pipeops-agent-state",
                 f"/api/v1/namespaces/{namespace}/configmaps/pipeops-agent-identity"):
        assert _get(ks, token, path) in (200, 404), path
    # Refused: secrets anywhere else, workloads outside the session namespace, RBAC.
    for path in ("/api/v1/secrets", "/api/v1/namespaces/default/secrets",
                 "/api/v1/namespaces/kube-system/secrets",
                 "/api/v1/namespaces/default/configmaps",
                 "/apis/apps/v1/namespaces/default/deployments",
                 "/apis/rbac.authorization.k8s.io/v1/clusterroles"):
        assert _get(ks, token, path) == 403, path
    status, body = ks.request("POST", "/api/v1/namespaces/default/pods",
                              {"metadata": {"name": "x"}, "spec": {"containers": [
                                  {"name": "x", "image": "x"}]}}, token=token)
    assert status == 403 and body["reason"] == "Forbidden"


def test_the_registrar_runs_on_the_charts_rbac_and_config(
        installed: Installed) -> None:
    ks, cp, rendered, token, folder, namespace = (
        installed.ks, installed.cp, installed.rendered, installed.token, installed.folder,
        installed.namespace)
    config = folder / "config.yaml"
    config.write_text(rendered.config_text)
    kubeconfig = yaml.safe_load(Path(ks.kubeconfig).read_text())
    kubeconfig["users"][0]["user"]["token"] = token
    (folder / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    (folder / "sa-token").write_text(token)
    (folder / "cp-token").write_text("control-plane-sa-token")
    state = folder / "state"
    state.mkdir()

    argv = [str(BIN / "pipeops-registrar"), "--config", str(config),
            # Outside a pod: the mounted files and the in-cluster client become paths.
            "--kubeconfig", str(folder / "kubeconfig"),
            "--state-dir", str(state), "--grpc-port", "0",
            "--set", "kubernetes.in_cluster=false",
            "--set", f"kubernetes.service_account_token_path={folder / 'sa-token'}",
            "--set", f"kubernetes.control_plane_token_path={folder / 'cp-token'}",
            "--set", "grpc.probe_host=127.0.0.1", "--set", "grpc.registrar_probe=0",
            "--set", f"grpc.tunnel={free_port()}", "--set", f"grpc.gateway={free_port()}",
            "--set", "metrics.registrar=0", "--set", "pipeops.heartbeat_interval=0.5"]
    with ServiceProcess(argv, env={"PIPEOPS_TOKEN": cp.token}) as registrar:
        registrar.wait_record(lambda r: r.get("msg") == "registered with the control plane",
                              timeout=20, what="registration")
        # The line comes just before the identity is stored: wait for the file to say so.
        def registered() -> dict[str, Any] | None:
            try:
                data: dict[str, Any] = json.loads((state / "identity.json").read_text())["data"]
            except (FileNotFoundError, ValueError):
                return None
            return data if data.get("state") == "registered" and data.get("cluster_id") else None

        identity: dict[str, Any] = wait_for(registered, timeout=10,
                                            what="the identity file to say registered")
        cluster_id = identity["cluster_id"]

        # Its durable state, written with the agent's own token, in the agent's namespace.
        def state_secret() -> bool:
            status, body = ks.request("GET", f"/api/v1/namespaces/{namespace}/secrets")
            names = {s["metadata"]["name"] for s in body["items"]} if status == 200 else set()
            return "pipeops-agent-state" in names

        wait_for(state_secret, timeout=10, what="the registrar's state Secret")
        status, stored = ks.request(
            "GET", f"/api/v1/namespaces/{namespace}/configmaps/pipeops-agent-identity")
        assert status == 200 and stored["data"]["agent_id"] == identity["agent_id"]
        # The agent's token reads back what it wrote, by name.
        assert _get(ks, token, f"/api/v1/namespaces/{namespace}/secrets/"
                               "pipeops-agent-state") == 200
        pods = len(ks.request("GET", "/api/v1/pods")[1]["items"])
        nodes = len(ks.request("GET", "/api/v1/nodes")[1]["items"])
        beat = wait_for(lambda: (c := cp.cluster(cluster_id)) and c["heartbeat_count"] >= 1
                        and c["last_heartbeat"], timeout=15, what="a heartbeat")
        assert beat["metadata"]["pod_count"] == pods > 0
        assert beat["metadata"]["node_count"] == nodes > 0
        # The control plane was handed the control-plane identity's token, not the agent's.
        digest = cp.cluster(cluster_id)["k8s_service_token_sha256"]  # type: ignore[index]
        assert digest == hashlib.sha256(b"control-plane-sa-token").hexdigest()[:16]

        # "403" as a number of its own: a port or pid in a record may contain those digits
        forbidden = [r for r in registrar.records()
                     if "forbidden" in json.dumps(r).lower()
                     or re.search(r"(?<!\d)403(?!\d)", json.dumps(r))]
        assert forbidden == [], forbidden
        assert registrar.terminate(timeout=15) == 0
