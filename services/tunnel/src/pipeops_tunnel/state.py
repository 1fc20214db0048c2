"""The tunnel's state in one place: what GetStatus/WatchStatus, Describe and metrics read.

The connection loop writes it (state, URL, forwards, errors, the live multiplexer); the
gRPC servicer, the Prometheus collector and ``Service.Describe`` read it. Counters are
cumulative over the process: the live multiplexer's counters plus those of every one that
ended before it, so a reconnect never makes a counter go backwards.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from agentkit.mux import Multiplexer, MuxStats
from agentkit.status import DEGRADED, IDLE, READY, ServiceStatus
from pipeops.agent.v1 import tunnel_pb2

DISCONNECTED = tunnel_pb2.TUNNEL_STATE_DISCONNECTED
CONNECTING = tunnel_pb2.TUNNEL_STATE_CONNECTING
CONNECTED = tunnel_pb2.TUNNEL_STATE_CONNECTED
DISABLED = tunnel_pb2.TUNNEL_STATE_DISABLED

STATE_NAMES: dict[int, str] = {DISCONNECTED: "disconnected", CONNECTING: "connecting",
               CONNECTED: "connected", DISABLED: "disabled"}


@dataclass
class ForwardState:
    name: str
    local_addr: str
    remote_port: int = 0


@dataclass
class Totals:
    """Counters of sessions that have ended."""

    streams_opened: int = 0
    streams_closed: int = 0
    open_failed: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    window_blocked_seconds: float = 0.0

    def add(self, stats: MuxStats) -> None:
        self.streams_opened += stats.streams_opened
        self.streams_closed += stats.streams_closed
        self.open_failed += stats.open_failed
        self.bytes_in += stats.bytes_in
        self.bytes_out += stats.bytes_out
        self.window_blocked_seconds += stats.window_blocked_seconds


@dataclass
class TunnelState:
    status: ServiceStatus
    forwards: list[ForwardState] = field(default_factory=list)
    state: int = DISCONNECTED
    tunnel_url: str = ""
    last_error: str = ""
    reconnects: int = 0
    connected_since: float | None = None
    mux: Multiplexer | None = None
    totals: Totals = field(default_factory=Totals)
    generation: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    # --- writers (the connection loop) ------------------------------------------------

    def _bump(self) -> None:
        self.generation += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def set_state(self, state: int, detail: str, *, error: str | None = None) -> None:
        """Change the tunnel state; ``detail`` goes to Service.Describe."""
        changed = state != self.state or (error is not None and error != self.last_error)
        self.state = state
        if error is not None:
            self.last_error = error
        if state == CONNECTED:
            self.connected_since = self.connected_since or time.time()
        else:
            self.connected_since = None
        service_state = READY if state == CONNECTED else IDLE if state == DISABLED else DEGRADED
        self.status.set(service_state, detail)
        self.status.check("tunnel", "ok" if state == CONNECTED else STATE_NAMES[state])
        if changed:
            self._bump()

    def set_allocation(self, tunnel_url: str, remote_ports: dict[str, int]) -> None:
        for fwd in self.forwards:
            fwd.remote_port = remote_ports.get(fwd.name, fwd.remote_port)
        if tunnel_url != self.tunnel_url:
            self.tunnel_url = tunnel_url
        self._bump()

    def attach(self, mux: Multiplexer) -> None:
        self.mux = mux

    def detach(self) -> None:
        """The live multiplexer ended: fold its counters into the totals."""
        mux = self.mux
        if mux is not None:
            self.mux = None  # first: a reader never counts it twice
            self.totals.add(mux.stats)

    # --- readers ----------------------------------------------------------------------

    async def wait_changed(self, generation: int) -> int:
        """Wait until the generation differs from ``generation``; return the new one."""
        while self.generation == generation:
            await self._changed.wait()
        return self.generation

    def counters(self) -> Totals:
        """Cumulative counters including the live multiplexer."""
        mux = self.mux  # once: detach() may clear it meanwhile
        out = Totals(**vars(self.totals))
        if mux is not None:
            out.add(mux.stats)
        return out

    @property
    def streams_active(self) -> int:
        mux = self.mux
        return mux.stats.streams_active if mux is not None else 0

    @property
    def forwards_active(self) -> int:
        """Forwards the control plane can reach now: connected, with a port allocated."""
        if self.state != CONNECTED:
            return 0
        return sum(1 for fwd in self.forwards if fwd.remote_port)

    def to_proto(self) -> tunnel_pb2.TunnelStatus:
        c = self.counters()
        message = tunnel_pb2.TunnelStatus(
            state=self.state,  # type: ignore[arg-type]
            tunnel_url=self.tunnel_url,
            forwards=[tunnel_pb2.Forward(name=f.name, local_addr=f.local_addr,
                                         remote_port=f.remote_port) for f in self.forwards],
            active_streams=self.streams_active,
            streams_opened=c.streams_opened,
            streams_closed=c.streams_closed,
            bytes_in=c.bytes_in,
            bytes_out=c.bytes_out,
            reconnects=self.reconnects,
            last_error=self.last_error,
        )
        if self.connected_since is not None:
            stamp = Timestamp()
            stamp.FromNanoseconds(int(self.connected_since * 1e9))
            message.connected_since.CopyFrom(stamp)
        return message
