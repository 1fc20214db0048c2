"""Routes of the real-time streams (see ``realtime`` for how a client is served):
``GET /api/realtime/events`` and ``GET /api/realtime/logs`` (SSE), ``GET /ws``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, HTTPException, Query, WebSocket
from fastapi.responses import StreamingResponse

from pipeops_http_api import podview
from pipeops_http_api.deps import Deps
from pipeops_http_api.hub import event_filter
from pipeops_http_api.realtime import (
    EventStream,
    Handler,
    last_event_id,
    refuse,
    websocket_session,
)
from pipeops_http_api.routes_status import runtime

EVENT_KINDS = frozenset({"status", "event"})
LOG_KINDS = frozenset({"log"})
LEVELS = ("debug", "info", "warning", "error")
SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/event-stream": {}}, "description": "an event stream"},
    503: {"description": "realtime.max_connections clients are connected already"}}


def _csv(raw: str | None) -> frozenset[str]:
    return frozenset(p.strip() for p in (raw or "").split(",") if p.strip())


def router(deps: Deps) -> APIRouter:
    api = APIRouter(tags=["real time (dashboard token)"], dependencies=[Depends(deps.auth)])
    cfg = deps.ctx.config

    def stream(kinds: frozenset[str], services: str | None, level: str | None,
               history: int, last_id: str | None) -> EventStream:
        if level and level.lower() not in LEVELS:
            raise HTTPException(422, f"level must be one of {', '.join(LEVELS)}")
        return EventStream(deps.hub, event_filter(kinds, _csv(services), level or ""),
                           after=last_event_id(last_id), history=history,
                           keepalive=cfg.realtime.keepalive)

    @api.get("/api/realtime/events", response_class=StreamingResponse, responses=SSE_DOC,
             summary="SSE: status changes and events of all four containers "
                     "(Last-Event-ID resumes; ?history=N starts with the last N)")
    async def events(
        service: Annotated[str | None, Query(description="comma-separated containers")] = None,
        level: Annotated[str | None, Query(description="minimum level")] = None,
        history: Annotated[int, Query(ge=0, le=100000)] = 0,
        last_event: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> EventStream:
        return stream(EVENT_KINDS, service, level, history, last_event)

    @api.get("/api/realtime/logs", response_class=StreamingResponse, responses=SSE_DOC,
             summary="SSE: the JSON log records of all four containers, filtered by "
                     "service (comma-separated) and minimum level")
    async def logs(
        service: Annotated[str | None, Query(description="comma-separated containers")] = None,
        level: Annotated[str | None, Query(description="minimum level")] = None,
        history: Annotated[int, Query(ge=0, le=100000)] = 0,
        last_event: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    ) -> EventStream:
        return stream(LOG_KINDS, service, level, history, last_event)

    return api


def websocket_route(deps: Deps) -> APIRouter:
    api = APIRouter()

    async def get_status(_: dict[str, Any]) -> dict[str, Any]:
        return await podview.detailed(deps.ctx)

    async def get_metrics(_: dict[str, Any]) -> dict[str, Any]:
        return await runtime(deps)

    async def ping(_: dict[str, Any]) -> dict[str, Any]:
        return {"pong": True}

    handlers: dict[str, Handler] = {"get_status": get_status, "get_metrics": get_metrics,
                                    "ping": ping}

    @api.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        """WebSocket (dashboard token in the Authorization header): the event stream of
        /api/realtime/events plus get_status, get_metrics and ping requests."""
        if not deps.auth.websocket_ok(websocket):
            await refuse(websocket, 401, "a valid dashboard token is required "
                         "(Authorization: Bearer <token>)")
            return
        await websocket_session(websocket, deps.hub, event_filter(EVENT_KINDS), handlers)

    return api
