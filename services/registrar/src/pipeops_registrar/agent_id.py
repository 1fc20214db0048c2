"""The agent id: configured, else stored, else generated once.

Precedence: configured (``agent.id``) > stored (the state file, else the cluster) >
generated once from a hash of cluster facts plus randomness, and stored at once. The
identity record itself is ``agentkit.identity.Identity``.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from agentkit.identity import Identity


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
