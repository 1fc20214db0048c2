"""`make run RUN_ARGS="--cluster real"`: the whole agent on the real control plane; Ctrl-C
stops every process, the control plane's included."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, tool, wait_for


def _listening(url: str) -> bool:
    host, port = url.removeprefix("https://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_run_on_the_real_control_plane(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run.py"), "--cluster", "real",
         "--free-ports", "--quiet", "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    endpoints_path = run_dir / "endpoints.json"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"run.py exited {proc.returncode}: {proc.stderr.read()}")
            return endpoints_path.exists()

        wait_for(ready, timeout=150, what="endpoints.json")
        endpoints = json.loads(endpoints_path.read_text())
        assert "kubesim" not in endpoints
        assert {"realkube", "controlplane", "grpc", "http_api", "tunnel"} <= endpoints.keys()

        def heartbeating() -> list[dict[str, Any]] | None:
            with urllib.request.urlopen(endpoints["controlplane"]["url"] + "/debug/clusters",
                                        timeout=5) as r:
                clusters: list[dict[str, Any]] = json.load(r)
            beat = clusters[0]["last_heartbeat"] if clusters else None
            return clusters if beat and beat["tunnel_status"] == "connected" else None

        clusters = wait_for(heartbeating, timeout=60, what="a heartbeat, tunnel connected")
        assert clusters[0]["last_heartbeat"]["metadata"]["node_count"] == 2
        # kubectl through the tunnel reaches the real API server and its kwok nodes
        nodes = subprocess.run(
            [tool("kubectl"), "--kubeconfig", endpoints["tunnel"]["kubeconfig"],
             "--cache-dir", str(tmp_path / "cache"), "get", "nodes", "-o", "name"],
            capture_output=True, text=True, timeout=60, check=False)
        assert nodes.returncode == 0, nodes.stderr
        assert nodes.stdout.split() == ["node/kwok-node-0", "node/kwok-node-1"]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert not endpoints_path.exists()
    assert not _listening(endpoints["realkube"]["url"])  # the API server is gone too
