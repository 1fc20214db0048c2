"""`helm install` into a real kubesim process, checked with the real kubectl.

kubesim follows the API server's rules for what helm does (discovery, server-side apply,
the release Secret in protobuf, Namespaces that must exist): what it accepts here, a
real API server accepts too. Each test gets its own kubesim, so none depends on another.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from kubesim.testing import Kubesim
from tests.chart.chart import CHART_DIR, NAMESPACE, RELEASE, TOKEN, VALUES_DIR, Chart, Rendered

# The built-in kinds the chart renders: every rendered object of these is looked up in
# kubesim (the custom resources are checked one by one where they are rendered).
BUILTIN = {"Namespace": "namespaces", "ServiceAccount": "serviceaccounts", "Secret": "secrets",
           "ConfigMap": "configmaps", "Service": "services", "Deployment": "deployments",
           "NetworkPolicy": "networkpolicies", "Role": "roles", "RoleBinding": "rolebindings",
           "ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings"}
CUSTOM_CHECKED = {"Gateway", "TCPRoute", "UDPRoute", "VirtualService"}
# kubesim has no Prometheus Operator, like a cluster without it: the ServiceMonitor is off.
ALL_FEATURES = ["-f", str(VALUES_DIR / "all-features.yaml"),
                "--set", "serviceMonitor.enabled=false"]
CHART_GATEWAY = ["-f", str(VALUES_DIR / "all-features-chart-gateway.yaml"),
                 "--set", "serviceMonitor.enabled=false"]


@pytest.fixture
def kubesim() -> Iterator[Kubesim]:
    with Kubesim() as ks:
        yield ks


def kubectl(ks: Kubesim, *args: str, stdin: str | None = None) -> Any:
    proc = subprocess.run([*ks.kubectl_args, *args, "-o", "json"], capture_output=True,
                          text=True, timeout=60, input=stdin)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def create_namespace(ks: Kubesim, name: str) -> None:
    # From a manifest (sent as JSON): kubesim decodes protobuf bodies for a few kinds only.
    manifest = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    kubectl(ks, "create", "-f", "-", stdin=manifest)


def install(chart: Chart, ks: Kubesim, *values: str, action: str = "install") -> str:
    proc = chart.run(action, RELEASE, str(CHART_DIR), "--namespace", NAMESPACE,
                     "--create-namespace", *values, kubeconfig=ks.kubeconfig)
    return proc.stdout


def stored(ks: Kubesim) -> dict[tuple[str, str, str], dict[str, Any]]:
    """(kind, namespace, name) -> object, for every object the release labels."""
    items = kubectl(ks, "get", ",".join(BUILTIN.values()), "-A",
                    "-l", f"app.kubernetes.io/instance={RELEASE}")
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o
            for o in items["items"]}


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    return (obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


def assert_installed(ks: Kubesim, rendered: Rendered) -> dict[tuple[str, str, str],
                                                              dict[str, Any]]:
    unchecked = {o["kind"] for o in rendered.objects} - set(BUILTIN) - CUSTOM_CHECKED
    assert not unchecked, f"rendered kinds this test does not look for: {unchecked}"
    objects = stored(ks)
    expected = {key(o) for o in rendered.objects if o["kind"] in BUILTIN}
    assert expected <= set(objects), f"missing: {expected - set(objects)}"
    # What kubesim kept is what was rendered: spot-check the parts that matter most.
    deployment = objects[key(rendered.deployment)]
    assert deployment["spec"]["template"]["spec"] == rendered.pod_spec
    assert deployment["spec"]["replicas"] == 1
    config = objects[key(rendered.config_map)]
    assert config["data"] == rendered.config_map["data"]
    return objects


def test_install_with_defaults(chart: Chart, kubesim: Kubesim) -> None:
    values = ["--set", f"pipeops.token={TOKEN}"]
    out = install(chart, kubesim, *values)
    assert "STATUS: deployed" in out
    assert "kubectl -n pipeops-system logs deploy/pa-pipeops-agent -c registrar" in out

    rendered = chart.template(*values)
    objects = assert_installed(kubesim, rendered)
    assert ("Namespace", "", "pipeops-sessions") in objects
    token = objects[("Secret", NAMESPACE, "pa-pipeops-agent-token")]
    assert base64.b64decode(token["data"]["token"]).decode() == TOKEN
    binding = objects[("ClusterRoleBinding", "", "pa-pipeops-agent-control-plane-view")]
    assert binding["roleRef"]["name"] == "view"
    pod = objects[key(rendered.deployment)]["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["restartPolicy"] == "Always"

    # helm keeps its release record in a Secret (sent as protobuf) and reads it back.
    status = json.loads(chart.run("status", RELEASE, "-n", NAMESPACE, "-o", "json",
                                  kubeconfig=kubesim.kubeconfig).stdout)
    assert status["info"]["status"] == "deployed"
    assert status["version"] == 1
    releases = kubectl(kubesim, "get", "secrets", "-n", NAMESPACE, "-l", "owner=helm")
    assert [s["metadata"]["name"] for s in releases["items"]] == ["sh.helm.release.v1.pa.v1"]


def test_install_with_every_feature(chart: Chart, kubesim: Kubesim) -> None:
    # The Istio ingress Service and the agent's Role for it live in istio-system, which
    # exists wherever Istio is installed; kubesim refuses objects in a missing namespace.
    create_namespace(kubesim, "istio-system")
    install(chart, kubesim, *ALL_FEATURES)
    rendered = chart.template(*ALL_FEATURES)
    objects = assert_installed(kubesim, rendered)
    assert ("Role", "istio-system", "pa-pipeops-agent-istio-service") in objects
    assert ("NetworkPolicy", NAMESPACE, "pa-pipeops-agent") in objects
    assert ("ClusterRoleBinding", "", "pa-pipeops-agent-control-plane-admin") in objects


def test_install_with_chart_managed_gateway_objects(chart: Chart, kubesim: Kubesim) -> None:
    create_namespace(kubesim, "istio-system")
    install(chart, kubesim, *CHART_GATEWAY)
    rendered = chart.template(*CHART_GATEWAY)
    assert_installed(kubesim, rendered)
    gateways = kubectl(kubesim, "get", "gateways.gateway.networking.k8s.io", "-n", NAMESPACE)
    assert [g["spec"]["gatewayClassName"] for g in gateways["items"]] == ["istio"]
    routes = {r["metadata"]["name"] for kind in ("tcproutes", "udproutes")
              for r in kubectl(kubesim, "get", f"{kind}.gateway.networking.k8s.io",
                               "-n", NAMESPACE)["items"]}
    assert routes == {"runner-tcp", "other-tcp", "runner-udp"}
    virtual = kubectl(kubesim, "get", "virtualservices.networking.istio.io", "-n", NAMESPACE)
    assert [v["metadata"]["name"] for v in virtual["items"]] == ["pa-pipeops-agent"]
    istio = kubectl(kubesim, "get", "gateways.networking.istio.io", "-n", NAMESPACE)
    assert [g["spec"]["selector"] for g in istio["items"]] == [{"istio": "ingressgateway"}]
    # existingSecret: the chart made no token Secret of its own.
    secrets = kubectl(kubesim, "get", "secrets", "-n", NAMESPACE)["items"]
    assert "pa-pipeops-agent-token" not in {s["metadata"]["name"] for s in secrets}


def test_upgrade_changes_access_and_uninstall_cleans_up(chart: Chart, kubesim: Kubesim
                                                       ) -> None:
    values = ["--set", f"pipeops.token={TOKEN}"]
    install(chart, kubesim, *values)
    out = install(chart, kubesim, *values, "--set", "features.controlPlaneAccess=edit",
                  action="upgrade")
    assert "STATUS: deployed" in out
    bindings = {k[2]: o["roleRef"]["name"] for k, o in stored(kubesim).items()
                if k[0] == "ClusterRoleBinding"}
    # roleRef is immutable: the access level is in the name, so the binding is replaced.
    assert bindings == {"pa-pipeops-agent": "pa-pipeops-agent",
                        "pa-pipeops-agent-control-plane-edit": "edit"}

    chart.run("uninstall", RELEASE, "-n", NAMESPACE, kubeconfig=kubesim.kubeconfig)
    left = set(stored(kubesim))
    # The session namespace is kept (helm.sh/resource-policy: keep): sessions survive.
    assert left == {("Namespace", "", "pipeops-sessions")}
