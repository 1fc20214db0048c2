"""The clusters the dev control plane knows: in memory, optionally mirrored to a JSON file.

One record per cluster, keyed by its UUID, also findable by agent id (a pod that lost
its state but kept its agent id gets its cluster back instead of a second one). With
``--state FILE`` every change is written atomically, so restarting the control plane
keeps the clusters and their tokens.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import tempfile
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def fingerprint(secret: str) -> str:
    """A short digest that lets tests compare a secret without the view holding it."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16] if secret else ""


@dataclass
class Cluster:
    cluster_id: str
    agent_id: str
    name: str
    workspace_id: str
    token: str
    registration: dict[str, Any]
    k8s_service_token: str = ""
    status: str = "active"
    registered_at: str = field(default_factory=now_rfc3339)
    registration_count: int = 1
    last_heartbeat: dict[str, Any] | None = None
    last_heartbeat_at: str | None = None
    heartbeat_count: int = 0

    def view(self) -> dict[str, Any]:
        """What ``GET /debug/clusters`` shows: everything but the credentials."""
        out = asdict(self)
        out.pop("token")
        out.pop("k8s_service_token")
        out["token_sha256"] = fingerprint(self.token)
        out["k8s_service_token_sha256"] = fingerprint(self.k8s_service_token)
        return out


class StateFileError(Exception):
    """The ``--state`` file cannot be read back (the message says why)."""


class ClusterStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._clusters: dict[str, Cluster] = {}
        if path is not None and path.exists():
            self._load(path)

    def _load(self, path: Path) -> None:
        try:
            document = json.loads(path.read_text())
            for raw in document.get("clusters", []):
                cluster = Cluster(**raw)
                self._clusters[cluster.cluster_id] = cluster
        except OSError as exc:
            raise StateFileError(f"{path}: {exc.strerror or exc}") from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise StateFileError(f"{path}: not a state file written by this control plane "
                                 f"({type(exc).__name__}: {exc}); move it away to start "
                                 "afresh") from None

    def get(self, cluster_id: str) -> Cluster | None:
        return self._clusters.get(cluster_id)

    def by_agent(self, agent_id: str) -> Cluster | None:
        for cluster in self._clusters.values():
            if cluster.agent_id == agent_id:
                return cluster
        return None

    def by_token(self, token: str) -> Cluster | None:
        for cluster in self._clusters.values():
            if cluster.token == token:
                return cluster
        return None

    def all(self) -> list[Cluster]:
        return list(self._clusters.values())

    def put(self, cluster: Cluster) -> None:
        self._clusters[cluster.cluster_id] = cluster
        self.save()

    def forget(self, cluster_id: str) -> bool:
        found = self._clusters.pop(cluster_id, None) is not None
        self.save()
        return found

    @staticmethod
    def new_id() -> str:
        return str(uuid.uuid4())

    def save(self) -> None:
        if self.path is None:
            return
        payload = json.dumps({"clusters": [asdict(c) for c in self._clusters.values()]},
                             indent=1).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)
