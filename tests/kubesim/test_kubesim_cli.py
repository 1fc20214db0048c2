"""The `pipeops-kubesim` command: its ready line, kubeconfig, seeds, demo cluster, the
`--rbac` file's second token (403s through kubectl and the Python client), and SIGTERM.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kubesim.testing import KUBECTL, Kubesim
from tests.kubesim.conftest import LineReader

CLI = Path(sys.executable).parent / "pipeops-kubesim"

RBAC = """\
tokens:
  - token: viewer-token
    serviceAccount: team/viewer
    rules:
      - apiGroups: [""]
        resources: [pods, pods/log, configmaps]
        verbs: [get, list, watch]
        namespaces: [team]
      - apiGroups: [apps]
        resources: [deployments]
        verbs: [get, list]
"""

SEED = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {mode: seeded}
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: api, namespace: team}
    spec:
      replicas: 3
      selector: {matchLabels: {app: api}}
      template:
        metadata: {labels: {app: api}}
        spec: {containers: [{name: api, image: example/api:1}]}
"""


def test_cli_prints_ready_line_and_writes_kubeconfig(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [str(CLI), "--host", "127.0.0.1", "--port", "0", "--data-dir", str(tmp_path / "d"),
         "--demo", "--token", "fixed-admin-token"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        ready = json.loads(LineReader(proc).next_line(timeout=20))
        assert ready["event"] == "ready"
        assert ready["token"] == "fixed-admin-token"
        assert ready["url"] == f"https://127.0.0.1:{ready['port']}"
        assert ready["admin"] == f"{ready['url']}/_kubesim/"
        kubeconfig = Path(ready["kubeconfig"])
        assert kubeconfig == tmp_path / "d" / "kubeconfig"
        assert kubeconfig.stat().st_mode & 0o777 == 0o600
        doc = yaml.safe_load(kubeconfig.read_text())
        assert doc["users"][0]["user"]["token"] == "fixed-admin-token"
        assert doc["clusters"][0]["cluster"]["server"] == ready["url"]
        out = subprocess.run([KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir",
                              str(tmp_path / "cache"), "get", "nodes,deploy", "-A",
                              "--no-headers", "-o", "name"],
                             capture_output=True, text=True, timeout=60, check=True)
        assert out.stdout.split() == ["node/kubesim-control-plane", "node/kubesim-worker",
                                      "deployment.apps/demo"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            assert stream is not None
            stream.close()


@pytest.mark.parametrize(("flag", "content", "words"), [
    ("--seed", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
     "unknown kind example.com/v1/Widget"),
    ("--seed", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n",
     'seed rejected: 422 Invalid: ConfigMap "Bad_Name" is invalid'),
    ("--seed", "a: [", "while parsing"),
    ("--rbac", "tokens:\n  - serviceAccount: a/b\n", "each token entry needs a non-empty"),
    ("--rbac", "tokens:\n  - {token: t, serviceAccount: nobody}\n",
     "serviceAccount must be 'namespace/name'"),
])
def test_bad_seed_or_rbac_file_fails_with_a_clear_message(
    tmp_path: Path, flag: str, content: str, words: str
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(content)
    proc = subprocess.run(
        [str(CLI), "--port", "0", "--data-dir", str(tmp_path / "d"), flag, str(bad)],
        capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("kubesim: ") and words in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("team")
    (folder / "rbac.yaml").write_text(RBAC)
    (folder / "seed.yaml").write_text(SEED)
    with Kubesim(rbac=folder / "rbac.yaml", seeds=[folder / "seed.yaml"]) as server:
        yield server


def test_seed_is_loaded(team: Kubesim, new_client: Callable[..., client.ApiClient]) -> None:
    api = new_client(server=team)
    cm = client.CoreV1Api(api).read_namespaced_config_map("settings", "team")
    assert cm.data == {"mode": "seeded"}
    dep = client.AppsV1Api(api).read_namespaced_deployment("api", "team")
    assert (dep.spec.replicas, dep.status.ready_replicas) == (3, 3)


def test_rbac_file_token_is_allowed_and_forbidden_by_its_rules(
    team: Kubesim, new_client: Callable[..., client.ApiClient], kubectl: Callable[..., Any]
) -> None:
    viewer = client.CoreV1Api(new_client(token="viewer-token", server=team))
    assert [c.metadata.name for c in viewer.list_namespaced_config_map("team").items] == [
        "settings"]
    with pytest.raises(client.ApiException) as info:
        viewer.delete_namespaced_config_map("settings", "team")
    assert info.value.status == 403
    body = json.loads(info.value.body)
    assert (body["kind"], body["reason"], body["code"]) == ("Status", "Forbidden", 403)
    assert body["message"] == (
        'configmaps "settings" is forbidden: User "system:serviceaccount:team:viewer" cannot '
        'delete resource "configmaps" in API group "" in the namespace "team"')
    with pytest.raises(client.ApiException) as info:
        viewer.list_namespaced_secret("team")
    assert info.value.status == 403
    with pytest.raises(client.ApiException) as info:
        viewer.list_node()
    assert json.loads(info.value.body)["message"] == (
        'nodes is forbidden: User "system:serviceaccount:team:viewer" cannot list resource '
        '"nodes" in API group "" at the cluster scope')
    # The same token through kubectl: reads work, a write is refused with the server's words.
    as_viewer = ["--token", "viewer-token"]
    got = kubectl("get", "deploy", "-n", "team", "-o", "name", *as_viewer, server=team)
    assert got.stdout.split() == ["deployment.apps/api"]
    refused = kubectl("scale", "deploy/api", "-n", "team", "--replicas=1", *as_viewer,
                      server=team, check=False)
    assert refused.returncode == 1
    assert ('Error from server (Forbidden): deployments.apps "api" is forbidden: User '
            '"system:serviceaccount:team:viewer" cannot patch resource "deployments/scale" '
            'in API group "apps" in the namespace "team"') in refused.stderr
    assert client.AppsV1Api(new_client(server=team)).read_namespaced_deployment(
        "api", "team").spec.replicas == 3
    nothing = kubectl("get", "pods", "-n", "team", "--token", "wrong", server=team,
                      check=False)
    assert nothing.returncode == 1
    assert "error: You must be logged in to the server (Unauthorized)" in nothing.stderr
