"""The gateway's pure logic: host conflicts, the diff, the mass-delete guard, address
classification, the routing-mode decision, the coalescing queue and HTTPRoutes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeops_gateway.address import is_private, lb_addresses, public_address
from pipeops_gateway.coalesce import HostQueue
from pipeops_gateway.conflicts import resolve
from pipeops_gateway.diff import held_content, plan
from pipeops_gateway.guard import MassDeleteGuard
from pipeops_gateway.httproute import extract as extract_httproute
from pipeops_gateway.httproute import intersect
from pipeops_gateway.mode import ModeDecider
from pipeops_gateway.routes import Route


def r(host: str, path: str = "/", ns: str = "apps", name: str = "web",
      created: str = "2026-01-01T00:00:00Z", port: int = 80) -> Route:
    return Route(host, path, "Prefix", ns, name, "svc", port, created=created)


# --- conflicts ------------------------------------------------------------------------

def test_the_oldest_namespace_owns_a_host_and_losers_are_reported() -> None:
    old = r("h.test", ns="team-a", created="2025-01-01T00:00:00Z")
    new = r("h.test", "/x", ns="team-b", created="2026-01-01T00:00:00Z")
    same_ns_other_path = r("h.test", "/api", ns="team-a", name="api",
                           created="2026-06-01T00:00:00Z")
    won, problems = resolve([new, old, same_ns_other_path])
    assert set(won) == {("h.test", "/"), ("h.test", "/api")}
    assert [(p.namespace, p.name, p.reason) for p in problems] == [("team-b", "web",
                                                                     "HostConflict")]
    assert "team-a/web" in problems[0].message


def test_ties_go_by_namespace_then_name_and_the_order_of_input_never_matters() -> None:
    a = r("h.test", ns="a", name="z")
    b = r("h.test", ns="b", name="a")
    same = r("h.test", ns="a", name="y")
    for order in ([a, b, same], [same, b, a], [b, same, a]):
        won, problems = resolve(order)
        assert won[("h.test", "/")].ingress_name == "y"
        assert {(p.namespace, p.name) for p in problems} == {("b", "a"), ("a", "z")}


# --- diff -----------------------------------------------------------------------------

def test_plan_registers_only_differences_and_unregisters_whole_hosts() -> None:
    desired = {x.key: x for x in (r("a.test"), r("b.test", port=81), r("c.test", "/api"))}
    held = {("a.test", "/"): held_content(r("a.test"), "tunnel", ""),
            ("b.test", "/"): held_content(r("b.test"), "tunnel", ""),
            ("c.test", "/"): held_content(r("c.test"), "tunnel", ""),
            ("d.test", "/"): (), ("d.test", "/x"): ()}
    got = plan(desired, held, "tunnel", "")
    assert [x.key for x in got.register] == [("b.test", "/"), ("c.test", "/api")]
    assert got.unregister_paths == [("c.test", "/")]
    assert got.unregister_hosts == ["d.test"]
    assert got.deletes == 3
    # the routing mode is part of what is held
    assert len(plan(desired, held, "direct", "203.0.113.5").register) == 3
    assert not plan({}, {}, "tunnel", "")


@given(st.sets(st.sampled_from(["a", "b", "c", "d"])), st.sets(st.sampled_from(
    ["a", "b", "c", "d"])))
def test_applying_a_plan_gives_the_desired_set(desired_hosts: set[str],
                                               held_hosts: set[str]) -> None:
    desired = {(h, "/"): r(h) for h in desired_hosts}
    held = {(h, "/"): held_content(r(h), "tunnel", "") for h in held_hosts}
    got = plan(desired, held, "tunnel", "")
    after = dict(held)
    for key in got.unregister_paths:
        after.pop(key)
    for host in got.unregister_hosts:
        for key in [k for k in after if k[0] == host]:
            after.pop(key)
    for route in got.register:
        after[route.key] = held_content(route, "tunnel", "")
    assert set(after) == set(desired)
    assert plan(desired, after, "tunnel", "").register == []


# --- guard ----------------------------------------------------------------------------

def test_mass_delete_guard() -> None:
    guard = MassDeleteGuard()
    assert guard.refuses(held=10, deletes=6) is not None
    assert guard.refuses(held=10, deletes=5) is None
    assert guard.refuses(held=3, deletes=3) is None  # small clusters stay usable
    assert guard.refuses(held=10, deletes=6, allow_once=True) is None
    assert MassDeleteGuard(allow=True).refuses(held=10, deletes=10) is None
    assert MassDeleteGuard(max_share=0.9).refuses(held=10, deletes=9) is None


# --- addresses ------------------------------------------------------------------------

@pytest.mark.parametrize("address,private", [
    ("10.1.2.3", True), ("172.16.0.1", True), ("172.32.0.1", False), ("192.168.1.1", True),
    ("100.64.0.1", True), ("100.128.0.1", False), ("169.254.1.1", True),
    ("127.0.0.1", True), ("fd00::1", True), ("fe80::1", True), ("::ffff:10.0.0.1", True),
    ("2001:db8::1", False), ("203.0.113.9", False), ("8.8.8.8", False),
    ("abc.elb.amazonaws.com", False)])
def test_is_private(address: str, private: bool) -> None:
    assert is_private(address) is private


def test_lb_addresses_and_the_first_public_one() -> None:
    service = {"status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.5"},
                                                        {"hostname": "lb.example.com"}]}}}
    assert lb_addresses(service) == ["10.0.0.5", "lb.example.com"]
    assert public_address(lb_addresses(service)) == "lb.example.com"
    assert public_address(["10.0.0.5"]) is None
    assert lb_addresses({}) == []


# --- mode -----------------------------------------------------------------------------

def lb(*ips: str) -> dict[str, Any]:
    return {"metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx"},
            "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]}}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_mode_waits_for_an_address_then_decides_and_never_flaps() -> None:
    clock = Clock()
    decider = ModeDecider(clock=clock, wait=120, hold=60)
    assert decider.observe(lb()).mode is None  # waiting for the address
    clock.now = 30
    got = decider.observe(lb("203.0.113.7"))
    assert (got.mode, got.public_endpoint, got.is_private) == ("direct", "203.0.113.7", False)
    clock.now = 40
    assert decider.observe(lb()).mode == "direct"  # an address gone for a while: no change
    assert decider.observe(lb("10.0.0.1")).mode == "direct"  # a new answer must hold ...
    clock.now = 99
    assert decider.observe(lb("10.0.0.1")).mode == "direct"
    clock.now = 100.5
    assert decider.observe(lb("10.0.0.1")).mode == "tunnel"  # ... 60 s
    assert decider.current is not None and decider.current.is_private


def test_mode_gives_up_waiting_after_two_minutes_and_honours_config() -> None:
    clock = Clock()
    decider = ModeDecider(clock=clock)
    assert decider.observe(lb()).mode is None
    assert decider.deadline() == 120
    clock.now = 121
    assert decider.observe(lb()).mode == "tunnel"
    assert ModeDecider(clock=clock).observe(None).mode == "tunnel"
    plain = {"metadata": {}, "spec": {"type": "ClusterIP"}}
    assert ModeDecider(clock=clock).observe(plain).mode == "tunnel"
    forced = ModeDecider("direct", "gw.example.com", clock=clock).observe(None)
    assert (forced.mode, forced.public_endpoint) == ("direct", "gw.example.com")
    assert ModeDecider("tunnel", clock=clock).observe(lb("8.8.8.8")).mode == "tunnel"


# --- coalescing queue -----------------------------------------------------------------

async def test_marks_of_one_host_collapse_and_overflow_asks_for_a_full_pass() -> None:
    queue = HostQueue(max_hosts=3)
    queue.mark(["a", "b", "a"])
    queue.mark(["a"])
    batch = await asyncio.wait_for(queue.take(0.01), 5)
    assert (batch.hosts, batch.full) == (["a", "b"], False)
    queue.mark(["a", "b", "c", "d"])
    batch = await asyncio.wait_for(queue.take(0.01), 5)
    assert batch.full and batch.hosts == []
    waiter = asyncio.create_task(queue.take(0))
    await asyncio.sleep(0.05)
    assert not waiter.done()  # nothing marked: it waits
    queue.mark(["z"])
    assert (await asyncio.wait_for(waiter, 5)).hosts == ["z"]


# --- HTTPRoute ------------------------------------------------------------------------

def httproute(hostnames: list[str], *, accepted: bool = True, rules: Any = None,
              parent: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "hr", "namespace": "apps"},
            "spec": {"hostnames": hostnames, "parentRefs": [parent or {"name": "gw"}],
                     "rules": rules if rules is not None else [
                         {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                          "backendRefs": [{"name": "api", "port": 8080}]}]},
            "status": {"parents": [{"parentRef": {"name": "gw"}, "conditions": [
                {"type": "Accepted", "status": "True" if accepted else "False"}]}]}}


def gateway(*listeners: dict[str, Any]) -> dict[tuple[str, str], Any]:
    return {("apps", "gw"): {"spec": {"listeners": list(listeners)}}}


def test_httproute_accepted_routes_with_listener_hostnames() -> None:
    gws = gateway({"name": "web", "protocol": "HTTP", "hostname": "*.example.test"},
                  {"name": "tcp", "protocol": "TCP", "hostname": "tcp.example.test"})
    got = extract_httproute(httproute(["a.example.test", "b.other.test"]), gws)
    assert [(x.hostname, x.path, x.path_type, x.service_name, x.service_port, x.source)
            for x in got.routes] == [("a.example.test", "/api", "Prefix", "api", 8080,
                                      "HTTPRoute")]
    assert extract_httproute(httproute(["a.example.test"], accepted=False), gws).routes == []
    # no route hostnames: the listener's; no visible Gateway: the route's own
    assert [x.hostname for x in extract_httproute(httproute([]), gws).routes] == \
        ["*.example.test"]
    assert [x.hostname for x in extract_httproute(httproute(["x.test"]), {}).routes] == \
        ["x.test"]
    none = extract_httproute(httproute([]), {})
    assert none.routes == [] and none.problems[0].reason == "NoHostname"


def test_httproute_hostname_intersection_rules() -> None:
    assert intersect("*.example.test", ["a.b.example.test"]) == ["a.b.example.test"]
    assert intersect("a.example.test", ["*.example.test"]) == ["a.example.test"]
    assert intersect("a.example.test", ["b.example.test"]) == []
    assert intersect(None, ["a.test"]) == ["a.test"]
    assert intersect("*.example.test", ["example.test"]) == []


def test_httproute_unsupported_matches_and_backends_are_reported() -> None:
    rules = [{"matches": [{"path": {"type": "RegularExpression", "value": "/x.*"}},
                          {"path": {"type": "Exact", "value": "/exact"}}],
              "backendRefs": [{"name": "api", "port": 80}]},
             {"backendRefs": [{"name": "other", "namespace": "elsewhere", "port": 80}]},
             {"backendRefs": [{"name": "bucket", "group": "x.io", "kind": "Bucket"}]}]
    got = extract_httproute(httproute(["a.test"], rules=rules), {})
    assert [(x.path, x.path_type) for x in got.routes] == [("/exact", "Exact")]
    assert sorted(p.reason for p in got.problems) == ["UnsupportedBackend",
                                                      "UnsupportedBackend",
                                                      "UnsupportedMatch"]
