"""The registrar's Prometheus metrics (names from the source documents).

Served by agentkit's MetricsServer on ``metrics.host:metrics.registrar``; the http-api
collects them. Each one is updated by exactly one module, named beside it.
"""

from __future__ import annotations

import time

from prometheus_client import Counter, Gauge

# registration.py: every attempt, by result (success | rejected | error)
REGISTRATION_ATTEMPTS = Counter(
    "pipeops_registration_attempts_total", "Registration attempts", ["result"])
# heartbeat.py: every heartbeat sent (attempted), and the ones that failed, by kind
HEARTBEATS = Counter("pipeops_heartbeat_total", "Heartbeats sent")
HEARTBEAT_ERRORS = Counter(
    "pipeops_heartbeat_errors_total", "Failed heartbeat attempts", ["reason"])
# heartbeat.py: 1 while registered and the last heartbeat succeeded, else 0
AGENT_STATUS = Gauge(
    "pipeops_agent_status", "Agent status (0=disconnected, 1=connected)")
# heartbeat.py: the counts sent in the last heartbeat
CLUSTER_NODES = Gauge("pipeops_cluster_nodes_total", "Nodes in the cluster")
CLUSTER_PODS = Gauge("pipeops_cluster_pods_total", "Pods in the cluster")
# cluster.py (the agentkit.kube call hook): every Kubernetes API call, by operation and
# HTTP code ("error": no reply)
KUBE_CALLS = Counter(
    "pipeops_kubernetes_api_calls_total", "Kubernetes API calls", ["operation", "code"])

# keeper.py: identity file writes that failed (the old file kept), by reason
# ("No space left on device", "File too large", ...); and 1 while the file does not
# hold the registrar's current identity because of such a failure
IDENTITY_WRITE_FAILURES = Counter(
    "pipeops_identity_file_write_failures_total",
    "Identity file writes that failed (the old file was kept)", ["reason"])
IDENTITY_FILE_STALE = Gauge(
    "pipeops_identity_file_stale",
    "1 while a failed write left the identity file behind the registrar's identity")

_STARTED = time.monotonic()
UPTIME = Gauge("pipeops_agent_uptime_seconds", "Seconds since the registrar started")
UPTIME.set_function(lambda: time.monotonic() - _STARTED)


def uptime() -> float:
    return time.monotonic() - _STARTED
