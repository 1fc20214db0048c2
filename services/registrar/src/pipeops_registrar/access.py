"""``Registrar.CheckKubernetes``: is the Kubernetes API reachable, and may the agent do
its job there? Asked with the agent's own credentials, on demand (the http-api's
``/api/status/connectivity``), each permission by a SelfSubjectAccessReview. And
``GetKubernetesEndpoint``: where the API server is and its CA, for the http-api's proxy.

The registrar answers because it already holds the official client; the http-api does
not carry it (its memory budget).
"""

from __future__ import annotations

import asyncio
import time

from agentkit.config import Config
from agentkit.kube import KubeError, Resource
from pipeops.agent.v1 import registrar_pb2
from pipeops_registrar.cluster import Cluster

SSAR = Resource("authorization.k8s.io/v1", "selfsubjectaccessreviews",
               "SelfSubjectAccessReview", namespaced=False)


def _read(path: str) -> str:
    with open(path) as bundle:
        return bundle.read()


def needed(config: Config) -> list[tuple[str, str, str, str, str]]:
    """(verb, group, resource, namespace, name) the agent's containers use, as the chart's
    RBAC grants them: its state objects by name, session objects in their namespace."""
    k = config.kubernetes
    state = f"{config.agent.name}-state"
    return [
        ("list", "", "nodes", "", ""),
        ("list", "", "pods", "", ""),
        ("get", "", "secrets", k.namespace, state),
        ("update", "", "secrets", k.namespace, state),
        ("create", "apps", "deployments", k.session_namespace, ""),
        ("create", "", "services", k.session_namespace, ""),
    ]


class AccessCheck:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.cluster: Cluster | None = None  # set by the agent once it has a client
        self.problem = "the registrar has not loaded its Kubernetes client yet"

    async def _review(self, cluster: Cluster, verb: str, group: str, resource: str,
                      namespace: str, name: str) -> registrar_pb2.PermissionCheck:
        check = registrar_pb2.PermissionCheck(verb=verb, group=group, resource=resource,
                                              namespace=namespace, name=name)
        attributes = {"verb": verb, "group": group, "resource": resource}
        if namespace:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        try:
            doc = await cluster.kube.create(SSAR, {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attributes}},
                operation="self_subject_access_review")
        except KubeError as exc:
            check.reason = str(exc)
            return check
        status = doc.get("status") or {}
        check.allowed = bool(status.get("allowed"))
        check.reason = str(status.get("reason") or status.get("evaluationError") or "")
        return check

    async def endpoint(self) -> registrar_pb2.KubernetesEndpoint:
        """The API server's URL and CA, from the official client's configuration (no
        credential: the http-api's proxy sends each caller's own token)."""
        cluster = self.cluster
        if cluster is None:
            return registrar_pb2.KubernetesEndpoint(error=self.problem)
        configuration = cluster.kube.api_client.configuration
        ca_pem = ""
        if configuration.ssl_ca_cert:
            ca_pem = await asyncio.to_thread(_read, configuration.ssl_ca_cert)
        return registrar_pb2.KubernetesEndpoint(
            server=str(configuration.host), ca_pem=ca_pem,
            insecure_skip_verify=not configuration.verify_ssl,
            tls_server_name=str(getattr(configuration, "tls_server_name", None) or ""))

    async def check(self) -> registrar_pb2.KubernetesCheck:
        cluster = self.cluster
        if cluster is None:
            return registrar_pb2.KubernetesCheck(error=self.problem)
        out = registrar_pb2.KubernetesCheck(server=cluster.server)
        started = time.monotonic()
        try:
            doc = await cluster.kube.version(operation="get_version")
        except KubeError as exc:
            out.error = str(exc)
            out.latency_seconds = time.monotonic() - started
            return out
        out.latency_seconds = time.monotonic() - started
        out.reachable = True
        out.version = str(doc.get("gitVersion", ""))
        reviews = await asyncio.gather(*(self._review(cluster, *want)
                                         for want in needed(self.config)))
        out.permissions.extend(reviews)
        return out
