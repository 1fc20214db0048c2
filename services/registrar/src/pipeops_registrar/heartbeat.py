"""The heartbeat (PROTOCOL.md section 1): the cluster's current state, every interval.

Each beat gathers the facts afresh (counts, version, tunnel and gateway state), sends
them, then sleeps the interval minus a little jitter counted from the beat's start. A
beat that failed is not queued: the next one carries the then-current state. A 404
("cluster not found") or a refused cluster token ends the loop with ``ClusterGone`` so
the caller re-registers with the same ids. On shutdown ``final`` sends one last beat
with status ``disconnected``.

``HeartbeatState.beat_now`` (the gRPC ``HeartbeatNow``) brings the loop's next beat
forward: the loop wakes, beats, and every caller that asked before that beat began gets
its outcome. Callers share one beat, so asking many times at once costs one request.

Each beat's outcome is an event on the registrar's Events stream (``heartbeat delivered``,
or ``heartbeat failed`` at warning), so the dashboard's timeline shows every beat live;
beats are paced by the interval and by one request at a time, so these are too.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from agentkit.config import Config
from agentkit.controlplane import ControlPlaneClient, ControlPlaneError, NotFound, Unauthorized
from agentkit.events import KIND_EVENT
from agentkit.identity import Identity
from agentkit.retry import FailureReport
from agentkit.status import DEGRADED, READY, ServiceStatus
from pipeops.agent.v1 import registrar_pb2
from pipeops_registrar import metrics
from pipeops_registrar.facts import ClusterFacts, FactsSource, GatewayFacts
from pipeops_registrar.keeper import IdentityKeeper

log = logging.getLogger(__name__)

JITTER = 0.1  # each sleep is shortened by up to this fraction of the interval
# The last heartbeat on shutdown gets this long, so that the process exits within 2 s
# of SIGTERM even when the control plane does not answer.
FINAL_TIMEOUT = 1.0


class NotBeating(Exception):
    """No heartbeat loop runs (not registered yet, or registering again)."""


class ClusterGone(Exception):
    """The control plane no longer accepts this cluster's heartbeats: re-register.

    ``kind`` is the failure's kind (``not_found``, ``unauthorized``) for logs.
    """

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _stamp(when: float | None) -> Timestamp | None:
    if when is None:
        return None
    stamp = Timestamp()
    stamp.FromNanoseconds(int(when * 1e9))
    return stamp


@dataclass
class HeartbeatState:
    """What ``GetHeartbeat`` reports: the last beat and the running totals."""

    interval: float
    status: str = "active"
    tunnel_status: str = "disconnected"
    sent_total: int = 0
    errors_total: int = 0
    last_attempt: float | None = None
    last_success: float | None = None
    last_error: str = ""
    facts: ClusterFacts = field(default_factory=lambda: ClusterFacts(0, 0, ""))
    gateway: GatewayFacts = field(default_factory=GatewayFacts)
    beating: bool = False  # the heartbeat loop runs (the cluster is registered)
    _asked: asyncio.Future[bool] | None = field(default=None, repr=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def beat_now(self) -> bool:
        """A beat now; whether it was delivered. NotBeating while no loop runs."""
        if not self.beating:
            raise NotBeating("not registered with the control plane: no heartbeat to send")
        if self._asked is None or self._asked.done():
            self._asked = asyncio.get_running_loop().create_future()
        self._wake.set()
        return await asyncio.shield(self._asked)

    def take_asked(self) -> asyncio.Future[bool] | None:
        """The callers waiting for the beat about to start (the loop calls this)."""
        asked, self._asked = self._asked, None
        self._wake.clear()
        return asked

    async def sleep(self, seconds: float) -> None:
        """The loop's pause between beats; ends early when a beat is asked for."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    def stop_beating(self, reason: str) -> None:
        self.beating = False
        asked = self.take_asked()
        if asked is not None and not asked.done():
            asked.set_exception(NotBeating(reason))

    def to_proto(self) -> registrar_pb2.Heartbeat:
        return registrar_pb2.Heartbeat(
            status=self.status, tunnel_status=self.tunnel_status,
            interval_seconds=max(1, round(self.interval)),
            sent_total=self.sent_total, errors_total=self.errors_total,
            last_attempt=_stamp(self.last_attempt), last_success=_stamp(self.last_success),
            last_error=self.last_error, node_count=self.facts.node_count,
            pod_count=self.facts.pod_count, k8s_version=self.facts.k8s_version,
            is_private=self.gateway.is_private, routing_mode=self.gateway.routing_mode,
            gateway_routes=self.gateway.gateway_routes,
        )


class Heartbeater:
    def __init__(self, config: Config, client: ControlPlaneClient, facts: FactsSource,
                 keeper: IdentityKeeper, status: ServiceStatus, state: HeartbeatState,
                 version: str) -> None:
        self.config = config
        self.client = client
        self.facts = facts
        self.keeper = keeper
        self.status = status
        self.state = state
        self.version = version
        self.report = FailureReport(log, "heartbeat")
        self.delivered_total = 0  # beats the control plane accepted, ever
        interval = config.pipeops.heartbeat_interval
        # A beat older than the interval is stale anyway: never wait much longer for it.
        self.timeout = min(config.pipeops.timeout, max(interval, 2.0))

    async def _gather(self) -> None:
        """Ask the cluster and the siblings afresh; record the answers in the state."""
        facts, tunnel, gateway = await asyncio.gather(
            self.facts.cluster_facts(), self.facts.tunnel_status(), self.facts.gateway())
        self.status.check("kubernetes", facts.error or "ok")
        self.state.facts, self.state.gateway, self.state.tunnel_status = facts, gateway, tunnel

    async def _payload(self, identity: Identity, status: str | None,
                       fresh: bool = True) -> dict[str, Any]:
        if fresh:
            await self._gather()
        facts, gateway, tunnel = self.state.facts, self.state.gateway, self.state.tunnel_status
        self.state.status = status or ("degraded" if facts.error else "active")
        return {
            "cluster_id": identity.cluster_id,
            "agent_id": identity.agent_id,
            "status": self.state.status,
            "tunnel_status": tunnel,
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "metadata": {
                "node_count": facts.node_count,
                "pod_count": facts.pod_count,
                "k8s_version": facts.k8s_version,
                "agent_version": self.version,
                "uptime_seconds": round(metrics.uptime(), 3),
                "is_private": gateway.is_private,
                "routing_mode": gateway.routing_mode,
                "gateway_routes": gateway.gateway_routes,
            },
        }

    async def beat(self, identity: Identity, *, status: str | None = None,
                   timeout: float | None = None, fresh: bool = True) -> bool:
        """Send one heartbeat. True if delivered; raises ClusterGone on 404/401/403.

        ``fresh=False`` reports the facts of the previous beat (the last beat on
        shutdown has no time to ask the cluster and the siblings again).
        """
        payload = await self._payload(identity, status, fresh)
        self.state.last_attempt = time.time()
        self.state.sent_total += 1
        metrics.HEARTBEATS.inc()
        try:
            await self.client.heartbeat(identity.cluster_id, identity.cluster_token, payload,
                                        timeout=timeout or self.timeout)
        except (NotFound, Unauthorized) as exc:
            self._failed(exc, identity)
            raise ClusterGone(str(exc), exc.kind) from None
        except ControlPlaneError as exc:
            self._failed(exc, identity)
            self.report.failed(exc, cluster_id=identity.cluster_id)
            self.status.set(DEGRADED, f"heartbeats failing: {exc}")
            return False
        self.state.last_success = time.time()
        self.state.last_error = ""
        self.delivered_total += 1
        self.report.recovered()
        self.status.check("heartbeat", "ok")
        metrics.AGENT_STATUS.set(1)
        metrics.CLUSTER_NODES.set(payload["metadata"]["node_count"])
        metrics.CLUSTER_PODS.set(payload["metadata"]["pod_count"])
        if self.keeper.file_problem:  # the siblings still read the old identity
            self.status.set(DEGRADED, f"registered as cluster {identity.cluster_id}; "
                            f"heartbeating; but {self.keeper.file_problem} (the siblings "
                            "read the old identity until it is written)")
        else:
            self.status.set(READY, f"registered as cluster {identity.cluster_id}; "
                            "heartbeating")
        self.status.bus.publish(KIND_EVENT, "heartbeat delivered", attributes={
            "cluster_id": identity.cluster_id, "status": payload["status"],
            "nodes": payload["metadata"]["node_count"],
            "pods": payload["metadata"]["pod_count"], "sent_total": self.state.sent_total})
        return True

    def _failed(self, exc: ControlPlaneError, identity: Identity) -> None:
        self.status.bus.publish(KIND_EVENT, "heartbeat failed", level="warning", attributes={
            "cluster_id": identity.cluster_id, "kind": exc.kind, "error": str(exc)[:300],
            "sent_total": self.state.sent_total})
        self.state.errors_total += 1
        self.state.last_error = str(exc)
        self.status.check("heartbeat", str(exc))
        metrics.HEARTBEAT_ERRORS.labels(exc.kind).inc()
        metrics.AGENT_STATUS.set(0)

    async def run(self, identity: Identity) -> None:
        """Beat until cancelled; raises ClusterGone when the cluster must re-register."""
        interval = self.config.pipeops.heartbeat_interval
        self.state.beating = True
        try:
            while True:
                started = time.monotonic()
                asked = self.state.take_asked()
                try:
                    delivered = await self.beat(identity)
                except BaseException as exc:  # refused (ClusterGone), or stopping
                    if asked is not None and not asked.done():
                        asked.set_exception(NotBeating(
                            f"the control plane refused it: {exc}" if isinstance(
                                exc, ClusterGone) else "the heartbeat loop stopped"))
                    raise
                if asked is not None and not asked.done():
                    asked.set_result(delivered)
                if self.keeper.cluster_copy_pending:
                    await self.keeper.save_to_cluster()
                pause = interval * (1 - random.uniform(0, JITTER))
                await self.state.sleep(max(0.0, started + pause - time.monotonic()))
        finally:
            self.state.stop_beating("the heartbeat loop stopped (registering again or "
                                    "shutting down)")

    async def final(self, identity: Identity) -> None:
        """The last heartbeat, ``disconnected``, if it goes out in time; never raises."""
        try:
            async with asyncio.timeout(FINAL_TIMEOUT):
                delivered = await self.beat(identity, status="disconnected",
                                            timeout=FINAL_TIMEOUT, fresh=False)
        except (TimeoutError, ClusterGone) as exc:
            log.info("final heartbeat not delivered", extra={"reason": str(exc) or "timeout"})
            return
        finally:
            metrics.AGENT_STATUS.set(0)
        if delivered:
            log.info("final heartbeat sent", extra={"status": "disconnected"})
