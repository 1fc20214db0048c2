"""The gateway's follower of the tunnel's status: a full pass is asked for each time the
tunnel connects anew, never for the first connection seen, a repeat or a disconnect."""

from __future__ import annotations

import grpc

from agentkit.config import ReconnectConfig
from pipeops.agent.v1 import tunnel_pb2
from pipeops_gateway.tunnel_watch import TunnelWatch


def _status(state: int, seconds: int = 0) -> tunnel_pb2.TunnelStatus:
    status = tunnel_pb2.TunnelStatus(state=state)  # type: ignore[arg-type]
    status.connected_since.seconds = seconds
    return status


async def test_a_full_pass_is_asked_for_each_new_connection_only() -> None:
    asked: list[int] = []
    channel = grpc.aio.insecure_channel("127.0.0.1:9")
    try:
        watch = TunnelWatch(channel, ReconnectConfig(), lambda: asked.append(1))
        connected, down = tunnel_pb2.TUNNEL_STATE_CONNECTED, tunnel_pb2.TUNNEL_STATE_DISCONNECTED
        for status in (_status(connected, 10), _status(connected, 10), _status(down),
                       _status(connected, 10)):
            watch._observe(status)
        assert asked == []  # the first connection, then the same one again
        watch._observe(_status(connected, 20))
        watch._observe(_status(connected, 20))
        assert asked == [1] and watch.reconnects == 1
        watch._observe(_status(tunnel_pb2.TUNNEL_STATE_CONNECTING))
        watch._observe(_status(connected, 30))
        assert asked == [1, 1]
    finally:
        await channel.close()
