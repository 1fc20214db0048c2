"""The FastAPI application: the endpoints the http-api serves.

Only what works is served. Today: liveness, readiness (503 with the reasons when a
sibling is not where it must be, see ``readiness``; with each sibling's own account of
itself, asked over gRPC), and the version.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from google.protobuf.json_format import MessageToDict

from agentkit.runner import ServiceContext
from pipeops.agent.v1 import service_pb2
from pipeops_http_api.readiness import not_ready

SIBLINGS = ("registrar", "tunnel", "gateway")


def create_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="pipeops-agent", version=ctx.status.version, docs_url=None,
                  redoc_url=None)
    started = time.time()

    async def describe(name: str) -> dict[str, Any]:
        info = await ctx.siblings.call(name, "Service/Describe", service_pb2.DescribeRequest())
        if info is None:  # down, or an error (in this service's Describe: sibling_errors)
            return {"state": "unreachable"}
        return MessageToDict(info, preserving_proto_field_name=True)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the process serves requests."""
        return {"status": "healthy", "uptime_seconds": round(time.time() - started, 3)}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness of the agent (200, or 503 with the reasons), with each sibling's own
        account of itself."""
        reasons, *states = await asyncio.gather(not_ready(ctx.config, ctx.siblings),
                                                *(describe(name) for name in SIBLINGS))
        body = {"status": "not ready" if reasons else "ready", "reasons": reasons,
                "services": dict(zip(SIBLINGS, states, strict=True))}
        return JSONResponse(body, status_code=503 if reasons else 200)

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": ctx.status.version, "service": "pipeops-agent"}

    return app
