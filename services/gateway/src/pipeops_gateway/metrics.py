"""The gateway's Prometheus metrics, served on ``metrics.host:metrics.gateway``.

Counters and histograms are moved where things happen (the syncer, the publisher, the
watchers); the route counts and sync times are read from :class:`GatewayState` at scrape
time by a collector (plain numbers only: the scrape runs in prometheus-client's thread).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import REGISTRY, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeops_gateway.state import GatewayState

SYNC_DURATION = Histogram("pipeops_gateway_sync_duration_seconds",
                          "Time of one pass (full: read held + send; hosts: changed hosts)",
                          ["kind"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                                             5, 10, 30))
CONSECUTIVE_ERRORS = Gauge("pipeops_gateway_consecutive_errors",
                           "Passes that failed in a row (0 after a good one)")
WATCH_RESTARTS = Counter("pipeops_gateway_watch_restarts_total",
                         "Watches started again after an error or a missed change", ["kind"])
MASS_DELETES_REFUSED = Counter("pipeops_gateway_mass_deletes_refused_total",
                               "Passes refused by the mass-delete guard")
_REQUESTS = Counter("pipeops_gateway_controlplane_requests_total",
                    "Route calls to the control plane, by call and result", ["call", "result"])


def count_request(call: str, result: str) -> None:
    _REQUESTS.labels(call, result).inc()


class GatewayCollector(Collector):
    def __init__(self, state: GatewayState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        routes = GaugeMetricFamily("pipeops_gateway_routes", "Routes by state", labels=["state"])
        routes.add_metric(["desired"], len(s.desired))
        routes.add_metric(["held"], s.held)
        routes.add_metric(["refused"], s.refused)
        yield routes
        yield GaugeMetricFamily("pipeops_gateway_invalid_objects",
                                "Objects skipped whole as invalid", value=s.invalid)
        yield GaugeMetricFamily("pipeops_gateway_last_sync_timestamp_seconds",
                                "Wall time of the last successful pass (0: none yet)",
                                value=s.last_sync)
        yield GaugeMetricFamily("pipeops_gateway_last_full_sync_timestamp_seconds",
                                "Wall time of the last successful full pass",
                                value=s.last_full_sync)
        yield GaugeMetricFamily("pipeops_gateway_mass_delete_blocked",
                                "1 while the mass-delete guard holds a pass back",
                                value=1 if s.blocked else 0)


def register(state: GatewayState) -> GatewayCollector:
    collector = GatewayCollector(state)
    REGISTRY.register(collector)
    return collector
