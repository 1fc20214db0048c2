"""The FastAPI application: the endpoints the http-api serves.

Open: liveness, readiness (503 with the reasons when a sibling is not where it must
be, see ``readiness``; with each sibling's own account of itself, asked over gRPC), the
version, the whole pod's metrics, the OpenAPI document (``/docs``). Everything under
``/api/`` and ``/ws`` needs the dashboard token (``auth``), except the Kubernetes API
proxy under ``/api/k8s/`` (``k8sproxy``: the caller's own Kubernetes token). The
endpoints themselves are in ``routes_status`` (read-only), ``routes_actions``
(heartbeat, commands, messages) and ``routes_realtime`` (SSE and WebSocket).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from google.protobuf.json_format import MessageToDict
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

from agentkit.runner import ServiceContext
from pipeops.agent.v1 import service_pb2
from pipeops_http_api import k8sproxy, routes_actions, routes_realtime, routes_status
from pipeops_http_api.deps import Deps
from pipeops_http_api.httpmetrics import RequestCounter
from pipeops_http_api.readiness import not_ready
from pipeops_http_api.realtime import ABORT, SOCKET

SIBLINGS = ("registrar", "tunnel", "gateway")

DESCRIPTION = """The pipeops-agent pod's HTTP face.

**Authentication.** `/health`, `/ready`, `/version`, `/metrics`, `/dashboard` (a page
that asks for the token) and these docs are open.
Everything under `/api/` and `/ws` needs `Authorization: Bearer <dashboard token>`
(scheme *dashboardToken*); a missing or wrong token is answered 401. `/ws` is a
WebSocket: the event stream of `/api/realtime/events` plus `get_status`, `get_metrics`
and `ping` requests. The exception is `/api/k8s/`, the Kubernetes API proxy: it takes
your own Kubernetes token (scheme *kubernetesToken*) and passes it to the API server.
"""


def create_app(ctx: ServiceContext, deps: Deps) -> FastAPI:
    app = FastAPI(title="pipeops-agent", version=ctx.status.version, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)
    # The API reference with Swagger UI served from here (the PyPI package
    # swagger-ui-bundle), not from a CDN: a pod may reach nothing outside its cluster.
    app.mount("/docs/static", StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json",
                                   title="pipeops-agent API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")
    started = time.time()

    async def describe(name: str) -> dict[str, Any]:
        info = await ctx.siblings.call(name, "Service/Describe", service_pb2.DescribeRequest())
        if info is None:  # down, or an error (in this service's Describe: sibling_errors)
            return {"state": "unreachable"}
        return MessageToDict(info, preserving_proto_field_name=True)

    @app.get("/health", tags=["open (no token)"],
             summary="Liveness: the process serves requests")
    async def health() -> dict[str, Any]:
        """Liveness: the process serves requests."""
        return {"status": "healthy", "uptime_seconds": round(time.time() - started, 3)}

    @app.get("/ready", tags=["open (no token)"],
             summary="Readiness of the agent (200, or 503 with the reasons), with each "
                     "sibling's own account of itself")
    async def ready() -> JSONResponse:
        """Readiness of the agent (200, or 503 with the reasons), with each sibling's own
        account of itself."""
        reasons, *states = await asyncio.gather(not_ready(ctx.config, ctx.siblings),
                                                *(describe(name) for name in SIBLINGS))
        body = {"status": "not ready" if reasons else "ready", "reasons": reasons,
                "services": dict(zip(SIBLINGS, states, strict=True))}
        return JSONResponse(body, status_code=503 if reasons else 200)

    app.include_router(routes_status.open_router(deps))
    app.include_router(routes_status.api_router(deps))
    app.include_router(routes_actions.router(deps))
    app.include_router(routes_realtime.router(deps))
    app.include_router(routes_realtime.websocket_route(deps))
    app.include_router(k8sproxy.router(deps.kubernetes))
    app.add_middleware(RequestCounter)
    return app


def with_transport(app: ASGIApp) -> ASGIApp:
    """The outermost ASGI layer: puts a way to abort this connection in the scope
    (``pipeops.abort``), for the realtime streams to cut a client that stopped reading,
    and its socket (``pipeops.socket``), to bound what the kernel buffers for it.
    The server's ``send`` is a bound method of its per-connection protocol object, which
    holds the asyncio transport."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        owner = getattr(send, "__self__", None)
        transport = getattr(owner, "transport", None)
        if transport is not None and hasattr(transport, "abort"):
            scope[ABORT] = transport.abort
            scope[SOCKET] = transport.get_extra_info("socket")
        await app(scope, receive, send)

    return wrapped
