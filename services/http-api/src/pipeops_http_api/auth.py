"""Who may use the API: the dashboard token, compared in constant time.

Everything under ``/api/`` (except ``/api/k8s/``) and ``/ws`` needs
``Authorization: Bearer <dashboard token>``. The token comes from ``api.token`` (the
chart's Secret, through ``PIPEOPS_DASHBOARD_TOKEN``); when none is configured one is
generated once and kept in the state volume (``dashboard-token``, mode 0600, written
atomically), so a restart keeps it; a volume that refuses the write (full) is said in a
warning and the token lasts until the container restarts (never a half-written token
file, never a crash). It is registered as a secret: no log line shows it.

``/api/k8s/`` takes the caller's own Kubernetes token instead (see ``k8sproxy``): the
scheme is declared here so OpenAPI shows both.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, WebSocket
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from agentkit.config import Config
from agentkit.logs import register_secret
from agentkit.statefile import write_atomically

log = logging.getLogger(__name__)

TOKEN_FILE = "dashboard-token"

dashboard_scheme = HTTPBearer(
    auto_error=False, scheme_name="dashboardToken",
    description="The dashboard token: `make run` prints it; in a cluster it is in the "
                "Secret named in the chart's NOTES.")
kubernetes_scheme = HTTPBearer(
    auto_error=False, scheme_name="kubernetesToken",
    description="Your own Kubernetes bearer token, passed through to the API server "
                "unchanged (never the agent's ServiceAccount).")


def load_token(config: Config) -> str:
    """The configured token, else the one stored in the state dir, else a new one."""
    token = config.api.token.get_secret_value()
    if not token:
        path = Path(config.agent.state_dir) / TOKEN_FILE
        try:
            token = path.read_text().strip()
        except FileNotFoundError:
            token = ""
        if not token:
            token = secrets.token_urlsafe(32)
            register_secret(token)
            try:
                write_atomically(path, (token + "\n").encode())
            except OSError as exc:
                log.warning("generated the dashboard token but cannot store it in %s (%s): "
                            "it lasts until this container restarts; set api.token to keep "
                            "one", path, exc.strerror or exc)
            else:
                log.info("generated the dashboard token", extra={"stored_in": str(path)})
    register_secret(token)
    return token


def bearer(header: str | None) -> str:
    """The token of an ``Authorization: Bearer`` header, or ``""``."""
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


class TokenCheck:
    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def valid(self, presented: str) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode(), self._token)

    async def __call__(self, request: Request, credentials: Annotated[
            HTTPAuthorizationCredentials | None, Depends(dashboard_scheme)]) -> None:
        if credentials is None or not self.valid(credentials.credentials):
            raise HTTPException(401, "a valid dashboard token is required "
                                "(Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": 'Bearer realm="pipeops-agent"'})

    def websocket_ok(self, websocket: WebSocket) -> bool:
        return self.valid(bearer(websocket.headers.get("authorization")))
