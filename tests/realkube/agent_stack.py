"""The agent installed by helm into the real control plane, its services run as processes
with the chart's own ServiceAccount token.

`ChartedAgent` starts a RealKube (its own: the tests restart its API server), seeds the
demo pods, runs the dev control plane, `helm install`s charts/pipeops-agent with the
control plane's URL and token, and asks the real API server for a TokenRequest token of
the chart's ServiceAccount. The registrar and the tunnel then run on the config the chart
renders, with that token, outside a pod: the in-cluster addresses of the tunnel's forwards
become the loopback ports of the API server and kwok's kubelet, and the control-plane
identity's token is the one the real token controller wrote into the chart's Secret.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from pipeops_controlplane.testing import ControlPlane
from pipeops_controlplane.tunnel.kubeconfig import kubeconfig_through_tunnel
from realkube.testing import RealKube
from tests.chart.chart import CHART_DIR, NAMESPACE, RELEASE, Chart, Rendered
from tests.clusters import seed_demo
from tests.helpers import BIN, ServiceProcess, free_port, tool, wait_for

SESSIONS = "pipeops-sessions"
CP_ARGS = ["--tunnel-ping-interval", "0.5", "--tunnel-ping-timeout", "2"]


def forbidden_records(proc: ServiceProcess) -> list[str]:
    """Every log line that speaks of a 403 ("403" as a number of its own)."""
    return [line for line in proc.lines + proc.stderr_lines
            if "forbidden" in line.lower() or re.search(r"(?<!\d)403(?!\d)", line)]


class ChartedAgent:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._stack = contextlib.ExitStack()

    def start(self) -> ChartedAgent:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        stack = self._stack
        self.rk: RealKube = stack.enter_context(RealKube(nodes=2))
        seed_demo(self.rk)
        self.cp: ControlPlane = stack.enter_context(ControlPlane(extra_args=CP_ARGS))
        self.chart = Chart(self.folder / "helm")
        values = ["--set", f"pipeops.token={self.cp.token}",
                  "--set", f"pipeops.apiUrl={self.cp.url}"]
        self.chart.run("install", RELEASE, str(CHART_DIR), "-n", NAMESPACE,
                       "--create-namespace", *values, kubeconfig=self.rk.kubeconfig)
        self.rendered: Rendered = self.chart.template(*values)
        self.service_account = self.rendered.service_account
        self.user = f"system:serviceaccount:{NAMESPACE}:{self.service_account}"
        self.token = self.rk.service_account_token(NAMESPACE, self.service_account,
                                                   create=False)
        self.cp_token = self._control_plane_token()
        self.kubeconfig = self._agent_kubeconfig()
        self.config = self._agent_config()
        self.state = self.folder / "state"
        self.state.mkdir()
        (self.folder / "sa-token").write_text(self.token)
        (self.folder / "cp-token").write_text(self.cp_token)
        common = ["--config", str(self.config), "--kubeconfig", str(self.kubeconfig),
                  "--state-dir", str(self.state), "--grpc-port", "0",
                  "--set", "kubernetes.in_cluster=false",
                  "--set", f"kubernetes.service_account_token_path={self.folder / 'sa-token'}",
                  "--set", f"kubernetes.control_plane_token_path={self.folder / 'cp-token'}",
                  "--set", "grpc.probe_host=127.0.0.1"]
        self.registrar = stack.enter_context(ServiceProcess([
            str(BIN / "pipeops-registrar"), *common,
            "--set", "grpc.registrar_probe=0", "--set", "metrics.registrar=0",
            "--set", f"grpc.tunnel={free_port()}", "--set", f"grpc.gateway={free_port()}",
            "--set", "pipeops.heartbeat_interval=0.5"],
            env={"PIPEOPS_TOKEN": self.cp.token}))
        self.registrar.wait_record(
            lambda r: r.get("msg") == "registered with the control plane", timeout=30,
            what="registration")
        self.identity = wait_for(self._registered, timeout=15, what="the identity file")
        self.tunnel = stack.enter_context(ServiceProcess([
            str(BIN / "pipeops-tunnel"), *common, "--api-url", self.cp.url,
            "--set", "grpc.tunnel_probe=0", "--set", "metrics.tunnel=0",
            "--set", f"grpc.gateway={free_port()}"]))
        self.tunnel.wait_started(timeout=30)
        # commands need the tunnel up: a test that runs alone must not race its connect
        wait_for(lambda: (self.tunnel_view() or {}).get("connected"), timeout=30,
                 what="the tunnel connected at the control plane")

    def _registered(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads(
                (self.state / "identity.json").read_text())["data"]
        except (FileNotFoundError, ValueError):
            return None
        return data if data.get("state") == "registered" and data.get("cluster_id") else None

    def _control_plane_token(self) -> str:
        """What the real token controller wrote into the chart's token Secret."""
        name = next(s["metadata"]["name"] for s in self.rendered.of_kind("Secret")
                    if s.get("type") == "kubernetes.io/service-account-token")

        def token() -> str | None:
            status, secret = self.rk.request(
                "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
            data = (secret.get("data") or {}) if status == 200 else {}
            return base64.b64decode(data["token"]).decode() if "token" in data else None

        return wait_for(token, timeout=30, what="the token controller to fill " + name)

    def _agent_kubeconfig(self) -> Path:
        config = yaml.safe_load(Path(self.rk.kubeconfig).read_text())
        config["users"][0]["user"] = {"token": self.token}
        path = self.folder / "agent.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        return path

    def _agent_config(self) -> Path:
        """The chart's config.yaml, its in-cluster addresses made loopback ports."""
        config = yaml.safe_load(self.rendered.config_text)
        self.agent_http_port = free_port()
        local = {"kubernetes-api": f"127.0.0.1:{self.rk.port}",
                 "kubelet": f"127.0.0.1:{self.rk.kwok_port}",
                 "agent-http": f"127.0.0.1:{self.agent_http_port}"}
        for forward in config["tunnel"]["forwards"]:
            forward["local_addr"] = local[forward["name"]]
        config["tunnel"].update(ping_interval=0.5, ping_timeout=2.0, status_poll_interval=0.2)
        config["pipeops"].update(reconnect={"backoff_base": 0.1, "backoff_max": 0.5},
                                 timeout=3)
        path = self.folder / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def stop(self) -> None:
        self._stack.close()

    # ---- what the tests read ----------------------------------------------------------------

    @property
    def cluster_id(self) -> str:
        return str(self.identity["cluster_id"])

    def heartbeat(self) -> dict[str, Any] | None:
        return self.cp.cluster(self.cluster_id)

    def tunnel_view(self) -> dict[str, Any] | None:
        status, body = self.cp.request("GET", f"/debug/tunnels/{self.cluster_id}")
        return body if status == 200 else None

    def sessions(self) -> dict[str, dict[str, Any]]:
        view = self.tunnel_view() or {}
        sessions: dict[str, dict[str, Any]] = view.get("sessions") or {}
        return sessions

    def command(self, action: str, payload: dict[str, Any], wait: float = 30) -> dict[str, Any]:
        status, record = self.cp.request("POST", f"/api/v1/agents/{self.cluster_id}/command",
                                         {"action": action, "payload": payload, "wait": wait})
        assert status == 200, (status, record)
        result: dict[str, Any] = record
        return result

    def tunnel_kubeconfig(self, source: str | None = None) -> Path:
        """A kubeconfig whose server is the tunnel's kubernetes-api port (the admin's
        credential unless `source` names another kubeconfig)."""
        return kubeconfig_through_tunnel(
            self.cp.url, source or self.rk.kubeconfig, self.folder / "tunnel.kubeconfig",
            cluster_id=self.cluster_id, tls_server_name="kubernetes", wait=30)

    def kubectl(self, kubeconfig: Path, *args: str) -> list[str]:
        return [tool("kubectl"), "--kubeconfig", str(kubeconfig), "--cache-dir",
                str(self.folder / "kube-cache"), *args]

    def forbidden(self) -> dict[str, list[str]]:
        return {name: lines for name, proc in (("registrar", self.registrar),
                                               ("tunnel", self.tunnel))
                if (lines := forbidden_records(proc))}
