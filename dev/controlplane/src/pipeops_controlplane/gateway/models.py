"""The request bodies of PROTOCOL.md section 4, validated strictly.

A register call is one route: a bad field is a 422 for the call. A sync batch is checked
in two layers: the envelope (``cluster_id, sync_id, batch, last, routing_mode, ...``)
must be valid or the whole batch is a 422, but each ingress in it is validated on its
own, so one malformed ingress is reported in the reply and never blocks the others.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# an RFC 1123 subdomain, optionally with one leading "*." label (the Ingress spec's rule)
_HOST = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}"
                   r"[a-z0-9])?)*$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
PathType = Literal["Exact", "Prefix", "ImplementationSpecific"]
RoutingMode = Literal["direct", "tunnel"]
MAX_BATCH = 5000  # ingresses per sync batch: bounds one request's work and memory


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def check_hostname(value: str) -> str:
    if len(value) > 253 or not _HOST.match(value):
        raise ValueError(f"not a valid hostname: {value[:80]!r} (lower-case RFC 1123, "
                         "optionally one leading '*.')")
    return value


def check_path(value: str) -> str:
    if not value.startswith("/") or len(value) > 2048 or any(c in value for c in " \r\n"):
        raise ValueError(f"not a valid path: {value[:80]!r} (starts with '/', no spaces)")
    return value


class _RouteFields(_Strict):
    namespace: str = Field(pattern=_NAME.pattern)
    ingress_name: str = Field(pattern=_SUBDOMAIN.pattern)
    path_type: PathType = "Prefix"
    service_name: str = Field(pattern=_NAME.pattern)
    service_port: int = Field(ge=1, le=65535)
    tls: bool = False


class RegisterRoute(_RouteFields):
    hostname: str
    path: str = "/"
    cluster_id: uuid.UUID
    routing_mode: RoutingMode = "tunnel"
    public_endpoint: str = Field(default="", max_length=253)

    _host = field_validator("hostname")(check_hostname)
    _path = field_validator("path")(check_path)

    def content(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"hostname", "path", "cluster_id"})


class UnregisterRoute(_Strict):
    cluster_id: uuid.UUID
    hostname: str
    path: str | None = None

    _host = field_validator("hostname")(check_hostname)


class SyncPath(_Strict):
    path: str = "/"
    path_type: PathType = "Prefix"
    service_name: str = Field(pattern=_NAME.pattern)
    service_port: int = Field(ge=1, le=65535)

    _path = field_validator("path")(check_path)


class SyncRule(_Strict):
    host: str
    tls: bool = False
    paths: list[SyncPath] = Field(min_length=1, max_length=1000)

    _host = field_validator("host")(check_hostname)


class SyncIngress(_Strict):
    namespace: str = Field(pattern=_NAME.pattern)
    ingress_name: str = Field(pattern=_SUBDOMAIN.pattern)
    annotations: dict[str, str] = Field(default_factory=dict)
    rules: list[SyncRule] = Field(max_length=1000)


class IngressController(_Strict):
    name: str = ""
    namespace: str = ""
    port: int = Field(default=0, ge=0, le=65535)


class SyncBatch(_Strict):
    """The envelope; ``ingresses`` are validated one by one (:class:`SyncIngress`)."""

    cluster_id: uuid.UUID
    sync_id: str = Field(min_length=1, max_length=100)
    batch: int = Field(ge=0, le=100_000)
    last: bool
    public_endpoint: str = Field(default="", max_length=253)
    routing_mode: RoutingMode = "tunnel"
    ingress_controller: IngressController | None = None
    ingresses: list[dict[str, Any]] = Field(max_length=MAX_BATCH)
