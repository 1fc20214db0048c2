"""The control plane's REST API as the registrar uses it (PROTOCOL.md section 1).

Every reply is validated with pydantic; anything unexpected raises a typed error that
carries the status code and a bounded, token-free excerpt of the body. Transport
failures (refused, reset, timed out) become ``Unreachable``. No error ever holds a token:
the ``Authorization`` header is never part of a message, ``token`` fields in an excerpt
are replaced with ``***``, and the excerpt goes through the log masker (registered
secrets, ``Bearer ...``), in case a reply echoes the request.
"""

from __future__ import annotations

import json
import re
import ssl
import uuid
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from agentkit import logs

EXCERPT = 200  # characters of a reply body kept in an error


def excerpt(body: bytes | str, limit: int = EXCERPT) -> str:
    """A short, single-line, token-free view of a reply body."""
    text = body.decode(errors="replace") if isinstance(body, bytes) else body
    try:
        text = json.dumps(_redact(json.loads(text)))
    except ValueError:
        text = re.sub(r"(?i)(token\"?\s*[:=]\s*\"?)[^\s\",}]+", r"\1***", text)
    # e.g. a proxy echoing the request headers: registered secrets, "Bearer ..." and the
    # like. Masked before cutting, so that a cut never leaves half a secret unrecognised.
    text = " ".join(logs.masker.mask(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "***" if "token" in k.lower() and v else _redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    return value


class ControlPlaneError(Exception):
    """A call failed. ``kind`` names the failure for logs and metrics."""

    kind = "error"

    def __init__(self, message: str, status: int = 0, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    def __str__(self) -> str:
        text = super().__str__()
        if self.status:
            text += f" (HTTP {self.status})"
        if self.body:
            text += f": {self.body}"
        return text


class Unreachable(ControlPlaneError):
    """Refused, reset, DNS, TLS or timed out: no usable HTTP reply."""

    kind = "unreachable"


class TimedOut(Unreachable):
    """No reply within the timeout."""


class ConnectionFailed(Unreachable):
    """Refused, reset or closed before a reply."""


class Rejected(ControlPlaneError):
    """401/403: the token is wrong. Not worth retrying."""

    kind = "rejected"


class NotFound(ControlPlaneError):
    """404: the control plane does not know this cluster (re-register)."""

    kind = "not_found"


class ServerError(ControlPlaneError):
    """5xx: the control plane is in trouble; retry later."""

    kind = "server_error"


class BadReply(ControlPlaneError):
    """A reply we cannot use: unexpected status, not JSON, or a required field missing."""

    kind = "bad_reply"


class RegisterReply(BaseModel):
    """Registration reply: ``cluster_id`` (UUID) and the cluster ``token`` are required."""

    model_config = ConfigDict(extra="ignore")

    cluster_id: str
    token: str
    name: str = ""
    status: str = ""
    workspace_id: str = ""
    tunnel_url: str = ""
    gateway_url: str = ""

    @field_validator("cluster_id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return str(uuid.UUID(value))

    @field_validator("token")
    @classmethod
    def _nonempty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the cluster token is empty")
        return value


def _problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"]) or "body"
    if error["type"] == "missing":
        return f"required field {where} is missing"
    return f"field {where}: {error['msg'].removeprefix('Value error, ')}"


class ControlPlaneClient:
    def __init__(self, api_url: str, *, timeout: float, verify: ssl.SSLContext | bool = True,
                 user_agent: str = "pipeops-registrar") -> None:
        self.api_url = api_url.rstrip("/")
        self._http = httpx.AsyncClient(
            base_url=self.api_url, timeout=httpx.Timeout(timeout), verify=verify,
            headers={"user-agent": user_agent, "accept": "application/json"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _post(self, path: str, token: str, body: dict[str, Any],
                    timeout: float | None = None) -> httpx.Response:
        what = path.rsplit("/", 1)[-1]
        try:
            response = await self._http.post(
                path, json=body, headers={"authorization": f"Bearer {token}"},
                timeout=httpx.USE_CLIENT_DEFAULT if timeout is None else httpx.Timeout(timeout))
        except httpx.TimeoutException as exc:
            raise TimedOut(f"{what}: no reply in time ({type(exc).__name__})") from None
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise ConnectionFailed(f"{what}: connection failed before a reply "
                                   f"({type(exc).__name__}: {reason})") from None
        status = response.status_code
        if status in (401, 403):
            raise Rejected(f"{what}: the control plane refused the token", status,
                           excerpt(response.content))
        if status == 404:
            raise NotFound(f"{what}: not found", status, excerpt(response.content))
        if status >= 500:
            raise ServerError(f"{what}: server error", status, excerpt(response.content))
        if not 200 <= status < 300:
            raise BadReply(f"{what}: unexpected status", status, excerpt(response.content))
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        try:
            return response.json()
        except ValueError:
            raise BadReply(f"{what}: reply is not JSON", response.status_code,
                           excerpt(response.content)) from None

    async def register(self, install_token: str, request: dict[str, Any]) -> RegisterReply:
        response = await self._post("/api/v1/clusters/agent/register", install_token, request)
        payload = self._json(response, "register")
        try:
            return RegisterReply.model_validate(payload)
        except ValidationError as exc:
            raise BadReply(f"register: {_problem(exc)}", response.status_code,
                           excerpt(response.content)) from None

    async def heartbeat(self, cluster_id: str, cluster_token: str, body: dict[str, Any],
                        timeout: float | None = None) -> None:
        path = f"/api/v1/clusters/agent/{cluster_id}/heartbeat"
        response = await self._post(path, cluster_token, body, timeout)
        if response.content:
            payload = self._json(response, "heartbeat")
            if not isinstance(payload, dict):
                raise BadReply("heartbeat: reply is not a JSON object", response.status_code,
                               excerpt(response.content))
