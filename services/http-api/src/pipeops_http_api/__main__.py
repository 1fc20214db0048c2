"""Entry point of ``pipeops-http-api``."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import Any

from agentkit.runner import ServiceContext, run_service
from agentkit.status import READY
from pipeops_http_api.app import create_app
from pipeops_http_api.server import listen, serve


def setup(ctx: ServiceContext) -> Callable[[], Coroutine[Any, Any, None]]:
    async def main() -> None:
        app = create_app(ctx)
        sock = listen(ctx.config.agent.host, ctx.config.agent.port)
        ctx.status.set(READY, f"serving HTTP on {ctx.config.agent.host}:{ctx.config.agent.port}")
        await serve(app, sock)

    return main


def main() -> None:
    sys.exit(run_service(
        "http-api",
        "Serves the agent's HTTP API: health, readiness, version.",
        setup,
        dist="pipeops-http-api",
        extra_flags={"port": ("--port", "agent.port"), "host": ("--host", "agent.host")},
    ))


if __name__ == "__main__":
    main()
