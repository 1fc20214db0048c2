"""The gRPC ``Tunnel`` service: the tunnel's state and its live streams, for the siblings
(the registrar's heartbeat, the http-api) and for ``grpcurl``; ``RunCommand``, the
command runner's second door (the same runner as the tunnel's commands); ``Ping``, a
round trip over the live connection; ``ListSessions``, the sessions it watches."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from pipeops.agent.v1 import tunnel_pb2, tunnel_pb2_grpc
from pipeops_tunnel.commands import CommandRunner
from pipeops_tunnel.state import TunnelState


class TunnelServicer(tunnel_pb2_grpc.TunnelServicer):  # type: ignore[misc]
    def __init__(self, state: TunnelState, commands: CommandRunner,
                 ping: Callable[[], Awaitable[float]],
                 sessions: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self.state = state
        self.commands = commands
        self.ping = ping
        self.sessions = sessions

    async def ListSessions(self, request: tunnel_pb2.ListSessionsRequest,
                           context: grpc.aio.ServicerContext
                           ) -> tunnel_pb2.ListSessionsResponse:
        return tunnel_pb2.ListSessionsResponse(sessions=[
            tunnel_pb2.SessionState(session_id=sid, state=str(s.get("state", "")),
                                    replicas=int(s.get("replicas") or 0),
                                    ready_replicas=int(s.get("readyReplicas") or 0))
            for sid, s in sorted(self.sessions().items())])

    async def Ping(self, request: tunnel_pb2.PingRequest,
                   context: grpc.aio.ServicerContext) -> tunnel_pb2.PingResponse:
        try:
            seconds = await self.ping()
        except ConnectionError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return tunnel_pb2.PingResponse(round_trip_seconds=seconds)

    async def RunCommand(self, request: tunnel_pb2.RunCommandRequest,
                         context: grpc.aio.ServicerContext) -> tunnel_pb2.CommandOutcome:
        """INVALID_ARGUMENT for a payload that is not JSON or an id too long; a payload
        the action does not accept is a ``failed`` outcome, as over the tunnel."""
        try:
            payload = json.loads(request.payload_json) if request.payload_json else {}
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"payload_json is not JSON: {exc}")
        try:
            outcome = await self.commands.run(request.id, request.action, payload)
        except ValueError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return tunnel_pb2.CommandOutcome(
            id=outcome["id"], type=outcome["type"],
            result_json=json.dumps(outcome["result"]) if "result" in outcome else "",
            error=outcome.get("error", ""))

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
