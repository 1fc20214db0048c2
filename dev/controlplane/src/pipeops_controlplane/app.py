"""The app factory: one FastAPI app, a router per concern, shared state on ``app.state``.

Later concerns (tunnel, routes, commands) add their router with ``extra_routers`` or
``app.include_router`` and find the clusters and tokens on ``app.state``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from fastapi import APIRouter, FastAPI

from pipeops_controlplane import agents, debug
from pipeops_controlplane.auth import InstallTokens
from pipeops_controlplane.faults import FaultMiddleware, FaultSwitch
from pipeops_controlplane.gateway import RouteTable
from pipeops_controlplane.gateway import routers as gateway_routers
from pipeops_controlplane.settings import Settings
from pipeops_controlplane.store import ClusterStore
from pipeops_controlplane.tunnel import TunnelHub, TunnelSettings
from pipeops_controlplane.tunnel import routers as tunnel_routers


def create_app(
    settings: Settings,
    install_tokens: InstallTokens,
    *,
    store: ClusterStore | None = None,
    extra_routers: Iterable[APIRouter] = (),
    tunnel_settings: TunnelSettings | None = None,
) -> FastAPI:
    app = FastAPI(title="pipeops dev control plane", docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.install_tokens = install_tokens
    app.state.store = store if store is not None else ClusterStore(settings.state)
    app.state.faults = FaultSwitch()
    # the tunnel's endpoint: started/stopped by the entry point (app.state.tunnels.start())
    app.state.tunnels = TunnelHub(tunnel_settings or TunnelSettings(), app.state.store)
    # the gateway routes (section 4); the public listener is started by the entry point
    app.state.routes = RouteTable()
    app.state.route_requests = Counter()
    app.state.public_listener = None
    for router in (agents.router, debug.router, *tunnel_routers, *gateway_routers,
                   *extra_routers):
        app.include_router(router)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def asgi(app: FastAPI) -> FaultMiddleware:
    """What uvicorn serves: the app behind its fault switch.

    The switch wraps the whole app (outside Starlette's own middleware) so that it sees
    uvicorn's ``send`` and can drop a connection for real.
    """
    return FaultMiddleware(app, app.state.faults)
