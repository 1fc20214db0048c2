"""A small asynchronous Kubernetes REST client (httpx) for the tunnel's few API calls.

Why not the official client in a thread: the tunnel makes a handful of plain REST calls
(get a Service; create/delete Deployments, Services, PVCs; patch a scale subresource) from
the event loop that also carries every stream. httpx is natively async, so a call is
cancelled for real on SIGTERM (a worker thread cannot be), no thread pool is sized or
starved, and a failed call hands back the API server's ``Status`` object, whose
``message`` is exactly "the Kubernetes error" a failed command reports. The official
client is still used for what it is good at: reading the in-cluster ServiceAccount or a
kubeconfig (CA, client certificates, token, refresh hooks) into a ``Configuration``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import quote

import httpx

from agentkit.config import KubernetesConfig
from agentkit.kubeconfig import load_configuration
from agentkit.status import ServiceStatus

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class KubeError(Exception):
    """A call failed: ``status`` is the HTTP code (0: no reply), ``message`` the API's."""

    def __init__(self, operation: str, status: int, message: str, reason: str = "") -> None:
        super().__init__(f"{operation}: {message}" + (f" ({status})" if status else ""))
        self.operation = operation
        self.status = status
        self.message = message
        self.reason = reason


def _ssl_context(configuration: Any) -> ssl.SSLContext | bool:
    if not configuration.verify_ssl:
        return False
    context = ssl.create_default_context(cafile=configuration.ssl_ca_cert or None)
    if configuration.cert_file:
        context.load_cert_chain(configuration.cert_file, configuration.key_file or None)
    return context


def _auth_headers(configuration: Any) -> dict[str, str]:
    """Headers from the configuration's auth settings (runs its token refresh hook)."""
    out: dict[str, str] = {}
    for setting in configuration.auth_settings().values():
        if setting.get("in") == "header" and setting.get("value"):
            out[str(setting["key"]).title()] = str(setting["value"])
    return out


def path_of(api: str, resource: str, namespace: str, name: str = "", sub: str = "") -> str:
    """``/api/v1/namespaces/NS/services/NAME`` and the like (``api``: ``/api/v1``,
    ``/apis/apps/v1``)."""
    path = f"{api}/namespaces/{quote(namespace, safe='')}/{resource}"
    if name:
        path += f"/{quote(name, safe='')}"
    if sub:
        path += f"/{sub}"
    return path


def _failure(operation: str, response: httpx.Response, doc: Any) -> KubeError:
    """The KubeError for a refused call, with the API's ``Status`` message if any."""
    message = response.reason_phrase or "request failed"
    reason = ""
    if isinstance(doc, dict) and doc.get("kind") == "Status":
        message = str(doc.get("message") or message)
        reason = str(doc.get("reason") or "")
    return KubeError(operation, response.status_code, message, reason)


class KubeClient:
    def __init__(self, configuration: Any, client: httpx.AsyncClient) -> None:
        self.configuration = configuration
        self.client = client

    @classmethod
    async def connect(cls, cfg: KubernetesConfig) -> KubeClient:
        configuration = await asyncio.to_thread(load_configuration, cfg)
        verify = await asyncio.to_thread(_ssl_context, configuration)
        client = httpx.AsyncClient(base_url=str(configuration.host), verify=verify,
                                   timeout=TIMEOUT, trust_env=False)
        return cls(configuration, client)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _headers(self) -> dict[str, str]:
        headers = await asyncio.to_thread(_auth_headers, self.configuration)
        headers["Accept"] = "application/json"
        return headers

    async def request(self, operation: str, method: str, path: str, *,
                      body: Any = None, content_type: str = "application/json",
                      params: dict[str, str] | None = None) -> dict[str, Any]:
        """One call; the parsed JSON reply, or KubeError with the API's message."""
        headers = await self._headers()
        kwargs: dict[str, Any] = {"headers": headers, "params": params}
        if body is not None:
            headers["Content-Type"] = content_type
            kwargs["json"] = body
        try:
            response = await self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise KubeError(operation, 0, f"{type(exc).__name__}: {exc}") from None
        try:
            doc = response.json()
        except ValueError:
            doc = None
        if response.is_success:
            if not isinstance(doc, dict):
                raise KubeError(operation, response.status_code, "the reply is not a JSON object")
            return doc
        raise _failure(operation, response, doc)

    # --- the verbs the tunnel uses ------------------------------------------------------

    async def get(self, api: str, resource: str, namespace: str, name: str) -> dict[str, Any]:
        return await self.request(f"get {resource} {namespace}/{name}", "GET",
                                  path_of(api, resource, namespace, name))

    async def create(self, api: str, resource: str, namespace: str,
                     body: dict[str, Any]) -> dict[str, Any]:
        name = body.get("metadata", {}).get("name", "")
        return await self.request(f"create {resource} {namespace}/{name}", "POST",
                                  path_of(api, resource, namespace), body=body)

    async def list(self, api: str, resource: str, namespace: str, *,
                   label_selector: str = "") -> dict[str, Any]:
        params = {"labelSelector": label_selector} if label_selector else None
        return await self.request(f"list {resource} {namespace}", "GET",
                                  path_of(api, resource, namespace), params=params)

    async def watch(self, api: str, resource: str, namespace: str, *, resource_version: str,
                    label_selector: str = "", timeout_seconds: int = 300
                    ) -> AsyncGenerator[dict[str, Any], None]:
        """The events of one watch request from ``resource_version`` (bookmarks on), until
        the server ends it after ``timeout_seconds``; KubeError on a refused or broken
        one."""
        operation = f"watch {resource} {namespace}"
        params = {"watch": "1", "resourceVersion": resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(timeout_seconds)}
        if label_selector:
            params["labelSelector"] = label_selector
        timeout = httpx.Timeout(TIMEOUT.connect or 5.0, read=timeout_seconds + 30.0)
        try:
            async with self.client.stream("GET", path_of(api, resource, namespace),
                                          params=params, headers=await self._headers(),
                                          timeout=timeout) as response:
                if not response.is_success:
                    body = await response.aread()
                    try:
                        doc = json.loads(body)
                    except ValueError:
                        doc = None
                    raise _failure(operation, response, doc)
                async for line in response.aiter_lines():
                    if not line.strip():
                        continue
                    try:
                        event = json.loads(line)
                    except ValueError:
                        raise KubeError(operation, response.status_code,
                                        "a watch event is not JSON") from None
                    if isinstance(event, dict):
                        yield event
        except httpx.HTTPError as exc:
            raise KubeError(operation, 0, f"{type(exc).__name__}: {exc}") from None

    async def replace(self, api: str, resource: str, namespace: str,
                      body: dict[str, Any]) -> dict[str, Any]:
        """PUT ``body`` (with ``metadata.resourceVersion``: 409 if it changed meanwhile)."""
        name = body.get("metadata", {}).get("name", "")
        return await self.request(f"update {resource} {namespace}/{name}", "PUT",
                                  path_of(api, resource, namespace, name), body=body)

    async def delete(self, api: str, resource: str, namespace: str, name: str) -> dict[str, Any]:
        return await self.request(f"delete {resource} {namespace}/{name}", "DELETE",
                                  path_of(api, resource, namespace, name),
                                  body={"kind": "DeleteOptions", "apiVersion": "v1",
                                        "propagationPolicy": "Background"})

    async def scale(self, api: str, resource: str, namespace: str, name: str,
                    replicas: int) -> dict[str, Any]:
        return await self.request(f"scale {resource} {namespace}/{name}", "PATCH",
                                  path_of(api, resource, namespace, name, "scale"),
                                  body={"spec": {"replicas": replicas}},
                                  content_type="application/merge-patch+json")


class LazyKube:
    """The client, made on first use (a pod without RBAC or a kubeconfig still tunnels);
    a failure is reported in the ``kubernetes`` check and retried on the next use."""

    def __init__(self, cfg: KubernetesConfig, status: ServiceStatus) -> None:
        self.cfg = cfg
        self.status = status
        self.client: KubeClient | None = None
        self.problem = ""
        self._lock = asyncio.Lock()

    async def get(self) -> KubeClient | None:
        async with self._lock:
            if self.client is None:
                try:
                    self.client = await KubeClient.connect(self.cfg)
                    self.status.check("kubernetes", "ok")
                except Exception as exc:
                    problem = f"no Kubernetes client config: {type(exc).__name__}: {exc}"
                    if problem != self.problem:  # said once; asked again on every use
                        log.error(problem)
                    self.problem = problem
                    self.status.check("kubernetes", self.problem)
            return self.client

    async def aclose(self) -> None:
        if self.client is not None:
            await self.client.aclose()
