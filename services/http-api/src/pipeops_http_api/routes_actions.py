"""Endpoints that do something (seed 002): an immediate heartbeat, a command for the
session runner, a message from the control plane. The work is done by the sibling that
owns it (``Registrar.HeartbeatNow``, ``Tunnel.RunCommand``): the http-api only carries
the request and the outcome.

Status codes: the outcome of work that was done is 200 (a command that ``failed`` too:
the body says so, as the tunnel's answer would); 409 when it cannot be done in the
agent's current state; 503 when the sibling that would do it is down; 504 when it did
not answer in time (a command keeps running: asking again with its id gets its outcome).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import grpc
from fastapi import APIRouter, Body, Depends, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from agentkit.grpcclient import Answer
from pipeops.agent.v1 import registrar_pb2, tunnel_pb2
from pipeops_http_api.deps import Deps
from pipeops_http_api.sibling import to_dict

RUNNERS = ("sessions",)  # the agent's one command runner: session commands (seed 004)
COMMAND_TIMEOUT = 60.0
# answers these methods give by design (not registered; a payload that is not JSON)
EXPECTED = frozenset({grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.INVALID_ARGUMENT})
HEARTBEAT_GRACE = 2.0  # beyond the control plane timeout


class CommandBody(BaseModel):
    action: str = Field(min_length=1, max_length=64, examples=["wake_session"])
    payload: dict[str, Any] = Field(default_factory=dict, examples=[{"sessionId": "s1"}])
    id: str = Field("", max_length=256, description="a command id; a repeated id is not "
                    "run again (its outcome is returned)")


class MessageBody(BaseModel):
    type: Literal["ping", "heartbeat", "command"]
    id: str = Field("", max_length=256)
    action: str = Field("", max_length=64)
    payload: dict[str, Any] = Field(default_factory=dict)


def _failure(answer: Answer, *, what: str) -> JSONResponse:
    if answer.code == "FAILED_PRECONDITION":
        return JSONResponse({"error": answer.detail}, status_code=409)
    if answer.code == "DEADLINE_EXCEEDED":
        return JSONResponse({"error": f"the {what} did not answer in time"}, status_code=504)
    if answer.down:
        return JSONResponse({"error": f"the {what} is unreachable: {answer.detail}"},
                            status_code=503)
    if answer.code == "INVALID_ARGUMENT":
        return JSONResponse({"error": answer.detail}, status_code=400)
    return JSONResponse({"error": f"the {what} answered {answer.problem}"}, status_code=502)


async def heartbeat_now(deps: Deps) -> JSONResponse:
    answer = await deps.ctx.siblings.ask(
        "registrar", "Registrar/HeartbeatNow", registrar_pb2.HeartbeatNowRequest(),
        timeout=deps.ctx.config.pipeops.timeout + HEARTBEAT_GRACE, expected=EXPECTED)
    if not answer.ok:
        return _failure(answer, what="registrar")
    return JSONResponse(to_dict(answer.reply))


async def run_command(deps: Deps, command_id: str, action: str,
                      payload: dict[str, Any]) -> JSONResponse:
    answer = await deps.ctx.siblings.ask("tunnel", "Tunnel/RunCommand",
                       tunnel_pb2.RunCommandRequest(id=command_id, action=action,
                                                    payload_json=json.dumps(payload)),
                       timeout=COMMAND_TIMEOUT, expected=EXPECTED)
    if not answer.ok:
        return _failure(answer, what="tunnel (which runs commands)")
    outcome = answer.reply
    body: dict[str, Any] = {"type": outcome.type, "id": outcome.id}
    if outcome.type == "complete":
        body["result"] = json.loads(outcome.result_json or "{}")
    else:
        body["error"] = outcome.error
    return JSONResponse(body)


def router(deps: Deps) -> APIRouter:
    api = APIRouter(tags=["agent (dashboard token)"], dependencies=[Depends(deps.auth)])

    @api.post("/api/agent/heartbeat",
              summary="Send a heartbeat now (the registrar's) and return its outcome")
    async def heartbeat() -> JSONResponse:
        return await heartbeat_now(deps)

    @api.post("/api/runners/{runner_id}/command",
              summary="Run a command through the agent's command runner, the same one that "
                      "runs commands arriving over the tunnel (runner_id: sessions)")
    async def runner_command(runner_id: str, command: CommandBody) -> JSONResponse:
        if runner_id not in RUNNERS:
            raise HTTPException(404, f"no runner {runner_id[:64]!r}; the agent has: "
                                + ", ".join(RUNNERS))
        return await run_command(deps, command.id, command.action, command.payload)

    @api.post("/api/control-plane/message",
              summary="A message from the control plane: ping, heartbeat (send one now) or "
                      "command {id, action, payload} (the session runner)")
    async def control_plane_message(
            message: Annotated[MessageBody, Body()]) -> JSONResponse:
        if message.type == "ping":
            return JSONResponse({"type": "pong"})
        if message.type == "heartbeat":
            return await heartbeat_now(deps)
        if not message.action:
            raise HTTPException(422, "a command message needs an action")
        return await run_command(deps, message.id, message.action, message.payload)

    return api
