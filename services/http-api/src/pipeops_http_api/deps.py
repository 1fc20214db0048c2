"""What the endpoints share: the service context and the long-lived parts built once
at start (the event hub, the metrics scraper, the token check) or on first use (the
outbound HTTP clients, ``outbound``)."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from importlib import resources

from agentkit.runner import ServiceContext
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


def build(ctx: ServiceContext, hub: Hub, token: str, tls: ssl.SSLContext) -> Deps:
    http = LazyClient(timeout=2.0, trust_env=False, verify=tls)  # one CA load
    control_plane = LazyClient(timeout=ctx.config.pipeops.timeout, verify=tls,
                               headers={"User-Agent": "pipeops-http-api/" + ctx.status.version})
    return Deps(ctx=ctx, hub=hub, scraper=PodScraper(ctx.siblings, http), http=http,
                control_plane=control_plane, auth=TokenCheck(token),
                kubernetes=Upstream(ctx.siblings))
