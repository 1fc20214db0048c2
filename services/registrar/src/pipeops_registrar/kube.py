"""The registrar's view of the cluster: version, node and pod counts, its state objects.

The official client loads the credentials (in-cluster or a kubeconfig: tokens, client
certificates, exec plugins) and carries the requests; the few calls we make go through
its ``ApiClient`` as plain REST with JSON bodies, which spares importing its generated
API and model modules (seconds of start-up). The client is synchronous, so every call
runs in a daemon thread with a request timeout and no urllib3 retries (our own loops
retry). Counting never lists the cluster: one metadata-only ``limit=1`` page, whose
``metadata.remainingItemCount`` plus the one item returned is the total, so a heartbeat
costs the same on 10 pods or 10,000. A server that gives no ``remainingItemCount`` is
counted by pages, and that count is kept for ``PAGED_COUNT_TTL`` (the ``limit=1`` page is
still asked every time, so the count is exact again as soon as the server gives one).

The state objects live in ``kubernetes.namespace``: a Secret (the cluster token and the
ids it belongs to) and a ConfigMap (the ids, readable by operators). Lacking RBAC for
them (403) or the namespace (404 on create) is said once; after that the registrar
keeps its identity in the state file only.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlparse

from kubernetes import client as k8s

from agentkit.config import KubernetesConfig
from agentkit.identity import Identity
from agentkit.kubeconfig import load_configuration
from pipeops_registrar import metrics

log = logging.getLogger(__name__)
T = TypeVar("T")

REQUEST_TIMEOUT = (5.0, 10.0)  # connect, read
# Lists for counting ask for metadata only (the real API server and kubesim both serve
# it); plain JSON stays acceptable for a server that does not.
META_ACCEPT = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"
VERSION_TTL = 60.0  # the API server's version rarely changes; ask once a minute
# A count that took paging through every object is reused this long (seconds): heartbeats
# must not list the whole cluster every few seconds.
PAGED_COUNT_TTL = 300.0
STATE_KEYS = ("agent_id", "cluster_id", "cluster_name", "workspace_id", "api_url",
              "tunnel_url", "gateway_url", "registered_at")


async def in_daemon_thread(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``asyncio.to_thread`` on a daemon thread of its own.

    A call cannot be interrupted once it runs; on the default executor one still waiting
    for a slow API server would hold the process's exit (asyncio joins those threads)
    past the 2 s a shutdown may take. A daemon thread is left behind instead, and its
    result, arriving after the loop closed, is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the awaiting task
            outcome = partial(future.set_exception, exc)
        else:
            outcome = partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=work, name="kube-call", daemon=True).start()
    return await future


class KubeError(Exception):
    """A Kubernetes API call failed; ``status`` is the HTTP code (0: no reply)."""

    def __init__(self, operation: str, status: int, reason: str) -> None:
        super().__init__(f"kubernetes {operation}: {reason}" + (f" ({status})" if status else ""))
        self.operation = operation
        self.status = status


def load_api_client(cfg: KubernetesConfig) -> Any:
    """An ``ApiClient`` from the pod's ServiceAccount or from a kubeconfig (blocking)."""
    configuration = load_configuration(cfg)
    configuration.retries = False
    return k8s.ApiClient(configuration)


class Cluster:
    """Facts about the cluster, each call one bounded API request in a thread."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self._version: tuple[float, str] | None = None
        self._warned_no_remaining: set[str] = set()
        self._paged: dict[str, tuple[float, int]] = {}  # operation -> (when, count)

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    @property
    def server_host(self) -> str:
        return urlparse(self.server).hostname or ""

    def _send(self, method: str, path: str, query: list[tuple[str, Any]],
              body: dict[str, Any] | None, accept: str) -> tuple[int, str, bytes]:
        """One blocking request: (status, reason, body bytes)."""
        headers = {"Accept": accept}
        if body is not None:
            headers["Content-Type"] = "application/json"
        params = self.api_client.param_serialize(
            method, path, query_params=query, header_params=headers, body=body,
            auth_settings=["BearerToken"])
        response = self.api_client.call_api(*params, _request_timeout=REQUEST_TIMEOUT)
        data = response.read()
        return int(response.status), str(response.reason or ""), bytes(data or b"")

    async def request(self, operation: str, method: str, path: str, *,
                      query: list[tuple[str, Any]] | None = None,
                      body: dict[str, Any] | None = None,
                      accept: str = "application/json") -> dict[str, Any]:
        """One API call in a thread, counted; the decoded reply, or KubeError."""
        try:
            status, reason, raw = await in_daemon_thread(
                self._send, method, path, query or [], body, accept)
        except Exception as exc:  # urllib3/ssl/socket errors: no reply at all
            metrics.KUBE_CALLS.labels(operation, "error").inc()
            raise KubeError(operation, 0, f"{type(exc).__name__}: {exc}") from None
        metrics.KUBE_CALLS.labels(operation, str(status)).inc()
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = None
        if not 200 <= status < 300:
            message = doc.get("message") if isinstance(doc, dict) else None
            raise KubeError(operation, status, str(message or reason or "error"))
        if not isinstance(doc, dict):
            raise KubeError(operation, status, "reply is not a JSON object")
        return doc

    async def version(self) -> str:
        now = time.monotonic()
        if self._version is None or now - self._version[0] > VERSION_TTL:
            doc = await self.request("get_version", "GET", "/version")
            self._version = (now, str(doc.get("gitVersion", "")))
        return self._version[1]

    async def _count(self, operation: str, path: str) -> int:
        doc = await self.request(operation, "GET", path, query=[("limit", 1)],
                                 accept=META_ACCEPT)
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
            doc = await self.request(operation, "GET", path,
                                     query=[("limit", 500), ("continue", token)],
                                     accept=META_ACCEPT)
            total += len(doc.get("items") or [])
            token = (doc.get("metadata") or {}).get("continue")
        self._paged[operation] = (time.monotonic(), total)
        return total

    async def count_nodes(self) -> int:
        return await self._count("list_nodes", "/api/v1/nodes")

    async def count_pods(self) -> int:
        return await self._count("list_pods", "/api/v1/pods")


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

    def _path(self, resource: str, name: str = "") -> str:
        path = f"/api/v1/namespaces/{self.namespace}/{resource}"
        return f"{path}/{name}" if name else path

    async def _read(self, kind: str, resource: str, name: str) -> dict[str, Any] | None:
        """The object's ``data``; None when absent; KubeError otherwise."""
        try:
            doc = await self.cluster.request(f"read_{kind}", "GET", self._path(resource, name))
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
            record.update(await self._read("configmap", "configmaps", self.configmap_name)
                          or {})
            secret = await self._read("secret", "secrets", self.secret_name) or {}
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
            await self._upsert("secret", "secrets", self.secret_name, secret)
            await self._upsert("configmap", "configmaps", self.configmap_name, configmap)
        except KubeError as exc:
            if self._unusable(exc):
                return False
            raise
        return True

    async def _upsert(self, kind: str, resource: str, name: str, body: dict[str, Any]) -> None:
        """Replace (last writer wins: the registrar is the only writer), else create."""
        replace = partial(self.cluster.request, f"replace_{kind}", "PUT",
                          self._path(resource, name), body=body)
        try:
            await replace()
            return
        except KubeError as exc:
            if exc.status != 404:
                raise
        try:
            await self.cluster.request(f"create_{kind}", "POST", self._path(resource),
                                       body=body)
        except KubeError as exc:
            if exc.status != 409:  # created meanwhile: replace once more
                raise
            await replace()
