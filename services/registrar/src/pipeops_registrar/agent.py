"""The registrar's main coroutine: resume or create the identity, register, heartbeat.

    start -> identity (configured / stored / generated once, persisted at once)
          -> register (retry until it works; bad install token: exit 1)
          -> heartbeat until SIGTERM; "cluster not found" -> register again, same ids
    SIGTERM -> one last heartbeat "disconnected" within 2 s, exit 0
"""

from __future__ import annotations

import asyncio
import logging

from agentkit.config import Config
from agentkit.events import KIND_EVENT
from agentkit.retry import FailureReport, retrying
from agentkit.runner import ServiceContext, ServiceFailed
from agentkit.status import DEGRADED
from pipeops_registrar.client import ControlPlaneClient
from pipeops_registrar.facts import FactsSource
from pipeops_registrar.heartbeat import ClusterGone, Heartbeater, HeartbeatState
from pipeops_registrar.identity import Identity, choose_agent_id, generate_agent_id
from pipeops_registrar.keeper import IdentityKeeper
from pipeops_registrar.kube import Cluster, KubeError, StateObjects, load_api_client
from pipeops_registrar.registration import NO_TOKEN, FatalError, Registration

log = logging.getLogger(__name__)

CLUSTER_STATE_ATTEMPTS = 8  # tries to read the cluster copy before going on without it


def _verify(config: Config) -> bool | str:
    tls = config.pipeops.tls
    if tls.insecure_skip_verify:
        return False
    return tls.ca_file or True


class Agent:
    def __init__(self, ctx: ServiceContext, keeper: IdentityKeeper,
                 heartbeat_state: HeartbeatState) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.keeper = keeper
        self.heartbeat_state = heartbeat_state
        self.version = ctx.status.version

    async def _connect_cluster(self) -> tuple[Cluster | None, str]:
        try:
            api_client = await asyncio.to_thread(load_api_client, self.config.kubernetes)
        except Exception as exc:
            problem = f"no Kubernetes client config: {type(exc).__name__}: {exc}"
            log.warning("%s; heartbeats will carry no cluster counts", problem)
            self.ctx.status.check("kubernetes", problem)
            return None, problem
        # The client imports its API and model modules on first use, which takes long
        # enough to stall the event loop: do it in a thread.
        return await asyncio.to_thread(Cluster, api_client), ""

    async def _stored_identity(self) -> Identity | None:
        """The file's copy, else the cluster's (retried briefly: it may be starting)."""
        stored = await self.keeper.load_file()
        if stored is not None or self.keeper.objects is None:
            return stored
        report = FailureReport(log, "reading the identity from the cluster")
        try:
            async for attempt in retrying(self.config.pipeops.reconnect, report=report,
                                          retry_on=lambda e: isinstance(e, KubeError),
                                          max_attempts=CLUSTER_STATE_ATTEMPTS):
                with attempt:
                    stored = await self.keeper.load_cluster()
        except KubeError as exc:
            log.warning("going on without the identity stored in the cluster: %s", exc)
            return None
        report.recovered()
        if stored is not None:
            log.info("resuming the identity stored in the cluster",
                     extra={"agent_id": stored.agent_id, "cluster_id": stored.cluster_id})
        return stored

    async def _initial_identity(self, facts: FactsSource) -> Identity:
        cfg = self.config
        stored = await self._stored_identity()
        agent_id = choose_agent_id(cfg.agent.id, stored)
        if not agent_id:
            cluster = facts.cluster
            agent_id = generate_agent_id(cfg.agent.cluster_name, {
                "server": cluster.server if cluster else "",
                "version": await facts.k8s_version(),
            })
            log.info("generated a new agent id", extra={"agent_id": agent_id})
        base = stored or Identity()
        same_plane = stored is not None and stored.api_url in ("", cfg.pipeops.api_url)
        if stored is not None and not same_plane:
            log.info("the stored identity belongs to another control plane; registering anew",
                     extra={"stored_api_url": stored.api_url})
        identity = base.evolve(
            agent_id=agent_id,
            cluster_id=base.cluster_id if same_plane else "",
            cluster_token=base.cluster_token if same_plane else "",
            cluster_name=cfg.agent.cluster_name,
            api_url=cfg.pipeops.api_url,
            state="unregistered",
        )
        await self.keeper.update(identity)  # the agent id is stored before registering
        return identity

    async def run(self) -> None:
        cfg = self.config
        if not cfg.pipeops.token.get_secret_value():
            log.error("cannot register: %s", NO_TOKEN)
            self.ctx.status.set(DEGRADED, f"cannot register: {NO_TOKEN}")
            raise ServiceFailed(1, NO_TOKEN)
        client = ControlPlaneClient(cfg.pipeops.api_url, timeout=cfg.pipeops.timeout,
                                    verify=_verify(cfg),
                                    user_agent=f"pipeops-registrar/{self.version}")
        cluster, problem = await self._connect_cluster()
        if cluster is not None:
            self.keeper.objects = StateObjects(cluster, cfg.kubernetes.namespace,
                                               cfg.agent.name)
        facts = FactsSource(cfg, cluster, self.ctx.siblings, problem)
        registration = Registration(cfg, client, facts, self.ctx.status, self.version)
        heartbeater = Heartbeater(cfg, client, facts, self.keeper, self.ctx.status,
                                  self.heartbeat_state, self.version)
        # The state stays "starting" until registration works (ready) or fails (degraded).
        identity: Identity | None = None
        try:
            identity = await self._initial_identity(facts)
            while True:
                identity = await registration.register(identity)
                await self.keeper.update(identity)
                self.ctx.bus.publish(KIND_EVENT, "registered", attributes={
                    "agent_id": identity.agent_id, "cluster_id": identity.cluster_id})
                try:
                    await heartbeater.run(identity)
                except ClusterGone as exc:
                    log.warning("the control plane no longer accepts this cluster (%s); "
                                "registering again with the same ids", exc,
                                extra={"cluster_id": identity.cluster_id})
                    identity = identity.evolve(state="unregistered")
                    await self.keeper.update(identity)
                    self.ctx.status.set(DEGRADED, "registering again with the control plane")
        except FatalError as exc:
            log.error("cannot register: %s", exc)
            self.ctx.status.set(DEGRADED, f"cannot register: {exc}")
            if identity is not None:
                await self.keeper.update(identity.evolve(state="rejected"))
            raise ServiceFailed(1, str(exc)) from exc
        except asyncio.CancelledError:
            if identity is not None and identity.registered:
                await asyncio.shield(heartbeater.final(identity))
            raise
        finally:
            await client.aclose()
