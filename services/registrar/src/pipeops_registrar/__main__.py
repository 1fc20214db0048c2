"""Entry point of ``pipeops-registrar``: the pod's identity and heartbeat."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.grpcserver import ServicerBinding
from agentkit.identity import IdentityFile
from agentkit.runner import ServiceContext, run_service
from pipeops.agent.v1 import registrar_pb2, registrar_pb2_grpc
from pipeops_registrar.access import AccessCheck
from pipeops_registrar.agent import Agent
from pipeops_registrar.heartbeat import HeartbeatState
from pipeops_registrar.keeper import IdentityKeeper
from pipeops_registrar.servicer import RegistrarServicer

SERVICE_NAME = registrar_pb2.DESCRIPTOR.services_by_name["Registrar"].full_name

EXTRA_FLAGS = {
    "token_path": ("--service-account-token-path", "kubernetes.service_account_token_path"),
    "namespace": ("--namespace", "kubernetes.namespace"),
    "heartbeat_interval": ("--heartbeat-interval", "pipeops.heartbeat_interval"),
}


def main() -> None:
    def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
        keeper = IdentityKeeper(IdentityFile(ctx.config.agent.state_dir), None, ctx.status)
        state = HeartbeatState(interval=ctx.config.pipeops.heartbeat_interval)
        access = AccessCheck(ctx.config)
        ctx.serve(ServicerBinding(registrar_pb2_grpc.add_RegistrarServicer_to_server,
                                  RegistrarServicer(keeper, state, access), SERVICE_NAME))
        return Agent(ctx, keeper, state, access).run

    code = run_service(
        "registrar",
        "Registers the cluster with the control plane, keeps its identity, heartbeats.",
        setup,
        dist="pipeops-registrar",
        metrics_key="registrar",
        extra_flags=EXTRA_FLAGS,
    )
    sys.exit(code)


if __name__ == "__main__":
    main()
