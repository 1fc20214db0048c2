"""What the gateway knows about its own work, read by gRPC, Describe and the metrics.

One object, written by the syncer only (on the event loop) and read by the servicer
(same loop) and the metrics collector (prometheus-client's thread: plain numbers only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pipeops_gateway.mode import Decision
from pipeops_gateway.routes import Route, RouteKey


@dataclass
class GatewayState:
    enabled: bool
    decision: Decision | None = None
    desired: dict[RouteKey, Route] = field(default_factory=dict)  # the winning routes
    held: int = 0  # routes the control plane holds (as last known)
    refused: int = 0  # routes the control plane refused (409, 422)
    invalid: int = 0  # objects skipped whole
    caches_complete: bool = False
    last_sync: float = 0.0  # wall time of the last successful pass
    last_full_sync: float = 0.0
    last_error: str = ""
    consecutive_errors: int = 0
    blocked: str = ""  # the mass-delete guard's reason, while it holds
    watch_restarts: dict[str, int] = field(default_factory=dict)
    mass_deletes_refused: int = 0
    syncs: int = 0
    controller: tuple[str, str, int] | None = None  # namespace, name, port

    def targets(self) -> dict[tuple[str, str, int], Route]:
        """(namespace, service, port) -> a route that points at it."""
        out: dict[tuple[str, str, int], Route] = {}
        for route in self.desired.values():
            out.setdefault((route.namespace, route.service_name, route.service_port), route)
        return out

    def succeeded(self, full: bool) -> None:
        now = time.time()
        self.last_sync = now
        if full:
            self.last_full_sync = now
        self.consecutive_errors = 0
        self.last_error = ""
        self.syncs += 1

    def failed(self, error: str) -> None:
        self.consecutive_errors += 1
        self.last_error = error[:300]
