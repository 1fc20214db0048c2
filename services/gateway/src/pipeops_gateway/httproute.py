"""Gateway API ``HTTPRoute`` -> routes, for routes their parent Gateway has accepted.

* Accepted: some ``status.parents[]`` entry carries the condition ``Accepted=True``; a
  route no parent accepted is not published (and not an error: it may be pending).
* Hostnames, the Gateway API's rules: a listener's ``hostname`` (the listener named by the
  parentRef's ``sectionName``, else every listener of the parent Gateway) and the
  route's ``hostnames`` intersect: equal names match; a wildcard matches a name one or
  more labels deeper (``*.example.com`` covers ``a.b.example.com``, unlike an Ingress
  wildcard), and the more specific name is the one published. No hostname on either
  side: the other side's names; on neither: nothing to publish (reported). A parent
  Gateway we cannot see: the route's own hostnames.
* Matches: ``path.type`` ``Exact`` -> ``Exact``, ``PathPrefix`` -> ``Prefix``;
  ``RegularExpression`` cannot be expressed as a route (skipped, reported); no match
  means ``/`` prefix.
* Backends: the first ``backendRef`` of the rule with a non-zero weight that is a
  Service (``group: ""``, ``kind: Service``) in the route's own namespace, with a port.
  Other kinds and cross-namespace references are skipped and reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeops_gateway.ingress import valid_host
from pipeops_gateway.routes import Extraction, Problem, Route

GatewayIndex = Mapping[tuple[str, str], Mapping[str, Any]]
PATH_TYPES = {"Exact": "Exact", "PathPrefix": "Prefix"}


def accepted(route: Mapping[str, Any]) -> bool:
    for parent in (route.get("status") or {}).get("parents") or []:
        for condition in parent.get("conditions") or []:
            if condition.get("type") == "Accepted" and condition.get("status") == "True":
                return True
    return False


def wildcard_covers(pattern: str, host: str) -> bool:
    return pattern.startswith("*.") and host.endswith(pattern[1:]) and host != pattern[2:]


def intersect(listener: str | None, route_hosts: list[str]) -> list[str]:
    """The hostnames published for one listener and a route's hostnames."""
    if not listener:
        return list(route_hosts)
    if not route_hosts:
        return [listener]
    out: list[str] = []
    for host in route_hosts:
        if host == listener:
            out.append(host)
        elif wildcard_covers(listener, host):
            out.append(host)
        elif wildcard_covers(host, listener):
            out.append(listener)
    return out


def _listener_hosts(route: Mapping[str, Any], namespace: str,
                    gateways: GatewayIndex) -> list[str | None] | None:
    """Hostnames of the listeners of accepted parents (None in the list: no hostname);
    None when no parent Gateway is visible."""
    wanted: list[str | None] = []
    seen_parent = False
    for parent in (route.get("spec") or {}).get("parentRefs") or []:
        if parent.get("kind", "Gateway") != "Gateway":
            continue
        gateway = gateways.get((parent.get("namespace") or namespace, parent.get("name", "")))
        if gateway is None:
            continue
        seen_parent = True
        section = parent.get("sectionName")
        for listener in (gateway.get("spec") or {}).get("listeners") or []:
            if section and listener.get("name") != section:
                continue
            if listener.get("protocol", "HTTP") not in ("HTTP", "HTTPS"):
                continue
            wanted.append(listener.get("hostname") or None)
    return wanted if seen_parent else None


def extract(route: Mapping[str, Any], gateways: GatewayIndex) -> Extraction:
    meta = route.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    out = Extraction()

    def problem(reason: str, message: str, whole: bool = False) -> None:
        out.problems.append(Problem("HTTPRoute", namespace, name, reason, message, whole))

    if not namespace or not name:
        problem("InvalidObject", "metadata.name and metadata.namespace are required", True)
        return out
    if not accepted(route):
        return out
    spec = route.get("spec") or {}
    route_hosts = [h for h in spec.get("hostnames") or [] if isinstance(h, str)]
    bad = [h for h in route_hosts if not valid_host(h)]
    if bad:
        problem("InvalidHost", f"hostname {bad[0][:80]!r} is not a DNS name", True)
        return out
    listeners = _listener_hosts(route, namespace, gateways)
    hosts: list[str] = []
    for listener in (listeners if listeners is not None else [None]):
        for host in intersect(listener, route_hosts):
            if host not in hosts:
                hosts.append(host)
    if not hosts:
        problem("NoHostname", "no hostname on the route or its listeners matches")
        return out
    created = meta.get("creationTimestamp") or ""
    routes: dict[tuple[str, str], Route] = {}
    for index, rule in enumerate(spec.get("rules") or [{}]):
        backend = _backend(rule, namespace)
        if isinstance(backend, str):
            problem("UnsupportedBackend", f"rule {index}: {backend}")
            continue
        for match in rule.get("matches") or [{}]:
            path = match.get("path") or {"type": "PathPrefix", "value": "/"}
            path_type = PATH_TYPES.get(path.get("type", "PathPrefix"))
            value = path.get("value") or "/"
            if path_type is None or not value.startswith("/"):
                problem("UnsupportedMatch", f"rule {index}: path {path.get('type')} "
                                            f"{str(value)[:60]!r} cannot be published")
                continue
            for host in hosts:
                routes.setdefault((host, value), Route(
                    host, value, path_type, namespace, name, backend[0], backend[1],
                    source="HTTPRoute", created=created))
    out.routes = sorted(routes.values())
    return out


def _backend(rule: Mapping[str, Any], namespace: str) -> tuple[str, int] | str:
    refs = rule.get("backendRefs") or []
    for ref in refs:
        if ref.get("weight", 1) == 0:
            continue
        if ref.get("group", "") != "" or ref.get("kind", "Service") != "Service":
            return f"backend {ref.get('kind')} {ref.get('name')} is not a Service"
        if ref.get("namespace", namespace) != namespace:
            return (f"backend {ref.get('namespace')}/{ref.get('name')} is in another "
                    "namespace")
        port = ref.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            return f"backend {ref.get('name')} has no port"
        return str(ref.get("name")), port
    return "no backendRef with a weight"
