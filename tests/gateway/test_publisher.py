"""The publisher and the route calls of agentkit.controlplane, against the real dev
control plane: full passes (batched sync, or nothing when nothing changed), incremental
passes, the mass-delete guard, a host of another cluster (409, not sent again), a 429
waited out, a stale token."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentkit.config import ReconnectConfig
from agentkit.controlplane import ControlPlaneClient, Unauthorized
from agentkit.identity import Identity
from pipeops_controlplane.testing import ControlPlane
from pipeops_gateway.guard import MassDeleteGuard
from pipeops_gateway.publisher import Publisher, Target
from pipeops_gateway.routes import Route, RouteKey
from tests.tunnel.e2e_helpers import register

TUNNEL = Target("tunnel", "")


def identity(reg: dict[str, Any], token: str | None = None) -> Identity:
    return Identity(agent_id=reg["agent_id"], cluster_id=reg["cluster_id"],
                    cluster_token=token or reg["token"], state="registered")


def routes(*hosts: str, port: int = 80) -> dict[RouteKey, Route]:
    out = [Route(h, "/", "Prefix", "apps", h.split(".")[0], "web", port) for h in hosts]
    return {r.key: r for r in out}


@pytest.fixture
async def http(controlplane: ControlPlane) -> AsyncIterator[ControlPlaneClient]:
    client = ControlPlaneClient(controlplane.url, timeout=5)
    yield client
    await client.aclose()


def publisher(http: ControlPlaneClient, **options: Any) -> Publisher:
    return Publisher(http, ReconnectConfig(backoff_base=0.01, backoff_max=0.05),
                     guard=MassDeleteGuard(), batch_size=2, sync_threshold=3, **options)


def held(cp: ControlPlane, reg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["hostname"]: r for r in cp.routes(reg["cluster_id"])}


def unique(n: int) -> list[str]:
    tag = uuid.uuid4().hex[:6]
    return [f"h{i}-{tag}.example.test" for i in range(n)]


async def test_full_passes_sync_in_batches_then_send_nothing(
        controlplane: ControlPlane, reg: dict[str, Any], http: ControlPlaneClient) -> None:
    hosts = unique(5)
    pub = publisher(http)
    me = identity(reg)
    outcome = await pub.full(me, routes(*hosts), TUNNEL)
    assert outcome.synced and outcome.requests == 1 + 3  # one read, three batches
    assert set(held(controlplane, reg)) == set(hosts)
    again = await pub.full(me, routes(*hosts), TUNNEL)
    assert (again.requests, again.registered, again.synced) == (1, 0, False)
    assert all(r["registrations"] == 1 and r["duplicates"] == 0
               for r in held(controlplane, reg).values())
    # a small difference goes as single calls
    changed = routes(*hosts[:4]) | routes(hosts[0], port=8080)
    small = await pub.full(me, changed, TUNNEL)
    assert (small.registered, small.unregistered, small.synced) == (1, 1, False)
    now = held(controlplane, reg)
    assert set(now) == set(hosts[:4]) and now[hosts[0]]["service_port"] == 8080
    assert now[hosts[0]]["registrations"] == 2


async def test_incremental_passes_and_the_mass_delete_guard(
        controlplane: ControlPlane, reg: dict[str, Any], http: ControlPlaneClient) -> None:
    hosts = unique(8)
    pub = publisher(http)
    me = identity(reg)
    await pub.full(me, routes(*hosts), TUNNEL)
    out = await pub.hosts(me, {hosts[0], hosts[1]}, routes(hosts[0], port=81), TUNNEL)
    assert (out.registered, out.unregistered, out.requests) == (1, 1, 2)
    blocked = await pub.full(me, routes(hosts[2]), TUNNEL)  # would remove 6 of 7
    assert "refusing to remove 6 of 7 routes" in blocked.blocked
    assert len(held(controlplane, reg)) == 7
    allowed = await pub.full(me, routes(hosts[2]), TUNNEL, allow_mass_delete=True)
    assert not allowed.blocked
    assert set(held(controlplane, reg)) == {hosts[2]}


async def test_another_clusters_host_is_refused_once(
        controlplane: ControlPlane, reg: dict[str, Any], http: ControlPlaneClient) -> None:
    other = register(controlplane)
    [taken] = unique(1)
    await publisher(http).full(identity(other), routes(taken), TUNNEL)
    pub = publisher(http)
    me = identity(reg)
    first = await pub.hosts(me, {taken}, routes(taken), TUNNEL)
    assert [(r.route.hostname, r.status) for r in first.refused] == [(taken, 409)]
    second = await pub.hosts(me, {taken}, routes(taken), TUNNEL)
    assert second.requests == 0 and second.refused == []  # not sent again unchanged
    assert held(controlplane, reg) == {}


async def test_throttling_is_waited_out_and_a_stale_token_is_said(
        controlplane: ControlPlane, reg: dict[str, Any], http: ControlPlaneClient) -> None:
    [host] = unique(1)
    pub = publisher(http)
    controlplane.set_fault("429", "routes", times=1, retry_after=0)
    try:
        out = await pub.full(identity(reg), routes(host), TUNNEL)
    finally:
        controlplane.clear_fault()
    assert out.requests == 3 and out.registered == 1  # 429, then the read, then the register
    with pytest.raises(Unauthorized):
        await publisher(http).full(identity(reg, token="pct_stale"), routes(host), TUNNEL)
