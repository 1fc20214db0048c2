"""Clients for the siblings' gRPC services, with deadlines on every call.

A sibling that is down is normal (it may be restarting): ``call`` turns an RPC error
into ``None`` with a debug line, so callers degrade ("tunnel: disconnected") instead of
crashing. Channels are created once and closed by ``Siblings.close``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from agentkit.config import Config
from pipeops.agent.v1 import (
    gateway_pb2_grpc,
    registrar_pb2_grpc,
    service_pb2_grpc,
    tunnel_pb2_grpc,
)

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Resp = TypeVar("Resp")


class Siblings:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.deadline = config.grpc.deadline
        self._channels: dict[str, grpc.aio.Channel] = {}

    def channel(self, name: str) -> grpc.aio.Channel:
        """``name`` is one of registrar, tunnel, gateway, http_api."""
        if name not in self._channels:
            port = getattr(self.config.grpc, name)
            self._channels[name] = grpc.aio.insecure_channel(f"{self.config.grpc.host}:{port}")
        return self._channels[name]

    @property
    def registrar(self) -> registrar_pb2_grpc.RegistrarStub:
        return registrar_pb2_grpc.RegistrarStub(self.channel("registrar"))

    @property
    def tunnel(self) -> tunnel_pb2_grpc.TunnelStub:
        return tunnel_pb2_grpc.TunnelStub(self.channel("tunnel"))

    @property
    def gateway(self) -> gateway_pb2_grpc.GatewayStub:
        return gateway_pb2_grpc.GatewayStub(self.channel("gateway"))

    def service(self, name: str) -> service_pb2_grpc.ServiceStub:
        return service_pb2_grpc.ServiceStub(self.channel(name))

    async def call(
        self,
        method: Callable[..., Awaitable[Resp]],
        request: Req,
        *,
        timeout: float | None = None,
    ) -> Resp | None:
        """Call with a deadline; ``None`` if the sibling is unreachable or failed."""
        try:
            return await method(request, timeout=timeout or self.deadline)
        except grpc.aio.AioRpcError as exc:
            log.debug("sibling call failed", extra={"code": exc.code().name,
                                                    "detail": exc.details()})
            return None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
