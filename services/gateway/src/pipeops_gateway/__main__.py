"""Entry point of ``pipeops-gateway``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.grpcserver import ServicerBinding
from agentkit.runner import ServiceContext, idle, run_service
from pipeops.agent.v1 import gateway_pb2, gateway_pb2_grpc
from pipeops_gateway.servicer import GatewayServicer, off_reason


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    ctx.serve(ServicerBinding(gateway_pb2_grpc.add_GatewayServicer_to_server,
                              GatewayServicer(ctx.config),
                              gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name))
    return lambda: idle(ctx, off_reason(ctx.config))


def main() -> None:
    sys.exit(run_service(
        "gateway",
        "Publishes Ingress and Gateway API routes through the control plane.",
        setup,
        dist="pipeops-gateway",
    ))


if __name__ == "__main__":
    main()
