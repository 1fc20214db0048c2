"""Entry point of ``pipeops-gateway``: Ingress and Gateway API routes published through the
control plane (``agent.enable_ingress_sync``), and the TCP/UDP exposure objects of the
``gateway:`` settings (``gateway.enabled``).

Module map: ``syncer`` (route sync's main coroutine), ``watchers`` (list+watch into
``view``, the cluster's picture), ``ingress`` and ``httproute`` (objects -> routes),
``conflicts`` (one owner per host), ``diff`` + ``publisher`` (what the control plane holds,
and sending the difference), ``guard`` (mass deletes), ``coalesce`` (the per-host queue),
``mode`` + ``address`` (direct or tunnel), ``exposure`` + ``exposer`` (TCP/UDP objects),
``kube_events`` (Events on objects), ``state``, ``servicer`` (gRPC Gateway), ``metrics``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.grpcserver import ServicerBinding
from agentkit.kube import Kube
from agentkit.retry import FailureReport, retrying
from agentkit.runner import ServiceContext, idle, run_service
from agentkit.status import STARTING
from agentkit.tls import check_ca_file
from pipeops.agent.v1 import gateway_pb2, gateway_pb2_grpc
from pipeops_gateway import metrics
from pipeops_gateway.exposer import Exposer
from pipeops_gateway.kube_events import EventSink
from pipeops_gateway.servicer import GatewayServicer, off_reason
from pipeops_gateway.state import GatewayState
from pipeops_gateway.syncer import Syncer

log = logging.getLogger("pipeops_gateway")
SERVICE_NAME = gateway_pb2.DESCRIPTOR.services_by_name["Gateway"].full_name

# the seed's flags (each also a JSON env var, agentkit.config.loader.ENV_VARS)
EXTRA_FLAGS = {
    "gw_enabled": ("--gateway-enabled", "gateway.enabled"),
    "gw_env_mode": ("--gateway-env-mode", "gateway.environment.mode"),
    "gw_env_vm_ip": ("--gateway-env-vm-ip", "gateway.environment.vm_ip"),
    "gw_istio_enabled": ("--gateway-istio-enabled", "gateway.istio.enabled"),
    "gw_istio_service_create": ("--gateway-istio-service-create",
                                "gateway.istio.service.create"),
    "gw_istio_service_namespace": ("--gateway-istio-service-namespace",
                                   "gateway.istio.service.namespace"),
    "gw_istio_servers": ("--gateway-istio-servers-json", "gateway.istio.servers"),
    "gw_istio_tcp": ("--gateway-istio-tcp-routes-json", "gateway.istio.tcp_routes"),
    "gw_istio_tls": ("--gateway-istio-tls-routes-json", "gateway.istio.tls_routes"),
    "gw_gwapi_enabled": ("--gateway-gwapi-enabled", "gateway.gateway_api.enabled"),
    "gw_gwapi_class": ("--gateway-gwapi-gateway-class", "gateway.gateway_api.gateway_class"),
    "gw_gwapi_listeners": ("--gateway-gwapi-listeners-json", "gateway.gateway_api.listeners"),
    "gw_gwapi_tcp": ("--gateway-gwapi-tcp-routes-json", "gateway.gateway_api.tcp_routes"),
    "gw_gwapi_udp": ("--gateway-gwapi-udp-routes-json", "gateway.gateway_api.udp_routes"),
}


async def connect(ctx: ServiceContext) -> Kube:
    report = FailureReport(log, "connecting to the Kubernetes API")
    async for attempt in retrying(ctx.config.pipeops.reconnect, report=report):
        with attempt:
            return await Kube.connect(ctx.config.kubernetes)
    raise AssertionError("unreachable")  # pragma: no cover - retries for ever


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    config = ctx.config
    syncing = config.agent.enable_ingress_sync
    state = GatewayState(enabled=True) if syncing else None
    events = EventSink()
    syncer = Syncer(ctx, state, events) if state is not None else None
    if state is not None:
        metrics.register(state)
    ctx.serve(ServicerBinding(gateway_pb2_grpc.add_GatewayServicer_to_server,
                              GatewayServicer(config, state, syncer, ctx.status,
                                              services=syncer.service if syncer else None),
                              SERVICE_NAME))
    exposer = Exposer(config, ctx.status, events)

    async def main() -> None:
        # refused at start as the other containers refuse it, even where it is unused yet
        await asyncio.to_thread(check_ca_file, config.pipeops.tls)
        if not syncing and not config.gateway.enabled:
            # nothing to do but, once, delete exposure objects earlier settings made
            if config.kubernetes.in_cluster or config.kubernetes.kubeconfig:
                try:
                    async with asyncio.timeout(30):
                        kube = await Kube.connect(config.kubernetes)
                        try:
                            await exposer.cleanup_once(kube)
                        finally:
                            await kube.aclose()
                except Exception as exc:  # best effort: no cluster, no rights, no leftovers
                    log.debug("no cleanup of exposure objects: %r", exc)
            await idle(ctx, off_reason(config))
            return
        ctx.status.set(STARTING, "connecting to the Kubernetes API")
        kube = await connect(ctx)
        try:
            ctx.spawn(events.run(kube), name="gateway:events")
            if config.gateway.enabled:
                ctx.spawn(exposer.run(kube), name="gateway:exposure")
            else:
                await exposer.cleanup_once(kube)
            if syncer is not None:
                await syncer.run(kube)
            else:
                await idle(ctx, off_reason(config) + "; TCP/UDP exposure objects are kept "
                           "as gateway.* describes")
        finally:
            await kube.aclose()

    return main


def main() -> None:
    sys.exit(run_service(
        "gateway",
        "Publishes Ingress and Gateway API routes through the control plane.",
        setup,
        dist="pipeops-gateway",
        metrics_key="gateway",
        extra_flags=EXTRA_FLAGS,
    ))


if __name__ == "__main__":
    main()
