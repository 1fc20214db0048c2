"""One owner per hostname: the same host claimed by Ingresses in two namespaces.

external-dns and the ingress controllers each settle this their own way; ours is
deterministic and needs no state: a hostname belongs to the namespace of its oldest
claim (``creationTimestamp``; ties, or objects without one, by ``namespace/name``).
Within that namespace several objects may share the host with different paths (as
ingress-nginx merges them); the same ``(host, path)`` twice goes to the oldest claim
again. Every losing route becomes a :class:`~pipeops_gateway.routes.Problem`
(``HostConflict``) for an Event on its object.
"""

from __future__ import annotations

from collections.abc import Iterable

from pipeops_gateway.routes import Problem, Route, RouteKey

_LATE = "9999"  # objects with no creationTimestamp sort after every dated one


def claim_order(route: Route) -> tuple[str, str, str]:
    return (route.created or _LATE, route.namespace, route.ingress_name)


def resolve(routes: Iterable[Route]) -> tuple[dict[RouteKey, Route], list[Problem]]:
    """The winning route per ``(hostname, path)`` and a problem per loser."""
    by_host: dict[str, list[Route]] = {}
    for route in routes:
        by_host.setdefault(route.hostname, []).append(route)
    winners: dict[RouteKey, Route] = {}
    problems: list[Problem] = []
    for hostname, claims in by_host.items():
        claims.sort(key=claim_order)
        owner = claims[0]
        for route in claims:
            if route.namespace != owner.namespace:
                problems.append(_lost(route, f"host {hostname} belongs to "
                                             f"{owner.namespace}/{owner.ingress_name} "
                                             "(the older claim)"))
                continue
            held = winners.get(route.key)
            if held is None:
                winners[route.key] = route
            elif (held.namespace, held.ingress_name) != (route.namespace, route.ingress_name):
                problems.append(_lost(route, f"{hostname}{route.path} belongs to "
                                             f"{held.namespace}/{held.ingress_name} "
                                             "(the older claim)"))
    return winners, _dedupe(problems)


def _lost(route: Route, message: str) -> Problem:
    return Problem(route.source, route.namespace, route.ingress_name, "HostConflict",
                   message, whole=False)


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: set[tuple[str, str, str, str]] = set()
    out = []
    for p in problems:
        key = (p.kind, p.namespace, p.name, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out
