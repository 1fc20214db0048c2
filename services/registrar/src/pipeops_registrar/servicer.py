"""The gRPC ``Registrar`` service: identity and heartbeat state for the siblings.

Credentials never travel here (the tunnel reads the cluster token from the state file).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from pipeops.agent.v1 import registrar_pb2, registrar_pb2_grpc
from pipeops_registrar.heartbeat import HeartbeatState
from pipeops_registrar.keeper import IdentityKeeper


class RegistrarServicer(registrar_pb2_grpc.RegistrarServicer):  # type: ignore[misc]
    def __init__(self, keeper: IdentityKeeper, heartbeat: HeartbeatState) -> None:
        self.keeper = keeper
        self.heartbeat = heartbeat

    async def GetIdentity(self, request: registrar_pb2.GetIdentityRequest,
                          context: grpc.aio.ServicerContext) -> registrar_pb2.Identity:
        return self.keeper.current.to_proto()

    async def WatchIdentity(self, request: registrar_pb2.WatchIdentityRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[registrar_pb2.Identity]:
        async for identity in self.keeper.watch():
            yield identity.to_proto()

    async def GetHeartbeat(self, request: registrar_pb2.GetHeartbeatRequest,
                           context: grpc.aio.ServicerContext) -> registrar_pb2.Heartbeat:
        return self.heartbeat.to_proto()
