"""``make run``'s orchestrator: everything comes up, endpoints.json tells where, and
Ctrl-C stops every process it started and removes the file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import ROOT, alive, child_pids, grpcurl, tool, wait_for


def test_run_writes_endpoints_and_cleans_up_on_ctrl_c(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "run.py"), "--free-ports", "--quiet",
         "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    endpoints_path = run_dir / "endpoints.json"
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"run.py exited {proc.returncode}: {proc.stderr.read()}")
            return endpoints_path.exists()

        wait_for(ready, timeout=90, what="endpoints.json")
        endpoints = json.loads(endpoints_path.read_text())
        assert {"kubesim", "controlplane", "grpc", "http_api", "tunnel",
                "gateway"} <= endpoints.keys()

        for name in ("registrar", "tunnel", "gateway"):
            check = grpcurl("-plaintext", endpoints["grpc"][name], "grpc.health.v1.Health/Check")
            assert json.loads(check.stdout) == {"status": "SERVING"}, check.stderr

        with urllib.request.urlopen(endpoints["http_api"]["url"] + "/health", timeout=5) as r:
            assert json.load(r)["status"] == "healthy"
        api = endpoints["http_api"]
        assert api["dashboard"] == api["url"] + "/dashboard" and len(api["token"]) >= 24
        with urllib.request.urlopen(api["dashboard"], timeout=5) as r:
            assert b"pipeops-agent" in r.read()
        status = urllib.request.Request(api["url"] + "/api/agent/status",
                                        headers={"Authorization": f"Bearer {api['token']}"})
        with urllib.request.urlopen(status, timeout=30) as r:
            assert json.load(r)["identity"]
        def heartbeating() -> list[dict[str, Any]] | None:
            with urllib.request.urlopen(endpoints["controlplane"]["url"] + "/debug/clusters",
                                        timeout=5) as r:
                clusters: list[dict[str, Any]] = json.load(r)
            beat = clusters[0]["last_heartbeat"] if clusters else None
            # The registrar asks the tunnel over gRPC: "connected" proves both siblings.
            return clusters if beat and beat["tunnel_status"] == "connected" else None

        wait_for(heartbeating, timeout=30, what="a heartbeat saying the tunnel is connected")

        nodes = subprocess.run(
            [tool("kubectl"), "--kubeconfig", endpoints["kubesim"]["kubeconfig"], "get",
             "nodes", "-o", "name"], capture_output=True, text=True, timeout=30, check=False)
        assert nodes.returncode == 0, nodes.stderr
        assert nodes.stdout.strip()
        # The registrar keeps the identity in the cluster too (a new pod resumes from it).
        state = subprocess.run(
            [tool("kubectl"), "--kubeconfig", endpoints["kubesim"]["kubeconfig"], "get",
             "secrets,configmaps", "-n", "pipeops-system", "-o", "name"],
            capture_output=True, text=True, timeout=30, check=False)
        assert state.returncode == 0, state.stderr
        assert "secret/" in state.stdout and "configmap/" in state.stdout, state.stdout

        # The same cluster, reached through the control plane's end of the tunnel.
        through = subprocess.run(
            [tool("kubectl"), "--kubeconfig", endpoints["tunnel"]["kubeconfig"], "get",
             "nodes", "-o", "name"], capture_output=True, text=True, timeout=30, check=False)
        assert through.returncode == 0, through.stderr
        assert through.stdout == nodes.stdout

        # The demo Ingress answers through the control plane's public listener, served by
        # the small app make run started, reached through the tunnel.
        gateway = endpoints["gateway"]
        assert gateway["demo_host"] == "demo.example.test"
        demo = subprocess.run(["curl", "-sS", "-m", "10", "-H", f"Host: {gateway['demo_host']}",
                               gateway["public_url"] + "/hello"],
                              capture_output=True, text=True, timeout=30, check=False)
        assert demo.returncode == 0, demo.stderr
        answer = json.loads(demo.stdout)
        assert (answer["app"], answer["host"], answer["path"]) == (
            "demo", "demo.example.test", "/hello")
        routes = json.load(urllib.request.urlopen(
            endpoints["controlplane"]["url"] + "/debug/routes", timeout=5))["routes"]
        assert [(r["hostname"], r["registrations"], r["duplicates"]) for r in routes] == [
            ("demo.example.test", 1, 0)]
        assert_no_token_in_logs(run_dir)

        children = child_pids(proc.pid)
        assert len(children) >= 7  # kubesim, control plane, demo app, four services
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
        assert not endpoints_path.exists()
        wait_for(lambda: not any(alive(pid) for pid in children), timeout=10,
                 what="every child to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()


def assert_no_token_in_logs(run_dir: Path) -> None:
    """Every log file is 0600 (as the kubeconfig with the admin token is) and holds none of
    the tokens in play: kubesim's admin token, the install token, the cluster token."""
    identity = json.loads((run_dir / "state" / "identity.json").read_text())["data"]
    tokens = {"kubesim admin": (run_dir / "serviceaccount-token").read_text().strip(),
              "install": "dev-install-token", "cluster": identity["cluster_token"]}
    assert all(tokens.values()), tokens.keys()
    logs = sorted((run_dir / "logs").glob("*.log"))
    assert {p.name for p in logs} >= {"kubesim.log", "controlplane.log", "tunnel.log"}
    for path in logs:
        assert oct(path.stat().st_mode & 0o777) == "0o600", path
        text = path.read_text()
        for name, token in tokens.items():
            assert token not in text, f"the {name} token is in {path.name}"
    kubesim_log = (run_dir / "logs" / "kubesim.log").read_text()
    assert '"event": "ready"' in kubesim_log  # the line is there, its token masked
