"""Registration (PROTOCOL.md section 1): who we are in, cluster id and token out.

Transient failures (network, timeouts, 429/5xx, malformed replies) are retried forever with
exponential backoff and full jitter, or as long as the server's ``Retry-After`` says,
while the service reports degraded; each kind of
failure is logged once at warning level (repeats at debug) and the recovery once.
401/403 mean the install token is wrong: one clear error line, then exit 1 so the pod
crash-loops visibly, as the source documents specify. When a stored ``cluster_id`` was
offered, 401/403 may mean that id belongs to another workspace instead: ``StaleIdentity``
lets the caller try once more as a new cluster first.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path
from typing import Any

from agentkit import logs
from agentkit.config import Config
from agentkit.controlplane import ControlPlaneClient, RegisterReply, Unauthorized
from agentkit.identity import Identity, now_rfc3339
from agentkit.retry import FailureReport, retrying
from agentkit.status import DEGRADED, ServiceStatus
from pipeops_registrar import metrics
from pipeops_registrar.facts import FactsSource

log = logging.getLogger(__name__)

FORWARD_PORTS = {"kubernetes_api": "kubernetes-api", "kubelet": "kubelet",
                 "agent_http": "agent-http"}


NO_TOKEN = "no install token: set pipeops.token (env PIPEOPS_TOKEN)"


class FatalError(Exception):
    """The registrar cannot go on (exit 1): the install token is missing or refused."""


class StaleIdentity(FatalError):
    """401/403 while offering a stored ``cluster_id``: it may belong to another workspace.

    The caller registers once more as a new cluster before giving up (exit 1).
    """

    def __init__(self, cluster_id: str, status: int) -> None:
        super().__init__(f"the control plane refused cluster {cluster_id} (HTTP {status})")
        self.cluster_id = cluster_id
        self.status = status


class ServiceTokenUnavailable(Exception):
    """The ServiceAccount token file is missing or empty; it may yet appear (retried)."""


def service_token_path(config: Config) -> Path:
    kube = config.kubernetes
    return Path(kube.control_plane_token_path or kube.service_account_token_path)


def read_service_token(config: Config) -> str:
    """The ServiceAccount token handed to the control plane; re-read at each registration."""
    path = service_token_path(config)
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise ServiceTokenUnavailable(
            f"cannot read the ServiceAccount token at {path} "
            f"(kubernetes.service_account_token_path): {exc.strerror or exc}") from None
    if not token:
        raise ServiceTokenUnavailable(f"the ServiceAccount token file {path} is empty")
    logs.register_secret(token)
    return token


def served_features(cfg: Config) -> dict[str, bool]:
    """What the control plane is told this agent serves: only what a container serves
    now. Route sync (``ingress_sync``) and the gateway's Istio / Gateway API resources
    (``gateway``) are the gateway's, as configured; the http-api always serves its
    WebSocket and SSE streams."""
    return {"tunnel": cfg.tunnel.enabled, "ingress_sync": cfg.agent.enable_ingress_sync,
            "gateway": cfg.gateway.enabled, "websocket": True, "sse": True}


class Registerer:
    """The act of registering: builds the request, retries until the control plane
    answers with a cluster id and token."""

    def __init__(self, config: Config, client: ControlPlaneClient, facts: FactsSource,
                 status: ServiceStatus, version: str) -> None:
        self.config = config
        self.client = client
        self.facts = facts
        self.status = status
        self.version = version

    def _body(self, identity: Identity, k8s_version: str, service_token: str
              ) -> dict[str, Any]:
        cfg = self.config
        remote = {f.name: f.remote_port for f in cfg.tunnel.forwards}
        body: dict[str, Any] = {
            "agent_id": identity.agent_id,
            "name": cfg.agent.cluster_name,
            "hostname": cfg.agent.pod_name or socket.gethostname(),
            "agent_version": self.version,
            "k8s_version": k8s_version,
            "server_ip": self.facts.server_host,
            "labels": dict(cfg.agent.labels),
            "k8s_service_token": service_token,
            "tunnel_port_config": {key: remote.get(name, 0)
                                   for key, name in FORWARD_PORTS.items()},
            "features": served_features(cfg),
        }
        if identity.cluster_id:
            body["cluster_id"] = identity.cluster_id
        return body

    async def register(self, identity: Identity) -> Identity:
        """Register until it works; returns the registered identity. Raises FatalError."""
        install_token = self.config.pipeops.token.get_secret_value()
        if not install_token:
            raise FatalError(NO_TOKEN)
        report = FailureReport(log, "registration")
        reply: RegisterReply | None = None
        policy = self.config.pipeops.reconnect
        async for attempt in retrying(policy, report=report,
                                      retry_on=lambda e: not isinstance(e, FatalError)):
            with attempt:
                try:
                    service_token = await asyncio.to_thread(read_service_token, self.config)
                    k8s_version = await self.facts.k8s_version()
                    reply = await self.client.register(
                        install_token, self._body(identity, k8s_version, service_token))
                except Unauthorized as exc:
                    metrics.REGISTRATION_ATTEMPTS.labels("rejected").inc()
                    if identity.cluster_id:
                        raise StaleIdentity(identity.cluster_id, exc.status) from None
                    raise FatalError(
                        f"the control plane at {self.client.api_url} refused the install "
                        f"token (HTTP {exc.status}): check pipeops.token / PIPEOPS_TOKEN"
                    ) from None
                except FatalError:
                    metrics.REGISTRATION_ATTEMPTS.labels("error").inc()
                    raise
                except Exception as exc:
                    metrics.REGISTRATION_ATTEMPTS.labels("error").inc()
                    self.status.set(DEGRADED, f"not registered yet: {exc}")
                    self.status.check("registration", str(exc))
                    raise
        assert reply is not None
        metrics.REGISTRATION_ATTEMPTS.labels("success").inc()
        report.recovered()
        self.status.check("registration", "ok")
        logs.register_secret(reply.token)
        resumed = reply.cluster_id == identity.cluster_id
        registered = identity.evolve(
            cluster_id=reply.cluster_id, cluster_token=reply.token,
            cluster_name=reply.name or self.config.agent.cluster_name,
            workspace_id=reply.workspace_id, api_url=self.client.api_url,
            tunnel_url=reply.tunnel_url, gateway_url=reply.gateway_url,
            registered_at=now_rfc3339(), state="registered",
        )
        log.info("registered with the control plane",
                 extra={"agent_id": registered.agent_id, "cluster_id": registered.cluster_id,
                        "cluster_name": registered.cluster_name, "resumed": resumed,
                        "workspace_id": registered.workspace_id})
        return registered
