"""What a heartbeat reports: cluster counts and version, tunnel and gateway state.

Cluster facts come from the Kubernetes API (``cluster.Cluster``); the tunnel's and the
gateway's state are asked of the siblings over gRPC with a deadline. A sibling that is
down is normal: the tunnel then counts as ``disconnected`` and the gateway's facts as
unknown (private, routed through the tunnel, no routes). A sibling that answers with an
error (UNIMPLEMENTED...) degrades the facts the same way, and ``agentkit.grpcclient``
logs it and shows it in the registrar's ``Service.Describe``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from agentkit.config import Config
from agentkit.grpcclient import Siblings
from agentkit.kube import KubeError
from pipeops.agent.v1 import gateway_pb2, tunnel_pb2
from pipeops_registrar.cluster import Cluster

log = logging.getLogger(__name__)

TUNNEL_STATES = {
    tunnel_pb2.TUNNEL_STATE_CONNECTED: "connected",
    tunnel_pb2.TUNNEL_STATE_CONNECTING: "connecting",
}


@dataclass(frozen=True)
class ClusterFacts:
    node_count: int
    pod_count: int
    k8s_version: str
    error: str = ""  # why the counts are stale; empty when they are fresh


@dataclass(frozen=True)
class GatewayFacts:
    is_private: bool = True
    routing_mode: str = "tunnel"
    gateway_routes: int = 0


class FactsSource:
    def __init__(self, config: Config, cluster: Cluster | None, siblings: Siblings,
                 cluster_problem: str = "") -> None:
        self.config = config
        self.cluster = cluster
        self.siblings = siblings
        self.cluster_problem = cluster_problem  # why there is no cluster client
        self._last = ClusterFacts(0, 0, "")

    @property
    def server_host(self) -> str:
        return self.cluster.server_host if self.cluster else ""

    async def k8s_version(self) -> str:
        if self.cluster is None:
            return ""
        try:
            return await self.cluster.version()
        except KubeError as exc:
            log.debug("no Kubernetes version", extra={"reason": str(exc)})
            return self._last.k8s_version

    async def cluster_facts(self) -> ClusterFacts:
        """Fresh counts, or the last ones with ``error`` set."""
        if self.cluster is None:
            return ClusterFacts(0, 0, "", self.cluster_problem or "no Kubernetes client")
        try:
            version, nodes, pods = await asyncio.gather(
                self.cluster.version(), self.cluster.count_nodes(), self.cluster.count_pods())
        except KubeError as exc:
            last = self._last
            return ClusterFacts(last.node_count, last.pod_count, last.k8s_version, str(exc))
        self._last = ClusterFacts(nodes, pods, version)
        return self._last

    async def tunnel_status(self) -> str:
        if not self.config.tunnel.enabled:
            return "disconnected"
        reply = await self.siblings.call("tunnel", "Tunnel/GetStatus",
                                         tunnel_pb2.GetTunnelStatusRequest())
        if reply is None:
            return "disconnected"
        return TUNNEL_STATES.get(reply.state, "disconnected")

    async def gateway(self) -> GatewayFacts:
        reply = await self.siblings.call("gateway", "Gateway/GetStatus",
                                         gateway_pb2.GetGatewayStatusRequest())
        if reply is None:
            return GatewayFacts()
        return GatewayFacts(
            is_private=reply.cluster_type != gateway_pb2.CLUSTER_TYPE_PUBLIC,
            routing_mode="direct" if reply.routing_mode == gateway_pb2.ROUTING_MODE_DIRECT
            else "tunnel",
            gateway_routes=reply.route_count,
        )
