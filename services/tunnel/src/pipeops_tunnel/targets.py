"""What an OPEN may reach, and the dial: configured forwards and gateway-allowed Services.

An OPEN payload is ``{forward}`` (a configured forward, by name) or ``{service, namespace,
port}`` (a Service that a synced route points at: asked of the gateway with
``Gateway.CheckTarget``, whose answer also carries the Service's clusterIP from the
gateway's watch, never cluster DNS; so the tunnel needs no Kubernetes client, ~10 MiB, to
dial a route). Anything else, a gateway that says no, or a gateway that cannot be asked, is
refused with ``target not allowed`` before anything is dialled; so is a Service whose
address is link-local (the cloud metadata service's 169.254.169.254), whatever names it.
The dial has a timeout (``tunnel.dial_timeout``); a refused or timed-out dial is an
OPEN_FAIL too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from agentkit.config import Config, ForwardConfig, KubernetesConfig
from agentkit.mux import OpenRequest, StreamReset, pipe
from agentkit.peerlog import PeerLog
from pipeops_tunnel import metrics

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines an OPEN from the control plane causes: rate-limited

NOT_ALLOWED = "target not allowed"
IN_CLUSTER_API = "kubernetes.default.svc:443"
NODE_IP = "NODE_IP"
"""A forward's host that stands for ``agent.node_ip`` (the pod's status.hostIP)."""
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    label: str


class Refused(Exception):
    """The OPEN is refused with this reason (sent as OPEN_FAIL)."""

    def __init__(self, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.metric = metric


def split_host_port(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def default_forwards(config: Config) -> list[ForwardConfig]:
    """The forwards of config.example.yaml, used when ``tunnel.forwards`` is empty."""
    return [
        ForwardConfig(name="kubernetes-api", local_addr=IN_CLUSTER_API),
        ForwardConfig(name="kubelet", local_addr=f"{NODE_IP}:10250"),
        ForwardConfig(name="agent-http", local_addr=f"127.0.0.1:{config.agent.port}"),
    ]


def resolve_forwards(config: Config, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Forward name -> host:port to dial. The in-cluster API server address
    (``kubernetes.default.svc:443``) is replaced by ``KUBERNETES_SERVICE_HOST/PORT`` when
    the pod has them, so reaching the API server never depends on cluster DNS."""
    env = os.environ if env is None else env
    out: dict[str, str] = {}
    for fwd in config.tunnel.forwards or default_forwards(config):
        addr = fwd.local_addr
        host, _, port = addr.rpartition(":")
        if host == NODE_IP:
            if not config.agent.node_ip:
                log.info("forward %s skipped: it dials the node (%s) and agent.node_ip is "
                         "not set", fwd.name, addr)
                continue
            node = config.agent.node_ip
            addr = f"[{node}]:{port}" if ":" in node else f"{node}:{port}"
        if fwd.name == "kubernetes-api" and addr == IN_CLUSTER_API \
                and env.get("KUBERNETES_SERVICE_HOST"):
            host = env["KUBERNETES_SERVICE_HOST"]
            host = f"[{host}]" if ":" in host else host
            addr = f"{host}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"
        out[fwd.name] = addr
    return out


def _api_server(cfg: KubernetesConfig) -> str:
    """The kubeconfig's API server URL (blocking; imports ``kubernetes``, only here)."""
    from agentkit.kubeconfig import load_configuration

    return str(load_configuration(cfg).host)


async def out_of_cluster_api(config: Config, forwards: dict[str, str]) -> None:
    """Outside a pod (``kubernetes.in_cluster: false``) the default ``kubernetes-api``
    forward would name a DNS name that does not resolve: use the API server of the
    kubeconfig instead (``make run`` points it at kubesim this way). In place."""
    if config.kubernetes.in_cluster or forwards.get("kubernetes-api") != IN_CLUSTER_API:
        return
    try:
        server = await asyncio.to_thread(_api_server, config.kubernetes)
    except Exception as exc:
        log.warning("kubernetes-api forward: cannot read the kubeconfig (%s); keeping %s",
                    exc, IN_CLUSTER_API)
        return
    url = urlparse(server)
    if url.hostname:
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
        port = url.port or (443 if url.scheme == "https" else 80)
        forwards["kubernetes-api"] = f"{host}:{port}"
        log.info("kubernetes-api forward dials the kubeconfig's API server",
                 extra={"local_addr": forwards["kubernetes-api"]})


@dataclass(frozen=True)
class Checked:
    """The gateway's answer: allowed (and why), and where to dial (or why not)."""

    allowed: bool
    reason: str
    cluster_ip: str = ""
    unresolved: str = ""


CheckTarget = Callable[[str, str, int], Awaitable[Checked]]


class TargetPolicy:
    """Turns an OPEN payload into a :class:`Target`, or raises :class:`Refused`."""

    def __init__(self, forwards: dict[str, str], check: CheckTarget) -> None:
        self.forwards = forwards
        self.check = check

    async def resolve(self, payload: dict[str, Any]) -> Target:
        keys = set(payload)
        if keys == {"forward"}:
            name = payload["forward"]
            if isinstance(name, str) and name in self.forwards:
                host, port = split_host_port(self.forwards[name])
                return Target(host, port, name)
            raise Refused(NOT_ALLOWED, "not_allowed")
        if keys == {"service", "namespace", "port"}:
            return await self._service(payload["service"], payload["namespace"],
                                       payload["port"])
        raise Refused(NOT_ALLOWED, "not_allowed")

    async def _service(self, service: Any, namespace: Any, port: Any) -> Target:
        if not (isinstance(service, str) and _NAME.match(service)
                and isinstance(namespace, str) and _NAME.match(namespace)
                and isinstance(port, int) and not isinstance(port, bool)
                and 0 < port < 65536):
            raise Refused(NOT_ALLOWED, "not_allowed")
        label = f"{namespace}/{service}:{port}"
        checked = await self.check(namespace, service, port)
        if not checked.allowed:
            peer_log.info("open refused", "OPEN refused by the gateway",
                          extra={"target": label, "why": checked.reason[:200]})
            raise Refused(NOT_ALLOWED, "not_allowed")
        if not checked.cluster_ip:
            raise Refused(checked.unresolved or f"service {label} has no address",
                          "resolve_failed")
        try:
            ip = str(ipaddress.ip_address(checked.cluster_ip))
        except ValueError:
            raise Refused(f"service {label}: the gateway answered {checked.cluster_ip[:60]!r}, "
                          "not an IP address", "resolve_failed") from None
        if _link_local(ip):  # the cloud metadata service (169.254.169.254) and its kin:
            # never a Service's address in a real cluster, so a route naming one is refused
            raise Refused(f"service {label} resolves to a link-local address",
                          "not_allowed")
        return Target(ip, port, label)


def _link_local(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_link_local
    except ValueError:
        return False


class Dialer:
    """The ``on_open`` handler of the multiplexer: resolve, dial, accept, splice."""

    def __init__(self, policy: TargetPolicy, dial_timeout: float) -> None:
        self.policy = policy
        self.dial_timeout = dial_timeout

    async def on_open(self, request: OpenRequest) -> None:
        try:
            target = await self.policy.resolve(request.payload)
        except Refused as exc:
            metrics.OPENS_REFUSED.labels(exc.metric).inc()
            request.refuse(exc.reason)
            return
        try:
            async with asyncio.timeout(self.dial_timeout):
                reader, writer = await asyncio.open_connection(target.host, target.port)
        except TimeoutError:
            metrics.OPENS_REFUSED.labels("dial_timeout").inc()
            request.refuse(f"dial {target.label} timed out after {self.dial_timeout:g}s")
            return
        except OSError as exc:
            metrics.OPENS_REFUSED.labels("dial_failed").inc()
            request.refuse(f"dial {target.label} failed: {exc.strerror or exc}")
            return
        try:
            stream = request.accept()
        except StreamReset:
            writer.transport.abort()
            return
        try:
            await pipe(stream, reader, writer)
        except StreamReset as exc:
            log.debug("stream reset", extra={"stream": stream.id, "target": target.label,
                                             "reason": exc.reason})
        except OSError as exc:
            log.debug("local connection failed", extra={"stream": stream.id,
                                                        "target": target.label,
                                                        "error": str(exc)})
