"""Read-only endpoints: version, the pod's metrics, detailed health, features, runtime,
connectivity and the agent's status. Each asks the siblings afresh and says what it
could not ask; none answers 500 because a sibling is down."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import httpx
from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from agentkit.config import ConfigError
from pipeops.agent.v1 import registrar_pb2, service_pb2, tunnel_pb2
from pipeops_http_api import podview
from pipeops_http_api.deps import Deps
from pipeops_http_api.sibling import SIBLINGS, to_dict

TUNNEL_CONNECTED = "TUNNEL_STATE_CONNECTED"
CONTROL_PLANE_TIMEOUT = 5.0
KUBERNETES_TIMEOUT = 15.0
PING_TIMEOUT = 5.0
# the page may talk to this server only, and loads nothing from anywhere
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'")


def open_router(deps: Deps) -> APIRouter:
    router = APIRouter(tags=["open (no token)"])

    @router.get("/version", summary="Version, commit, build date, Python, protocol versions")
    async def version() -> dict[str, Any]:
        return podview.version_info(deps.ctx, deps.commit, deps.build_date)

    @router.get("/metrics", summary="Prometheus metrics of the whole pod (every container)",
                response_class=Response)
    async def metrics() -> Response:
        body = await deps.scraper.scrape()
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/dashboard", summary="The live dashboard (a static page: it asks for the "
                "token and then reads /api/ with it)", response_class=HTMLResponse)
    async def dashboard() -> HTMLResponse:
        return HTMLResponse(deps.dashboard, headers={
            "Content-Security-Policy": CSP, "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"})

    return router


async def runtime(deps: Deps) -> dict[str, Any]:
    answers = await asyncio.gather(*(deps.ctx.siblings.ask(n, "Service/Describe",
                                         service_pb2.DescribeRequest()) for n in SIBLINGS))
    out: dict[str, Any] = {podview.SELF: to_dict(deps.ctx.runtime.snapshot())}
    for name, answer in zip(SIBLINGS, answers, strict=True):
        out[name] = to_dict(answer.reply.runtime) if answer.ok else {"error": answer.problem}
    return out


async def agent_status(deps: Deps) -> dict[str, Any]:
    containers, parts = await asyncio.gather(podview.containers(deps.ctx),
                                             podview.agent_parts(deps.ctx))
    return {"status": podview.overall(containers),
            "containers": {n: {"state": c.get("state"), "detail": c.get("detail", c.get("error"))}
                           for n, c in containers.items()},
            **parts}


def _check(ok: bool, started: float, detail: str, **extra: Any) -> dict[str, Any]:
    return {"ok": ok, "latency_ms": round((time.monotonic() - started) * 1000, 2),
            "detail": detail, **extra}


async def control_plane_check(deps: Deps) -> dict[str, Any]:
    """Any HTTP answer from ``pipeops.api_url`` means reachable."""
    url = deps.ctx.config.pipeops.api_url
    started = time.monotonic()
    try:
        reply = await (await deps.control_plane()).get(url, timeout=CONTROL_PLANE_TIMEOUT)
    except httpx.HTTPError as exc:
        return _check(False, started, f"{type(exc).__name__}: {exc}" if str(exc)
                      else type(exc).__name__, url=url)
    except ConfigError as exc:  # pipeops.tls.ca_file, read with the client's first use
        return _check(False, started, str(exc), url=url)
    return _check(True, started, f"HTTP {reply.status_code}", url=url)


async def kubernetes_check(deps: Deps) -> dict[str, Any]:
    started = time.monotonic()
    answer = await deps.ctx.siblings.ask("registrar", "Registrar/CheckKubernetes",
                       registrar_pb2.CheckKubernetesRequest(), timeout=KUBERNETES_TIMEOUT)
    if not answer.ok:
        return _check(False, started, f"the registrar cannot be asked: {answer.problem}")
    reply = answer.reply
    permissions = [to_dict(p) for p in reply.permissions]
    denied = [p for p in reply.permissions if not p.allowed]
    ok = reply.reachable and not denied
    detail = (reply.error if not reply.reachable
              else f"{len(denied)} of {len(permissions)} permissions denied" if denied
              else f"reachable ({reply.version}); all {len(permissions)} permissions allowed")
    return {"ok": ok, "latency_ms": round(reply.latency_seconds * 1000, 2), "detail": detail,
            "server": reply.server, "version": reply.version, "permissions": permissions}


async def tunnel_check(deps: Deps) -> dict[str, Any]:
    if not deps.ctx.config.tunnel.enabled:
        return {"ok": False, "latency_ms": None, "detail": "the tunnel is disabled "
                "(tunnel.enabled is false)"}
    started = time.monotonic()
    answer = await deps.ctx.siblings.ask("tunnel", "Tunnel/Ping", tunnel_pb2.PingRequest(),
                                         timeout=PING_TIMEOUT,
                                         expected=frozenset({grpc.StatusCode.FAILED_PRECONDITION}))
    if not answer.ok:
        return _check(False, started, answer.problem)
    return {"ok": True, "latency_ms": round(answer.reply.round_trip_seconds * 1000, 2),
            "detail": "a WebSocket ping over the tunnel came back"}


async def features(deps: Deps) -> dict[str, Any]:
    cfg = deps.ctx.config
    s = deps.ctx.siblings
    tunnel, heartbeat, gateway = await asyncio.gather(
        s.ask("tunnel", "Tunnel/GetStatus", tunnel_pb2.GetTunnelStatusRequest()),
        s.ask("registrar", "Registrar/GetHeartbeat", registrar_pb2.GetHeartbeatRequest()),
        s.ask("gateway", "Service/Describe", service_pb2.DescribeRequest()))
    connected = tunnel.ok and tunnel.reply.state == tunnel_pb2.TUNNEL_STATE_CONNECTED
    beating = heartbeat.ok and heartbeat.reply.HasField("last_success")

    def why(answer: Any, good: bool, otherwise: str) -> str:
        return "" if good else (answer.problem or otherwise)

    gateway_state = (service_pb2.ServiceState.Name(gateway.reply.state) if gateway.ok else "")
    routing = gateway.ok and gateway.reply.state == service_pb2.SERVICE_STATE_READY
    return {
        "heartbeat": {"enabled": True, "available": beating,
                      "detail": why(heartbeat, beating, "no heartbeat delivered yet")},
        "tunnel": {"enabled": cfg.tunnel.enabled, "available": connected,
                   "detail": why(tunnel, connected, "the tunnel is not connected")},
        "session_commands": {"enabled": True, "available": tunnel.ok,
                             "detail": why(tunnel, tunnel.ok, "")},
        "ingress_sync": {"enabled": cfg.agent.enable_ingress_sync, "available": routing,
                         "detail": why(gateway, routing, gateway.reply.detail if gateway.ok
                                       else gateway_state)},
        "sse": {"enabled": True, "available": True, "detail": ""},
        "websocket": {"enabled": True, "available": True, "detail": ""},
        "metrics": {"enabled": True, "available": True, "detail": ""},
    }


def api_router(deps: Deps) -> APIRouter:
    router = APIRouter(tags=["status (dashboard token)"], dependencies=[Depends(deps.auth)])

    @router.get("/api/health/detailed",
                summary="Each container's gRPC health and Describe; identity, heartbeat, "
                        "tunnel and gateway state")
    async def health_detailed() -> dict[str, Any]:
        return await podview.detailed(deps.ctx)

    @router.get("/api/status/features", summary="Each feature: enabled (config) and available")
    async def status_features() -> dict[str, Any]:
        return await features(deps)

    @router.get("/api/metrics/runtime",
                summary="Per container: RSS, CPU seconds, threads, open fds, loop lag, uptime")
    async def metrics_runtime() -> dict[str, Any]:
        return await runtime(deps)

    @router.get("/api/status/connectivity",
                summary="Tests now: control plane reachable, Kubernetes API reachable with "
                        "the agent's permissions, a round trip through the tunnel")
    async def connectivity() -> dict[str, Any]:
        control_plane, kubernetes, tunnel = await asyncio.gather(
            control_plane_check(deps), kubernetes_check(deps), tunnel_check(deps))
        return {"control_plane": control_plane, "kubernetes": kubernetes, "tunnel": tunnel,
                "ok": all(c["ok"] for c in (control_plane, kubernetes, tunnel))}

    @router.get("/api/agent/status", summary="The agent and cluster status (seed 002)")
    async def status() -> dict[str, Any]:
        return await agent_status(deps)

    return router
