"""Who this agent is: the identity record, its agent id, and where it is kept.

The record is written twice: to the shared state volume (``identity.json``, read by the
siblings; it holds the cluster token they authenticate with) and to the cluster (a
Secret for the token and ids, a ConfigMap for the ids; see ``kube.py``), so that a new
pod whose volume is empty resumes as the same cluster.

Agent id precedence: configured (``agent.id``) > stored (the file, else the cluster) >
generated once from a hash of cluster facts plus randomness, and stored at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from pipeops.agent.v1 import registrar_pb2

UNREGISTERED = registrar_pb2.REGISTRATION_STATE_UNREGISTERED
REGISTERED = registrar_pb2.REGISTRATION_STATE_REGISTERED
REJECTED = registrar_pb2.REGISTRATION_STATE_REJECTED

# Fields that make up the identity; ``generation`` counts changes to them.
_TRACKED = ("agent_id", "cluster_id", "cluster_name", "cluster_token", "workspace_id",
            "api_url", "tunnel_url", "gateway_url", "registered_at", "state")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Identity:
    agent_id: str = ""
    cluster_id: str = ""
    cluster_name: str = ""
    cluster_token: str = ""  # credential: never logged, never sent over gRPC
    workspace_id: str = ""
    api_url: str = ""
    tunnel_url: str = ""
    gateway_url: str = ""
    registered_at: str = ""  # RFC 3339, empty until registered
    state: str = "unregistered"  # unregistered | registered | rejected
    generation: int = 0

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Identity:
        """Build from a stored record, ignoring unknown keys and wrong types."""
        known = {f.name: f.type for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in record.items():
            if key == "generation" and isinstance(value, int):
                values[key] = value
            elif key in known and key != "generation" and isinstance(value, str):
                values[key] = value
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    def evolve(self, **changes: Any) -> Identity:
        """A copy with ``changes``; the generation bumps when a tracked field changed."""
        updated = replace(self, **changes)
        if any(getattr(updated, name) != getattr(self, name) for name in _TRACKED):
            updated = replace(updated, generation=self.generation + 1)
        return updated

    @property
    def registered(self) -> bool:
        return self.state == "registered" and bool(self.cluster_id and self.cluster_token)

    def to_proto(self) -> registrar_pb2.Identity:
        state = {"registered": REGISTERED, "rejected": REJECTED}.get(self.state, UNREGISTERED)
        message = registrar_pb2.Identity(
            agent_id=self.agent_id, cluster_id=self.cluster_id, cluster_name=self.cluster_name,
            workspace_id=self.workspace_id, api_url=self.api_url, tunnel_url=self.tunnel_url,
            gateway_url=self.gateway_url, state=state, generation=self.generation,
        )
        if self.registered_at:
            stamp = Timestamp()
            stamp.FromDatetime(dt.datetime.fromisoformat(self.registered_at.replace("Z",
                                                                                    "+00:00")))
            message.registered_at.CopyFrom(stamp)
        return message


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:20] or "cluster"


def generate_agent_id(cluster_name: str, facts: dict[str, str]) -> str:
    """``agent-<name>-<hash of cluster facts>-<random>``: stable part plus randomness.

    The hash ties the id to the cluster (API server, version, name); the random part
    keeps two agents on the same cluster apart. Never the pod name alone.
    """
    material = "\n".join(f"{k}={facts[k]}" for k in sorted(facts)) + f"\nname={cluster_name}"
    digest = hashlib.sha256(material.encode()).hexdigest()[:8]
    return f"agent-{_slug(cluster_name)}-{digest}-{secrets.token_hex(4)}"


def choose_agent_id(configured: str, stored: Identity | None) -> str:
    """Configured, else stored, else "" (the caller generates one)."""
    if configured:
        return configured
    if stored is not None and stored.agent_id:
        return stored.agent_id
    return ""
