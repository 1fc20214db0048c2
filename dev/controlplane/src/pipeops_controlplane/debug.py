"""Read-only views and test switches under ``/debug``: never behind a fault."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field

from pipeops_controlplane.faults import FaultSwitch, Mode, Target
from pipeops_controlplane.store import ClusterStore

router = APIRouter(prefix="/debug", tags=["debug"])


class FaultRequest(BaseModel):
    mode: Mode | None = None
    target: Target = "all"
    times: int | None = Field(None, ge=1)
    retry_after: int | None = Field(None, ge=0)


def _store(request: Request) -> ClusterStore:
    store: ClusterStore = request.app.state.store
    return store


def _faults(request: Request) -> FaultSwitch:
    switch: FaultSwitch = request.app.state.faults
    return switch


@router.get("/clusters")
async def clusters(request: Request) -> list[dict[str, Any]]:
    return [c.view() for c in _store(request).all()]


@router.get("/clusters/{cluster_id}")
async def cluster(cluster_id: str, request: Request) -> dict[str, Any]:
    found = _store(request).get(cluster_id)
    if found is None:
        raise HTTPException(404, "cluster not found")
    return found.view()


@router.post("/clusters/{cluster_id}/forget")
async def forget(cluster_id: str, request: Request) -> dict[str, Any]:
    if not _store(request).forget(cluster_id):
        raise HTTPException(404, "cluster not found")
    await request.app.state.tunnels.forget(cluster_id)  # its listeners close with it
    request.app.state.routes.forget_cluster(cluster_id)
    return {"forgotten": cluster_id}


@router.get("/faults")
async def get_faults(request: Request) -> dict[str, Any]:
    return _faults(request).view()


@router.post("/faults")
async def set_faults(body: FaultRequest, request: Request) -> dict[str, Any]:
    switch = _faults(request)
    switch.set(body.mode, body.target, body.times, body.retry_after)
    return switch.view()
