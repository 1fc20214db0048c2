"""``Kube``: every Kubernetes API call of the pod, through the official client.

The official ``kubernetes`` package loads the credentials (in-cluster ServiceAccount or a
kubeconfig: CA, client certificates, tokens, exec plugins and their refresh) and carries
every request: :class:`~agentkit.kube.transport.Transport` fills a
:class:`~agentkit.kube.resources.Resource`'s path template and query as its ``ApiClient``
does, adds the auth headers from its ``Configuration``, and sends through its urllib3 pool
(``rest``); the ``ApiClient`` itself is not imported (it imports pydantic, +9 MiB). Replies
are read as JSON dicts (the generated model classes are never built: they cost memory and
start-up time and drop fields of kinds they do not know).

The client is synchronous; each call runs in a daemon thread of its own (at most
``MAX_CALLS`` at once per client), so the event loop never blocks, and a call still
waiting for a slow API server when the process stops does not hold its exit (the
default executor's threads are joined at exit; a daemon thread is left behind and its
late result dropped). Each request has a timeout and no urllib3 retries: callers retry
on :attr:`KubeError.retryable` with tenacity.

Every call reports ``(operation, code)`` to the ``on_call`` hook (``code``: the HTTP
status, or ``"error"`` when no reply came), which is how a service counts its API calls
in its own metrics.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlparse

from agentkit.config import KubernetesConfig
from agentkit.kube.errors import KubeError, from_status
from agentkit.kube.resources import EVENTS, Resource
from agentkit.kube.transport import Transport
from agentkit.kube.watch import Listed, Watched, follow, watch

T = TypeVar("T")
OnCall = Callable[[str, str], None]

JSON = "application/json"
# Lists for counting ask for metadata only (kubesim and the real API server serve it);
# plain JSON stays acceptable for a server that does not.
METADATA_LIST = ("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,"
                 "application/json")
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # server-side apply (JSON is YAML)

REQUEST_TIMEOUT = (5.0, 10.0)  # connect, read (seconds)
MAX_CALLS = 8  # calls in flight at once per client
PAGE_SIZE = 500


async def in_daemon_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` on a daemon thread of its own (see the module docstring)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(outcome: Callable[[], None]) -> None:
        if not future.done():
            outcome()

    def work() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            outcome = partial(future.set_exception, exc)
        else:
            outcome = partial(future.set_result, result)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=work, name="kube-call", daemon=True).start()
    return await future


def api_client(cfg: KubernetesConfig) -> Transport:
    """The official client's configuration and pool for ``cfg``, as a :class:`Transport`
    (blocking: reads files, may run a credential plugin, imports the client). The
    client's errors propagate."""
    from agentkit.kubeconfig import load_configuration

    configuration = load_configuration(cfg)
    configuration.retries = False
    return Transport(configuration)


def _name_of(body: dict[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


class Kube:
    """Generic verbs on any :class:`Resource`; each returns the reply as a dict or raises
    :class:`KubeError`. ``namespace`` is ignored for cluster-scoped resources and means
    "all namespaces" when empty for lists and watches."""

    def __init__(self, client: Any, *, on_call: OnCall | None = None,
                 max_calls: int = MAX_CALLS) -> None:
        self.api_client = client
        self.on_call = on_call
        self._slots = asyncio.Semaphore(max_calls)

    @classmethod
    async def connect(cls, cfg: KubernetesConfig, *, on_call: OnCall | None = None) -> Kube:
        """A client from the pod's ServiceAccount or a kubeconfig (loaded off the loop)."""
        return cls(await asyncio.to_thread(api_client, cfg), on_call=on_call)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.api_client.close)

    @property
    def server(self) -> str:
        return str(self.api_client.configuration.host)

    @property
    def server_host(self) -> str:
        return urlparse(self.server).hostname or ""

    # --- one request ----------------------------------------------------------------------

    def counted(self, operation: str, code: str) -> None:
        if self.on_call is not None:
            self.on_call(operation, code)

    def open(self, method: str, template: str, path_params: dict[str, str],
             query: list[tuple[str, Any]], body: Any, content_type: str, accept: str,
             timeout: tuple[float, float]) -> Any:
        """Send one request (blocking); the client's ``RESTResponse``, body unread."""
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        params = self.api_client.param_serialize(
            method, template, path_params=path_params, query_params=query,
            header_params=headers, body=body, auth_settings=["BearerToken"])
        return self.api_client.call_api(*params, _request_timeout=timeout)

    def _exchange(self, *args: Any) -> tuple[int, str, bytes]:
        response = self.open(*args)
        data = response.read()
        return int(response.status), str(response.reason or ""), bytes(data or b"")

    async def call(self, operation: str, method: str, resource: Resource, *,
                   namespace: str | None = None, name: str = "", subresource: str = "",
                   query: list[tuple[str, Any]] | None = None, body: Any = None,
                   content_type: str = "", accept: str = JSON) -> dict[str, Any]:
        """One API call, counted; the decoded reply, or KubeError."""
        template = resource.template(namespace, bool(name), subresource)
        path_params = {"namespace": namespace or "", "name": name}
        if body is not None and not content_type:
            content_type = JSON
        return await self.raw(operation, method, template, path_params, query or [], body,
                              content_type, accept)

    async def raw(self, operation: str, method: str, template: str,
                  path_params: dict[str, str], query: list[tuple[str, Any]], body: Any,
                  content_type: str, accept: str) -> dict[str, Any]:
        """A request on a path template that is no resource (``/version``, discovery)."""
        async with self._slots:
            try:
                status, reason, raw = await in_daemon_thread(
                    self._exchange, method, template, path_params, query, body,
                    content_type, accept, REQUEST_TIMEOUT)
            except Exception as exc:  # urllib3/ssl/socket errors, a failing auth plugin
                self.counted(operation, "error")
                raise KubeError(operation, 0, f"{type(exc).__name__}: {exc}") from None
        self.counted(operation, str(status))
        if not 200 <= status < 300:
            raise from_status(operation, status, reason, raw)
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            raise KubeError(operation, status, "the reply is not a JSON object")
        return doc

    # --- the verbs ------------------------------------------------------------------------

    async def get(self, resource: Resource, name: str, namespace: str | None = None, *,
                  subresource: str = "", operation: str = "") -> dict[str, Any]:
        return await self.call(operation or f"get {resource.plural} {namespace or ''}/{name}",
                               "GET", resource, namespace=namespace, name=name,
                               subresource=subresource)

    async def list(self, resource: Resource, namespace: str | None = None, *,
                   label_selector: str = "", field_selector: str = "", limit: int = 0,
                   continue_: str = "", metadata_only: bool = False,
                   operation: str = "") -> dict[str, Any]:
        """One page of a list (all of it without ``limit``). ``metadata_only``: items carry
        only their metadata (``PartialObjectMetadataList``), for counting and diffing."""
        query: list[tuple[str, Any]] = []
        for key, value in (("labelSelector", label_selector),
                           ("fieldSelector", field_selector),
                           ("limit", limit), ("continue", continue_)):
            if value:
                query.append((key, value))
        return await self.call(operation or f"list {resource.plural} {namespace or ''}",
                               "GET", resource, namespace=namespace, query=query,
                               accept=METADATA_LIST if metadata_only else JSON)

    async def pages(self, resource: Resource, namespace: str | None = None, *,
                    page_size: int = PAGE_SIZE, **options: Any
                    ) -> AsyncIterator[dict[str, Any]]:
        """Each page of a list, following ``continue`` (one consistent snapshot: the
        pages share the first page's resourceVersion). ``options`` as for :meth:`list`."""
        token = ""
        while True:
            page = await self.list(resource, namespace, limit=page_size, continue_=token,
                                   **options)
            yield page
            token = str((page.get("metadata") or {}).get("continue") or "")
            if not token:
                return

    async def list_all(self, resource: Resource, namespace: str | None = None, *,
                       page_size: int = PAGE_SIZE, **options: Any) -> dict[str, Any]:
        """The whole list, read page by page: ``{"items": [...], "metadata":
        {"resourceVersion": ...}}`` (the version to watch from)."""
        items: list[dict[str, Any]] = []
        version = ""
        async for page in self.pages(resource, namespace, page_size=page_size, **options):
            items.extend(page.get("items") or [])
            version = version or str((page.get("metadata") or {}).get("resourceVersion")
                                     or "")
        return {"items": items, "metadata": {"resourceVersion": version}}

    async def create(self, resource: Resource, body: dict[str, Any],
                     namespace: str | None = None, *, operation: str = "") -> dict[str, Any]:
        return await self.call(
            operation or f"create {resource.plural} {namespace or ''}/{_name_of(body)}",
            "POST", resource, namespace=namespace, body=body)

    async def replace(self, resource: Resource, body: dict[str, Any],
                      namespace: str | None = None, *, subresource: str = "",
                      operation: str = "") -> dict[str, Any]:
        """PUT ``body`` (with ``metadata.resourceVersion``: 409 Conflict if it changed)."""
        name = _name_of(body)
        return await self.call(operation or f"update {resource.plural} {namespace or ''}/{name}",
                               "PUT", resource, namespace=namespace, name=name,
                               subresource=subresource, body=body)

    async def patch(self, resource: Resource, name: str, patch: Any,
                    namespace: str | None = None, *, content_type: str = MERGE_PATCH,
                    subresource: str = "", operation: str = "") -> dict[str, Any]:
        """A merge patch by default; ``JSON_PATCH`` (a list) or ``STRATEGIC_MERGE_PATCH``
        (built-in kinds) as asked. ``subresource``: ``status``, ``scale``."""
        return await self.call(operation or f"patch {resource.plural} {namespace or ''}/{name}",
                               "PATCH", resource, namespace=namespace, name=name,
                               subresource=subresource, body=patch,
                               content_type=content_type)

    async def apply(self, resource: Resource, body: dict[str, Any],
                    namespace: str | None = None, *, field_manager: str, force: bool = True,
                    subresource: str = "", operation: str = "") -> dict[str, Any]:
        """Server-side apply of ``body`` (the whole desired object) as ``field_manager``:
        creates it or changes the fields this manager owns, and removes the ones it
        applied before and no longer applies. ``force`` takes over fields another
        manager set (409 Conflict without it)."""
        name = _name_of(body)
        query: list[tuple[str, Any]] = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return await self.call(operation or f"apply {resource.plural} {namespace or ''}/{name}",
                               "PATCH", resource, namespace=namespace, name=name,
                               subresource=subresource, query=query, body=body,
                               content_type=APPLY_PATCH)

    async def delete(self, resource: Resource, name: str, namespace: str | None = None, *,
                     propagation: str = "Background", operation: str = "") -> dict[str, Any]:
        return await self.call(
            operation or f"delete {resource.plural} {namespace or ''}/{name}", "DELETE",
            resource, namespace=namespace, name=name,
            body={"kind": "DeleteOptions", "apiVersion": "v1",
                  "propagationPolicy": propagation})

    async def patch_status(self, resource: Resource, name: str, status: dict[str, Any],
                           namespace: str | None = None) -> dict[str, Any]:
        """Merge ``status`` into the object's status subresource."""
        return await self.patch(resource, name, {"status": status}, namespace,
                                subresource="status")

    async def create_event(self, regarding: dict[str, Any], *, reason: str, message: str,
                           component: str, warning: bool = False) -> dict[str, Any]:
        """A core/v1 Event on ``regarding`` (any object as read from the API), as
        ``kubectl describe`` shows it. ``message`` is cut to the API's 1 KiB limit."""
        meta = regarding.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        involved = {k: v for k, v in (
            ("apiVersion", regarding.get("apiVersion")), ("kind", regarding.get("kind")),
            ("name", meta.get("name")), ("namespace", meta.get("namespace")),
            ("uid", meta.get("uid")), ("resourceVersion", meta.get("resourceVersion")))
            if v}
        event = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{meta.get('name') or 'object'}.{uuid.uuid4().hex[:16]}",
                         "namespace": namespace},
            "involvedObject": involved, "reason": reason, "message": message[:1024],
            "type": "Warning" if warning else "Normal", "source": {"component": component},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        return await self.create(EVENTS, event, namespace,
                                 operation=f"create events {namespace}/{reason}")

    async def version(self, *, operation: str = "get version") -> dict[str, Any]:
        """The API server's ``/version`` (``gitVersion`` and the like)."""
        return await self.raw(operation, "GET", "/version", {}, [], None, "", JSON)

    async def served_versions(self, group: str) -> builtins.list[str]:
        """The versions of an API group the server serves, preferred first; [] when it
        serves none (a cluster without the Gateway API CRDs is not an error)."""
        try:
            doc = await self.raw(f"discover {group}", "GET", "/apis/{group}",
                                 {"group": group}, [], None, "", JSON)
        except KubeError as exc:
            if exc.not_found:
                return []
            raise
        preferred = str((doc.get("preferredVersion") or {}).get("version") or "")
        versions = [str(v.get("version")) for v in doc.get("versions") or []
                    if isinstance(v, dict) and v.get("version")]
        return sorted(versions, key=lambda v: v != preferred)

    # --- watches (agentkit.kube.watch) -----------------------------------------------------

    def watch(self, resource: Resource, namespace: str | None = None, *,
              resource_version: str, **options: Any
              ) -> AsyncGenerator[dict[str, Any], None]:
        """One watch request's events; see :func:`agentkit.kube.watch.watch`."""
        return watch(self, resource, namespace, resource_version=resource_version, **options)

    def follow(self, resource: Resource, namespace: str | None = None,
               **options: Any) -> AsyncGenerator[Listed | Watched, None]:
        """List, then watch, listing again when the history is gone; see
        :func:`agentkit.kube.watch.follow`."""
        return follow(self, resource, namespace, **options)
