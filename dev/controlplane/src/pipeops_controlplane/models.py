"""The request bodies of PROTOCOL.md section 1, validated strictly.

Unknown fields are refused (``extra="forbid"``): in particular a heartbeat carrying a
token field is a client bug the seeds warn about, and it gets a 422 naming the field.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TunnelPortConfig(_Strict):
    kubernetes_api: int = Field(ge=0, le=65535)
    kubelet: int = Field(ge=0, le=65535)
    agent_http: int = Field(ge=0, le=65535)


class RegisterRequest(_Strict):
    agent_id: str = Field(min_length=1, max_length=253)
    name: str = Field(min_length=1, max_length=253)
    hostname: str
    agent_version: str
    k8s_version: str
    server_ip: str
    labels: dict[str, str]
    k8s_service_token: str
    tunnel_port_config: TunnelPortConfig
    features: dict[str, bool]
    cluster_id: uuid.UUID | None = None


class RegisterReply(BaseModel):
    cluster_id: str
    name: str
    status: str
    workspace_id: str
    token: str
    tunnel_url: str
    gateway_url: str


class HeartbeatMetadata(_Strict):
    node_count: int = Field(ge=0)
    pod_count: int = Field(ge=0)
    k8s_version: str
    agent_version: str
    uptime_seconds: float = Field(ge=0)
    is_private: bool
    routing_mode: str
    gateway_routes: int = Field(ge=0)


class HeartbeatRequest(_Strict):
    cluster_id: uuid.UUID
    agent_id: str = Field(min_length=1)
    # "disconnected" is the last heartbeat of an agent that is shutting down.
    status: Literal["active", "degraded", "disconnected"]
    tunnel_status: Literal["connected", "connecting", "disconnected"]
    timestamp: dt.datetime
    metadata: HeartbeatMetadata
