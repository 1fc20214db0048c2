"""The gRPC ``Tunnel`` service: the tunnel's state and its live streams, for the siblings
(the registrar's heartbeat, the http-api) and for ``grpcurl``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pipeops.agent.v1 import tunnel_pb2, tunnel_pb2_grpc
from pipeops_tunnel.state import TunnelState


class TunnelServicer(tunnel_pb2_grpc.TunnelServicer):  # type: ignore[misc]
    def __init__(self, state: TunnelState) -> None:
        self.state = state

    async def GetStatus(self, request: tunnel_pb2.GetTunnelStatusRequest,
                        context: grpc.aio.ServicerContext) -> tunnel_pb2.TunnelStatus:
        return self.state.to_proto()

    async def WatchStatus(self, request: tunnel_pb2.WatchTunnelStatusRequest,
                          context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[tunnel_pb2.TunnelStatus]:
        """The status at once, then again on every change of state, URL, ports or error."""
        generation = self.state.generation
        yield self.state.to_proto()
        while True:
            generation = await self.state.wait_changed(generation)
            yield self.state.to_proto()

    async def ListStreams(self, request: tunnel_pb2.ListStreamsRequest,
                          context: grpc.aio.ServicerContext) -> tunnel_pb2.ListStreamsResponse:
        mux = self.state.mux
        out = []
        for info in mux.stream_info() if mux is not None else []:
            opened = Timestamp()
            opened.FromNanoseconds(int(info.opened_at * 1e9))
            out.append(tunnel_pb2.StreamInfo(
                stream_id=info.stream_id, target=info.label, state=_state(info.state),
                bytes_in=info.bytes_in, bytes_out=info.bytes_out,
                send_credit=max(0, info.send_credit), buffered_bytes=info.recv_buffered,
                opened_at=opened))
        return tunnel_pb2.ListStreamsResponse(streams=out)


def _state(mux_state: str) -> str:
    """The mux's phase text in the contract's words (tunnel.proto StreamInfo.state)."""
    if mux_state.endswith("(local half-closed)"):
        return "half-closed-local"
    if mux_state.endswith("(remote half-closed)"):
        return "half-closed-remote"
    return mux_state
