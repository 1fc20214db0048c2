"""The FastAPI application: the endpoints the http-api serves.

Only what works is served. Today: liveness, readiness (with each sibling's own account
of itself, asked over gRPC), and the version.
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

SIBLINGS = ("registrar", "tunnel", "gateway")


def create_app(ctx: ServiceContext) -> FastAPI:
    app = FastAPI(title="pipeops-agent", version=ctx.status.version, docs_url=None,
                  redoc_url=None)
    started = time.time()

    async def describe(name: str) -> dict[str, Any]:
        info = await ctx.siblings.call(name, "Service/Describe", service_pb2.DescribeRequest())
        if info is None:
            return {"state": "unreachable"}
        return MessageToDict(info, preserving_proto_field_name=True)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        """Liveness: the process serves requests."""
        return {"status": "healthy", "uptime_seconds": round(time.time() - started, 3)}

    @app.get("/ready")
    async def ready() -> JSONResponse:
        """Readiness of this container, with each sibling's own account of itself."""
        states = await asyncio.gather(*(describe(name) for name in SIBLINGS))
        body = {"status": "ready", "services": dict(zip(SIBLINGS, states, strict=True))}
        return JSONResponse(body)

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": ctx.status.version, "service": "pipeops-agent"}

    return app
