"""Real processes for the gateway's tests: kubesim, the dev control plane, the gateway.

``GatewayRun`` is ``pipeops-gateway`` with route sync on, short timers and an identity
file written for a cluster registered with the dev control plane (the registrar's job in
the pod; ``tests/gateway/test_acceptance.py`` runs the real registrar and tunnel too).
Helpers make Ingresses the way users do (``kubectl apply``) and compare the control
plane's table with what the cluster says.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from agentkit.statefile import identity_file
from kubesim.testing import Kubesim
from pipeops_controlplane.testing import ControlPlane
from tests.helpers import BIN, ServiceProcess, free_port, grpcurl, tool, wait_for

GATEWAY = "pipeops.agent.v1.Gateway"


def write_identity(state_dir: Path, reg: dict[str, Any]) -> None:
    identity_file(state_dir).write({
        "agent_id": reg["agent_id"], "cluster_id": reg["cluster_id"],
        "cluster_token": reg["token"], "cluster_name": "test", "state": "registered",
        "generation": 1})


class GatewayRun(ServiceProcess):
    def __init__(self, cp: ControlPlane, kubeconfig: str, state_dir: Path, *,
                 grpc_port: int | None = None, extra: list[str] | None = None,
                 resync: float = 30.0, watch_timeout: float = 30.0) -> None:
        self.state_dir = state_dir
        self.grpc_port = grpc_port or free_port()
        super().__init__([
            str(BIN / "pipeops-gateway"),
            "--api-url", cp.url, "--state-dir", str(state_dir), "--kubeconfig", kubeconfig,
            "--grpc-port", str(self.grpc_port),
            "--set", "agent.enable_ingress_sync=true",
            "--set", "kubernetes.in_cluster=false",
            "--set", "metrics.gateway=0",
            "--set", "grpc.gateway_probe=0",
            "--set", "pipeops.timeout=2",
            "--set", "pipeops.reconnect.backoff_base=0.05",
            "--set", "pipeops.reconnect.backoff_max=0.5",
            "--set", "gateway.debounce=0.02",
            "--set", f"gateway.resync_interval={resync}",
            "--set", f"gateway.watch_timeout={watch_timeout}",
            "--set", "gateway.public_wait=2",
            *(extra or []),
        ], env={"KUBERNETES_SERVICE_HOST": ""})

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def grpc(self, method: str, data: str = "{}") -> dict[str, Any]:
        result = grpcurl("-plaintext", "-d", data, self.address, f"{GATEWAY}/{method}")
        assert result.returncode == 0, result.stderr
        parsed: dict[str, Any] = json.loads(result.stdout or "{}")
        return parsed

    def metrics(self) -> dict[str, float]:
        url = str(self.wait_started()["metrics"])
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return out

    def output(self) -> str:
        return "\n".join(self.lines[-40:] + self.stderr_lines[-40:])


def ingress(name: str, *hosts: str, namespace: str = "apps", service: str = "web",
            port: int | str = 80, path: str = "/", **spec: Any) -> dict[str, Any]:
    key = "number" if isinstance(port, int) else "name"
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"rules": [{"host": h, "http": {"paths": [
                {"path": path, "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {key: port}}}}]}}
                for h in hosts], **spec}}


def kubectl(ks: Kubesim, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run([tool("kubectl"), "--kubeconfig", ks.kubeconfig, *args],
                            input=stdin, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def apply(ks: Kubesim, *objects: dict[str, Any]) -> None:
    kubectl(ks, "apply", "-f", "-", stdin="\n---\n".join(json.dumps(o) for o in objects))


def namespace(ks: Kubesim, name: str) -> None:
    status, body = ks.request("POST", "/api/v1/namespaces", {
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    assert status in (201, 409), body


def table(cp: ControlPlane, cluster_id: str, namespace: str | None = None
          ) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["hostname"], r["path"]): r for r in cp.routes(cluster_id)
            if namespace is None or r["namespace"] == namespace}


def wait_table(cp: ControlPlane, cluster_id: str, expected: set[tuple[str, str]],
               timeout: float = 20.0, namespace: str | None = None
               ) -> dict[tuple[str, str], dict[str, Any]]:
    """Until the control plane holds exactly ``expected`` (host, path) routes (of
    ``namespace`` only, in a cluster shared with other tests)."""
    def check() -> list[dict[tuple[str, str], dict[str, Any]]] | None:
        held = table(cp, cluster_id, namespace)
        return [held] if set(held) == expected else None  # a list: truthy even when empty

    try:
        return wait_for(check, timeout, what=f"the control plane to hold {sorted(expected)}")[0]
    except AssertionError:
        raise AssertionError(f"held {sorted(table(cp, cluster_id, namespace))}, wanted "
                             f"{sorted(expected)}") from None


class DemoApp(ServiceProcess):
    """``python -m pipeops_controlplane.demoapp``: the backend behind a test Ingress."""

    def __init__(self, name: str = "backend") -> None:
        self.port = free_port()
        super().__init__([str(BIN / "python"), "-m", "pipeops_controlplane.demoapp",
                          "--port", str(self.port), "--name", name])

    def wait_ready(self) -> DemoApp:
        wait_for(lambda: any('"ready"' in line for line in self.lines), 15,
                 what="the demo app")
        return self


class PodStack:
    """The whole pod's processes for route sync: kubesim, the dev control plane, the
    registrar, the tunnel and the gateway (the tunnel asks this gateway's CheckTarget),
    and a demo app that the Service ``apps/web`` reaches (clusterIP 127.0.0.1: the tunnel
    resolves a Service through the API and dials its clusterIP and port)."""

    NAMESPACE = "pipeops-system"
    APPS = "apps"

    def __init__(self, folder: Path, *, gateway_extra: list[str] | None = None) -> None:
        self.folder = folder
        self.gateway_extra = gateway_extra or []
        self.started: list[Any] = []

    def start(self) -> PodStack:
        import yaml

        from tests.registrar.harness import RegistrarRun, sa_token_file

        try:
            self.kubesim = Kubesim().start()
            self.started.append(self.kubesim)
            for name in (self.NAMESPACE, self.APPS):
                namespace(self.kubesim, name)
            self.app = DemoApp().start().wait_ready()
            self.started.append(self.app)
            self.service("web", self.app.port)
            self.cp = ControlPlane(extra_args=["--tunnel-ping-interval", "0.5",
                                               "--tunnel-ping-timeout", "2"]).start()
            self.started.append(self.cp)
            self.state = self.folder / "state"
            self.state.mkdir()
            grpc_gateway = free_port()
            config = self.folder / "agent.yaml"
            config.write_text(yaml.safe_dump({
                "tunnel": {"forwards": [{"name": "kubernetes-api",
                                         "local_addr": f"127.0.0.1:{self.kubesim.port}"}],
                           "ping_interval": 0.5, "ping_timeout": 2.0,
                           "status_poll_interval": 0.2},
                "pipeops": {"reconnect": {"backoff_base": 0.05, "backoff_max": 0.5},
                            "timeout": 2},
                "grpc": {"gateway": grpc_gateway}}))
            self.registrar = RegistrarRun(
                self.cp, self.kubesim.kubeconfig, sa_token_file(self.folder, self.kubesim.token),
                self.state, self.NAMESPACE,
                extra=["--config", str(config), "--set", f"grpc.gateway={grpc_gateway}"]).start()
            self.started.append(self.registrar)
            self.identity = self.registrar.wait_registered()
            self.gateway = GatewayRun(self.cp, self.kubesim.kubeconfig, self.state,
                                      grpc_port=grpc_gateway,
                                      extra=["--config", str(config), *self.gateway_extra])
            self.gateway.start()
            self.started.append(self.gateway)
            self.tunnel = ServiceProcess([
                str(BIN / "pipeops-tunnel"), "--config", str(config),
                "--api-url", self.cp.url, "--state-dir", str(self.state),
                "--kubeconfig", self.kubesim.kubeconfig, "--grpc-port", "0",
                "--set", "kubernetes.in_cluster=false", "--set", "metrics.tunnel=0",
                "--set", "grpc.tunnel_probe=0",
                "--set", f"kubernetes.session_namespace={self.NAMESPACE}",
            ], env={"KUBERNETES_SERVICE_HOST": ""}).start()
            self.started.append(self.tunnel)
            wait_for(lambda: self._connected(), 30, what="the tunnel to connect")
        except BaseException:
            self.stop()
            raise
        return self

    def _connected(self) -> bool:
        status, body = self.cp.request("GET", f"/debug/tunnels/{self.cluster_id}")
        return status == 200 and bool(body.get("connected"))

    def stop(self) -> None:
        for thing in reversed(self.started):
            try:
                thing.stop()
            except Exception:
                pass
        self.started.clear()

    @property
    def cluster_id(self) -> str:
        return str(self.identity["cluster_id"])

    def service(self, name: str, port: int, namespace: str = "apps") -> None:
        apply(self.kubesim, {"apiVersion": "v1", "kind": "Service",
                             "metadata": {"name": name, "namespace": namespace},
                             "spec": {"clusterIP": "127.0.0.1",
                                      "ports": [{"name": "http", "port": port}]}})

    def curl(self, host: str, path: str = "/", *args: str) -> tuple[int, str]:
        """``curl -H 'Host: host'`` against the public listener: (status, body)."""
        result = subprocess.run(
            ["curl", "-sS", "-m", "20", "-o", "-", "-w", "\n%{http_code}", "-H",
             f"Host: {host}", *args, self.cp.public_url + path],
            capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        body, _, code = result.stdout.rpartition("\n")
        return int(code), body
