"""The control plane's gateway side (PROTOCOL.md section 4).

* :mod:`.table`: :class:`RouteTable`, the routes held per cluster, with counters.
* :mod:`.models`: the request bodies.
* :mod:`.api`: the route endpoints and ``/debug/routes``.
* :mod:`.matching`: the Ingress spec's host and path rules for a public request.
* :mod:`.public`: :class:`PublicListener`, the public HTTP port whose requests go through
  the tunnel to a route's Service.

Wiring: ``create_app`` puts a :class:`RouteTable` on ``app.state.routes``; the entry point
starts the public listener (``app.state.public_listener``) beside the tunnel hub.
"""

from __future__ import annotations

from pipeops_controlplane.gateway.api import debug_router, router
from pipeops_controlplane.gateway.public import PublicListener
from pipeops_controlplane.gateway.table import RouteTable

routers = (router, debug_router)

__all__ = ["PublicListener", "RouteTable", "routers"]
