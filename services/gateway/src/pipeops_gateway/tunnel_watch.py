"""A new tunnel connection asks for a full pass of the routes.

The control plane may restart and forget the routes it held while it keeps the cluster
and its token: the agent is told nothing then (heartbeats go through again, the tunnel
connects again), and incremental passes trust the mirror of what it holds, so the routes
would stay missing until the next periodic full pass (``gateway.resync_interval``).
The gateway therefore follows the tunnel's status (``Tunnel/WatchStatus``: the current
one at once, then each change) and each time the tunnel is connected anew (a new
``connected_since``) asks for a full pass: a read of what the control plane holds, then
the difference (nothing is sent when nothing is missing). The first connection seen
asks for nothing (the gateway's own first pass is a full one). A tunnel that is down or
restarting is waited out with the reconnect policy, quietly: that is normal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import grpc

from agentkit.config import ReconnectConfig
from agentkit.retry import retrying
from pipeops.agent.v1 import tunnel_pb2, tunnel_pb2_grpc

log = logging.getLogger(__name__)


class StatusStreamEnded(Exception):
    """The tunnel's status stream ended or failed before saying anything."""


class TunnelWatch:
    def __init__(self, channel: grpc.aio.Channel, policy: ReconnectConfig,
                 on_reconnect: Callable[[], None]) -> None:
        self.stub = tunnel_pb2_grpc.TunnelStub(channel)
        self.policy = policy
        self.on_reconnect = on_reconnect
        self.seen: tuple[int, int] | None = None  # connected_since of the last connection
        self.reconnects = 0  # new connections seen after the first

    async def run(self) -> None:
        """Follow the tunnel's status until cancelled (a root task of the gateway)."""
        while True:  # a fresh backoff after a stream that said something
            async for attempt in retrying(self.policy):
                with attempt:
                    await self._follow()

    async def _follow(self) -> None:
        """One status stream; returns after progress, raises when there was none."""
        call = self.stub.WatchStatus(tunnel_pb2.WatchTunnelStatusRequest())
        said = False
        try:
            async for status in call:
                said = True
                self._observe(status)
        except grpc.aio.AioRpcError as exc:
            log.debug("the tunnel's status stream ended", extra={"code": exc.code().name})
            if not said:
                raise StatusStreamEnded(exc.code().name) from None
        finally:
            call.cancel()
        if not said:
            raise StatusStreamEnded("no status")

    def _observe(self, status: tunnel_pb2.TunnelStatus) -> None:
        if status.state != tunnel_pb2.TUNNEL_STATE_CONNECTED:
            return
        since = (status.connected_since.seconds, status.connected_since.nanos)
        if since == self.seen:
            return
        first = self.seen is None
        self.seen = since
        if not first:
            self.reconnects += 1
            log.debug("the tunnel connected anew: a full pass of the routes")
            self.on_reconnect()
