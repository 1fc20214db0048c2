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
