"""Where the Kubernetes API is and how to authenticate to it, from the official client.

In a pod, the mounted ServiceAccount (``kubernetes.in_cluster``): the API server from
``KUBERNETES_SERVICE_HOST/PORT``, the token from ``kubernetes.service_account_token_path``
and the CA from ``ca.crt`` beside it (a ServiceAccount volume's layout; the defaults are
the kubelet's mount). Outside one, a kubeconfig (``kubernetes.kubeconfig``, else the
client's default); the client's kubeconfig loader imports its ``ApiClient`` and with it
pydantic (+9 MiB), which the in-cluster loader does not. Each service builds
its own client on the ``Configuration`` returned here. Blocking (it reads files and may
run a credential plugin): call it in a thread.

Needs the ``kubernetes`` package, a dependency of the services that import this module
and not of agentkit, so the http-api image does not carry the client.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agentkit.config import KubernetesConfig
from agentkit.kube.lean import bare_packages

bare_packages()  # only the parts of `kubernetes` used here (agentkit.kube.lean says why)

from kubernetes.client import Configuration  # noqa: E402


def load_configuration(cfg: KubernetesConfig) -> Any:
    """The official client's ``Configuration`` for ``cfg``; the client's own errors
    (``ConfigException``, ``OSError``) propagate."""
    configuration = Configuration()
    if cfg.in_cluster:
        from kubernetes.config.incluster_config import InClusterConfigLoader

        token = Path(cfg.service_account_token_path)
        InClusterConfigLoader(  # type: ignore[no-untyped-call]
            token_filename=str(token), cert_filename=str(token.parent / "ca.crt"),
        ).load_and_set(configuration)
    else:
        from kubernetes.config.kube_config import load_kube_config

        load_kube_config(  # type: ignore[no-untyped-call]
            config_file=cfg.kubeconfig or None, client_configuration=configuration)
    return configuration
