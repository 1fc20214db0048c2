"""The gRPC ``Registrar`` service: identity and heartbeat state for the siblings, and
``HeartbeatNow`` (the http-api's ``POST /api/agent/heartbeat``) and ``CheckKubernetes``.

Credentials never travel here. The siblings follow the identity through the state file
(``agentkit.identity``: it carries the token and outlives a registrar restart);
``WatchIdentity`` is for operators (grpcurl) and says the same, the token left out.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentkit.identity import Identity
from pipeops.agent.v1 import registrar_pb2, registrar_pb2_grpc
from pipeops_registrar.access import AccessCheck
from pipeops_registrar.heartbeat import HeartbeatState, NotBeating
from pipeops_registrar.keeper import IdentityKeeper

_STATES = {"registered": registrar_pb2.REGISTRATION_STATE_REGISTERED,
           "rejected": registrar_pb2.REGISTRATION_STATE_REJECTED}


def identity_proto(identity: Identity) -> registrar_pb2.Identity:
    """The identity as the contract shows it: never the token."""
    message = registrar_pb2.Identity(
        agent_id=identity.agent_id, cluster_id=identity.cluster_id,
        cluster_name=identity.cluster_name, workspace_id=identity.workspace_id,
        api_url=identity.api_url, tunnel_url=identity.tunnel_url,
        gateway_url=identity.gateway_url, generation=identity.generation,
        state=_STATES.get(identity.state, registrar_pb2.REGISTRATION_STATE_UNREGISTERED))
    if identity.registered_at:
        stamp = Timestamp()
        stamp.FromDatetime(dt.datetime.fromisoformat(
            identity.registered_at.replace("Z", "+00:00")))
        message.registered_at.CopyFrom(stamp)
    return message


class RegistrarServicer(registrar_pb2_grpc.RegistrarServicer):  # type: ignore[misc]
    def __init__(self, keeper: IdentityKeeper, heartbeat: HeartbeatState,
                 access: AccessCheck) -> None:
        self.keeper = keeper
        self.heartbeat = heartbeat
        self.access = access

    async def CheckKubernetes(self, request: registrar_pb2.CheckKubernetesRequest,
                              context: grpc.aio.ServicerContext
                              ) -> registrar_pb2.KubernetesCheck:
        return await self.access.check()

    async def GetKubernetesEndpoint(self, request: registrar_pb2.GetKubernetesEndpointRequest,
                                    context: grpc.aio.ServicerContext
                                    ) -> registrar_pb2.KubernetesEndpoint:
        return await self.access.endpoint()

    async def GetIdentity(self, request: registrar_pb2.GetIdentityRequest,
                          context: grpc.aio.ServicerContext) -> registrar_pb2.Identity:
        return identity_proto(self.keeper.current)

    async def WatchIdentity(self, request: registrar_pb2.WatchIdentityRequest,
                            context: grpc.aio.ServicerContext
                            ) -> AsyncIterator[registrar_pb2.Identity]:
        async for identity in self.keeper.watch():
            yield identity_proto(identity)

    async def GetHeartbeat(self, request: registrar_pb2.GetHeartbeatRequest,
                           context: grpc.aio.ServicerContext) -> registrar_pb2.Heartbeat:
        return self.heartbeat.to_proto()

    async def HeartbeatNow(self, request: registrar_pb2.HeartbeatNowRequest,
                           context: grpc.aio.ServicerContext
                           ) -> registrar_pb2.HeartbeatNowResponse:
        """The loop's next beat, now; FAILED_PRECONDITION while none can be sent."""
        try:
            delivered = await self.heartbeat.beat_now()
        except NotBeating as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return registrar_pb2.HeartbeatNowResponse(
            delivered=delivered, error="" if delivered else self.heartbeat.last_error,
            heartbeat=self.heartbeat.to_proto())
