"""What the endpoints share: the service context and the long-lived parts built once
at start (the event hub, the metrics scraper, the token check) or on first use (the
outbound HTTP clients, ``outbound``)."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from importlib import resources

from agentkit.runner import ServiceContext
from agentkit.tls import client_context, control_plane_context
from pipeops_http_api.auth import TokenCheck
from pipeops_http_api.hub import Hub
from pipeops_http_api.k8sproxy import Upstream
from pipeops_http_api.outbound import LazyClient
from pipeops_http_api.scrape import PodScraper


@dataclass
class Deps:
    ctx: ServiceContext
    hub: Hub
    scraper: PodScraper
    http: LazyClient  # localhost scrapes
    control_plane: LazyClient  # the control plane, with its TLS context
    auth: TokenCheck
    kubernetes: Upstream
    dashboard: bytes = b""  # the page, read once at start (static/dashboard.html)
    commit: str = os.environ.get("PIPEOPS_COMMIT", "unknown")
    build_date: str = os.environ.get("PIPEOPS_BUILD_DATE", "unknown")


def load_dashboard() -> bytes:
    """The dashboard page (blocking: call it in a thread)."""
    return (resources.files("pipeops_http_api") / "static" / "dashboard.html").read_bytes()


def build(ctx: ServiceContext, hub: Hub, token: str) -> Deps:
    # localhost scrapes are plain HTTP: the system's CAs on demand (agentkit.tls), never
    # certifi's bundle, which httpx would load for a client without a context
    http = LazyClient(client_context, timeout=2.0, trust_env=False)
    control_plane = LazyClient(functools.partial(control_plane_context, ctx.config.pipeops.tls),
                               timeout=ctx.config.pipeops.timeout,
                               headers={"User-Agent": "pipeops-http-api/" + ctx.status.version})
    return Deps(ctx=ctx, hub=hub, scraper=PodScraper(ctx.siblings, http), http=http,
                control_plane=control_plane, auth=TokenCheck(token),
                kubernetes=Upstream(ctx.siblings))
