"""The real `helm` against kubesim: install (with --wait), upgrade, rollback, uninstall.

Helm needs discovery, creates of the kinds a chart ships (RBAC, NetworkPolicy, ...),
server-side apply, and its release storage: Secrets written by client-go in protobuf and
found again with label selectors. The chart is a small one written here, so this tests
kubesim, not the project's chart.
"""

from __future__ import annotations

import base64
import gzip
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kubesim.testing import Kubesim
from tests.helpers import tool

TEMPLATES = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: {{ .Release.Name }}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: {{ .Release.Name }}-config}
data: {level: {{ .Values.level | quote }}}
---
apiVersion: v1
kind: Secret
metadata: {name: {{ .Release.Name }}-token}
stringData: {token: not-a-real-token}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: {{ .Release.Name }}-state}
rules:
- {apiGroups: [""], resources: [secrets], verbs: [get, create, update]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: {{ .Release.Name }}-state}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: {{ .Release.Name }}-state}
subjects:
- {kind: ServiceAccount, name: {{ .Release.Name }}, namespace: {{ .Release.Namespace }}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: {{ .Release.Name }}-read}
rules:
- {apiGroups: [""], resources: [nodes, pods], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: {{ .Release.Name }}-read}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: {{ .Release.Name }}-read}
subjects:
- {kind: ServiceAccount, name: {{ .Release.Name }}, namespace: {{ .Release.Namespace }}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: {{ .Release.Name }}}
spec:
  podSelector: {matchLabels: {app: {{ .Release.Name }}}}
  policyTypes: [Ingress]
  ingress:
  - ports: [{port: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}}
spec:
  selector: {app: {{ .Release.Name }}}
  ports: [{name: http, port: 8080, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: {{ .Release.Name }}, labels: {app: {{ .Release.Name }}}}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      serviceAccountName: {{ .Release.Name }}
      containers:
      - name: main
        image: busybox:1.36
        ports: [{name: http, containerPort: 8080}]
"""

Helm = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def chart(tmp_path: Path) -> Path:
    folder = tmp_path / "probe"
    (folder / "templates").mkdir(parents=True)
    (folder / "Chart.yaml").write_text("apiVersion: v2\nname: probe\nversion: 0.1.0\n")
    (folder / "values.yaml").write_text("replicas: 1\nlevel: info\n")
    (folder / "templates" / "all.yaml").write_text(TEMPLATES)
    return folder


@pytest.fixture
def helm(ks: Kubesim, tmp_path: Path) -> Iterator[Helm]:
    env = {**ks.env(), "HELM_CACHE_HOME": str(tmp_path / "hc"),
           "HELM_CONFIG_HOME": str(tmp_path / "hf"), "HELM_DATA_HOME": str(tmp_path / "hd")}

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([tool("helm"), *args, "--kubeconfig", ks.kubeconfig],
                              capture_output=True, text=True, env=env, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    yield run


def _release(secret: Any) -> dict[str, Any]:
    """Decode Helm's release record: base64 (by Helm) of gzipped JSON, in Secret data."""
    raw = base64.b64decode(base64.b64decode(secret.data["release"]))
    decoded: dict[str, Any] = json.loads(gzip.decompress(raw))
    return decoded


def test_helm_install_upgrade_rollback_uninstall(
    ks: Kubesim, api: client.ApiClient, helm: Helm, chart: Path
) -> None:
    out = helm("install", "probe", str(chart), "-n", "helm-apps", "--create-namespace",
               "--wait", "--timeout", "60s").stdout
    assert "STATUS: deployed" in out and "REVISION: 1" in out
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    rbac, net = client.RbacAuthorizationV1Api(api), client.NetworkingV1Api(api)
    assert core.read_namespaced_service_account("probe", "helm-apps").metadata.name == "probe"
    assert core.read_namespaced_config_map("probe-config", "helm-apps").data == {
        "level": "info"}
    token = core.read_namespaced_secret("probe-token", "helm-apps")
    assert base64.b64decode(token.data["token"]) == b"not-a-real-token"
    assert rbac.read_namespaced_role_binding("probe-state", "helm-apps").role_ref.name == (
        "probe-state")
    assert rbac.read_cluster_role_binding("probe-read").subjects[0].namespace == "helm-apps"
    assert net.read_namespaced_network_policy("probe", "helm-apps").spec.pod_selector.match_labels \
        == {"app": "probe"}
    dep = apps.read_namespaced_deployment("probe", "helm-apps")
    assert dep.status.ready_replicas == 1
    assert dep.metadata.labels["app.kubernetes.io/managed-by"] == "Helm"
    assert dep.metadata.annotations["meta.helm.sh/release-name"] == "probe"

    # Helm's release storage: found by label selector, status kept in a label.
    releases = core.list_namespaced_secret("helm-apps", label_selector="owner=helm,name=probe")
    assert [(s.metadata.name, s.type, s.metadata.labels["status"]) for s in releases.items] == [
        ("sh.helm.release.v1.probe.v1", "helm.sh/release.v1", "deployed")]
    assert _release(releases.items[0])["chart"]["metadata"]["name"] == "probe"

    listed = helm("list", "-n", "helm-apps", "-o", "json").stdout
    assert [(r["name"], r["status"], r["revision"]) for r in json.loads(listed)] == [
        ("probe", "deployed", "1")]

    helm("upgrade", "probe", str(chart), "-n", "helm-apps", "--set", "replicas=3",
         "--set", "level=debug", "--wait", "--timeout", "60s")
    dep = apps.read_namespaced_deployment("probe", "helm-apps")
    assert (dep.spec.replicas, dep.status.ready_replicas, dep.metadata.generation) == (3, 3, 2)
    assert core.read_namespaced_config_map("probe-config", "helm-apps").data == {
        "level": "debug"}
    statuses = {s.metadata.name: s.metadata.labels["status"] for s in core.list_namespaced_secret(
        "helm-apps", label_selector="owner=helm").items}
    assert statuses == {"sh.helm.release.v1.probe.v1": "superseded",
                        "sh.helm.release.v1.probe.v2": "deployed"}
    deployed = core.list_namespaced_secret("helm-apps",
                                           label_selector="owner=helm,status=deployed")
    assert [s.metadata.name for s in deployed.items] == ["sh.helm.release.v1.probe.v2"]

    helm("rollback", "probe", "1", "-n", "helm-apps", "--wait", "--timeout", "60s")
    assert apps.read_namespaced_deployment("probe", "helm-apps").spec.replicas == 1
    history = json.loads(helm("history", "probe", "-n", "helm-apps", "-o", "json").stdout)
    assert [(h["revision"], h["status"]) for h in history] == [
        (1, "superseded"), (2, "superseded"), (3, "deployed")]

    out = helm("uninstall", "probe", "-n", "helm-apps").stdout
    assert 'release "probe" uninstalled' in out
    assert core.list_namespaced_secret("helm-apps", label_selector="owner=helm").items == []
    for read in (lambda: apps.read_namespaced_deployment("probe", "helm-apps"),
                 lambda: rbac.read_cluster_role("probe-read"),
                 lambda: net.read_namespaced_network_policy("probe", "helm-apps")):
        with pytest.raises(client.ApiException) as info:
            read()
        assert info.value.status == 404
    assert json.loads(helm("list", "-A", "-o", "json").stdout) == []
