"""The dev control plane's route table and request matching, as pure logic."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeops_controlplane.gateway.matching import host_of, pick, wildcard_of
from pipeops_controlplane.gateway.table import HostConflict, RouteTable, SyncIncomplete


def content(**changes: Any) -> dict[str, Any]:
    base = {"namespace": "apps", "ingress_name": "web", "path_type": "Prefix",
            "service_name": "web", "service_port": 80, "tls": False,
            "routing_mode": "tunnel", "public_endpoint": ""}
    base.update(changes)
    return base


def test_host_of_and_wildcard_of() -> None:
    assert host_of("Demo.Example.Test:8080") == "demo.example.test"
    assert host_of("demo.example.test.") == "demo.example.test"
    assert host_of("[::1]:80") == "[::1]"
    assert wildcard_of("a.b.c") == "*.b.c"
    assert wildcard_of("localhost") is None


def test_conflicts_and_removal_free_the_host() -> None:
    table = RouteTable(clock=lambda: 1.0)
    table.upsert("c1", "h.test", "/", content())
    try:
        table.upsert("c2", "h.test", "/x", content())
    except HostConflict as exc:
        assert exc.owner == "c1"
    else:
        raise AssertionError("a second cluster took the host")
    assert table.remove("c2", "h.test") == 0  # not the owner: nothing happens
    assert table.remove("c1", "h.test") == 1
    assert table.owner("h.test") is None
    table.upsert("c2", "h.test", "/x", content())
    assert table.owner("h.test") == "c2"


def test_exact_beats_prefix_of_the_same_length_and_longest_wins() -> None:
    table = RouteTable()
    table.upsert("c", "h.test", "/", content(service_name="root"))
    table.upsert("c", "h.test", "/a", content(service_name="prefix"))
    table.upsert("c", "h.test", "/a/", content(service_name="slash"))
    routes = table.host_routes
    found = pick(routes, "h.test", "/a")
    assert found is not None and found.service_name in {"prefix", "slash"}
    table.upsert("c", "h.test", "/a", content(service_name="exact", path_type="Exact"))
    found = pick(routes, "h.test", "/a?q=1")
    assert found is not None and found.service_name == "exact"
    found = pick(routes, "h.test", "/ab")
    assert found is not None and found.service_name == "root"


keys = st.lists(st.tuples(st.sampled_from(["a.test", "b.test", "c.test"]),
                          st.sampled_from(["/", "/x", "/y"])), unique=True, max_size=9)


@given(before=keys, after=keys, split=st.integers(min_value=1, max_value=4))
def test_a_finished_sync_leaves_exactly_what_it_named(
        before: list[tuple[str, str]], after: list[tuple[str, str]], split: int) -> None:
    table = RouteTable()
    for host, path in before:
        table.upsert("c", host, path, content())
    batches = [after[i::split] for i in range(split)]
    for number, batch in enumerate(batches):
        for host, path in batch:
            table.upsert("c", host, path, content(), from_sync=True)
        removed = table.sync_batch("c", "s", number, number == split - 1,
                                   [("c", h, p) for h, p in batch])
        if number < split - 1:
            assert removed is None
            assert {(r.hostname, r.path) for r in table.routes("c")} >= set(before)
    assert {(r.hostname, r.path) for r in table.routes("c")} == set(after)
    for route in table.routes("c"):
        assert route.registrations == 1


def test_a_last_batch_with_a_gap_removes_nothing() -> None:
    table = RouteTable()
    table.upsert("c", "a.test", "/", content())
    table.sync_batch("c", "s", 0, False, [])
    try:
        table.sync_batch("c", "s", 2, True, [])
    except SyncIncomplete:
        pass
    else:
        raise AssertionError("a sync with a missing batch removed routes")
    assert len(table) == 1
