"""The gRPC ``Gateway`` service, answered while route sync is off.

The gateway does not sync routes yet (issue 12 fills it in): every answer says so instead
of leaving the siblings with UNIMPLEMENTED. ``GetStatus`` says disabled and why;
``ListRoutes`` is empty; ``Resync`` fails with FAILED_PRECONDITION; ``CheckTarget`` never
allows a Service, since no synced route points at one (PROTOCOL.md: the tunnel dials a
configured forward, or a Service a synced route points at). An operator who wants a
Service reachable without route sync configures it as a tunnel forward.

Route sync will extend this class: ``RouteSyncOff`` is the one place that knows it is off.
"""

from __future__ import annotations

import grpc

from agentkit.config import Config
from pipeops.agent.v1 import gateway_pb2, gateway_pb2_grpc


def off_reason(config: Config) -> str:
    """Why route sync is off, in one sentence for Describe, GetStatus and the answers."""
    if config.agent.enable_ingress_sync:
        return ("route sync is off: agent.enable_ingress_sync is true, but this gateway "
                "does not sync routes yet; no routes are published")
    return "route sync is off (agent.enable_ingress_sync is false): no routes are published"


class GatewayServicer(gateway_pb2_grpc.GatewayServicer):  # type: ignore[misc]
    def __init__(self, config: Config) -> None:
        self.config = config
        self.reason = off_reason(config)

    async def GetStatus(self, request: gateway_pb2.GetGatewayStatusRequest,
                        context: grpc.aio.ServicerContext) -> gateway_pb2.GatewayStatus:
        return gateway_pb2.GatewayStatus(
            enabled=False, routing_mode=gateway_pb2.ROUTING_MODE_TUNNEL, route_count=0,
            detail=self.reason)

    async def ListRoutes(self, request: gateway_pb2.ListRoutesRequest,
                         context: grpc.aio.ServicerContext) -> gateway_pb2.ListRoutesResponse:
        return gateway_pb2.ListRoutesResponse()

    async def Resync(self, request: gateway_pb2.ResyncRequest,
                     context: grpc.aio.ServicerContext) -> gateway_pb2.ResyncResponse:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                            f"nothing to resync: {self.reason}")
        raise AssertionError("abort raises")  # pragma: no cover

    async def CheckTarget(self, request: gateway_pb2.CheckTargetRequest,
                          context: grpc.aio.ServicerContext
                          ) -> gateway_pb2.CheckTargetResponse:
        target = f"{request.namespace}/{request.service}:{request.port}"
        return gateway_pb2.CheckTargetResponse(
            allowed=False,
            reason=f"no synced route points at {target}: route sync is off; configure a "
                   "tunnel forward to reach it")
