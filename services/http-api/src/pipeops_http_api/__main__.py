"""Entry point of ``pipeops-http-api``."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.config import ConfigError
from agentkit.runner import ServiceContext, run_service
from agentkit.status import READY
from agentkit.tls import check_ca_file
from pipeops_http_api import deps as deps_module
from pipeops_http_api.app import create_app, with_transport
from pipeops_http_api.auth import load_token
from pipeops_http_api.hub import Hub
from pipeops_http_api.server import listen, serve


def check_tls(certfile: str, keyfile: str) -> None:
    """A certificate that cannot be loaded is a config error (one line, exit 2)."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"config error: api.tls_cert_file / api.tls_key_file "
                          f"({certfile}, {keyfile}): cannot load them: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    async def main() -> None:
        await asyncio.to_thread(check_ca_file, ctx.config.pipeops.tls)
        token = await asyncio.to_thread(load_token, ctx.config)
        hub = Hub(ctx.config.realtime, ctx.bus, ctx.siblings)
        deps = deps_module.build(ctx, hub, token)
        deps.dashboard = await asyncio.to_thread(deps_module.load_dashboard)
        app = create_app(ctx, deps)
        api = ctx.config.api
        tls_files = (api.tls_cert_file, api.tls_key_file) if api.tls_cert_file else None
        if tls_files:
            await asyncio.to_thread(check_tls, *tls_files)
        sock = listen(ctx.config.agent.host, ctx.config.agent.port)
        ctx.status.set(READY, f"serving {'HTTPS' if tls_files else 'HTTP'} on "
                       f"{ctx.config.agent.host}:{ctx.config.agent.port}")
        try:
            # either ending takes the other down (a dead hub is no silent half-service)
            async with asyncio.TaskGroup() as group:
                group.create_task(hub.run(), name="http-api:hub")
                group.create_task(serve(with_transport(app), sock, tls=tls_files),
                                  name="http-api:uvicorn")
        finally:
            await deps.http.aclose()
            await deps.control_plane.aclose()
            await deps.kubernetes.close()

    return main


def main() -> None:
    sys.exit(run_service(
        "http-api",
        "Serves the agent's HTTP API: health, metrics, status, commands, real-time events.",
        setup,
        dist="pipeops-http-api",
        extra_flags={"port": ("--port", "agent.port"), "host": ("--host", "agent.host")},
    ))


if __name__ == "__main__":
    main()
