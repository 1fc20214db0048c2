"""gRPC bootstrap: an asyncio server with health, reflection, Events and Service.

Every container serves its own contract service plus ``grpc.health.v1.Health``,
``grpc.reflection.v1alpha.ServerReflection``, ``pipeops.agent.v1.Events`` and
``pipeops.agent.v1.Service``, bound to 127.0.0.1 by default, so
``grpcurl -plaintext localhost:PORT list`` works after a ``kubectl port-forward`` (which
connects to localhost inside the pod) and no other pod can reach them.

The kubelet's gRPC probes dial the pod IP, not localhost. For them a container may open
a second, tiny listener (``probe_host``/``probe_port``) that serves only
``grpc.health.v1.Health``, backed by the same servicer as the main server so both answer
the same status; no reflection, no Events, no contract service there.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agentkit.events import EventBus, EventsServicer
from agentkit.runtime import RuntimeProbe
from agentkit.status import STOPPING, ServiceStatus
from pipeops.agent.v1 import events_pb2, events_pb2_grpc, service_pb2, service_pb2_grpc

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServicerBinding:
    """One contract service to serve: its generated ``add_..._to_server``, its servicer
    and its full name (for reflection and health)."""

    add: Callable[[Any, grpc.aio.Server], None]
    servicer: Any
    name: str


class ServiceServicer(service_pb2_grpc.ServiceServicer):
    def __init__(self, status: ServiceStatus, runtime: RuntimeProbe | None = None) -> None:
        self.status = status
        self.runtime = runtime

    async def Describe(
        self, request: service_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> service_pb2.ServiceInfo:
        info = self.status.to_proto()
        if self.runtime is not None:
            info.runtime.CopyFrom(self.runtime.snapshot())
        return info


def _bind(server: grpc.aio.Server, address: str, what: str) -> int:
    """Listen on ``address``; the bound port, or OSError (grpcio says RuntimeError or 0,
    and writes its own lines to stderr: a port taken is found out first, without it)."""
    problem = _why_not(address)
    if problem:
        raise OSError(f"cannot serve {what} on {address}: {problem}")
    try:
        bound: int = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise OSError(f"cannot serve {what} on {address}: refused by grpcio")
    return bound


def _why_not(address: str) -> str:
    """Why ``address`` cannot be listened on (a plain bind, as grpcio's: SO_REUSEADDR,
    no SO_REUSEPORT), or "" when it can (port 0 always can)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        if int(port) == 0:
            return ""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, int(port)))
    except (OSError, ValueError) as exc:
        return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    return ""


class GrpcServer:
    def __init__(
        self,
        status: ServiceStatus,
        bus: EventBus,
        bindings: list[ServicerBinding],
        host: str,
        port: int,
        *,
        probe_host: str = "",
        probe_port: int = 0,
        runtime: RuntimeProbe | None = None,
    ) -> None:
        """Bind ``host:port``; with a ``probe_host``, also bind the health-only listener
        on ``probe_host:probe_port`` (port 0: a free port). OSError when either cannot."""
        self.status = status
        self.server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        events_pb2_grpc.add_EventsServicer_to_server(EventsServicer(bus), self.server)
        service_pb2_grpc.add_ServiceServicer_to_server(ServiceServicer(status, runtime),
                                                      self.server)
        names = [
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            events_pb2.DESCRIPTOR.services_by_name["Events"].full_name,
            service_pb2.DESCRIPTOR.services_by_name["Service"].full_name,
            reflection.SERVICE_NAME,
        ]
        for binding in bindings:
            binding.add(binding.servicer, self.server)
            names.append(binding.name)
        self.service_names = names
        reflection.enable_server_reflection(names, self.server)
        self.address = f"{host}:{port}"
        self.port = _bind(self.server, self.address, "gRPC")
        self.probe_server: grpc.aio.Server | None = None
        self.probe_address = ""
        self.probe_port = 0
        if probe_host:
            self.probe_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.probe_server)
            self.probe_address = f"{probe_host}:{probe_port}"
            self.probe_port = _bind(self.probe_server, self.probe_address, "the gRPC health probe")

    async def start(self) -> None:
        await self.server.start()
        if self.probe_server is not None:
            await self.probe_server.start()
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self, grace: float) -> None:
        """Answer NOT_SERVING, let in-flight calls finish for ``grace`` seconds, stop."""
        self.status.set(STOPPING, "shutting down")
        await self.health.enter_graceful_shutdown()
        if self.probe_server is not None:
            await self.probe_server.stop(0)
        await self.server.stop(grace)
