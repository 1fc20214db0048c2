"""Desired routes against held ones: what to register and what to unregister.

``held`` is what the control plane answered to ``GET /api/v1/gateway/routes`` (or what
this process last got a 2xx for); a route is registered again only when its content,
routing mode or public endpoint differs, so a full pass over an unchanged cluster sends
nothing. A host whose every held path is gone is unregistered whole (one call, no path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeops_gateway.routes import Route, RouteKey


@dataclass
class Plan:
    register: list[Route] = field(default_factory=list)
    unregister_paths: list[RouteKey] = field(default_factory=list)
    unregister_hosts: list[str] = field(default_factory=list)
    host_paths: int = 0  # the held paths of the hosts unregistered whole

    @property
    def deletes(self) -> int:
        """Routes this plan removes (a whole host counts its held paths)."""
        return len(self.unregister_paths) + self.host_paths

    def __bool__(self) -> bool:
        return bool(self.register or self.unregister_paths or self.unregister_hosts)


# What the control plane holds about a route, in this order: a tuple, not a dict, since
# one is kept per route (10,000s) and compared on every pass.
HELD_FIELDS = ("namespace", "ingress_name", "path_type", "service_name", "service_port",
               "tls", "routing_mode", "public_endpoint")
Held = tuple[Any, ...]


def held_content(route: Route, routing_mode: str, public_endpoint: str) -> Held:
    return (route.namespace, route.ingress_name, route.path_type, route.service_name,
            route.service_port, route.tls, routing_mode, public_endpoint)


def as_held(content: Mapping[str, Any]) -> Held:
    """A reply's route (a mapping of HELD_FIELDS) as the tuple kept."""
    return tuple(content.get(name) for name in HELD_FIELDS)


def plan(desired: Mapping[RouteKey, Route], held: Mapping[RouteKey, Held],
         routing_mode: str, public_endpoint: str) -> Plan:
    out = Plan()
    for key in sorted(desired):
        route = desired[key]
        have = held.get(key)
        want = held_content(route, routing_mode, public_endpoint)
        if have != want:
            out.register.append(route)
    gone: dict[str, list[str]] = {}
    for hostname, path in held:
        if (hostname, path) not in desired:
            gone.setdefault(hostname, []).append(path)
    desired_hosts = {h for h, _ in desired}
    for hostname in sorted(gone):
        if hostname in desired_hosts:
            out.unregister_paths += [(hostname, p) for p in sorted(gone[hostname])]
        else:
            out.unregister_hosts.append(hostname)
            out.host_paths += len(gone[hostname])
    return out
