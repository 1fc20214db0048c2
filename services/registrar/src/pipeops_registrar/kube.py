"""The registrar's view of the cluster: version, node and pod counts, its state objects.

The official client is synchronous, so every call runs in a worker thread with a
request timeout and no urllib3 retries (our own loops retry). Counting never lists the
cluster: one metadata-only ``limit=1`` page, whose ``metadata.remainingItemCount`` plus the one item
returned is the total, so a heartbeat costs the same on 10 pods or 10,000.

The state objects live in ``kubernetes.namespace``: a Secret (the cluster token and the
ids it belongs to) and a ConfigMap (the ids, readable by operators). Lacking RBAC for
them (403) or the namespace (404 on create) is said once; after that the registrar
keeps its identity in the state file only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from agentkit.config import KubernetesConfig
from pipeops_registrar import metrics
from pipeops_registrar.identity import Identity

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = (5.0, 10.0)  # connect, read
# Lists for counting ask for metadata only (the real API server and kubesim both serve
# it); plain JSON stays acceptable for a server that does not.
META_ACCEPT = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
VERSION_TTL = 60.0  # the API server's version rarely changes; ask once a minute
STATE_KEYS = ("agent_id", "cluster_id", "cluster_name", "workspace_id", "api_url",
              "tunnel_url", "gateway_url", "registered_at")


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP code (0: no reply)."""

    def __init__(self, operation: str, status: int, reason: str) -> None:
        super().__init__(f"kubernetes {operation}: {reason}" + (f" ({status})" if status else ""))
        self.operation = operation
        self.status = status


def load_api_client(cfg: KubernetesConfig) -> Any:
    """An ``ApiClient`` from the pod's ServiceAccount or from a kubeconfig (blocking)."""
    configuration = k8s.Configuration()
    if cfg.in_cluster:
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration)
    else:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=cfg.kubeconfig or None, client_configuration=configuration)
    configuration.retries = False
    return k8s.ApiClient(configuration)


class Cluster:
    """Facts about the cluster, each call one bounded API request in a thread."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.core = k8s.CoreV1Api(api_client)
        self._version: tuple[float, str] | None = None
        self._warned_no_remaining: set[str] = set()

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    @property
    def server_host(self) -> str:
        return urlparse(self.server).hostname or ""

    async def call(self, operation: str, fn: Callable[..., Any], *args: Any,
                   **kwargs: Any) -> Any:
        """Run one client call in a thread; count it; map failures to KubeError."""
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT)
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            metrics.KUBE_CALLS.labels(operation, str(exc.status)).inc()
            raise KubeError(operation, int(exc.status or 0), str(exc.reason)) from None
        except Exception as exc:  # urllib3/ssl/socket errors: no reply at all
            metrics.KUBE_CALLS.labels(operation, "error").inc()
            raise KubeError(operation, 0, f"{type(exc).__name__}: {exc}") from None
        metrics.KUBE_CALLS.labels(operation, "200").inc()
        return result

    async def _raw(self, operation: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        response = await self.call(operation, fn, _preload_content=False, **kwargs)
        try:
            return json.loads(response.data)
        except ValueError:
            raise KubeError(operation, response.status, "reply is not JSON") from None

    async def version(self) -> str:
        now = time.monotonic()
        if self._version is None or now - self._version[0] > VERSION_TTL:
            doc = await self._raw("get_version", self._get_version)
            self._version = (now, str(doc.get("gitVersion", "")))
        return self._version[1]

    def _get_version(self, _preload_content: bool = False,
                     _request_timeout: Any = None) -> Any:
        """``GET /version`` (the client's VersionApi asks for ``/version/``)."""
        params = self.api_client.param_serialize(
            "GET", "/version", header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"])
        response = self.api_client.call_api(*params, _request_timeout=_request_timeout)
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(status=response.status, reason=response.reason)
        return response

    async def _count(self, operation: str, fn: Callable[..., Any]) -> int:
        doc = await self._raw(operation, fn, limit=1, _headers={"Accept": META_ACCEPT})
        items = len(doc.get("items") or [])
        meta = doc.get("metadata") or {}
        if meta.get("remainingItemCount") is not None:
            return items + int(meta["remainingItemCount"])
        if not meta.get("continue"):
            return items
        # More pages but no count (some servers omit it): page through, rarely.
        if operation not in self._warned_no_remaining:
            self._warned_no_remaining.add(operation)
            log.warning("the API server gives no remainingItemCount; counting by pages",
                        extra={"operation": operation})
        total, token = items, meta["continue"]
        while token:
            doc = await self._raw(operation, fn, limit=500, _continue=token,
                                  _headers={"Accept": META_ACCEPT})
            total += len(doc.get("items") or [])
            token = (doc.get("metadata") or {}).get("continue")
        return total

    async def count_nodes(self) -> int:
        return await self._count("list_nodes", self.core.list_node)

    async def count_pods(self) -> int:
        return await self._count("list_pods", self.core.list_pod_for_all_namespaces)


class StateObjects:
    """The identity's copy in the cluster: a Secret and a ConfigMap in one namespace."""

    def __init__(self, cluster: Cluster, namespace: str, prefix: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.secret_name = f"{prefix}-state"
        self.configmap_name = f"{prefix}-identity"
        self.available = True  # False after a 403/404 that says we cannot use them
        self.problem = ""

    def _unusable(self, exc: KubeError) -> bool:
        """Say once that the state objects cannot be used, and stop trying."""
        if exc.status not in (401, 403, 404):
            return False
        if self.available:
            self.available = False
            why = ("no RBAC permission" if exc.status in (401, 403)
                   else "the namespace does not exist")
            self.problem = f"{why} for secrets/configmaps in {self.namespace}"
            log.warning("cannot keep the identity in the cluster (%s); "
                        "keeping it in the state file only", self.problem,
                        extra={"namespace": self.namespace, "status": exc.status})
        return True

    async def load(self) -> Identity | None:
        """The stored identity, or None (absent, unreadable, or no permission)."""
        if not self.available:
            return None
        record: dict[str, Any] = {}
        core = self.cluster.core
        try:
            cm = await self.cluster.call("read_configmap", core.read_namespaced_config_map,
                                         self.configmap_name, self.namespace)
            record.update(cm.data or {})
        except KubeError as exc:
            if exc.status != 404 and self._unusable(exc):
                return None
            if exc.status not in (404,):
                raise
        try:
            secret = await self.cluster.call("read_secret", core.read_namespaced_secret,
                                             self.secret_name, self.namespace)
            for key, value in (secret.data or {}).items():
                record[key] = base64.b64decode(value).decode()
        except KubeError as exc:
            if exc.status != 404 and self._unusable(exc):
                return None
            if exc.status not in (404,):
                raise
        if not record.get("agent_id"):
            return None
        return Identity.from_record(record)

    async def save(self, identity: Identity) -> bool:
        """Write both objects; False when they cannot be used (said once)."""
        if not self.available:
            return False
        labels = {"app.kubernetes.io/name": "pipeops-agent",
                  "app.kubernetes.io/component": "registrar"}
        ids = {k: str(getattr(identity, k)) for k in STATE_KEYS}
        secret_data = {
            "agent_id": identity.agent_id, "cluster_id": identity.cluster_id,
            "cluster_token": identity.cluster_token,
        }
        secret = k8s.V1Secret(
            metadata=k8s.V1ObjectMeta(name=self.secret_name, labels=labels), type="Opaque",
            data={k: base64.b64encode(v.encode()).decode() for k, v in secret_data.items()})
        configmap = k8s.V1ConfigMap(
            metadata=k8s.V1ObjectMeta(name=self.configmap_name, labels=labels), data=ids)
        core = self.cluster.core
        try:
            await self._upsert("secret", core.create_namespaced_secret,
                               core.replace_namespaced_secret, self.secret_name, secret)
            await self._upsert("configmap", core.create_namespaced_config_map,
                               core.replace_namespaced_config_map, self.configmap_name,
                               configmap)
        except KubeError as exc:
            if self._unusable(exc):
                return False
            raise
        return True

    async def _upsert(self, kind: str, create: Callable[..., Any], replace: Callable[..., Any],
                      name: str, body: Any) -> None:
        """Replace (last writer wins: the registrar is the only writer), else create."""
        try:
            await self.cluster.call(f"replace_{kind}", replace, name, self.namespace, body)
            return
        except KubeError as exc:
            if exc.status != 404:
                raise
        try:
            await self.cluster.call(f"create_{kind}", create, self.namespace, body)
        except KubeError as exc:
            if exc.status != 409:  # created meanwhile: replace once more
                raise
            await self.cluster.call(f"replace_{kind}", replace, name, self.namespace, body)
