"""Ingress -> routes (pipeops_gateway.ingress), faithful to the Ingress spec."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from pipeops_gateway.ingress import class_of, covers, default_class, extract, selected
from pipeops_gateway.routes import Route


def backend(name: str = "web", port: int | str = 80) -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"service": {"name": name, "port": {key: port}}}


def ingress(*rules: dict[str, Any], name: str = "ing", namespace: str = "apps",
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace,
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"rules": list(rules), **spec}}


def rule(host: str | None, *paths: tuple[str, str, dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"http": {"paths": [{"path": p, "pathType": t, "backend": b}
                                              for p, t, b in paths]}}
    if host is not None:
        out["host"] = host
    return out


SERVICES = {("apps", "web"): {"spec": {"ports": [{"name": "http", "port": 8080},
                                                  {"name": "admin", "port": 9090}]}}}


def keys(routes: list[Route]) -> list[tuple[str, str, str, str, int]]:
    return [(r.hostname, r.path, r.path_type, r.service_name, r.service_port) for r in routes]


def test_paths_types_and_named_ports() -> None:
    got = extract(ingress(rule("a.example.test",
                               ("/", "Prefix", backend()),
                               ("/exact", "Exact", backend(port="admin")),
                               ("", "ImplementationSpecific", backend("other", 81)))),
                  SERVICES)
    assert got.problems == []
    assert keys(got.routes) == [("a.example.test", "/", "Prefix", "web", 80),
                                ("a.example.test", "/exact", "Exact", "web", 9090)]
    # the ImplementationSpecific path with no path means "/", already taken by the first
    assert all(r.namespace == "apps" and r.ingress_name == "ing" for r in got.routes)


def test_a_named_port_that_cannot_be_resolved_skips_only_that_path() -> None:
    got = extract(ingress(rule("a.example.test", ("/", "Prefix", backend()),
                               ("/x", "Prefix", backend(port="nope")),
                               ("/y", "Prefix", backend("missing", "http")))), SERVICES)
    assert keys(got.routes) == [("a.example.test", "/", "Prefix", "web", 80)]
    assert sorted(p.reason for p in got.problems) == ["PortNotFound", "ServiceNotFound"]
    assert not any(p.whole for p in got.problems)


def test_default_backend_covers_hosts_without_a_root_path() -> None:
    got = extract(ingress(rule("a.example.test", ("/api", "Prefix", backend("api", 81))),
                          rule("b.example.test", ("/", "Exact", backend("b", 82))),
                          rule("c.example.test", ("/", "Prefix", backend("c", 83))),
                          defaultBackend=backend("fallback", 90)), SERVICES)
    assert keys(got.routes) == [
        ("a.example.test", "/", "Prefix", "fallback", 90),
        ("a.example.test", "/api", "Prefix", "api", 81),
        ("b.example.test", "/", "Exact", "b", 82),  # Exact "/" is not a catch-all ...
        ("c.example.test", "/", "Prefix", "c", 83),
    ]
    # ... but its key is taken, so the default backend cannot be added for b: one route
    alone = extract(ingress(defaultBackend=backend("fallback", 90)), SERVICES)
    assert alone.routes == [] and [p.reason for p in alone.problems] == ["NoHostname"]


def test_wildcards_and_tls_hosts_keep_only_the_secret_name() -> None:
    got = extract(ingress(rule("*.example.test", ("/", "Prefix", backend())),
                          rule("plain.other.test", ("/", "Prefix", backend())),
                          tls=[{"hosts": ["*.example.test"], "secretName": "wild-tls"}]),
                  SERVICES)
    by_host = {r.hostname: r for r in got.routes}
    assert by_host["*.example.test"].tls and by_host["*.example.test"].tls_secret == "wild-tls"
    assert not by_host["plain.other.test"].tls
    assert covers("*.example.test", "a.example.test")
    assert not covers("*.example.test", "a.b.example.test")
    assert not covers("*.example.test", "example.test")


def test_invalid_objects_are_skipped_whole_with_one_problem() -> None:
    cases = {
        "InvalidHost": ingress(rule("Bad_Host", ("/", "Prefix", backend()))),
        "InvalidPath": ingress(rule("a.test", ("/", "Wrong", backend()))),
        "InvalidBackend": ingress(rule("a.test", ("/", "Prefix", {"service": {"name": "x"}}))),
    }
    for reason, obj in cases.items():
        got = extract(obj, SERVICES)
        assert got.routes == [], reason
        assert [(p.reason, p.whole) for p in got.problems] == [(reason, True)], reason
    no_path_type = ingress(rule("a.test"))
    no_path_type["spec"]["rules"][0]["http"]["paths"] = [{"path": "/", "backend": backend()}]
    assert extract(no_path_type, SERVICES).problems[0].reason == "InvalidPath"
    relative = ingress(rule("a.test", ("api", "Prefix", backend())))
    assert extract(relative, SERVICES).problems[0].reason == "InvalidPath"
    nameless = ingress(rule("a.test", ("/", "Prefix", backend())))
    del nameless["metadata"]["name"]
    assert extract(nameless, SERVICES).problems[0].reason == "InvalidObject"
    weird = ingress()
    weird["spec"]["rules"] = [{"host": "a.test", "http": {"paths": "not a list"}}]
    got = extract(weird, SERVICES)
    assert got.routes == [] and got.problems[0].whole


def test_resource_backends_and_hostless_rules_are_reported_not_published() -> None:
    got = extract(ingress(rule(None, ("/", "Prefix", backend())),
                          rule("a.test", ("/", "Prefix", {"resource": {"kind": "Bucket",
                                                                       "name": "b"}}),
                               ("/ok", "Prefix", backend()))), SERVICES)
    assert keys(got.routes) == [("a.test", "/ok", "Prefix", "web", 80)]
    assert sorted(p.reason for p in got.problems) == ["NoHostname", "UnsupportedBackend"]


def test_classes_default_and_filter() -> None:
    classes = [{"metadata": {"name": "nginx", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}},
               {"metadata": {"name": "traefik"}}]
    assert default_class(classes) == "nginx"
    both = [*classes, {"metadata": {"name": "x", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}}]
    assert default_class(both) is None  # ambiguous, as the admission controller says
    named = ingress(ingressClassName="traefik")
    annotated = ingress()
    annotated["metadata"]["annotations"] = {"kubernetes.io/ingress.class": "haproxy"}
    assert class_of(named, "nginx") == "traefik"
    assert class_of(annotated, "nginx") == "haproxy"
    assert class_of(ingress(), "nginx") == "nginx"
    assert class_of(ingress(), None) is None
    assert selected(None, []) and selected("x", [])
    assert selected("nginx", ["nginx"]) and not selected(None, ["nginx"])


hosts = st.from_regex(r"(\*\.)?[a-z][a-z0-9]{0,8}(\.[a-z][a-z0-9]{0,8}){0,3}", fullmatch=True)
paths = st.from_regex(r"/[a-z0-9/]{0,12}", fullmatch=True)


@given(st.lists(st.tuples(hosts, paths, st.sampled_from(["Exact", "Prefix"]),
                          st.integers(min_value=1, max_value=65535)), max_size=12))
def test_every_valid_path_becomes_exactly_one_route(
        entries: list[tuple[str, str, str, int]]) -> None:
    obj = ingress(*[rule(h, (p, t, backend("svc", port))) for h, p, t, port in entries])
    got = extract(obj, {})
    assert got.problems == []
    assert {r.key for r in got.routes} == {(h, p) for h, p, _, _ in entries}
    assert len(got.routes) == len({(h, p) for h, p, _, _ in entries})


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(
                        st.sampled_from(["host", "http", "paths", "path", "pathType",
                                         "backend", "service", "name", "port", "number",
                                         "rules", "tls", "hosts", "defaultBackend"]),
                        c, max_size=4), max_leaves=20))
def test_any_spec_shape_gives_routes_or_problems_never_an_exception(spec: Any) -> None:
    obj = {"metadata": {"name": "n", "namespace": "ns"}, "spec": spec}
    got = extract(obj, {})
    assert all(isinstance(r, Route) for r in got.routes)
