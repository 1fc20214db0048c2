"""HTTP: routing, authentication, content negotiation and streaming responses.

One catch-all route parses Kubernetes paths (`/api/v1/namespaces/NS/pods/NAME/log`,
`/apis/GROUP/VERSION/...`) itself, because the real URL grammar (optional namespace,
optional name, optional subresource, cluster-scoped kinds) is easier to read as code
than as a route table. The verbs live in api.py; this module only translates HTTP to
them and their answers (or `ApiError`s) back to HTTP, in JSON, Table or
PartialObjectMetadata form as the client asked. Over 400 lines because the path grammar,
the negotiation and the streaming replies are one translation, read top to bottom.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from kubesim import admin, errors, openapi, protobuf, tables
from kubesim.api import Cluster
from kubesim.auth import Identity, forbidden, rbac_allows
from kubesim.patch import PATCH_TYPES, apply_patch
from kubesim.resources import ResourceType
from kubesim.selectors import build_predicate, field_equals, known_fields
from kubesim.stats import ADMIN_PREFIX, StatsMiddleware
from kubesim.store import Obj, TooOld
from kubesim.watch import Watcher, bookmark_object, stream

MAX_BODY = 3 * 1024 * 1024
VERSION_INFO = {
    "major": "1",
    "minor": "32",
    "emulationMajor": "1",
    "emulationMinor": "32",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "31",
    "gitVersion": "v1.32.0+kubesim",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":")).encode(), status,
                    media_type="application/json")


def error_response(err: errors.ApiError) -> Response:
    return json_response(err.status(), err.code)


@dataclass
class Target:
    rt: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None


def parse_target(cluster: Cluster, segs: list[str]) -> Target | None:
    """Resolve path segments after the group/version to a resource, or None (404)."""
    if segs[0] == "api":
        group, version, rest = "", segs[1], segs[2:]
    else:
        group, version, rest = segs[1], segs[2], segs[3:]
    reg = cluster.registry
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        rt = reg.lookup(group, version, rest[2])
        if rt is not None and rt.namespaced:
            namespace, rest = rest[1], rest[2:]
    rt = reg.lookup(group, version, rest[0])
    if rt is None or len(rest) > 3:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if sub is not None and sub not in rt.subresources:
        return None
    if rt.namespaced and namespace is None and name is not None:
        return None
    return Target(rt, namespace, name, sub)


class Format:
    """What the client's Accept header asked for."""

    def __init__(self, accept: str) -> None:
        self.kind = "json"
        for part in accept.split(","):
            params = dict(
                p.strip().partition("=")[::2] for p in part.split(";")[1:] if "=" in p
            )
            media = part.split(";")[0].strip()
            if media not in ("application/json", "*/*", "application/*"):
                continue
            as_ = params.get("as")
            if as_ is None:
                self.kind = "json"
                return
            if params.get("g") != "meta.k8s.io":
                continue
            if as_ == "Table":
                self.kind = "table"
                return
            if as_ in ("PartialObjectMetadataList", "PartialObjectMetadata"):
                self.kind = "partial"
                return


def _versioned(obj: Obj, rt: ResourceType) -> Obj:
    if obj.get("apiVersion") == rt.group_version:
        return obj
    return {**obj, "apiVersion": rt.group_version}


class Handler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    async def __call__(self, request: Request) -> Response:
        try:
            return await self.dispatch(request)
        except errors.ApiError as e:
            return error_response(e)
        except Exception:
            traceback.print_exc(file=sys.stderr)
            return error_response(errors.ApiError(500, "InternalError", "internal error"))

    async def dispatch(self, request: Request) -> Response:
        path = request.url.path
        if path in ("/healthz", "/livez", "/readyz"):
            return Response(b"ok", media_type="text/plain")
        if path == "/version":
            return json_response(VERSION_INFO)
        ident = self.cluster.auth.authenticate(request.headers.get("authorization"))
        if ident is None:
            raise errors.unauthorized()
        if path.startswith(ADMIN_PREFIX):
            if not ident.admin:
                raise errors.ApiError(403, "Forbidden", "the admin API needs the admin token")
            return await admin.handle(self.cluster, request)
        segs = [s for s in path.split("/") if s]
        if segs == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"]:
            return await self.access_review(request, ident)
        doc = self.discovery(request, segs)
        if doc is not None:
            return doc
        if len(segs) < 3 or segs[0] not in ("api", "apis") or (
            segs[0] == "apis" and len(segs) < 4
        ):
            raise errors.no_such_resource()
        target = parse_target(self.cluster, segs)
        if target is None:
            raise errors.no_such_resource()
        return await self.resource(request, ident, target)

    def authorized(self, ident: Identity, verb: str, group: str, resource: str,
                   namespace: str | None, name: str | None) -> bool:
        return ident.allows(verb, group, resource, namespace) or rbac_allows(
            self.cluster.store, ident, verb, group, resource, namespace, name)

    async def access_review(self, request: Request, ident: Identity) -> Response:
        """SelfSubjectAccessReview: what `kubectl auth can-i` asks."""
        if request.method != "POST":
            raise errors.method_not_allowed()
        body = await self._body(request, "SelfSubjectAccessReview")
        if not isinstance(body, dict) or body.get("kind", "SelfSubjectAccessReview") != (
                "SelfSubjectAccessReview"):
            raise errors.bad_request("the object provided is unrecognized (must be of type "
                                     "SelfSubjectAccessReview)")
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes")
        if not isinstance(attrs, dict):
            raise errors.ApiError(422, "Invalid", 'SelfSubjectAccessReview.authorization.k8s.io '
                                  '"" is invalid: spec.resourceAttributes: Required value: '
                                  "kubesim answers resource attributes only")
        resource = str(attrs.get("resource", ""))
        if attrs.get("subresource"):
            resource += f"/{attrs['subresource']}"
        allowed = self.authorized(ident, str(attrs.get("verb", "")), str(attrs.get("group", "")),
                                  resource, attrs.get("namespace") or None,
                                  attrs.get("name") or None)
        status: dict[str, Any] = {"allowed": allowed}
        if not allowed:
            status["reason"] = "no rule or RBAC binding allows it"
        return json_response({"kind": "SelfSubjectAccessReview",
                              "apiVersion": "authorization.k8s.io/v1",
                              "metadata": {"creationTimestamp": None}, "spec": spec,
                              "status": status}, 201)

    def discovery(self, request: Request, segs: list[str]) -> Response | None:
        reg = self.cluster.registry
        doc: dict[str, Any] | None = None
        if segs == ["api"]:
            doc = reg.api_versions(request.url.netloc)
        elif segs == ["apis"]:
            doc = reg.api_group_list()
        elif len(segs) == 2 and segs[0] == "api":
            doc = reg.resource_list("", segs[1])
        elif len(segs) == 2 and segs[0] == "apis":
            doc = reg.api_group(segs[1])
        elif len(segs) == 3 and segs[0] == "apis":
            doc = reg.resource_list(segs[1], segs[2])
        elif segs == ["openapi", "v3"]:
            doc = openapi.root_doc(reg)
        elif len(segs) >= 4 and segs[:2] == ["openapi", "v3"]:
            group = "" if segs[2] == "api" else segs[3]
            version = segs[3] if segs[2] == "api" else (segs[4] if len(segs) > 4 else "")
            doc = openapi.group_version_doc(reg, group, version)
        elif segs[:1] == ["openapi"]:
            raise errors.no_such_resource()
        else:
            return None
        if doc is None:
            raise errors.no_such_resource()
        return json_response(doc)

    # ---- resources ----------------------------------------------------------------------

    async def resource(self, request: Request, ident: Identity, t: Target) -> Response:
        q = request.query_params
        method = request.method
        rt = t.rt
        verb: str | None
        if method == "GET":
            verb = "get" if t.name else ("watch" if q.get("watch") in ("1", "true") else "list")
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method)
            if method == "DELETE":
                verb = "delete" if t.name else "deletecollection"
        if verb is None or (method == "POST" and t.name) or (
            method in ("PUT", "PATCH") and not t.name
        ):
            raise errors.method_not_allowed()
        resource = f"{rt.plural}/{t.sub}" if t.sub else rt.plural
        if not self.authorized(ident, verb, rt.group, resource, t.namespace, t.name):
            raise forbidden(ident, verb, rt.group, resource, t.namespace, t.name)
        dry_run = self._dry_run(q.getlist("dryRun"))
        fmt = Format(request.headers.get("accept", "application/json"))
        c = self.cluster
        if t.sub == "log":
            if method != "GET":
                raise errors.method_not_allowed()
            return self.pod_log(request, t)
        if t.sub == "scale":
            assert t.name
            if method == "GET":
                return json_response(c.get_scale(rt, t.namespace, t.name))
            if method == "PUT":
                body = await self._body(request, "Scale")
                return json_response(c.set_scale(rt, t.namespace, t.name, body, dry_run))
            if method == "PATCH":
                kind = self._patch_kind(request)
                body = await self._body(request, "Scale")
                current = c.get_scale(rt, t.namespace, t.name)
                return json_response(c.set_scale(rt, t.namespace, t.name,
                                                 apply_patch(kind, current, body), dry_run))
            raise errors.method_not_allowed()
        if verb == "get":
            assert t.name
            return self.render_one(rt, c.get(rt, t.namespace, t.name), fmt, q)
        if verb == "list":
            return self.list(request, t, fmt)
        if verb == "watch":
            return self.watch(request, t, fmt)
        if verb == "create":
            body = await self._body(request, rt.kind)
            created = c.create(rt, t.namespace, body, dry_run)
            return self.render_one(rt, created, fmt, q, status=201)
        if verb == "update":
            assert t.name
            body = await self._body(request, rt.kind)
            return self.render_one(rt, c.update(rt, t.namespace, t.name, body, t.sub, dry_run),
                                   fmt, q)
        if verb == "patch":
            assert t.name
            kind = self._patch_kind(request)
            body = await self._body(request, rt.kind)
            existed = c.exists(rt, t.namespace, t.name)
            obj = c.patch(rt, t.namespace, t.name, kind, body, t.sub, dry_run,
                          q.get("fieldManager"))
            return self.render_one(rt, obj, fmt, q, status=200 if existed else 201)
        if verb == "delete":
            assert t.name
            options = await self._body(request, "DeleteOptions", optional=True)
            if isinstance(options, dict) and options.get("dryRun") == ["All"]:
                dry_run = True
            gone = c.delete(rt, t.namespace, t.name,
                            options if isinstance(options, dict) else None, dry_run)
            if gone["metadata"].get("deletionTimestamp"):  # a namespace: Terminating
                return self.render_one(rt, gone, fmt, q)
            # deleted at once: the real server answers a Status naming what went
            details = {"name": gone["metadata"]["name"], "kind": rt.plural,
                       "uid": gone["metadata"]["uid"], **({"group": rt.group} if rt.group
                                                         else {})}
            return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {},
                                 "status": "Success", "details": details})
        # deletecollection
        fields = known_fields(rt, q.get("fieldSelector"))
        predicate = build_predicate(q.get("labelSelector"), fields)
        items, meta = c.list(rt, t.namespace, predicate, None, None, None, None)
        gone = [c.delete(rt, o["metadata"].get("namespace"), o["metadata"]["name"],
                         dry_run=dry_run) for o in items]
        return self.render_list(rt, gone, meta, fmt, q)

    @staticmethod
    def _dry_run(values: list[str]) -> bool:
        for v in values:
            if v != "All":
                raise errors.bad_request(f'Invalid dry run value: "{v}" (supported: "All")')
        return bool(values)

    @staticmethod
    def _patch_kind(request: Request) -> str:
        ctype = request.headers.get("content-type", "").split(";")[0].strip()
        kind = PATCH_TYPES.get(ctype)
        if kind is None:
            raise errors.ApiError(415, "UnsupportedMediaType", "415: Unsupported Media Type")
        return kind

    @staticmethod
    async def _body(request: Request, kind: str, optional: bool = False) -> Any:
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_BODY:
                raise errors.ApiError(413, "RequestEntityTooLarge", "Request entity too large: "
                                      f"limit is {MAX_BODY}")
        if not raw.strip():
            if optional:
                return None
            raise errors.bad_request(f"the object provided is unrecognized (must be of type "
                                     f"{kind}): couldn't get version/kind; json parse error: "
                                     "unexpected end of JSON input")
        ctype = request.headers.get("content-type", "application/json")
        if ctype.split(";")[0].strip() == protobuf.MEDIA_TYPE:
            return protobuf.decode(raw)
        try:
            if "yaml" in ctype and not raw.lstrip().startswith((b"{", b"[")):
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise errors.bad_request(
                f"the object provided is unrecognized (must be of type {kind}): couldn't get "
                f"version/kind; json parse error: {str(e).splitlines()[0]}"
            ) from e

    # ---- rendering ----------------------------------------------------------------------

    def render_one(self, rt: ResourceType, obj: Obj, fmt: Format, q: Any,
                   status: int = 200) -> Response:
        obj = _versioned(obj, rt)
        if fmt.kind == "table":
            meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
            return json_response(tables.table(rt.group, rt.plural, [obj], meta,
                                              q.get("includeObject", "Metadata")), status)
        if fmt.kind == "partial":
            return json_response(tables.partial_metadata(obj), status)
        return json_response(obj, status)

    def render_list(self, rt: ResourceType, items: list[Obj], meta: dict[str, Any],
                    fmt: Format, q: Any) -> Response:
        if fmt.kind == "table":
            return json_response(tables.table(rt.group, rt.plural, items, meta,
                                              q.get("includeObject", "Metadata")))
        if fmt.kind == "partial":
            return json_response({"kind": "PartialObjectMetadataList",
                                  "apiVersion": "meta.k8s.io/v1", "metadata": meta,
                                  "items": [tables.partial_metadata(o) for o in items]})
        # Like the real server, list items carry neither kind nor apiVersion.
        stripped = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")}
                    for o in items]
        return json_response({"kind": f"{rt.kind}List", "apiVersion": rt.group_version,
                              "metadata": meta, "items": stripped})

    def list(self, request: Request, t: Target, fmt: Format) -> Response:
        q = request.query_params
        fields = known_fields(t.rt, q.get("fieldSelector"))
        predicate = build_predicate(q.get("labelSelector"), fields)
        limit_raw = q.get("limit")
        try:
            limit = int(limit_raw) if limit_raw else None
        except ValueError as e:
            raise errors.bad_request(f"invalid limit: {limit_raw}") from e
        if limit is not None and limit <= 0:
            limit = None
        name = field_equals(q.get("fieldSelector"), "metadata.name")
        c = self.cluster
        if name is not None and t.namespace is not None and not q.get("continue"):
            obj = c.store.get(t.rt.storage_key, t.namespace, name)
            items = [obj] if obj is not None and (predicate is None or predicate(obj)) else []
            meta = {"resourceVersion": str(c.store.rv)}
        else:
            items, meta = c.list(t.rt, t.namespace, predicate, limit, q.get("continue"),
                                 q.get("resourceVersion"), q.get("resourceVersionMatch"))
        return self.render_list(t.rt, items, meta, fmt, q)

    def watch(self, request: Request, t: Target, fmt: Format) -> Response:
        q = request.query_params
        rt, store = t.rt, self.cluster.store
        fields = known_fields(rt, q.get("fieldSelector"))
        predicate = build_predicate(q.get("labelSelector"), fields)
        timeout_raw = q.get("timeoutSeconds")
        timeout = float(timeout_raw) if timeout_raw else None
        rv_raw = q.get("resourceVersion")
        initial = q.get("sendInitialEvents") == "true"
        watcher = Watcher(rt.storage_key, t.namespace, predicate)
        # No await from here to subscribe(): the backlog and the live feed meet exactly.
        if initial or rv_raw in (None, "", "0"):
            backlog = [("ADDED", o) for o in store.iterate(rt.storage_key, t.namespace)
                       if watcher.matches(o)]
        else:
            try:
                events = store.events_since(rt.storage_key, int(rv_raw))
            except ValueError as e:
                raise errors.bad_request(f"invalid resource version: {rv_raw}") from e
            except TooOld as e:
                raise errors.gone(str(e)) from e
            backlog = [item for item in (watcher.translate(e) for e in events) if item]
        store.subscribe(watcher)
        include = q.get("includeObject", "Metadata")
        first = [True]

        def render(event_type: str, obj: Obj) -> Obj:
            obj = _versioned(obj, rt)
            if fmt.kind == "table":
                meta = {"resourceVersion": obj["metadata"].get("resourceVersion", "")}
                table = tables.table(rt.group, rt.plural, [obj], meta, include, first[0])
                first[0] = False
                return table
            if fmt.kind == "partial":
                return tables.partial_metadata(obj)
            return obj

        bookmarks = q.get("allowWatchBookmarks") == "true"
        api_version = "meta.k8s.io/v1" if fmt.kind != "json" else rt.group_version
        kind = {"table": "Table", "partial": "PartialObjectMetadata"}.get(fmt.kind, rt.kind)
        body = stream(
            store, watcher, backlog, render,
            bookmark_object(api_version, kind) if bookmarks else None,
            timeout, self.cluster.bookmark_interval, initial_end_bookmark=initial and bookmarks,
        )
        return StreamingResponse(body, media_type="application/json")

    def pod_log(self, request: Request, t: Target) -> Response:
        q = request.query_params
        assert t.name and t.namespace is not None
        pod = self.cluster.get(t.rt, t.namespace, t.name)
        names = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = q.get("container")
        if container is None:
            if len(names) != 1:
                raise errors.bad_request(
                    f"a container name must be specified for pod {t.name}, choose one of: "
                    f"[{' '.join(names)}]")
            container = names[0]
        elif container not in names:
            raise errors.bad_request(f"container {container} is not valid for pod {t.name}")
        tail_raw = q.get("tailLines")
        try:
            tail = int(tail_raw) if tail_raw else None
        except ValueError as e:
            raise errors.bad_request(f"invalid tailLines: {tail_raw}") from e
        body = self.cluster.logs.read(
            (t.namespace, t.name, container), tail, q.get("follow") == "true",
            q.get("timestamps") == "true",
        )
        return StreamingResponse(body, media_type="text/plain")


class FaultMiddleware:
    """Applies the injected delay and simulated downtime to API (non-admin) requests."""

    def __init__(self, app: ASGIApp, cluster: Cluster) -> None:
        self.app = app
        self.cluster = cluster

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope["path"].startswith(ADMIN_PREFIX):
            faults = self.cluster.faults
            if time.monotonic() < faults.unavailable_until:
                await error_response(errors.ApiError(
                    503, "ServiceUnavailable", "the apiserver is restarting"))(
                    scope, receive, send)
                return
            if faults.delay > 0:
                await asyncio.sleep(faults.delay)
        await self.app(scope, receive, send)


def build_app(cluster: Cluster) -> ASGIApp:
    handler = Handler(cluster)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(routes=[Route("/{path:path}", handler.__call__, methods=methods)])
    return StatsMiddleware(FaultMiddleware(app, cluster), cluster.stats)
