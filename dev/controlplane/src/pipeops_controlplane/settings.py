"""What the dev control plane is told at start (flags of ``pipeops-dev-controlplane``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = 0  # 0: pick a free port
    state: Path | None = None  # mirror the clusters to this JSON file
    tunnel_url: str = ""  # handed to agents at registration; empty until a tunnel exists
    gateway_url: str = ""
