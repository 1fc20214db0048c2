"""ClusterView: watch events in, touched hosts and winning routes out (pure)."""

from __future__ import annotations

from typing import Any

from pipeops_gateway.view import ClusterView
from tests.gateway.test_ingress_extract import backend, ingress, rule


def svc(name: str, port_name: str, port: int, namespace: str = "apps") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace},
            "spec": {"ports": [{"name": port_name, "port": port}]}}


def test_events_name_the_hosts_before_and_after() -> None:
    view = ClusterView()
    first = ingress(rule("a.test", ("/", "Prefix", backend())))
    assert view.apply("Ingress", "ADDED", first) == {"a.test"}
    moved = ingress(rule("b.test", ("/", "Prefix", backend())))
    assert view.apply("Ingress", "MODIFIED", moved) == {"a.test", "b.test"}
    assert view.apply("Ingress", "MODIFIED", moved) == set()  # no change, no work
    assert set(view.desired()[0]) == {("b.test", "/")}
    assert view.apply("Ingress", "DELETED", moved) == {"b.test"}
    assert view.desired()[0] == {}
    assert view.hostnames() == set()


def test_a_list_replaces_the_kind_and_deletions_while_away_are_seen() -> None:
    view = ClusterView()
    view.replace("Ingress", [ingress(rule("a.test", ("/", "Prefix", backend())), name="a"),
                             ingress(rule("b.test", ("/", "Prefix", backend())), name="b")])
    touched = view.replace("Ingress", [ingress(rule("b.test", ("/", "Prefix", backend())),
                                               name="b")])
    assert touched == {"a.test"}
    assert set(view.desired()[0]) == {("b.test", "/")}


def test_a_service_change_re_resolves_named_ports() -> None:
    view = ClusterView()
    named = ingress(rule("a.test", ("/", "Prefix", backend("web", "http"))))
    assert view.apply("Ingress", "ADDED", named) == set()  # Service not there yet
    assert [p.reason for p in view.problems()] == ["ServiceNotFound"]
    assert view.apply("Service", "ADDED", svc("web", "http", 8080)) == {"a.test"}
    assert view.desired()[0][("a.test", "/")].service_port == 8080
    assert view.apply("Service", "MODIFIED", svc("web", "http", 9090)) == {"a.test"}
    assert view.desired()[0][("a.test", "/")].service_port == 9090
    assert view.apply("Service", "ADDED", svc("other", "http", 1)) == set()
    assert view.problems() == []


def test_the_class_filter_and_the_default_class() -> None:
    view = ClusterView(ingress_classes=["nginx"])
    plain = ingress(rule("a.test", ("/", "Prefix", backend())), name="plain")
    other = ingress(rule("b.test", ("/", "Prefix", backend())), name="other",
                    ingressClassName="traefik")
    view.replace("Ingress", [plain, other])
    assert view.desired()[0] == {}
    default = {"metadata": {"name": "nginx", "annotations": {
        "ingressclass.kubernetes.io/is-default-class": "true"}}}
    assert view.apply("IngressClass", "ADDED", default) == {"a.test"}
    assert set(view.desired()[0]) == {("a.test", "/")}


def test_conflicts_resolve_per_host_and_the_controller_is_found() -> None:
    view = ClusterView()
    old = ingress(rule("h.test", ("/", "Prefix", backend())), name="old", namespace="a")
    new = ingress(rule("h.test", ("/", "Prefix", backend())), name="new", namespace="b")
    new["metadata"]["creationTimestamp"] = "2026-06-01T00:00:00Z"
    view.replace("Ingress", [new, old])
    won, problems = view.desired({"h.test"})
    assert won[("h.test", "/")].namespace == "a"
    assert [(p.namespace, p.reason) for p in problems] == [("b", "HostConflict")]
    assert view.controller() is None
    controller = {"metadata": {"name": "ingress-nginx-controller",
                               "namespace": "ingress-nginx"}, "spec": {"type": "ClusterIP"}}
    view.apply("Service", "ADDED", controller)
    assert view.controller_changed
    assert (view.controller() or {}).get("metadata") == controller["metadata"]
    configured = ClusterView(controller=("edge", "lb"))
    configured.apply("Service", "ADDED", controller)
    assert configured.controller() is None and not configured.controller_changed


def test_http_routes_follow_their_gateway() -> None:
    view = ClusterView()
    route = {"metadata": {"name": "hr", "namespace": "apps"},
             "spec": {"parentRefs": [{"name": "gw"}],
                      "rules": [{"backendRefs": [{"name": "api", "port": 80}]}]},
             "status": {"parents": [{"conditions": [{"type": "Accepted",
                                                     "status": "True"}]}]}}
    assert view.apply("HTTPRoute", "ADDED", route) == set()  # no hostname anywhere yet
    gateway = {"metadata": {"name": "gw", "namespace": "apps"},
               "spec": {"listeners": [{"name": "web", "protocol": "HTTP",
                                       "hostname": "gw.test"}]}}
    assert view.apply("Gateway", "ADDED", gateway) == {"gw.test"}
    assert view.desired()[0][("gw.test", "/")].source == "HTTPRoute"
