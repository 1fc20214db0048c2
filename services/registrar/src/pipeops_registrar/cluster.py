"""The registrar's view of the cluster: version, node and pod counts, its state objects.

Every call goes through ``agentkit.kube`` (the pod's one Kubernetes layer), named with an
operation that ``pipeops_kubernetes_api_calls_total`` counts. Counting never lists the
cluster: one metadata-only ``limit=1`` page, whose ``metadata.remainingItemCount`` plus
the one item returned is the total, so a heartbeat costs the same on 10 pods or 10,000.
A server that gives no ``remainingItemCount`` is counted by pages, and that count is kept
for ``PAGED_COUNT_TTL`` (the ``limit=1`` page is still asked every time, so the count is
exact again as soon as the server gives one).

The state objects live in ``kubernetes.namespace``: a Secret (the cluster token and the
ids it belongs to) and a ConfigMap (the ids, readable by operators). Lacking RBAC for
them (403) or the namespace (404 on create) is said once; after that the registrar
keeps its identity in the state file only.
"""

from __future__ import annotations

import base64
import logging
import time
from typing import Any

from agentkit.identity import Identity
from agentkit.kube import Kube, KubeError
from agentkit.kube import resources as r
from pipeops_registrar import metrics

log = logging.getLogger(__name__)
VERSION_TTL = 60.0  # the API server's version rarely changes; ask once a minute
# A count that took paging through every object is reused this long (seconds): heartbeats
# must not list the whole cluster every few seconds.
PAGED_COUNT_TTL = 300.0
STATE_KEYS = ("agent_id", "cluster_id", "cluster_name", "workspace_id", "api_url",
              "tunnel_url", "gateway_url", "registered_at")


def count_call(operation: str, code: str) -> None:
    """``agentkit.kube``'s call hook: every API call counted by operation and code."""
    metrics.KUBE_CALLS.labels(operation, code).inc()


class Cluster:
    """Facts about the cluster, each one a bounded API call (or a kept answer)."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._version: tuple[float, str] | None = None
        self._warned_no_remaining: set[str] = set()
        self._paged: dict[str, tuple[float, int]] = {}  # operation -> (when, count)

    @property
    def server(self) -> str:
        return self.kube.server

    @property
    def server_host(self) -> str:
        return self.kube.server_host

    async def version(self) -> str:
        now = time.monotonic()
        if self._version is None or now - self._version[0] > VERSION_TTL:
            doc = await self.kube.version(operation="get_version")
            self._version = (now, str(doc.get("gitVersion", "")))
        return self._version[1]

    async def page(self, operation: str, resource: r.Resource, limit: int,
                   continue_: str = "") -> dict[str, Any]:
        """One metadata-only page of a list."""
        return await self.kube.list(resource, limit=limit, continue_=continue_,
                                    metadata_only=True, operation=operation)

    async def _count(self, operation: str, resource: r.Resource) -> int:
        doc = await self.page(operation, resource, 1)
        items = len(doc.get("items") or [])
        meta = doc.get("metadata") or {}
        if meta.get("remainingItemCount") is not None:
            return items + int(meta["remainingItemCount"])
        if not meta.get("continue"):
            return items
        # More pages but no count (some servers omit it): page through, rarely.
        cached = self._paged.get(operation)
        if cached is not None and time.monotonic() - cached[0] < PAGED_COUNT_TTL:
            return cached[1]
        if operation not in self._warned_no_remaining:
            self._warned_no_remaining.add(operation)
            log.warning("the API server gives no remainingItemCount; counting by pages, "
                        "at most every %g s", PAGED_COUNT_TTL, extra={"operation": operation})
        total, token = items, meta["continue"]
        while token:
            doc = await self.page(operation, resource, 500, token)
            total += len(doc.get("items") or [])
            token = (doc.get("metadata") or {}).get("continue")
        self._paged[operation] = (time.monotonic(), total)
        return total

    async def count_nodes(self) -> int:
        return await self._count("list_nodes", r.NODES)

    async def count_pods(self) -> int:
        return await self._count("list_pods", r.PODS)


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
            self.problem = (
                f"no RBAC permission for secrets/configmaps in namespace {self.namespace}"
                if exc.status in (401, 403) else f"namespace {self.namespace} does not exist")
            log.warning("cannot keep the identity in the cluster (%s); "
                        "keeping it in the state file only", self.problem,
                        extra={"namespace": self.namespace, "status": exc.status})
        return True

    async def _read(self, kind: str, resource: r.Resource, name: str
                    ) -> dict[str, Any] | None:
        """The object's ``data``; None when absent; KubeError otherwise."""
        try:
            doc = await self.cluster.kube.get(resource, name, self.namespace,
                                              operation=f"read_{kind}")
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise
        data = doc.get("data") or {}
        return data if isinstance(data, dict) else {}

    async def load(self) -> Identity | None:
        """The stored identity, or None (absent, unreadable, or no permission)."""
        if not self.available:
            return None
        record: dict[str, Any] = {}
        try:
            record.update(await self._read("configmap", r.CONFIGMAPS, self.configmap_name)
                          or {})
            secret = await self._read("secret", r.SECRETS, self.secret_name) or {}
        except KubeError as exc:
            if self._unusable(exc):
                return None
            raise
        for key, value in secret.items():
            try:
                record[key] = base64.b64decode(str(value), validate=True).decode()
            except ValueError:
                log.warning("ignoring a key of the state Secret that is not base64",
                            extra={"key": key, "secret": self.secret_name})
        if not record.get("agent_id"):
            return None
        return Identity.from_record(record)

    async def save(self, identity: Identity) -> bool:
        """Write both objects; False when they cannot be used (said once)."""
        if not self.available:
            return False
        labels = {"app.kubernetes.io/name": "pipeops-agent",
                  "app.kubernetes.io/component": "registrar"}
        secret_data = {
            "agent_id": identity.agent_id, "cluster_id": identity.cluster_id,
            "cluster_token": identity.cluster_token,
        }
        secret = {
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": self.secret_name, "labels": labels},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in secret_data.items()},
        }
        configmap = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": self.configmap_name, "labels": labels},
            "data": {k: str(getattr(identity, k)) for k in STATE_KEYS},
        }
        try:
            await self._upsert("secret", r.SECRETS, secret)
            await self._upsert("configmap", r.CONFIGMAPS, configmap)
        except KubeError as exc:
            if self._unusable(exc):
                return False
            raise
        return True

    async def _upsert(self, kind: str, resource: r.Resource, body: dict[str, Any]) -> None:
        """Replace (last writer wins: the registrar is the only writer), else create."""
        kube = self.cluster.kube
        try:
            await kube.replace(resource, body, self.namespace, operation=f"replace_{kind}")
            return
        except KubeError as exc:
            if exc.status != 404:
                raise
        try:
            await kube.create(resource, body, self.namespace, operation=f"create_{kind}")
        except KubeError as exc:
            if exc.status != 409:  # created meanwhile: replace once more
                raise
            await kube.replace(resource, body, self.namespace, operation=f"replace_{kind}")
