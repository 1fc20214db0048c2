"""What a route is on the agent's side: one ``(hostname, path)`` and where it leads.

The same noun as the control plane's (PROTOCOL.md section 4), plus where it came from
(``source``: ``Ingress`` or ``HTTPRoute``, and the object's age, which decides host
conflicts) and the TLS Secret's name (only its name: never key material). ``wire()``
gives what is sent to the control plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

RouteKey = tuple[str, str]  # hostname, path


@dataclass(frozen=True, order=True, slots=True)  # slots: 10,000s of them are held
class Route:
    hostname: str
    path: str
    path_type: str
    namespace: str
    ingress_name: str
    service_name: str
    service_port: int
    tls: bool = False
    tls_secret: str = field(default="", compare=False)
    source: str = field(default="Ingress", compare=False)
    created: str = field(default="", compare=False)  # the object's creationTimestamp

    @property
    def key(self) -> RouteKey:
        return (self.hostname, self.path)

    def content(self) -> dict[str, Any]:
        """What the control plane keeps about the route (the diff compares this)."""
        return {"namespace": self.namespace, "ingress_name": self.ingress_name,
                "path_type": self.path_type, "service_name": self.service_name,
                "service_port": self.service_port, "tls": self.tls}

    def wire(self) -> dict[str, Any]:
        return {"hostname": self.hostname, "path": self.path, **self.content()}


@dataclass(frozen=True)
class Problem:
    """Why an object (or one of its paths) was skipped; said as an Event on the object."""

    kind: str  # Ingress | HTTPRoute
    namespace: str
    name: str
    reason: str  # a CamelCase Event reason
    message: str
    whole: bool = True  # the whole object was skipped, not one path


@dataclass
class Extraction:
    routes: list[Route] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
