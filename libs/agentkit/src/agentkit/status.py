"""What a service says about itself: state, a one-sentence detail, named checks.

Backs ``Service.Describe`` and the ``grpc.health.v1`` answer (SERVING unless stopping),
and publishes every change on the event bus as a status event.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from agentkit.events import KIND_STATUS, EventBus
from agentkit.logs import masker
from pipeops.agent.v1 import service_pb2

STARTING = service_pb2.SERVICE_STATE_STARTING
READY = service_pb2.SERVICE_STATE_READY
DEGRADED = service_pb2.SERVICE_STATE_DEGRADED
IDLE = service_pb2.SERVICE_STATE_IDLE
STOPPING = service_pb2.SERVICE_STATE_STOPPING


@dataclass
class ServiceStatus:
    name: str
    version: str
    bus: EventBus
    metrics_url: str = ""
    state: int = STARTING
    detail: str = "starting"
    checks: dict[str, str] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    sibling_errors: dict[tuple[str, str], service_pb2.SiblingError] = field(
        default_factory=dict)  # (sibling, method) -> the last error since the last success

    def set(self, state: int, detail: str) -> None:
        detail = masker.mask(detail)  # it is served to anyone who may ask: never a secret
        if (state, detail) == (self.state, self.detail):
            return
        self.state, self.detail = state, detail
        name = service_pb2.ServiceState.Name(state).removeprefix("SERVICE_STATE_").lower()
        level = "warning" if state == DEGRADED else "info"
        self.bus.publish(KIND_STATUS, detail, level=level, attributes={"state": name})

    def check(self, name: str, result: str) -> None:
        """Record a named sub-check: ``"ok"`` or the reason it fails (secrets masked)."""
        self.checks[name] = masker.mask(result)

    def sibling_failed(self, sibling: str, method: str, code: str, detail: str) -> None:
        """A call to a sibling failed with an error (not "down"): shown by Describe."""
        last = Timestamp()
        last.GetCurrentTime()
        previous = self.sibling_errors.get((sibling, method))
        count = previous.count + 1 if previous is not None and previous.code == code else 1
        self.sibling_errors[(sibling, method)] = service_pb2.SiblingError(
            sibling=sibling, method=method, code=code, detail=masker.mask(detail)[:300],
            count=count, last_at=last)

    def sibling_answered(self, sibling: str, method: str) -> None:
        """A call to a sibling succeeded: its earlier error no longer stands."""
        self.sibling_errors.pop((sibling, method), None)

    def to_proto(self) -> service_pb2.ServiceInfo:
        started = Timestamp()
        started.FromNanoseconds(int(self.started_at * 1e9))
        return service_pb2.ServiceInfo(
            name=self.name,
            version=self.version,
            started_at=started,
            state=self.state,  # type: ignore[arg-type]
            detail=self.detail,
            checks=self.checks,
            metrics_url=self.metrics_url,
            sibling_errors=list(self.sibling_errors.values()),
        )
