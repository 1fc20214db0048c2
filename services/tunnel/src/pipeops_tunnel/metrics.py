"""The tunnel's Prometheus metrics, served on ``metrics.host:metrics.tunnel``.

Stream and byte counters live in the mux (``MuxStats``, per connection); a collector reads
them from :class:`~pipeops_tunnel.state.TunnelState` at scrape time, summed over every
connection of the process, so nothing is copied on the data path. The scrape runs in
prometheus-client's thread: it reads plain numbers only, never iterates live tables.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import REGISTRY, CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeops_tunnel.state import CONNECTED, TunnelState

# commands.py: every command received, by action and outcome (complete|failed|duplicate)
COMMANDS = Counter("pipeops_tunnel_commands_total", "Commands received over the tunnel",
                   ["action", "result"])
# targets.py: OPENs refused before anything was dialled, by reason
OPENS_REFUSED = Counter("pipeops_tunnel_opens_refused_total",
                        "OPEN requests refused (not allowed, bad payload, dial failure)",
                        ["reason"])


class TunnelCollector(Collector):
    def __init__(self, state: TunnelState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        c = s.counters()
        yield GaugeMetricFamily("pipeops_tunnel_status",
                                "Tunnel connection status (0=disconnected, 1=connected)",
                                value=1 if s.state == CONNECTED else 0)
        yield GaugeMetricFamily("pipeops_tunnel_forwards_active",
                                "Forwards reachable through the connected tunnel",
                                value=s.forwards_active)
        yield GaugeMetricFamily("pipeops_tunnel_streams_active", "Streams open now",
                                value=s.streams_active)
        yield CounterMetricFamily("pipeops_tunnel_streams_opened", "Streams opened",
                                  value=c.streams_opened)
        yield CounterMetricFamily("pipeops_tunnel_streams_closed", "Streams closed",
                                  value=c.streams_closed)
        yield CounterMetricFamily("pipeops_tunnel_bytes_in",
                                  "Bytes from the control plane to local targets",
                                  value=c.bytes_in)
        yield CounterMetricFamily("pipeops_tunnel_bytes_out",
                                  "Bytes from local targets to the control plane",
                                  value=c.bytes_out)
        yield CounterMetricFamily("pipeops_tunnel_window_blocked_seconds",
                                  "Time streams had data to send and no credit (summed)",
                                  value=c.window_blocked_seconds)
        yield CounterMetricFamily("pipeops_tunnel_reconnects",
                                  "Times the tunnel was established again after a loss",
                                  value=s.reconnects)


def register(state: TunnelState) -> TunnelCollector:
    collector = TunnelCollector(state)
    REGISTRY.register(collector)
    return collector
