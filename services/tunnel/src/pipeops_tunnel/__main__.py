"""Entry point of ``pipeops-tunnel``: the outbound WebSocket tunnel and its commands.

Module map: ``allocation`` (``GET /api/v1/tunnel/status``; the identity file is followed
with ``agentkit.identity``), ``connection`` (one WebSocket + its multiplexer), ``agent``
(the reconnect loop), ``targets`` (what an OPEN may dial), ``kube`` (async Kubernetes
REST), ``sessions`` + ``commands`` (session commands), ``state``, ``servicer``, ``metrics``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.grpcserver import ServicerBinding
from agentkit.runner import ServiceContext, run_service
from pipeops.agent.v1 import tunnel_pb2, tunnel_pb2_grpc
from pipeops_tunnel import metrics
from pipeops_tunnel.agent import TunnelAgent
from pipeops_tunnel.servicer import TunnelServicer
from pipeops_tunnel.state import ForwardState, TunnelState
from pipeops_tunnel.targets import resolve_forwards

SERVICE_NAME = tunnel_pb2.DESCRIPTOR.services_by_name["Tunnel"].full_name

EXTRA_FLAGS = {
    "session_namespace": ("--session-namespace", "kubernetes.session_namespace"),
}


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    forwards = resolve_forwards(ctx.config)
    state = TunnelState(ctx.status, [ForwardState(name, addr) for name, addr in forwards.items()])
    metrics.register(state)
    agent = TunnelAgent(ctx, state, forwards)
    ctx.serve(ServicerBinding(tunnel_pb2_grpc.add_TunnelServicer_to_server,
                              TunnelServicer(state, agent.commands, agent.ping,
                                             lambda: agent.session_status.latest), SERVICE_NAME))
    return agent.run


def main() -> None:
    sys.exit(run_service(
        "tunnel",
        "Keeps the outbound WebSocket tunnel and serves its multiplexed streams and commands.",
        setup,
        dist="pipeops-tunnel",
        metrics_key="tunnel",
        extra_flags=EXTRA_FLAGS,
    ))


if __name__ == "__main__":
    main()
