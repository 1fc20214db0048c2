"""HTTP endpoints of the gateway routes (PROTOCOL.md section 4) and ``/debug/routes``.

* ``GET /api/v1/gateway/routes?cluster_id=&limit=&continue=``: the cluster's routes, paged
  (``continue`` is opaque; empty when done).
* ``POST /api/v1/gateway/routes/register``: one route upsert; 409 when another cluster
  holds the hostname.
* ``POST /api/v1/gateway/routes/unregister``: one route, or every path of a host; unknown
  routes are a success (``removed: 0``).
* ``POST /api/v1/gateway/routes/sync``: one batch of the full set; each ingress is
  validated alone (``rejected``), a host of another cluster is a ``conflict``; the batch
  marked ``last`` drops the routes the sync never named (``removed``), or 409 with
  nothing removed when earlier batches are missing.

All take the cluster token (401), for a known cluster (404) whose id the body names.
``GET /debug/routes`` (no token, loopback tool) shows the table with its counters, the
request counts per endpoint and the public listener's URL.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from pipeops_controlplane.auth import bearer
from pipeops_controlplane.gateway.models import (
    RegisterRoute,
    SyncBatch,
    SyncIngress,
    UnregisterRoute,
)
from pipeops_controlplane.gateway.table import HostConflict, RouteKey, RouteTable, SyncIncomplete
from pipeops_controlplane.store import Cluster, ClusterStore

router = APIRouter(prefix="/api/v1/gateway/routes", tags=["gateway"])
debug_router = APIRouter(prefix="/debug/routes", tags=["debug"])

MAX_PAGE = 5000


def table_of(request: Request) -> RouteTable:
    table: RouteTable = request.app.state.routes
    return table


def _requests(request: Request) -> Counter[str]:
    counter: Counter[str] = request.app.state.route_requests
    return counter


def _cluster(request: Request, cluster_id: uuid.UUID | str) -> Cluster:
    token = bearer(request)
    store: ClusterStore = request.app.state.store
    cluster = store.get(str(cluster_id))
    if cluster is None:
        raise HTTPException(404, "cluster not found")
    if token != cluster.token:
        raise HTTPException(401, "invalid cluster token")
    return cluster


def _encode(key: RouteKey) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key)).encode()).decode()


def _decode(token: str) -> RouteKey:
    try:
        cluster_id, hostname, path = json.loads(base64.urlsafe_b64decode(token.encode()))
        return (str(cluster_id), str(hostname), str(path))
    except (ValueError, TypeError) as exc:
        raise HTTPException(422, f"continue token is not one this server gave: {exc}") from None


def _wire(route: Any) -> dict[str, Any]:
    """A route as the agent sees it (no counters)."""
    return {"hostname": route.hostname, "path": route.path, **route.content()}


@router.get("")
async def list_routes(request: Request, cluster_id: uuid.UUID,
                      limit: int = Query(1000, ge=1, le=MAX_PAGE),
                      continue_: str = Query("", alias="continue")) -> dict[str, Any]:
    _requests(request)["list"] += 1
    cluster = _cluster(request, cluster_id)
    after = _decode(continue_) if continue_ else None
    if after is not None and after[0] != cluster.cluster_id:
        raise HTTPException(422, "continue token belongs to another cluster")
    routes, more = table_of(request).page(cluster.cluster_id, limit, after)
    return {"cluster_id": cluster.cluster_id, "routes": [_wire(r) for r in routes],
            "continue": _encode(more) if more is not None else ""}


@router.post("/register")
async def register(body: RegisterRoute, request: Request) -> JSONResponse:
    _requests(request)["register"] += 1
    cluster = _cluster(request, body.cluster_id)
    try:
        done = table_of(request).upsert(cluster.cluster_id, body.hostname, body.path,
                                        body.content())
    except HostConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return JSONResponse({"route": _wire(done.route), "created": done.created,
                         "changed": done.changed}, status_code=201 if done.created else 200)


@router.post("/unregister")
async def unregister(body: UnregisterRoute, request: Request) -> dict[str, Any]:
    _requests(request)["unregister"] += 1
    cluster = _cluster(request, body.cluster_id)
    removed = table_of(request).remove(cluster.cluster_id, body.hostname, body.path)
    return {"removed": removed}


def _error_text(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}"[:300]


@router.post("/sync")
async def sync(body: SyncBatch, request: Request) -> JSONResponse:
    _requests(request)["sync"] += 1
    cluster = _cluster(request, body.cluster_id)
    table = table_of(request)
    rejected: list[dict[str, Any]] = []
    conflicts: list[dict[str, Any]] = []
    named: list[RouteKey] = []
    accepted = 0
    for raw in body.ingresses:
        try:
            ingress = SyncIngress.model_validate(raw)
        except ValidationError as exc:
            rejected.append({"namespace": str(raw.get("namespace", ""))[:253],
                             "ingress_name": str(raw.get("ingress_name", ""))[:253],
                             "reason": _error_text(exc)})
            continue
        for rule in ingress.rules:
            for path in rule.paths:
                content = {"namespace": ingress.namespace,
                           "ingress_name": ingress.ingress_name,
                           "path_type": path.path_type, "service_name": path.service_name,
                           "service_port": path.service_port, "tls": rule.tls,
                           "routing_mode": body.routing_mode,
                           "public_endpoint": body.public_endpoint}
                try:
                    table.upsert(cluster.cluster_id, rule.host, path.path, content,
                                 from_sync=True)
                except HostConflict as exc:
                    conflicts.append({"hostname": rule.host, "path": path.path,
                                      "namespace": ingress.namespace,
                                      "ingress_name": ingress.ingress_name,
                                      "reason": str(exc)})
                    continue
                named.append((cluster.cluster_id, rule.host, path.path))
                accepted += 1
    reply: dict[str, Any] = {"sync_id": body.sync_id, "batch": body.batch, "last": body.last,
                             "accepted": accepted, "rejected": rejected,
                             "conflicts": conflicts}
    try:
        removed = table.sync_batch(cluster.cluster_id, body.sync_id, body.batch, body.last,
                                   named)
    except SyncIncomplete as exc:
        return JSONResponse({**reply, "detail": str(exc)}, status_code=409)
    if removed is not None:
        reply["removed"] = removed
    return JSONResponse(reply)


@debug_router.get("")
async def debug_routes(request: Request, cluster_id: str | None = None,
                       hostname: str | None = None) -> dict[str, Any]:
    table = table_of(request)
    public = request.app.state.public_listener
    routes = table.host_routes(hostname) if hostname is not None else table.routes(cluster_id)
    return {"public_url": public.url if public is not None else "",
            "routes": [r.view() for r in routes
                       if cluster_id is None or r.cluster_id == cluster_id],
            "requests": dict(_requests(request)),
            "public_requests": dict(public.counts) if public is not None else {}}
