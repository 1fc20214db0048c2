"""The registrar's main coroutine: resume or create the identity, register, heartbeat.

    start -> identity (configured / stored / generated once, persisted at once)
          -> register (retry until it works; bad install token: exit 1)
          -> heartbeat until SIGTERM; "cluster not found" -> register again, same ids
    SIGTERM -> one last heartbeat "disconnected" within 2 s, exit 0
    meanwhile: the identity file is checked every heartbeat interval and written again
          from the registrar's state when it is gone or corrupt (``IdentityKeeper``)

The identity stored in the cluster is never overwritten unread: with an empty volume,
reading it is retried for as long as the API server fails transiently (degraded
meanwhile); only a successful read, or a 404/401/403 that says there is none to be had,
lets the agent go on (a new id is generated only then).

Re-registration after "cluster not found" (or a refused cluster token) is immediate
after a delivered heartbeat; when the control plane keeps refusing heartbeats while it
accepts registration, each further round waits with full jitter (pipeops.reconnect),
so the agent never floods it nor rewrites its state objects in a tight loop: one
tenacity ``retrying`` per run of refusals, a fresh one after a delivered heartbeat.

A stored cluster id the control plane refuses (401/403, e.g. another workspace's) is
named once in a warning and dropped: the agent registers once more as a new cluster
(a new agent id too, unless one is configured), and only if that is refused too does
it exit 1, leaving the stored identity untouched.

A stored identity of another control plane (``pipeops.api_url`` changed) is dropped from
the state file at once, so the siblings stop using the old plane; its copy in the
cluster stays until a registration replaces it (the keeper never overwrites a cluster
copy that names a cluster with one that names none), and a state file that names no
cluster defers to it: a mistyped URL put back resumes the same cluster.
"""

from __future__ import annotations

import asyncio
import logging

from tenacity import RetryCallState

from agentkit.controlplane import ControlPlaneClient
from agentkit.events import KIND_EVENT
from agentkit.identity import Identity
from agentkit.kube import Kube, KubeError
from agentkit.retry import FailureReport, retrying
from agentkit.runner import ServiceContext, ServiceFailed
from agentkit.status import DEGRADED, STARTING
from agentkit.tls import control_plane_context
from pipeops_registrar.access import AccessCheck
from pipeops_registrar.agent_id import choose_agent_id, generate_agent_id
from pipeops_registrar.cluster import Cluster, StateObjects, count_call
from pipeops_registrar.facts import FactsSource
from pipeops_registrar.heartbeat import ClusterGone, Heartbeater, HeartbeatState
from pipeops_registrar.keeper import IdentityKeeper
from pipeops_registrar.registration import NO_TOKEN, FatalError, Registerer, StaleIdentity

log = logging.getLogger(__name__)


class Agent:
    def __init__(self, ctx: ServiceContext, keeper: IdentityKeeper,
                 heartbeat_state: HeartbeatState, access: AccessCheck | None = None) -> None:
        self.ctx = ctx
        self.access = access
        self.config = ctx.config
        self.keeper = keeper
        self.heartbeat_state = heartbeat_state
        self.version = ctx.status.version

    async def _connect_cluster(self) -> tuple[Cluster | None, str]:
        try:
            kube = await Kube.connect(self.config.kubernetes, on_call=count_call)
        except Exception as exc:
            problem = f"no Kubernetes client config: {type(exc).__name__}: {exc}"
            log.warning("%s; heartbeats will carry no cluster counts", problem)
            self.ctx.status.check("kubernetes", problem)
            return None, problem
        return Cluster(kube), ""

    async def _stored_identity(self) -> Identity | None:
        """The file's copy, else the cluster's; the cluster's also when only it names a
        cluster (the file was written for a control plane that never registered it).

        A transient failure to read the cluster's copy is retried without end (the
        service reports degraded): going on without it would generate a new agent id,
        overwrite the stored copy and register a second cluster.
        """
        in_file = await self.keeper.load_file()
        if (in_file is not None and in_file.cluster_id) or self.keeper.objects is None:
            return in_file
        stored: Identity | None = None
        report = FailureReport(log, "reading the identity from the cluster")
        async for attempt in retrying(self.config.pipeops.reconnect, report=report,
                                      retry_on=lambda e: isinstance(e, KubeError)):
            with attempt:
                try:
                    stored = await self.keeper.load_cluster()
                except KubeError as exc:
                    self.ctx.status.set(DEGRADED, "waiting for the Kubernetes API to read "
                                        f"the stored identity before registering: {exc}")
                    self.ctx.status.check("kubernetes", str(exc))
                    raise
        if report.failing:
            self.ctx.status.set(STARTING, "registering with the control plane")
        report.recovered()
        if stored is None or (in_file is not None and not stored.cluster_id):
            return in_file
        log.info("resuming the identity stored in the cluster",
                 extra={"agent_id": stored.agent_id, "cluster_id": stored.cluster_id})
        return stored

    async def _new_agent_id(self, facts: FactsSource) -> str:
        cluster = facts.cluster
        agent_id = generate_agent_id(self.config.agent.cluster_name, {
            "server": cluster.server if cluster else "",
            "version": await facts.k8s_version(),
        })
        log.info("generated a new agent id", extra={"agent_id": agent_id})
        return agent_id

    async def _initial_identity(self, facts: FactsSource) -> Identity:
        cfg = self.config
        stored = await self._stored_identity()
        agent_id = choose_agent_id(cfg.agent.id, stored) or await self._new_agent_id(facts)
        base = stored or Identity()
        same_plane = stored is not None and stored.api_url in ("", cfg.pipeops.api_url)
        if stored is not None and not same_plane:
            log.info("the stored identity belongs to another control plane; registering "
                     "anew (the copy in the cluster stays until registered)",
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

    async def _register(self, registration: Registerer, identity: Identity,
                        facts: FactsSource) -> Identity:
        """Register; a refused stored cluster id is dropped once for a new cluster.

        The new identity is kept only once registered: when the install token is refused
        as well, the stored identity stays as it was for when the token is fixed.
        """
        try:
            return await registration.register(identity)
        except StaleIdentity as exc:
            objects = self.keeper.objects
            where = (f"secret/{objects.secret_name} in namespace {objects.namespace} and "
                     if objects is not None and objects.available else "")
            log.warning("%s: the stored identity (%s%s) may belong to another workspace; "
                        "discarding it and registering as a new cluster", exc, where,
                        self.keeper.file.path,
                        extra={"cluster_id": exc.cluster_id, "agent_id": identity.agent_id})
            fresh = identity.evolve(
                agent_id=self.config.agent.id or await self._new_agent_id(facts),
                cluster_id="", cluster_token="", workspace_id="", registered_at="",
                state="unregistered")
            return await registration.register(fresh)

    async def run(self) -> None:
        cfg = self.config
        if not cfg.pipeops.token.get_secret_value():
            log.error("cannot register: %s", NO_TOKEN)
            self.ctx.status.set(DEGRADED, f"cannot register: {NO_TOKEN}")
            raise ServiceFailed(1, NO_TOKEN)
        client = ControlPlaneClient(cfg.pipeops.api_url, timeout=cfg.pipeops.timeout,
                                    verify=await asyncio.to_thread(
                                        control_plane_context, cfg.pipeops.tls),
                                    user_agent=f"pipeops-registrar/{self.version}")
        cluster, problem = await self._connect_cluster()
        if self.access is not None:
            self.access.cluster, self.access.problem = cluster, problem
        if cluster is not None:
            self.keeper.objects = StateObjects(cluster, cfg.kubernetes.namespace,
                                               cfg.agent.name)
        facts = FactsSource(cfg, cluster, self.ctx.siblings, problem)
        registerer = Registerer(cfg, client, facts, self.ctx.status, self.version)
        heartbeater = Heartbeater(cfg, client, facts, self.keeper, self.ctx.status,
                                  self.heartbeat_state, self.version)
        # The state stays "starting" until registration works (ready) or fails (degraded).
        identity: Identity | None = None
        # refusals are said once per kind in a run of them; a delivered heartbeat ends it
        refusals = FailureReport(
            log, "heartbeats", kind=lambda exc: getattr(exc, "kind", type(exc).__name__),
            message="the control plane no longer accepts this cluster (%s); "
                    "registering again with the same ids")

        def refused(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait = state.next_action.sleep if state.next_action else 0.0
            if exc is not None:
                refusals.failed(exc, cluster_id=identity.cluster_id if identity else "",
                                retry_in=round(wait, 2))

        keeper_task: asyncio.Task[None] | None = None
        try:
            identity = await self._initial_identity(facts)
            # the siblings' file, written again within a heartbeat when it goes missing
            keeper_task = self.ctx.spawn(self.keeper.keep_file(cfg.pipeops.heartbeat_interval),
                                         name="registrar:identity-file")
            while True:  # a fresh backoff after each delivered heartbeat
                async for attempt in retrying(cfg.pipeops.reconnect, before_sleep=refused,
                                              retry_on=lambda e: isinstance(e, ClusterGone)):
                    with attempt:
                        delivered = heartbeater.delivered_total
                        try:
                            identity = await self._register(registerer, identity, facts)
                            # registered from here on: a beat asked for while the identity
                            # is stored waits for the loop's first beat, it is not refused
                            self.heartbeat_state.beating = True
                            try:
                                await self.keeper.update(identity)
                            except BaseException:
                                self.heartbeat_state.stop_beating("the identity could not "
                                                                  "be stored")
                                raise
                            self.ctx.bus.publish(KIND_EVENT, "registered", attributes={
                                "agent_id": identity.agent_id,
                                "cluster_id": identity.cluster_id})
                            await heartbeater.run(identity)
                        except ClusterGone as exc:
                            identity = identity.evolve(state="unregistered")
                            await self.keeper.update(identity)
                            self.ctx.status.set(DEGRADED,
                                                "registering again with the control plane")
                            if heartbeater.delivered_total == delivered:
                                raise  # a refusal in a row: retried after a backoff
                            refusals.reset()
                            refusals.failed(exc, cluster_id=identity.cluster_id, retry_in=0)
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
            if keeper_task is not None:
                keeper_task.cancel()
                await asyncio.gather(keeper_task, return_exceptions=True)
            await client.aclose()
