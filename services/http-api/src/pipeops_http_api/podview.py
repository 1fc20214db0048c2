"""The pod's state, asked of the siblings: one place for what several endpoints show.

Every function asks over gRPC with a deadline and returns JSON-ready data that says
plainly what could not be asked (``{"error": "unreachable (UNAVAILABLE): ..."}``), so
``/api/health/detailed``, ``/api/agent/status``, the WebSocket's ``get_status`` and the
dashboard all show the same truth and none of them fails when a sibling is down.
"""

from __future__ import annotations

import asyncio
import platform
from typing import Any

from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentkit.grpcclient import Answer
from agentkit.runner import ServiceContext
from pipeops.agent.v1 import (
    events_pb2,
    gateway_pb2,
    registrar_pb2,
    service_pb2,
    tunnel_pb2,
)
from pipeops_http_api.sibling import SIBLINGS, as_dict, to_dict

SELF = "http-api"
# the tunnel's WebSocket subprotocol (``agentkit.mux.SUBPROTOCOL``, which a test holds this
# equal to): importing the tunnel's multiplexer for the name alone cost 0.5 MiB resident
TUNNEL_PROTOCOL = "pipeops.tunnel.v1"
ROUTES_SHOWN = 100  # routes listed in the status (the dashboard polls it every 2 s)
STATE_PREFIX = "SERVICE_STATE_"


def version_info(ctx: ServiceContext, commit: str, build_date: str) -> dict[str, Any]:
    return {
        "service": "pipeops-agent",
        "version": ctx.status.version,
        "commit": commit,
        "build_date": build_date,
        "python": platform.python_version(),
        "protocol_version": {"tunnel": TUNNEL_PROTOCOL,
                             "grpc": events_pb2.DESCRIPTOR.package},
    }


async def grpc_health(ctx: ServiceContext, name: str) -> str:
    """``SERVING``/``NOT_SERVING``, or ``unreachable``."""
    stub = health_pb2_grpc.HealthStub(ctx.siblings.channel(name))
    try:
        reply = await stub.Check(health_pb2.HealthCheckRequest(),
                                 timeout=ctx.siblings.deadline)
    except Exception:  # grpc.aio.AioRpcError: down or not answering
        return "unreachable"
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


def _info(answer: Answer) -> dict[str, Any]:
    if not answer.ok:
        return {"state": "unreachable", "error": answer.problem}
    info = to_dict(answer.reply)
    info["state"] = str(info.get("state", "")).removeprefix(STATE_PREFIX).lower()
    return info


def own_info(ctx: ServiceContext) -> dict[str, Any]:
    info = ctx.status.to_proto()
    info.runtime.CopyFrom(ctx.runtime.snapshot())
    return _info(Answer(info))


async def containers(ctx: ServiceContext) -> dict[str, dict[str, Any]]:
    """Each container's ``Describe`` and gRPC health (this one's own, asked directly)."""
    described, healths = await asyncio.gather(
        asyncio.gather(*(ctx.siblings.ask(n, "Service/Describe",
                             service_pb2.DescribeRequest()) for n in SIBLINGS)),
        asyncio.gather(*(grpc_health(ctx, n) for n in SIBLINGS)))
    out = {SELF: {**own_info(ctx), "grpc_health": "SERVING"}}
    for name, answer, health in zip(SIBLINGS, described, healths, strict=True):
        out[name] = {**_info(answer), "grpc_health": health}
    return out


async def agent_parts(ctx: ServiceContext) -> dict[str, dict[str, Any]]:
    """Identity, heartbeat, tunnel, sessions, gateway state and the published routes
    (the first ``ROUTES_SHOWN``, and how many there are), each as answered or why not."""
    s = ctx.siblings
    identity, heartbeat, tunnel, sessions, gateway, routes = await asyncio.gather(
        s.ask("registrar", "Registrar/GetIdentity", registrar_pb2.GetIdentityRequest()),
        s.ask("registrar", "Registrar/GetHeartbeat", registrar_pb2.GetHeartbeatRequest()),
        s.ask("tunnel", "Tunnel/GetStatus", tunnel_pb2.GetTunnelStatusRequest()),
        s.ask("tunnel", "Tunnel/ListSessions", tunnel_pb2.ListSessionsRequest()),
        s.ask("gateway", "Gateway/GetStatus", gateway_pb2.GetGatewayStatusRequest()),
        s.ask("gateway", "Gateway/ListRoutes", gateway_pb2.ListRoutesRequest()))
    return {"identity": as_dict(identity), "heartbeat": as_dict(heartbeat),
            "tunnel": as_dict(tunnel), "sessions": as_dict(sessions),
            "gateway": as_dict(gateway), "routes": _routes(routes)}


def _routes(answer: Answer) -> dict[str, Any]:
    if not answer.ok:
        return {"error": answer.problem}
    listed = answer.reply.routes
    return {"total": len(listed), "routes": [to_dict(r) for r in listed[:ROUTES_SHOWN]]}


def overall(parts: dict[str, dict[str, Any]]) -> str:
    """``healthy`` when every container is ready or idle, else ``degraded``."""
    states = {info.get("state") for info in parts.values()}
    return "healthy" if states <= {"ready", "idle"} else "degraded"


async def detailed(ctx: ServiceContext) -> dict[str, Any]:
    """``/api/health/detailed`` and the WebSocket's ``get_status``."""
    parts_of_containers, parts = await asyncio.gather(containers(ctx), agent_parts(ctx))
    return {"status": overall(parts_of_containers), "containers": parts_of_containers, **parts}
