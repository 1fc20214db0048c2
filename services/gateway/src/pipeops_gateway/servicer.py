"""The gRPC ``Gateway`` service: the routes' state, the routes, a resync, the tunnel's
target check.

With route sync on (``agent.enable_ingress_sync``) every answer comes from the syncer's
:class:`GatewayState`: ``GetStatus`` (cluster type, routing mode, public endpoint, route
counts, last sync, last error, the mass-delete guard), ``ListRoutes`` (the winning routes,
filtered by namespace or hostname), ``Resync`` (a full pass with a fresh list, optionally
through the mass-delete guard; it answers once the pass is done) and ``CheckTarget``
(allowed when a synced route points at that Service and port; the answer carries the
Service's clusterIP from the watch, so the tunnel needs no Kubernetes client to dial it).

With it off, the answers say so: ``GetStatus`` disabled with the reason, ``ListRoutes``
empty, ``Resync`` FAILED_PRECONDITION, ``CheckTarget`` never allows a Service (an operator
who wants one reachable without route sync configures a tunnel forward).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import grpc

from agentkit.config import Config
from agentkit.status import ServiceStatus
from pipeops.agent.v1 import gateway_pb2, gateway_pb2_grpc
from pipeops_gateway.state import GatewayState


class Resyncer(Protocol):
    """What ``Resync`` asks of the syncer: a full pass now; the routes it sent for."""

    async def resync(self, allow_mass_delete: bool, timeout: float) -> int: ...

RESYNC_TIMEOUT = 60.0  # a Resync waits this long for its pass

ServiceLookup = Callable[[str, str], Mapping[str, Any] | None]
"""(namespace, name) -> the watched Service (the syncer's view), or None."""


def dial_address(service: Mapping[str, Any] | None, target: str, port: int) -> tuple[str, str]:
    """(clusterIP, "") for a Service that serves ``port``, or ("", why not)."""
    if service is None:
        return "", f"service {target} not found"
    spec = service.get("spec") or {}
    ip = spec.get("clusterIP")
    if not isinstance(ip, str) or not ip or ip == "None":
        return "", f"service {target} has no clusterIP"
    ports = [p.get("port") for p in spec.get("ports") or [] if isinstance(p, Mapping)]
    if port not in ports:
        return "", f"service {target} has no port {port}"
    return ip, ""


def off_reason(config: Config) -> str:
    """Why route sync is off, in one sentence for Describe, GetStatus and the answers."""
    return "route sync is off (agent.enable_ingress_sync is false): no routes are published"


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    def __init__(self, config: Config, state: GatewayState | None = None,
                 syncer: Resyncer | None = None, status: ServiceStatus | None = None,
                 services: ServiceLookup | None = None) -> None:
        self.config = config
        self.services = services
        self.state = state
        self.status = status  # what the service says it is doing (Describe's detail)
        self.syncer = syncer
        self.reason = off_reason(config)

    async def GetStatus(self, request: gateway_pb2.GetGatewayStatusRequest,
                        context: grpc.aio.ServicerContext) -> gateway_pb2.GatewayStatus:
        s = self.state
        if s is None:
            return gateway_pb2.GatewayStatus(
                enabled=False, routing_mode=gateway_pb2.ROUTING_MODE_TUNNEL, route_count=0,
                detail=self.reason)
        decision = s.decision
        reply = gateway_pb2.GatewayStatus(
            enabled=True, route_count=len(s.desired), last_error=s.last_error,
            routes_held=s.held, routes_refused=s.refused, mass_delete_blocked=s.blocked,
            consecutive_errors=s.consecutive_errors)
        if decision is not None and decision.mode is not None:
            reply.cluster_type = (gateway_pb2.CLUSTER_TYPE_PRIVATE if decision.is_private
                                  else gateway_pb2.CLUSTER_TYPE_PUBLIC)
            reply.routing_mode = (gateway_pb2.ROUTING_MODE_DIRECT if decision.mode == "direct"
                                  else gateway_pb2.ROUTING_MODE_TUNNEL)
            reply.public_endpoint = decision.public_endpoint
        if s.last_sync:
            reply.last_sync.FromNanoseconds(int(s.last_sync * 1e9))
        if s.controller is not None:
            namespace, name, port = s.controller
            reply.ingress_controller.CopyFrom(gateway_pb2.IngressController(
                name=name, namespace=namespace, port=port))
        reply.detail = self._detail(s)
        return reply

    def _detail(self, s: GatewayState) -> str:
        if not s.caches_complete:
            return self.status.detail if self.status else "listing the cluster's objects"
        if s.decision is None or s.decision.mode is None:
            return ("deciding the routing mode: "
                    + (s.decision.reason if s.decision else "not yet"))
        if s.blocked:
            return s.blocked
        if not s.last_sync:
            return s.last_error or (self.status.detail if self.status else "not synced yet")
        return (f"{len(s.desired)} routes, {s.decision.mode} mode ({s.decision.reason})"
                + (f"; last error: {s.last_error}" if s.last_error else ""))

    async def ListRoutes(self, request: gateway_pb2.ListRoutesRequest,
                         context: grpc.aio.ServicerContext) -> gateway_pb2.ListRoutesResponse:
        if self.state is None:
            return gateway_pb2.ListRoutesResponse()
        routes = [gateway_pb2.Route(
            hostname=r.hostname, namespace=r.namespace, ingress_name=r.ingress_name,
            path=r.path, path_type=r.path_type, service_name=r.service_name,
            service_port=r.service_port, tls=r.tls, source=r.source, tls_secret=r.tls_secret)
            for _, r in sorted(self.state.desired.items())
            if (not request.namespace or r.namespace == request.namespace)
            and (not request.hostname or r.hostname == request.hostname)]
        return gateway_pb2.ListRoutesResponse(routes=routes)

    async def Resync(self, request: gateway_pb2.ResyncRequest,
                     context: grpc.aio.ServicerContext) -> gateway_pb2.ResyncResponse:
        if self.syncer is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"nothing to resync: {self.reason}")
            raise AssertionError("abort raises")  # pragma: no cover
        try:
            count = await self.syncer.resync(request.allow_mass_delete, RESYNC_TIMEOUT)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"the full pass did not finish in {RESYNC_TIMEOUT:g}s")
            raise AssertionError("abort raises") from None  # pragma: no cover
        except Exception as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the full pass failed: {exc}")
            raise AssertionError("abort raises") from None  # pragma: no cover
        return gateway_pb2.ResyncResponse(route_count=count)

    async def CheckTarget(self, request: gateway_pb2.CheckTargetRequest,
                          context: grpc.aio.ServicerContext
                          ) -> gateway_pb2.CheckTargetResponse:
        target = f"{request.namespace}/{request.service}:{request.port}"
        if self.state is None:
            return gateway_pb2.CheckTargetResponse(
                allowed=False,
                reason=f"no synced route points at {target}: route sync is off; configure a "
                       "tunnel forward to reach it")
        route = self.state.targets().get((request.namespace, request.service, request.port))
        if route is None:
            return gateway_pb2.CheckTargetResponse(
                allowed=False, reason=f"no synced route points at {target}")
        found = self.services(request.namespace, request.service) if self.services else None
        ip, why = dial_address(found, target, request.port)
        return gateway_pb2.CheckTargetResponse(
            allowed=True, reason=f"{route.source} {route.namespace}/{route.ingress_name} "
                                 f"routes {route.hostname}{route.path} to it",
            cluster_ip=ip, unresolved=why)
