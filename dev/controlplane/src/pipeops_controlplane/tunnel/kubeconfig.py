"""A kubeconfig that reaches a cluster's API server through its tunnel.

The server is the control plane's loopback port allocated for the ``kubernetes-api``
forward; TLS passes through the tunnel untouched, so the kubeconfig keeps the cluster's
CA and credentials and sets ``tls-server-name`` to a name in the API server's
certificate (the address kubectl dials, 127.0.0.1:PORT, is not the server's own).

``make run`` calls :func:`kubeconfig_through_tunnel` for the ``tunnel`` key of
``.run/endpoints.json``. Standard library and PyYAML only; blocking (call it from a
script or a thread, not from the event loop).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml


class TunnelNotReady(RuntimeError):
    pass


def forward_port(controlplane_url: str, *, cluster_id: str | None = None,
                 forward: str = "kubernetes-api", wait: float = 30.0) -> int:
    """The port allocated for ``forward`` once that cluster's tunnel is connected (the
    only cluster when ``cluster_id`` is None). Polls ``/debug/tunnels`` up to ``wait``."""
    deadline = time.monotonic() + wait
    last = "no tunnel yet"
    while True:
        with urllib.request.urlopen(controlplane_url.rstrip("/") + "/debug/tunnels",
                                    timeout=5) as resp:
            clusters: list[dict[str, Any]] = json.loads(resp.read())["clusters"]
        if cluster_id is not None:
            clusters = [c for c in clusters if c["cluster_id"] == cluster_id]
        if len(clusters) > 1:
            raise TunnelNotReady("several clusters have tunnels: name one with cluster_id")
        for cluster in clusters:
            ports = {f["name"]: f["remote_port"] for f in cluster["forwards"]}
            if not cluster["connected"]:
                last = "the tunnel is not connected"
            elif forward not in ports:
                last = f"no {forward!r} forward (have {sorted(ports)})"
            else:
                return int(ports[forward])
        if time.monotonic() > deadline:
            raise TunnelNotReady(f"after {wait}s: {last}")
        time.sleep(0.1)


def kubeconfig_through_tunnel(
    controlplane_url: str,
    cluster_kubeconfig: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    cluster_id: str | None = None,
    tls_server_name: str | None = None,
    forward: str = "kubernetes-api",
    wait: float = 30.0,
) -> Path:
    """Write ``out``: ``cluster_kubeconfig``'s current context (CA, credentials) with its
    server replaced by the tunnel's ``kubernetes-api`` port on 127.0.0.1.

    ``tls_server_name`` defaults to the host of the original server, which the API
    server's certificate names (for kubesim, ``kubesim.local`` also works). Returns the
    absolute path; the file is mode 0600 (it holds a credential).
    """
    port = forward_port(controlplane_url, cluster_id=cluster_id, forward=forward, wait=wait)
    source = yaml.safe_load(Path(cluster_kubeconfig).read_text())
    context_name = source.get("current-context") or source["contexts"][0]["name"]
    context = _named(source["contexts"], context_name)["context"]
    cluster = dict(_named(source["clusters"], context["cluster"])["cluster"])
    user = _named(source["users"], context["user"])["user"]
    original = urlsplit(cluster["server"])
    cluster["server"] = f"https://127.0.0.1:{port}"
    cluster["tls-server-name"] = tls_server_name or original.hostname or "kubernetes"
    cluster.pop("insecure-skip-tls-verify", None)
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "through-tunnel", "cluster": cluster}],
        "users": [{"name": "through-tunnel", "user": user}],
        "contexts": [{"name": "through-tunnel",
                      "context": {"cluster": "through-tunnel", "user": "through-tunnel",
                                  **({"namespace": context["namespace"]}
                                     if "namespace" in context else {})}}],
        "current-context": "through-tunnel",
    }
    path = Path(out).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    return path


def _named(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    for item in items:
        if item.get("name") == name:
            return item
    raise ValueError(f"the kubeconfig has no entry named {name!r}")
