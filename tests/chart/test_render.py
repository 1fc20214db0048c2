"""`helm lint --strict`, `helm template`, and every rendered object against Kubernetes 1.30.

Built-in kinds are validated by kubernetes-validate (its strict schemas ship inside the
package, so this runs offline). The custom resources (Gateway API, Istio, the Prometheus
Operator's ServiceMonitor) have no schema there: they are held to a fixed list of kinds and
cross-checked against the objects they refer to.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.chart.chart import CHART_DIR, NAMESPACE, VALUE_SETS, Chart, Rendered

K8S_VERSION = "1.30.0"

# The custom resources the chart may render, and the values that turn each on.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("gateway.networking.k8s.io/v1", "Gateway"),
    ("gateway.networking.k8s.io/v1alpha2", "TCPRoute"),
    ("gateway.networking.k8s.io/v1alpha2", "UDPRoute"),
    ("networking.istio.io/v1", "Gateway"),
    ("networking.istio.io/v1", "VirtualService"),
}


@pytest.mark.parametrize("values", [[], *VALUE_SETS.values()],
                         ids=["bare-defaults", *VALUE_SETS])
def test_helm_lint_strict(chart: Chart, values: list[str]) -> None:
    proc = chart.run("lint", "--strict", str(CHART_DIR), "--namespace", NAMESPACE, *values)
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


def test_template_renders_every_template(render: Callable[[str], Rendered]) -> None:
    """Defaults render the core objects; every feature on adds every optional one."""
    kinds = {(o["apiVersion"], o["kind"]) for o in render("defaults").objects}
    assert {("apps/v1", "Deployment"), ("v1", "ConfigMap"), ("v1", "Secret"),
            ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "ClusterRole"),
            ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
            ("rbac.authorization.k8s.io/v1", "Role"),
            ("rbac.authorization.k8s.io/v1", "RoleBinding"), ("v1", "Namespace")} <= kinds
    assert not kinds & CUSTOM_KINDS
    assert ("v1", "Service") not in kinds
    assert ("networking.k8s.io/v1", "NetworkPolicy") not in kinds

    everything = {(o["apiVersion"], o["kind"])
                  for name in ("all-features", "all-features-chart-gateway")
                  for o in render(name).objects}
    assert everything >= kinds | CUSTOM_KINDS | {
        ("v1", "Service"), ("networking.k8s.io/v1", "NetworkPolicy")}


def _dashboard_token_masked(text: str) -> str:
    """The generated dashboard token differs in every render (randAlphaNum)."""
    return re.sub(r'(name: pa-pipeops-agent-dashboard\n(?:.*\n)*?  token: )"[^"]+"',
                  r'\1"***"', text)


def test_packaged_chart_renders_like_the_folder(chart: Chart, tmp_path: Path,
                                               render: Callable[[str], Rendered]) -> None:
    """`helm package` keeps everything the chart needs (templates, schema, NOTES)."""
    chart.run("package", str(CHART_DIR), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("pipeops-agent-*.tgz")
    proc = chart.run("template", "pa", str(package), "--namespace", NAMESPACE,
                     *VALUE_SETS["defaults"])
    assert _dashboard_token_masked(proc.stdout) == \
        _dashboard_token_masked(render("defaults").text)
    bad = chart.run("template", "pa", str(package), "--set", "typo=1", check=False)
    assert "additional properties 'typo' not allowed" in bad.stderr


def test_every_object_is_namespaced_where_it_should_be(rendered: Rendered) -> None:
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    for obj in rendered.objects:
        meta = obj["metadata"]
        if obj["kind"] in cluster_scoped:
            assert "namespace" not in meta, obj
        else:
            assert meta.get("namespace"), f"{obj['kind']}/{meta['name']} has no namespace"
        assert meta["labels"]["app.kubernetes.io/managed-by"] == "Helm"
        assert meta["labels"]["app.kubernetes.io/instance"] == "pa"


def test_builtin_objects_validate_against_kubernetes_1_30(rendered: Rendered) -> None:
    validated = 0
    for obj in rendered.objects:
        if (obj["apiVersion"], obj["kind"]) in CUSTOM_KINDS:
            continue
        # strict: unknown fields are errors too. A kind with no schema raises
        # SchemaNotFoundError, which fails the test: every kind the chart renders is
        # either built in (and has a schema) or one of the listed custom resources.
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        validated += 1
    assert validated >= 10


def test_the_validator_catches_what_the_api_server_would(render: Callable[[str], Rendered]
                                                        ) -> None:
    """The schema check is not vacuous: a mistyped field or a misspelt key fails it."""
    # The schemas ship inside the package: no download, so this works offline.
    assert "1.30.0" in kubernetes_validate.utils.all_versions()
    deployment = render("defaults").deployment
    assert kubernetes_validate.validate(deployment, K8S_VERSION, strict=True) == "1.30"

    wrong_type = copy.deepcopy(deployment)
    wrong_type["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError, match="is not of type"):
        kubernetes_validate.validate(wrong_type, K8S_VERSION, strict=True)

    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError, match="imagePullPolicyy"):
        kubernetes_validate.validate(typo, K8S_VERSION, strict=True)


# ---- custom resources: cross-references ------------------------------------------------


def _listeners(gateway: dict[str, Any]) -> dict[str, str]:
    return {ln["name"]: ln["protocol"] for ln in gateway["spec"]["listeners"]}


def test_gateway_api_routes_attach_to_listeners_of_their_protocol(
        render: Callable[[str], Rendered]) -> None:
    rendered = render("all-features-chart-gateway")
    (gateway,) = rendered.of_kind("Gateway", "gateway.networking.k8s.io/v1")
    listeners = _listeners(gateway)
    assert len(listeners) == len(gateway["spec"]["listeners"]), "listener names must differ"
    assert gateway["spec"]["addresses"] == [{"type": "IPAddress", "value": "192.0.2.10"}]
    routes = (rendered.of_kind("TCPRoute") + rendered.of_kind("UDPRoute"))
    assert {r["metadata"]["name"] for r in routes} == {"runner-tcp", "other-tcp", "runner-udp"}
    for route in routes:
        protocol = route["kind"].removesuffix("Route")
        for parent in route["spec"]["parentRefs"]:
            assert parent["name"] == gateway["metadata"]["name"]
            assert listeners[parent["sectionName"]] == protocol
        for rule in route["spec"]["rules"]:
            for ref in rule["backendRefs"]:
                assert ref["name"] and 0 < ref["port"] < 65536 and ref["namespace"]
    for listener in gateway["spec"]["listeners"]:
        assert listener["allowedRoutes"]["kinds"] == [{"kind": f"{listener['protocol']}Route"}]


def test_istio_virtual_service_routes_ports_the_gateway_serves(
        render: Callable[[str], Rendered]) -> None:
    rendered = render("all-features-chart-gateway")
    (gateway,) = rendered.of_kind("Gateway", "networking.istio.io/v1")
    vs = rendered.one("VirtualService")
    served = {s["port"]["number"] for s in gateway["spec"]["servers"]}
    assert vs["spec"]["gateways"] == [gateway["metadata"]["name"]]
    routed = [m["port"] for section in ("tcp", "tls") for route in vs["spec"][section]
              for m in route["match"]]
    assert routed and set(routed) <= served
    istio_service = rendered.one("Service", "pa-pipeops-agent-istio-ingress")
    assert istio_service["metadata"]["namespace"] == "istio-system"
    assert {p["port"] for p in istio_service["spec"]["ports"]} == served
    assert istio_service["spec"]["selector"] == gateway["spec"]["selector"]


def test_agent_managed_gateway_objects_are_not_rendered(render: Callable[[str], Rendered]
                                                       ) -> None:
    """managedBy: agent leaves the objects to the gateway container: one owner only."""
    rendered = render("all-features")
    kinds = {(o["apiVersion"], o["kind"]) for o in rendered.objects}
    assert not kinds & (CUSTOM_KINDS - {("monitoring.coreos.com/v1", "ServiceMonitor")})


def test_service_monitor_scrapes_ports_the_service_publishes(rendered: Rendered) -> None:
    monitors = rendered.of_kind("ServiceMonitor")
    if not monitors:
        assert not any(p["name"].startswith("metrics-") for c in rendered.all_containers()
                       for p in c.get("ports", []))
        return
    (monitor,) = monitors
    service = rendered.one("Service", "pa-pipeops-agent")
    published = {p["name"] for p in service["spec"]["ports"]}
    # Every metrics port the Service publishes is scraped; the http port serves no /metrics.
    assert {e["port"] for e in monitor["spec"]["endpoints"]} == published - {"http"}
    assert all(p.startswith("metrics-") for p in published - {"http"})
    labels = service["metadata"]["labels"]
    assert all(labels[k] == v for k, v in monitor["spec"]["selector"]["matchLabels"].items())
