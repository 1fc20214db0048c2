"""The agent-facing API of PROTOCOL.md section 1: register and heartbeat.

Registration takes an install token and returns the cluster and its token; offering a
known ``cluster_id`` (or coming back with a known agent id) resumes that cluster rather
than creating a second one, and an offered id the store forgot is honoured, so an agent
told "cluster not found" re-registers as itself. Heartbeats take the cluster token.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse

from pipeops_controlplane.auth import InstallTokens, bearer, new_cluster_token
from pipeops_controlplane.models import HeartbeatRequest, RegisterReply, RegisterRequest
from pipeops_controlplane.settings import Settings
from pipeops_controlplane.store import Cluster, ClusterStore, now_rfc3339

router = APIRouter(prefix="/api/v1/clusters/agent", tags=["agent"])


def _store(request: Request) -> ClusterStore:
    store: ClusterStore = request.app.state.store
    return store


def _reply(cluster: Cluster, settings: Settings) -> RegisterReply:
    return RegisterReply(
        cluster_id=cluster.cluster_id, name=cluster.name, status=cluster.status,
        workspace_id=cluster.workspace_id, token=cluster.token,
        tunnel_url=settings.tunnel_url, gateway_url=settings.gateway_url,
    )


@router.post("/register")
async def register(body: RegisterRequest, request: Request) -> JSONResponse:
    tokens: InstallTokens = request.app.state.install_tokens
    settings: Settings = request.app.state.settings
    workspace = tokens.workspace(bearer(request))
    if workspace is None:
        raise HTTPException(401, "invalid install token")
    store = _store(request)
    offered = str(body.cluster_id) if body.cluster_id else None
    cluster = store.get(offered) if offered else store.by_agent(body.agent_id)
    if cluster is not None and cluster.workspace_id != workspace:
        raise HTTPException(403, "cluster belongs to another workspace")
    record: dict[str, Any] = body.model_dump(mode="json", exclude={"k8s_service_token"})
    if cluster is None:
        cluster = Cluster(
            cluster_id=offered or store.new_id(), agent_id=body.agent_id, name=body.name,
            workspace_id=workspace, token=new_cluster_token(), registration=record,
            k8s_service_token=body.k8s_service_token,
        )
        code = 201
    else:
        cluster.agent_id, cluster.name, cluster.registration = body.agent_id, body.name, record
        cluster.k8s_service_token = body.k8s_service_token
        cluster.registration_count += 1
        cluster.status = "active"
        code = 200
    store.put(cluster)
    return JSONResponse(_reply(cluster, settings).model_dump(), status_code=code)


@router.post("/{cluster_id}/heartbeat")
async def heartbeat(cluster_id: str, body: HeartbeatRequest, request: Request) -> dict[str, str]:
    store = _store(request)
    cluster = store.get(cluster_id)
    if cluster is None:
        raise HTTPException(404, "cluster not found")
    if bearer(request) != cluster.token:
        raise HTTPException(401, "invalid cluster token")
    if str(body.cluster_id) != cluster_id:
        raise HTTPException(400, "cluster_id in the body does not match the path")
    if body.agent_id != cluster.agent_id:
        raise HTTPException(409, "agent_id does not match the registered agent")
    cluster.last_heartbeat = body.model_dump(mode="json")
    cluster.last_heartbeat_at = now_rfc3339()
    cluster.heartbeat_count += 1
    cluster.status = body.status
    store.put(cluster)
    return {"status": "ok"}
