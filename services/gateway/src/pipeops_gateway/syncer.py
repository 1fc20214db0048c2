"""The gateway's main coroutine: keep the control plane's routes equal to the cluster's.

    start -> connect to the API server, discover the Gateway API, start the watches
          -> wait for the registrar's identity and for every watch's first list
          -> decide the routing mode (may wait up to gateway.public_wait for an address)
          -> full pass: read what the control plane holds, send the difference
          -> then, for ever: changed hosts (debounced, coalesced) -> incremental pass;
             a full pass again after a failure (the control plane came back), a new
             identity, a routing-mode change, a Resync, a queue overflow, a new tunnel
             connection (a control plane that restarted may have forgotten the routes:
             tunnel_watch), and every gateway.resync_interval with a fresh list
             (repairs a watch that hung)

A pass that fails is retried with tenacity (full jitter, ``Retry-After`` honoured);
401/403/404 wait for the registrar's next identity instead. Nothing is lost meanwhile:
changes keep marking hosts, and the pass after a failure is a full one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from agentkit.config import Config
from agentkit.controlplane import ControlPlaneClient, NotFound, Unauthorized
from agentkit.identity import Identity, IdentityFile, IdentityFollower
from agentkit.kube import Kube, Resource
from agentkit.retry import FailureReport, retrying
from agentkit.runner import ServiceContext
from agentkit.status import DEGRADED, READY, STARTING
from agentkit.tls import control_plane_context
from pipeops_gateway import metrics
from pipeops_gateway.coalesce import HostQueue
from pipeops_gateway.guard import MassDeleteGuard
from pipeops_gateway.kube_events import EventSink
from pipeops_gateway.mode import ModeDecider
from pipeops_gateway.publisher import Outcome, Publisher, Target
from pipeops_gateway.routes import Problem
from pipeops_gateway.state import GatewayState
from pipeops_gateway.tunnel_watch import TunnelWatch
from pipeops_gateway.view import ClusterView
from pipeops_gateway.watchers import Watchers, discover

log = logging.getLogger(__name__)


@dataclass
class ResyncRequest:
    allow_mass_delete: bool
    done: asyncio.Future[int]


def _controller_ref(value: str) -> tuple[str, str] | None:
    namespace, slash, name = value.partition("/")
    return (namespace, name) if slash and namespace and name else None


class Syncer:
    def __init__(self, ctx: ServiceContext, state: GatewayState, events: EventSink) -> None:
        self.ctx = ctx
        self.config: Config = ctx.config
        g = self.config.gateway
        self.state = state
        self.view = ClusterView(ingress_classes=g.ingress_classes,
                                controller=_controller_ref(g.ingress_controller))
        self.queue = HostQueue()
        self.decider = ModeDecider(g.routing_mode, g.public_endpoint, wait=g.public_wait)
        self.identity = IdentityFollower(IdentityFile(self.config.agent.state_dir))
        self.events = events
        self.guard = MassDeleteGuard(g.mass_delete_share, g.mass_delete_min, g.allow_mass_delete)
        self.watchers: Watchers | None = None
        self.publisher: Publisher | None = None
        self._wake = asyncio.Event()
        self._resyncs: list[ResyncRequest] = []
        self._need_full = True
        self._full_asked = False  # a full pass asked for (the tunnel connected anew)
        self._target: Target | None = None
        self._next_relist = 0.0

    # --- asked by the servicer --------------------------------------------------------

    async def resync(self, allow_mass_delete: bool, timeout: float) -> int:
        """A full pass now (with a fresh list); the number of routes sent for."""
        request = ResyncRequest(allow_mass_delete, asyncio.get_running_loop().create_future())
        self._resyncs.append(request)
        self._wake.set()
        async with asyncio.timeout(timeout):
            return await request.done

    def service(self, namespace: str, name: str) -> dict[str, Any] | None:
        """The watched Service (``CheckTarget`` resolves the tunnel's targets with it)."""
        return self.view.get("Service", namespace, name)

    def full_pass(self) -> None:
        """Ask for a full pass at the next turn (read what is held, send the difference)."""
        self._full_asked = True
        self._wake.set()

    def _controller_watch(self) -> None:
        """After each watched change: only the controller's Service wakes the loop (the
        hosts a change touches are in the queue already)."""
        if self.view.controller_changed:
            self._wake.set()

    # --- the main coroutine -----------------------------------------------------------

    async def run(self, kube: Kube) -> None:
        g = self.config.gateway
        resources = await self._discover(kube)
        self.watchers = Watchers(kube, self.view, self.queue, resources,
                                 self.config.pipeops.reconnect,
                                 watch_timeout=int(g.watch_timeout),
                                 on_change=self._controller_watch,
                                 spawn=lambda coro, name: self.ctx.spawn(coro, name=name))
        tls = await asyncio.to_thread(control_plane_context, self.config.pipeops.tls)
        http = ControlPlaneClient(self.config.pipeops.api_url, timeout=self.config.pipeops.timeout,
                                  verify=tls)
        self.publisher = Publisher(http, self.config.pipeops.reconnect, guard=self.guard,
                                   batch_size=g.sync_batch_size,
                                   on_request=metrics.count_request)
        follower = self.ctx.spawn(self.identity.run(), name="gateway:identity")
        tunnel = self.ctx.spawn(TunnelWatch(self.ctx.siblings.channel("tunnel"),
                                            self.config.pipeops.reconnect,
                                            self.full_pass).run(),
                                name="gateway:tunnel-status")
        self.watchers.start()
        try:
            await self._main()
        finally:
            await self.watchers.stop()
            for task in (follower, tunnel):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await http.aclose()

    async def _discover(self, kube: Kube) -> dict[str, Resource]:
        report = FailureReport(log, "discovering the Gateway API")
        async for attempt in retrying(self.config.pipeops.reconnect, report=report):
            with attempt:
                return await discover(kube, self.config.gateway.http_routes)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _main(self) -> None:
        assert self.watchers is not None
        status = self.ctx.status
        status.set(STARTING, "listing Ingresses, IngressClasses, Services"
                   + (" and HTTPRoutes" if "HTTPRoute" in self.watchers.kinds else ""))
        await self.watchers.wait_complete()
        self.state.caches_complete = True
        if self.identity.current is None:
            status.set(STARTING, "waiting for the registrar's identity file at "
                       f"{self.identity.file.path}")
        identity = await self.identity.wait_ready()
        self._next_relist = time.monotonic() + self.config.gateway.resync_interval
        while True:
            target = await self._wait_target()
            if target != self._target:
                if self._target is not None:
                    log.info("routing mode changed", extra={
                        "routing_mode": target.routing_mode,
                        "public_endpoint": target.public_endpoint})
                self._target = target
                self._need_full = True
            if self.identity.current is not None and self.identity.current != identity:
                identity = self.identity.current
                self._need_full = True
            await self._pass(identity, target)

    async def _wait_target(self) -> Target:
        """The routing decision; waits (up to gateway.public_wait) for an address."""
        while True:
            decision = self.decider.observe(self.view.controller())
            self.state.decision = decision
            self.view.controller_changed = False
            if decision.mode is not None:
                return Target(decision.mode, decision.public_endpoint, self._controller_info())
            self.ctx.status.set(STARTING, f"waiting for an address: {decision.reason}")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.decider.deadline()):
                    await self._wake.wait()

    def _controller_info(self) -> dict[str, object]:
        svc = self.view.controller()
        if svc is None:
            self.state.controller = None
            return {}
        meta = svc.get("metadata") or {}
        ports = (svc.get("spec") or {}).get("ports") or []
        port = next((p.get("port") for p in ports if p.get("name") == "http"), None) \
            or next((p.get("port") for p in ports if p.get("port") == 80), None) \
            or (ports[0].get("port") if ports else 0)
        info = {"name": str(meta.get("name")), "namespace": str(meta.get("namespace")),
                "port": int(port or 0)}
        self.state.controller = (info["namespace"], info["name"], info["port"])  # type: ignore[assignment]
        return info

    # --- one pass (retried until it goes through) -------------------------------------

    async def _pass(self, identity: Identity, target: Target) -> None:
        hosts: set[str] | None = None
        allow = False
        resyncs: list[ResyncRequest] = []
        if not self._need_full:
            woke = await self._wait_for_work(identity)
            if woke is None:
                return  # something else to look at first (mode, identity)
            hosts, resyncs, allow = woke
        report = FailureReport(log, "publishing routes")
        try:
            async for attempt in retrying(self.config.pipeops.reconnect, report=report,
                                          retry_on=_retry_pass):
                with attempt:
                    if attempt.retry_state.attempt_number > 1:
                        hosts = None  # after a failure: a full pass (a reconnect)
                    await self._publish(identity, target, hosts, allow)
        except (Unauthorized, NotFound) as exc:
            self.state.failed(str(exc))
            metrics.CONSECUTIVE_ERRORS.set(self.state.consecutive_errors)
            self.ctx.status.set(DEGRADED, f"the control plane refused the cluster token "
                                f"({exc}); waiting for the registrar's next identity")
            self._need_full = True
            for request in resyncs:
                if not request.done.done():
                    request.done.set_exception(exc)
            # the registrar re-registers and writes a new identity; a control plane that
            # hands the same credentials back is asked again after a while all the same
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.pipeops.reconnect.backoff_max):
                    await self.identity.wait_changed(identity)
            return
        report.recovered()
        self._need_full = False
        for request in resyncs:
            if not request.done.done():
                request.done.set_result(len(self.state.desired))

    async def _wait_for_work(self, identity: Identity
                             ) -> tuple[set[str] | None, list[ResyncRequest], bool] | None:
        """Hosts to reconcile (None: all), Resync requests, allow-mass-delete; or None
        when the routing mode or the identity may have changed and must be looked at
        first. Waits for marked hosts, a Resync, the controller's Service changing, a new
        identity, or the periodic full pass."""
        while True:
            if self._resyncs:
                return self._take_resyncs()
            if self._full_asked:
                self._full_asked = False
                return None, [], False
            now = time.monotonic()
            if now >= self._next_relist:
                return None, [], False
            if self.view.controller_changed or self.identity.current != identity:
                return None
            self._wake.clear()
            take = asyncio.create_task(self.queue.take(self.config.gateway.debounce))
            waiters = {take, asyncio.create_task(self._wake.wait()),
                       asyncio.create_task(self.identity.wait_changed(identity))}
            try:
                await asyncio.wait(waiters, timeout=self._next_relist - now,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                await asyncio.gather(*waiters, return_exceptions=True)
            if take.done() and not take.cancelled() and take.exception() is None:
                batch = take.result()
                return (None if batch.full else set(batch.hosts)), [], False

    def _take_resyncs(self) -> tuple[None, list[ResyncRequest], bool]:
        requests, self._resyncs = self._resyncs, []
        return None, requests, any(r.allow_mass_delete for r in requests)

    async def _publish(self, identity: Identity, target: Target, hosts: set[str] | None,
                       allow: bool) -> None:
        assert self.publisher is not None and self.watchers is not None
        started = time.monotonic()
        full = hosts is None
        try:
            if full and time.monotonic() >= self._next_relist:
                missed = await self.watchers.relist()
                for kind in missed:
                    metrics.WATCH_RESTARTS.labels(kind).inc()
                    log.warning("the %s watch missed changes: listed again and restarted", kind)
            if full:
                self._next_relist = time.monotonic() + self.config.gateway.resync_interval
                desired, problems = self.view.desired()
                self.state.desired = desired
                outcome = await self.publisher.full(identity, desired, target,
                                                    allow_mass_delete=allow)
            else:
                assert hosts is not None
                desired, problems = self.view.desired(hosts)
                for key in [k for k in self.state.desired if k[0] in hosts]:
                    del self.state.desired[key]
                self.state.desired.update(desired)
                outcome = await self.publisher.hosts(identity, hosts, desired, target,
                                                     allow_mass_delete=allow)
        except Exception as exc:
            self.state.failed(str(exc))
            metrics.CONSECUTIVE_ERRORS.set(self.state.consecutive_errors)
            self.ctx.status.set(DEGRADED, f"publishing routes failed: {exc}")
            raise
        finally:
            metrics.SYNC_DURATION.labels("full" if full else "hosts").observe(
                time.monotonic() - started)
        self._after(outcome, problems, full)

    def _after(self, outcome: Outcome, problems: list[Problem], full: bool) -> None:
        assert self.publisher is not None
        for problem in problems + (self.view.problems() if full else []):
            kind = problem.kind
            self.events.problem(self.view.get(kind, problem.namespace, problem.name), problem)
        for refusal in outcome.refused:
            route = refusal.route
            obj = self.view.get(route.source, route.namespace, route.ingress_name)
            reason = "HostOwnedElsewhere" if refusal.status == 409 else "RouteRefused"
            self.events.problem(obj, Problem(route.source, route.namespace,
                                             route.ingress_name, reason,
                                             f"{route.hostname}{route.path}: {refusal.reason}",
                                             whole=False))
        self.state.held = len(self.publisher.held)
        self.state.refused = len(self.publisher.refused)
        self.state.invalid = sum(1 for p in self.view.problems() if p.whole)
        if outcome.blocked:
            if outcome.blocked != self.state.blocked:
                log.warning("%s", outcome.blocked)
                self._pod_event("MassDeleteRefused", outcome.blocked)
            self.state.blocked = outcome.blocked
            self.state.mass_deletes_refused += 1
            metrics.MASS_DELETES_REFUSED.inc()
            self.ctx.status.set(DEGRADED, outcome.blocked)
            return
        self.state.blocked = ""
        self.state.succeeded(full)
        metrics.CONSECUTIVE_ERRORS.set(0)
        mode = self._target.routing_mode if self._target else "tunnel"
        self.ctx.status.set(READY, f"{len(self.state.desired)} routes published ({mode} "
                            f"mode); {self.state.refused} refused, {self.state.invalid} "
                            "objects invalid")
        if outcome.requests > 1 or outcome.registered or outcome.unregistered:
            log.info("routes published", extra={
                "full": full, "registered": outcome.registered,
                "unregistered": outcome.unregistered, "requests": outcome.requests,
                "synced": outcome.synced, "routes": len(self.state.desired)})

    def _pod_event(self, reason: str, message: str) -> None:
        agent = self.config.agent
        if agent.pod_name and agent.pod_namespace:  # the chart sets both (downward API)
            self.events.say({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": agent.pod_name, "namespace": agent.pod_namespace}}, reason, message)


def _retry_pass(exc: BaseException) -> bool:
    return not isinstance(exc, (Unauthorized, NotFound))
