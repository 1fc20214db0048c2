"""Acceptance: the real kubectl against kubesim (apply, get, watch, scale, logs -f, delete)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from kubernetes import client

from kubesim.testing import Kubesim

MANIFEST = """\
apiVersion: v1
kind: Namespace
metadata:
  name: {ns}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
  labels: {{app: web}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: {ns}
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: web
  namespace: {ns}
spec:
  ingressClassName: nginx
  rules:
  - host: {ns}.example.test
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service:
            name: web
            port:
              number: 80
"""


def _apply(kubectl: Callable[..., Any], ns: str) -> str:
    out: str = kubectl("apply", "-f", "-", stdin=MANIFEST.format(ns=ns)).stdout
    return out


def _row(output: str, *needles: str) -> list[str]:
    for line in output.splitlines():
        if all(n in line.split() for n in needles):
            return line.split()
    raise AssertionError(f"no row with {needles} in:\n{output}")


def test_apply_multi_document_then_get_all_namespaces(kubectl: Callable[..., Any]) -> None:
    out = _apply(kubectl, "shop-apply")
    assert out.splitlines() == [
        "namespace/shop-apply created",
        "deployment.apps/web created",
        "service/web created",
        "ingress.networking.k8s.io/web created",
    ]
    # A second apply computes patches and finds nothing to change.
    again = _apply(kubectl, "shop-apply")
    assert again.splitlines() == [
        "namespace/shop-apply unchanged",
        "deployment.apps/web unchanged",
        "service/web unchanged",
        "ingress.networking.k8s.io/web unchanged",
    ]

    got = kubectl("get", "deploy,svc,ingress", "-A").stdout
    headers = [line.split() for line in got.splitlines() if line.startswith("NAMESPACE")]
    assert ["NAMESPACE", "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"] in headers
    assert ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"] in headers
    assert ["NAMESPACE", "NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"] in headers
    deploy = _row(got, "shop-apply", "deployment.apps/web")
    assert deploy[2:5] == ["2/2", "2", "2"]
    svc = _row(got, "shop-apply", "service/web")
    assert svc[2] == "ClusterIP" and re.fullmatch(r"10\.96\.\d+\.\d+", svc[3])
    assert svc[5] == "80/TCP"
    ing = _row(got, "shop-apply", "ingress.networking.k8s.io/web")
    assert ing[2:4] == ["nginx", "shop-apply.example.test"]
    assert ing[-2] == "80"


def test_apply_changes_are_patched(kubectl: Callable[..., Any], api: client.ApiClient) -> None:
    _apply(kubectl, "shop-patch")
    changed = MANIFEST.format(ns="shop-patch").replace("replicas: 2", "replicas: 3").replace(
        "nginx:1.27", "nginx:1.28")
    out = kubectl("apply", "-f", "-", stdin=changed).stdout
    assert "deployment.apps/web configured" in out.splitlines()
    assert "service/web unchanged" in out.splitlines()
    dep = client.AppsV1Api(api).read_namespaced_deployment("web", "shop-patch")
    assert dep.spec.replicas == 3
    assert dep.spec.template.spec.containers[0].image == "nginx:1.28"
    assert dep.spec.template.spec.containers[0].ports[0].container_port == 80
    assert dep.spec.template.spec.containers[0].ports[0].protocol == "TCP"  # defaulted
    assert dep.metadata.generation == 2
    assert dep.status.ready_replicas == 3


def test_get_ingress_watch_sees_change_by_python_client(
    kubectl: Callable[..., Any], api: client.ApiClient, spawn: Callable[..., Any]
) -> None:
    _apply(kubectl, "shop-watch")
    _, reader = spawn("get", "ingress", "-n", "shop-watch", "-w")
    header = reader.next_line()
    assert header.split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    first = reader.next_line().split()
    assert first[:3] == ["web", "nginx", "shop-watch.example.test"]

    net = client.NetworkingV1Api(api)
    net.patch_namespaced_ingress_status(
        "web", "shop-watch", {"status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.7"}]}}})
    changed = reader.until(lambda line: "203.0.113.7" in line).split()
    assert changed[:4] == ["web", "nginx", "shop-watch.example.test", "203.0.113.7"]

    net.patch_namespaced_ingress("web", "shop-watch", [
        {"op": "replace", "path": "/spec/rules/0/host", "value": "moved.example.test"}])
    moved = reader.until(lambda line: "moved.example.test" in line).split()
    assert moved[0] == "web"


def test_scale_deployment(kubectl: Callable[..., Any], api: client.ApiClient) -> None:
    _apply(kubectl, "shop-scale")
    out = kubectl("scale", "deployment/web", "-n", "shop-scale", "--replicas=5").stdout
    assert out.strip() == "deployment.apps/web scaled"
    dep = client.AppsV1Api(api).read_namespaced_deployment("web", "shop-scale")
    assert (dep.spec.replicas, dep.status.replicas, dep.status.ready_replicas,
            dep.status.available_replicas) == (5, 5, 5, 5)
    shown = kubectl("get", "deploy", "web", "-n", "shop-scale", "-o",
                    "jsonpath={.spec.replicas} {.status.readyReplicas}").stdout
    assert shown == "5 5"
    scale = client.AppsV1Api(api).read_namespaced_deployment_scale("web", "shop-scale")
    assert scale.spec.replicas == 5 and scale.status.selector == "app=web"
    kubectl("scale", "deployment/web", "-n", "shop-scale", "--replicas=0")
    ready = kubectl("get", "deploy", "web", "-n", "shop-scale", "--no-headers").stdout.split()
    assert ready[1] == "0/0"


def test_logs_follow_receives_appended_lines(
    ks: Kubesim, kubectl: Callable[..., Any], spawn: Callable[..., Any]
) -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talker", "namespace": "default",
                     "annotations": {"kubesim.pipeops.dev/log": "booting\nlistening on :80"}},
        "spec": {"containers": [{"name": "main", "image": "busybox"}]},
    }
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    try:
        assert kubectl("logs", "talker").stdout == "booting\nlistening on :80\n"
        assert kubectl("logs", "talker", "--tail=1").stdout == "listening on :80\n"
        _, reader = spawn("logs", "-f", "talker")
        assert reader.next_line() == "booting"
        assert reader.next_line() == "listening on :80"
        ks.append_log("default", "talker", ["GET /healthz 200", "GET / 200"])
        assert reader.next_line() == "GET /healthz 200"
        assert reader.next_line() == "GET / 200"
        ks.append_log("default", "talker", ["later"], container="main")
        assert reader.next_line() == "later"
    finally:
        kubectl("delete", "pod", "talker", "--wait=false")


def test_delete(kubectl: Callable[..., Any], api: client.ApiClient,
                wait_for: Callable[..., Any]) -> None:
    _apply(kubectl, "shop-delete")
    out = kubectl("delete", "-f", "-", stdin=MANIFEST.format(ns="shop-delete")).stdout
    # kubectl 1.33+ names the namespace of namespaced objects ("... deleted from NS
    # namespace"); older ones stop at "deleted".
    suffix = r"( from shop-delete namespace)?"
    expected = [r'namespace "shop-delete" deleted', rf'deployment\.apps "web" deleted{suffix}',
                rf'service "web" deleted{suffix}',
                rf'ingress\.networking\.k8s\.io "web" deleted{suffix}']
    lines = out.splitlines()
    assert len(lines) == len(expected), out
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    # kubectl follows a NotFound by checking the namespace, and reports that.
    missing = kubectl("get", "deploy", "web", "-n", "shop-delete", check=False)
    assert missing.returncode == 1
    assert 'namespaces "shop-delete" not found' in missing.stderr
    try:
        client.AppsV1Api(api).read_namespaced_deployment("web", "shop-delete")
        raise AssertionError("deployment still exists")
    except client.ApiException as e:
        assert e.status == 404
        assert json.loads(e.body)["message"] == 'deployments.apps "web" not found'
    names = [n.metadata.name for n in client.CoreV1Api(api).list_namespace().items]
    assert "shop-delete" not in names


def test_api_resources(kubectl: Callable[..., Any]) -> None:
    out = kubectl("api-resources").stdout
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["pods"] == ["pods", "po", "v1", "true", "Pod"]
    assert rows["deployments"] == ["deployments", "deploy", "apps/v1", "true", "Deployment"]
    assert rows["ingresses"] == ["ingresses", "ing", "networking.k8s.io/v1", "true", "Ingress"]
    assert rows["namespaces"] == ["namespaces", "ns", "v1", "false", "Namespace"]
    for name in ("nodes", "services", "endpoints", "configmaps", "secrets", "serviceaccounts",
                 "events", "persistentvolumeclaims", "ingressclasses", "httproutes",
                 "tcproutes", "udproutes", "virtualservices", "gateways", "roles",
                 "clusterrolebindings", "networkpolicies", "poddisruptionbudgets"):
        assert name in rows, name
    groups = kubectl("api-versions").stdout.split()
    assert {"v1", "apps/v1", "gateway.networking.k8s.io/v1",
            "gateway.networking.k8s.io/v1alpha2", "networking.istio.io/v1beta1"} <= set(groups)


def test_imperative_commands_send_protobuf_that_kubesim_decodes(
    kubectl: Callable[..., Any], api: client.ApiClient
) -> None:
    """`kubectl create ...` uses client-go's typed clients, which send protobuf bodies."""
    ns = "imperative"
    assert kubectl("create", "namespace", ns).stdout == f"namespace/{ns} created\n"
    kubectl("create", "deployment", "web", "--image=nginx:1.27", "--replicas=2",
            "--port=8080", "-n", ns)
    kubectl("create", "service", "nodeport", "web", "--tcp=80:http", "-n", ns)
    kubectl("create", "serviceaccount", "robot", "-n", ns)
    kubectl("create", "configmap", "settings", "--from-literal=mode=fast", "-n", ns)
    kubectl("create", "secret", "generic", "creds", "--from-literal=password=s3cret", "-n", ns)
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    dep = apps.read_namespaced_deployment("web", ns)
    assert (dep.spec.replicas, dep.status.ready_replicas) == (2, 2)
    assert dep.spec.selector.match_labels == {"app": "web"}
    container = dep.spec.template.spec.containers[0]
    assert (container.name, container.image, container.ports[0].container_port) == (
        "nginx", "nginx:1.27", 8080)
    svc = core.read_namespaced_service("web", ns)
    assert svc.spec.type == "NodePort"
    assert (svc.spec.ports[0].port, svc.spec.ports[0].target_port) == (80, "http")
    assert core.read_namespaced_service_account("robot", ns).metadata.name == "robot"
    assert core.read_namespaced_config_map("settings", ns).data == {"mode": "fast"}
    assert core.read_namespaced_secret("creds", ns).data == {"password": "czNjcmV0"}
    out = kubectl("delete", "secret", "creds", "-n", ns).stdout
    assert out.startswith('secret "creds" deleted')


SSA_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: ssa
  namespace: default
  labels: {{app: ssa{extra_label}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: ssa}}
  template:
    metadata:
      labels: {{app: ssa}}
    spec:
      containers:
      - name: main
        image: busybox:1.36
        env:
        - {{name: KEEP, value: "1"}}
{extra_env}
"""


def test_server_side_apply_removes_what_the_manager_stopped_applying(
    kubectl: Callable[..., Any], api: client.ApiClient
) -> None:
    apps = client.AppsV1Api(api)
    full = SSA_DEPLOYMENT.format(extra_label=", tier: web",
                                 extra_env='        - {name: DROP, value: "2"}')
    out = kubectl("apply", "--server-side", "-f", "-", stdin=full).stdout
    assert out == "deployment.apps/ssa serverside-applied\n"
    dep = apps.read_namespaced_deployment("ssa", "default")
    assert dep.metadata.labels == {"app": "ssa", "tier": "web"}
    assert [e.name for e in dep.spec.template.spec.containers[0].env] == ["KEEP", "DROP"]
    # Another client's change to a field the manager never applied survives.
    apps.patch_namespaced_deployment("ssa", "default",
                                     {"metadata": {"annotations": {"owner": "someone"}}})
    try:
        kubectl("apply", "--server-side", "-f", "-",
                stdin=SSA_DEPLOYMENT.format(extra_label="", extra_env=""))
        dep = apps.read_namespaced_deployment("ssa", "default")
        assert dep.metadata.labels == {"app": "ssa"}
        assert [e.name for e in dep.spec.template.spec.containers[0].env] == ["KEEP"]
        assert dep.metadata.annotations == {"owner": "someone"}
        assert dep.metadata.generation == 2
    finally:
        kubectl("delete", "deployment", "ssa")
