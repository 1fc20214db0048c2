"""HTTP endpoints of the tunnel: the agent's status poll, commands, and ``/debug/tunnels``.

* ``GET /api/v1/tunnel/status?cluster_id=&agent_id=``: the agent's poll, with its cluster
  token (401 otherwise; 404 unknown cluster; 409 agent id mismatch).
* ``POST /api/v1/agents/{id}/command`` ``{action, payload, id?, wait?}``: send a command to
  the agent (``id``: its agent id or cluster id) and wait up to ``wait`` seconds for the
  outcome: 200 with the record once complete/failed/lost, 202 while still waiting; 404
  unknown agent, 409 tunnel not connected. ``GET .../commands/{command_id}`` reads it later.
  Like ``/debug``, these operator endpoints take no token (a loopback dev tool).
* ``GET /debug/tunnels``: per cluster: connected, forwards with ports, stream counts (from
  the mux stats), commands. Switches for tests: ``POST /debug/tunnels/{cluster_id}/mode``
  (``pending``/``disabled``/null), ``.../drop`` (kill the WebSocket, no close frame),
  ``.../listeners`` (a port whose connections open ``{service, namespace, port}`` streams).
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from agentkit.mux import MuxClosed
from pipeops_controlplane.auth import bearer
from pipeops_controlplane.store import Cluster, ClusterStore
from pipeops_controlplane.tunnel.cluster import TooManyListeners
from pipeops_controlplane.tunnel.hub import NotConnected, TunnelHub

status_router = APIRouter(prefix="/api/v1/tunnel", tags=["tunnel"])
commands_router = APIRouter(prefix="/api/v1/agents", tags=["commands"])
debug_router = APIRouter(prefix="/debug/tunnels", tags=["debug"])


def _hub(request: Request) -> TunnelHub:
    hub: TunnelHub = request.app.state.tunnels
    return hub


def _store(request: Request) -> ClusterStore:
    store: ClusterStore = request.app.state.store
    return store


@status_router.get("/status")
async def tunnel_status(request: Request, cluster_id: str = Query(min_length=1),
                        agent_id: str = Query(min_length=1)) -> dict[str, Any]:
    token = bearer(request)
    cluster = _store(request).get(cluster_id)
    if cluster is None:
        raise HTTPException(404, "cluster not found")
    if token != cluster.token:
        raise HTTPException(401, "invalid cluster token")
    if agent_id != cluster.agent_id:
        raise HTTPException(409, "agent_id does not match the registered agent")
    return await _hub(request).status(cluster)


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: str = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, min_length=1, max_length=200)
    wait: float = Field(default=30.0, ge=0, le=300, description="seconds to wait for the outcome")


def _agent(request: Request, agent: str) -> Cluster:
    store = _store(request)
    cluster = store.by_agent(agent) or store.get(agent)
    if cluster is None:
        raise HTTPException(404, "agent not found")
    return cluster


@commands_router.post("/{agent}/command")
async def send_command(agent: str, body: CommandRequest, request: Request) -> JSONResponse:
    cluster = _agent(request, agent)
    try:
        record = _hub(request).send_command(cluster, body.action, body.payload, body.id)
    except NotConnected as exc:
        raise HTTPException(409, str(exc)) from None
    except MuxClosed:  # the session closed between the check and the send
        raise HTTPException(409, "the agent's tunnel is not connected") from None
    finished = await record.wait(body.wait)
    return JSONResponse(record.view(), status_code=200 if finished else 202)


def _tunnel_commands(request: Request, agent: str) -> Any:
    cluster = _agent(request, agent)
    tunnel = _hub(request).tunnels.get(cluster.cluster_id)
    if tunnel is None:
        raise HTTPException(404, "no command was ever sent to this agent")
    return tunnel.commands


@commands_router.get("/{agent}/commands")
async def list_commands(agent: str, request: Request) -> list[dict[str, Any]]:
    return [r.view() for r in _tunnel_commands(request, agent).all()]


@commands_router.get("/{agent}/commands/{command_id}")
async def get_command(agent: str, command_id: str, request: Request,
                      wait: float = Query(0.0, ge=0, le=300)) -> JSONResponse:
    record = _tunnel_commands(request, agent).get(command_id)
    if record is None:
        raise HTTPException(404, "command not found")
    finished = await record.wait(wait)
    return JSONResponse(record.view(), status_code=200 if finished else 202)


# --- /debug/tunnels -------------------------------------------------------------------


@debug_router.get("")
async def tunnels(request: Request) -> dict[str, Any]:
    hub = _hub(request)
    return {"tunnel_url": hub.url,
            "clusters": [t.view() for t in hub.tunnels.values()]}


def _tunnel_view(request: Request, cluster_id: str) -> Any:
    tunnel = _hub(request).tunnels.get(cluster_id)
    if tunnel is None:
        raise HTTPException(404, "no tunnel for this cluster (it never asked for its status)")
    return tunnel


@debug_router.get("/{cluster_id}")
async def tunnel(cluster_id: str, request: Request) -> dict[str, Any]:
    view: dict[str, Any] = _tunnel_view(request, cluster_id).view()
    return view


class ModeRequest(BaseModel):
    mode: Literal["pending", "disabled"] | None = None


@debug_router.post("/{cluster_id}/mode")
async def set_mode(cluster_id: str, body: ModeRequest, request: Request) -> dict[str, Any]:
    cluster = _store(request).get(cluster_id)
    if cluster is None:
        raise HTTPException(404, "cluster not found")
    tunnel = _hub(request).tunnel(cluster)
    tunnel.mode = body.mode
    return {"cluster_id": cluster_id, "mode": tunnel.mode,
            "status": _hub(request).status_of(cluster)}


@debug_router.post("/{cluster_id}/drop")
async def drop(cluster_id: str, request: Request) -> dict[str, Any]:
    if not _hub(request).drop(cluster_id):
        raise HTTPException(409, "the tunnel is not connected")
    return {"dropped": cluster_id}


class ListenerRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    service: str = Field(min_length=1, max_length=253)
    namespace: str = Field(min_length=1, max_length=253)
    port: int = Field(ge=1, le=65535)


@debug_router.post("/{cluster_id}/listeners")
async def add_listener(cluster_id: str, body: ListenerRequest, request: Request
                       ) -> dict[str, Any]:
    tunnel = _tunnel_view(request, cluster_id)
    try:
        listener = await tunnel.add_listener(body.model_dump())
    except TooManyListeners as exc:
        raise HTTPException(409, str(exc)) from None
    view: dict[str, Any] = listener.view()
    return view


@debug_router.delete("/{cluster_id}/listeners/{name:path}")
async def remove_listener(cluster_id: str, name: str, request: Request) -> dict[str, Any]:
    tunnel = _tunnel_view(request, cluster_id)
    listener = tunnel.listeners.get(name)
    if listener is None or "forward" in listener.target:  # forwards stay as allocated
        raise HTTPException(404, "no such listener")
    await tunnel.remove_listener(name)
    return {"removed": name}
