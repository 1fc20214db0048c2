"""agentkit.kubeconfig: the API server and credentials the services build clients on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from kubernetes.config.config_exception import ConfigException

from agentkit.config import KubernetesConfig
from agentkit.kubeconfig import load_configuration


def test_a_kubeconfig_gives_its_server_and_token(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
    }))
    configuration = load_configuration(KubernetesConfig(in_cluster=False,
                                                        kubeconfig=str(path)))
    assert configuration.host == "https://127.0.0.1:6443"
    assert configuration.verify_ssl is False
    headers = {s["key"].lower(): s["value"] for s in configuration.auth_settings().values()
               if s.get("in") == "header"}
    assert headers == {"authorization": "Bearer t0ken"}


def test_in_cluster_outside_a_pod_is_the_clients_clear_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigException, match="Service host/port is not set"):
        load_configuration(KubernetesConfig(in_cluster=True))



def test_in_cluster_reads_the_token_and_the_ca_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ServiceAccount folder is where ``service_account_token_path`` is: its ``ca.crt``
    is the API server's CA (as the chart's projected volume and make run lay it out)."""
    folder = tmp_path / "serviceaccount"
    folder.mkdir()
    (folder / "token").write_text("s4-t0ken")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    cfg = KubernetesConfig(in_cluster=True, service_account_token_path=str(folder / "token"))
    with pytest.raises(ConfigException, match="certification file does not exist"):
        load_configuration(cfg)
    (folder / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    configuration = load_configuration(cfg)
    assert configuration.host == "https://127.0.0.1:6443"
    assert configuration.ssl_ca_cert == str(folder / "ca.crt")
    headers = {s["key"].lower(): s["value"] for s in configuration.auth_settings().values()
               if s.get("in") == "header"}
    assert headers == {"authorization": "bearer s4-t0ken"}

LEAN_PROBE = """
import json, sys
from agentkit.config import KubernetesConfig
from agentkit.kube.client import api_client
try:
    client = api_client(KubernetesConfig(in_cluster=sys.argv[1] == "pod",
                                         kubeconfig=sys.argv[2]))
    outcome = client.configuration.host
except Exception as exc:
    outcome = type(exc).__name__
print(json.dumps({"outcome": outcome, "modules": sorted(sys.modules)}))
"""


@pytest.mark.parametrize("where", ["kubeconfig", "pod"])
def test_only_the_parts_of_kubernetes_in_use_are_imported(tmp_path: Path, where: str) -> None:
    """agentkit.kube.lean: a fresh process (as a service is) imports the client, the
    config loader it needs and nothing else of the package's eager imports."""
    import json
    import os
    import subprocess
    import sys

    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "here",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "here", "context": {"cluster": "c", "user": "u"}}],
    }))
    env = {**os.environ, "KUBERNETES_SERVICE_HOST": "127.0.0.1",
           "KUBERNETES_SERVICE_PORT": "6443"}
    done = subprocess.run([sys.executable, "-c", LEAN_PROBE, where, str(path)], env=env,
                          capture_output=True, text=True, check=True, timeout=60)
    report = json.loads(done.stdout)
    modules = set(report["modules"])
    if where == "kubeconfig":
        assert report["outcome"] == "https://127.0.0.1:6443"
        assert "kubernetes.config.kube_config" in modules
        assert "kubernetes.client.rest" in modules  # the Transport's pool
    else:  # no ServiceAccount files here: the client's own error, from the in-pod loader
        assert report["outcome"] == "ConfigException"
        assert "kubernetes.config.incluster_config" in modules
        assert not {"kubernetes.config.kube_config", "requests_oauthlib", "oauthlib"} & modules
        # the ApiClient (kubernetes 37.x) imports pydantic: in a pod the layer never
        # imports it (the kubeconfig loader above does, for its own use)
        assert "kubernetes.client.api_client" not in modules
    assert not {"kubernetes.dynamic", "kubernetes.stream", "kubernetes.informer",
                "kubernetes.leaderelection", "kubernetes.utils.create_from_yaml",
                "jsonschema", "websocket"} & modules
