"""The control plane's side of the routes: what it holds, and sending it the difference.

``held`` mirrors what the control plane holds for this cluster: read whole
(``GET /api/v1/gateway/routes``, paged) at every full pass, then kept up to date with
each call that succeeded, so an incremental pass needs no read. A pass computes the plan
(:mod:`.diff`), asks the mass-delete guard (:mod:`.guard`), then sends:

* a full pass with more changes than ``sync_threshold``: the whole desired set as a
  batched sync (``batch_size`` ingresses a batch; the control plane drops what it did not
  name only once the last batch arrived, so a sync cut off deletes nothing);
* otherwise, and for incremental passes: one ``register`` per new or changed route and one
  ``unregister`` per gone path or gone host.

Each call is retried with tenacity (``Retry-After`` honoured) a few times; what still
fails raises, and the caller marks its hosts dirty again, so nothing is lost. A 409 (the
host is another cluster's) and a 422 (malformed) are not retried: they are reported as
``refused`` for an Event on the object, and not sent again until the route changes.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from agentkit.config import ReconnectConfig
from agentkit.controlplane import (
    Conflict,
    ControlPlaneClient,
    Invalid,
    transient,
)
from agentkit.identity import Identity
from agentkit.retry import retrying
from pipeops_gateway.diff import Held, Plan, as_held, held_content, plan
from pipeops_gateway.guard import MassDeleteGuard
from pipeops_gateway.routes import Route, RouteKey

log = logging.getLogger(__name__)

CALL_ATTEMPTS = 4  # per call, then the pass fails and its hosts are marked again


@dataclass
class Refusal:
    route: Route
    status: int
    reason: str


@dataclass
class Outcome:
    registered: int = 0
    unregistered: int = 0
    requests: int = 0
    refused: list[Refusal] = field(default_factory=list)
    blocked: str = ""  # why the mass-delete guard refused the pass
    synced: bool = False  # sent as a batched sync


@dataclass(frozen=True)
class Target:
    """Where and how routes are published now (part of what is held)."""

    routing_mode: str
    public_endpoint: str
    controller: dict[str, Any] = field(default_factory=dict)


class Publisher:
    def __init__(self, http: ControlPlaneClient, policy: ReconnectConfig, *,
                 guard: MassDeleteGuard, batch_size: int = 1000, sync_threshold: int = 20,
                 on_request: Callable[[str, str], None] | None = None) -> None:
        self.http = http
        self.policy = policy
        self.guard = guard
        self.batch_size = batch_size
        self.sync_threshold = sync_threshold
        self.on_request = on_request  # (call, outcome) for metrics
        self.held: dict[RouteKey, Held] = {}
        self.held_for: str = ""  # the cluster id ``held`` belongs to
        self.refused: dict[RouteKey, Held] = {}  # what was refused, as it was

    async def _call(self, name: str, outcome: Outcome, fn: Callable[[], Any]) -> Any:
        async for attempt in retrying(self.policy, retry_on=transient,
                                      max_attempts=CALL_ATTEMPTS):
            with attempt:
                outcome.requests += 1
                try:
                    result = await fn()
                except Exception as exc:
                    self._count(name, getattr(exc, "kind", "error"))
                    raise
                self._count(name, "ok")
                return result
        raise AssertionError("unreachable")  # pragma: no cover - reraise=True

    def _count(self, name: str, result: str) -> None:
        if self.on_request is not None:
            self.on_request(name, result)

    async def read_held(self, identity: Identity, outcome: Outcome) -> None:
        routes = await self._call("list", outcome, lambda: self.http.held_routes(
            identity.cluster_id, identity.cluster_token, page_size=self.batch_size))
        self.held = {(r.hostname, r.path): as_held(r.content()) for r in routes}
        self.held_for = identity.cluster_id

    # --- passes -----------------------------------------------------------------------

    async def full(self, identity: Identity, desired: Mapping[RouteKey, Route],
                   target: Target, *, allow_mass_delete: bool = False) -> Outcome:
        """Read what is held, then send the difference (nothing if there is none)."""
        outcome = Outcome()
        await self.read_held(identity, outcome)
        wanted = plan(desired, self.held, target.routing_mode, target.public_endpoint)
        if not wanted:
            return outcome
        reason = self.guard.refuses(len(self.held), wanted.deletes,
                                    allow_once=allow_mass_delete)
        if reason:
            outcome.blocked = reason
            return outcome
        if len(wanted.register) + wanted.deletes > self.sync_threshold:
            await self._sync(identity, desired, target, outcome)
        else:
            await self._send(identity, wanted, target, outcome)
        return outcome

    async def hosts(self, identity: Identity, hosts: set[str],
                    desired: Mapping[RouteKey, Route], target: Target, *,
                    allow_mass_delete: bool = False) -> Outcome:
        """Bring ``hosts`` (their desired routes given) in line with what is held."""
        outcome = Outcome()
        if self.held_for != identity.cluster_id:
            await self.read_held(identity, outcome)
        held = {k: v for k, v in self.held.items() if k[0] in hosts}
        wanted = plan({k: v for k, v in desired.items() if k[0] in hosts}, held,
                      target.routing_mode, target.public_endpoint)
        wanted.register = [r for r in wanted.register
                           if self.refused.get(r.key) != held_content(
                               r, target.routing_mode, target.public_endpoint)]
        if not wanted:
            return outcome
        reason = self.guard.refuses(len(self.held), wanted.deletes,
                                    allow_once=allow_mass_delete)
        if reason:
            outcome.blocked = reason
            return outcome
        await self._send(identity, wanted, target, outcome)
        return outcome

    # --- sending ----------------------------------------------------------------------

    async def _send(self, identity: Identity, wanted: Plan, target: Target,
                    outcome: Outcome) -> None:
        token, cluster_id = identity.cluster_token, identity.cluster_id
        for hostname in wanted.unregister_hosts:
            await self._call("unregister", outcome, partial(
                self.http.unregister_route, token, cluster_id, hostname))
            for key in [k for k in self.held if k[0] == hostname]:
                del self.held[key]
            outcome.unregistered += 1
        for hostname, path in wanted.unregister_paths:
            await self._call("unregister", outcome, partial(
                self.http.unregister_route, token, cluster_id, hostname, path))
            self.held.pop((hostname, path), None)
            outcome.unregistered += 1
        for route in wanted.register:
            content = held_content(route, target.routing_mode, target.public_endpoint)
            body = {**route.wire(), "cluster_id": cluster_id,
                    "routing_mode": target.routing_mode,
                    "public_endpoint": target.public_endpoint}
            try:
                await self._call("register", outcome,
                                 partial(self.http.register_route, token, body))
            except (Conflict, Invalid) as exc:
                self.refused[route.key] = content
                outcome.refused.append(Refusal(route, exc.status, str(exc)))
                continue
            self.refused.pop(route.key, None)
            self.held[route.key] = content
            outcome.registered += 1

    async def _sync(self, identity: Identity, desired: Mapping[RouteKey, Route],
                    target: Target, outcome: Outcome) -> None:
        """The whole desired set in batches of ``batch_size`` ingresses, each batch's body
        built just before it is sent (10,000 ingresses are never all bodies at once)."""
        by_object: dict[tuple[str, str], list[Route]] = {}
        for route in desired.values():
            by_object.setdefault((route.namespace, route.ingress_name), []).append(route)
        keys = sorted(by_object)
        sync_id = uuid.uuid4().hex
        count = max(1, -(-len(keys) // self.batch_size))
        rejected: set[tuple[str, str]] = set()
        conflicts: set[str] = set()
        for number in range(count):
            batch = [_ingress(key, by_object[key]) for key in
                     keys[number * self.batch_size:(number + 1) * self.batch_size]]
            body = {"cluster_id": identity.cluster_id, "sync_id": sync_id, "batch": number,
                    "last": number == count - 1,
                    "public_endpoint": target.public_endpoint,
                    "routing_mode": target.routing_mode,
                    "ingress_controller": target.controller or None,
                    "ingresses": batch}
            reply = await self._call("sync", outcome, partial(
                self.http.sync_routes, identity.cluster_token, body))
            del body, batch
            rejected |= {(str(r.get("namespace")), str(r.get("ingress_name")))
                         for r in reply.rejected}
            conflicts |= {str(c.get("hostname")) for c in reply.conflicts}
        outcome.synced = True
        self.held = {}
        for route in desired.values():
            content = held_content(route, target.routing_mode, target.public_endpoint)
            if (route.namespace, route.ingress_name) in rejected:
                outcome.refused.append(Refusal(route, 422, "the control plane refused it"))
                self.refused[route.key] = content
            elif route.hostname in conflicts:
                outcome.refused.append(Refusal(route, 409, f"host {route.hostname} belongs "
                                                           "to another cluster"))
                self.refused[route.key] = content
            else:
                self.held[route.key] = content
                outcome.registered += 1
        self.held_for = identity.cluster_id


def _ingress(key: tuple[str, str], routes: list[Route]) -> dict[str, Any]:
    """One ingress of a sync batch: its routes grouped by host."""
    rules: dict[str, dict[str, Any]] = {}
    for route in sorted(routes):
        rule = rules.setdefault(route.hostname, {"host": route.hostname, "tls": False,
                                                 "paths": []})
        rule["tls"] = rule["tls"] or route.tls
        rule["paths"].append({"path": route.path, "path_type": route.path_type,
                              "service_name": route.service_name,
                              "service_port": route.service_port})
    return {"namespace": key[0], "ingress_name": key[1], "annotations": {},
            "rules": list(rules.values())}
