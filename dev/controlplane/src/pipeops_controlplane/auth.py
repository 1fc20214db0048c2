"""Bearer tokens: install tokens (from flags or a file) and the cluster tokens we issue.

An install token lets an agent register; registration issues a cluster token that the
agent then uses for everything else. Each install token belongs to a workspace (a
stable UUID derived from the token unless the tokens file names one).
"""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path

from fastapi import HTTPException, Request

_WORKSPACE_NS = uuid.UUID("6f1d1c1e-8f0b-4c55-9a53-0d7c7a3e2b10")


class InstallTokens:
    def __init__(self) -> None:
        self._workspaces: dict[str, str] = {}

    def add(self, token: str, workspace_id: str = "") -> None:
        token = token.strip()
        if token:
            self._workspaces[token] = workspace_id or str(uuid.uuid5(_WORKSPACE_NS, token))

    def load_file(self, path: Path) -> None:
        """One token per line, optionally ``TOKEN WORKSPACE_ID``; ``#`` starts a comment."""
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                token, _, workspace = line.partition(" ")
                self.add(token, workspace.strip())

    def workspace(self, token: str) -> str | None:
        return self._workspaces.get(token)

    def __len__(self) -> int:
        return len(self._workspaces)

    def values(self) -> list[str]:
        return list(self._workspaces)


def new_cluster_token() -> str:
    return "pct_" + secrets.token_urlsafe(24)


def bearer(request: Request) -> str:
    """The request's bearer token; 401 when there is none."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(401, "missing bearer token")
    return token.strip()
