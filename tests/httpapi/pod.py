"""The whole pod as real processes: the http-api tests and the user journey (tests/e2e).

A cluster, the dev control plane, then the registrar, tunnel, gateway and http-api, each
on its own free loopback ports, wired as in the chart (the same gRPC and metrics ports
for every container, one config file). The cluster is a kubesim of the pod's own, or a
``world`` of tests/clusters.py (the session's kubesim or real control plane), where the
agent's and the sessions' namespaces are the pod's own. ``http_api(...)`` starts a
further http-api on the same siblings, with its own settings: one whose ``grpc.<sibling>``
points where nothing listens sees that sibling down, without disturbing the pod the other
tests use.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from kubesim.testing import Kubesim
from pipeops_controlplane.testing import ControlPlane
from tests.clusters import Cluster
from tests.helpers import BIN, ServiceProcess, free_port, wait_for
from tests.registrar.harness import sa_token_file

AGENT_NAMESPACE = "pipeops-system"
SESSION_NAMESPACE = "pipeops-sessions"
SIBLINGS = ("registrar", "tunnel", "gateway")


class HttpApi(ServiceProcess):
    def __init__(self, argv: list[str], env: dict[str, str], port: int, token: str,
                 ca_file: str = "") -> None:
        super().__init__(argv, env)
        self.port = port
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    @property
    def url(self) -> str:
        return f"{'https' if self.context else 'http'}://127.0.0.1:{self.port}"

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 30
                ) -> tuple[int, Any, dict[str, str]]:
        """(status, decoded JSON or text, headers); ``token=""`` sends none."""
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json"} if data is not None else {}
        use = self.token if token is None else token
        if use:
            sent["Authorization"] = f"Bearer {use}"
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={**sent, **(headers or {})})
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=self.context) as reply:
                status, raw, got = reply.status, reply.read(), dict(reply.headers)
        except urllib.error.HTTPError as exc:
            status, raw, got = exc.code, exc.read(), dict(exc.headers)
        text = raw.decode()
        try:
            return status, json.loads(text), got
        except ValueError:
            return status, text, got

    def get(self, path: str, **kw: Any) -> Any:
        status, body, _ = self.request("GET", path, **kw)
        assert status == 200, (path, status, body)
        return body

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = self.get("/metrics", token="")
        out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return sum(v for (n, ls), v in self.metrics().items()
                   if n == name and set(labels.items()) <= set(ls))

    def wait_serving(self, timeout: float = 30) -> HttpApi:
        def serving() -> bool:
            with contextlib.suppress(OSError):
                return self.request("GET", "/health", token="", timeout=2)[0] == 200
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError("the http-api exited:\n" + "\n".join(
                    self.lines[-20:] + self.stderr_lines[-20:]))
            return False

        wait_for(serving, timeout, what="the http-api to serve")
        return self


class Pod:
    """``config``: more of the agent's config file (merged over the tunnel's forwards)."""

    def __init__(self, folder: Path, heartbeat_interval: float = 0.5, *,
                 world: Cluster | None = None, config: dict[str, Any] | None = None,
                 cp_args: list[str] | None = None) -> None:
        self.folder = folder
        self.interval = heartbeat_interval
        self.world = world
        self.extra_config = config or {}
        self.cp_args = cp_args or ["--tunnel-ping-interval", "1", "--tunnel-ping-timeout", "5"]
        self.token = "dash-" + secrets.token_hex(16)
        self.grpc = {name: free_port() for name in (*SIBLINGS, "http_api")}
        self.metrics_ports = {name: free_port() for name in SIBLINGS}
        self.http_port = free_port()
        self.agent_namespace, self.session_namespace = AGENT_NAMESPACE, SESSION_NAMESPACE
        self.started: list[Any] = []
        self.services: dict[str, ServiceProcess] = {}

    def start(self) -> Pod:
        try:
            if self.world is None:
                seed = self.folder / "namespaces.yaml"
                seed.write_text("".join(
                    f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
                    for ns in (AGENT_NAMESPACE, SESSION_NAMESPACE)))
                self.kubesim = Kubesim(demo=True, seeds=[seed]).start()
                self.started.append(self.kubesim)
                self.world = Cluster("kubesim", self.kubesim)
            else:  # a shared cluster: namespaces of the pod's own, deleted at stop
                self.agent_namespace = self.world.create_namespace("agent")
                self.session_namespace = self.world.create_namespace("sessions")
            self.cp = ControlPlane(extra_args=self.cp_args).start()
            self.started.append(self.cp)
            self.state = self.folder / "state"
            self.state.mkdir()
            self.sa_token = sa_token_file(self.folder, self.world.token)
            self.config = self._write_config()
            # all four at once, as the kubelet starts a pod's containers
            for name in SIBLINGS:
                self.services[name] = self.service(name, wait=False)
            self.api = self.http_api()
            for proc in self.services.values():
                proc.wait_started(30)
            self.identity = wait_for(self._registered, 30, what="registration")
            # started at once, the tunnel may connect after the registration is stored:
            # a pod is up once the control plane has its tunnel too
            wait_for(self.tunnel_connected, 30, what="the tunnel connected")
        except BaseException:
            self.stop()
            raise
        return self

    def _write_config(self) -> Path:
        """The tunnel's forwards as in the chart: the API server and this pod's HTTP API."""
        assert self.world is not None
        forwards = [{"name": "kubernetes-api", "local_addr": f"127.0.0.1:{self.world.port}"},
                    {"name": "agent-http", "local_addr": f"127.0.0.1:{self.http_port}"}]
        config: dict[str, Any] = {"tunnel": {"forwards": forwards}}
        for section, values in self.extra_config.items():
            config[section] = {**config.get(section, {}), **values}
        path = self.folder / "agent.yaml"
        path.write_text(yaml.safe_dump(config))
        return path

    def tunnel_connected(self) -> bool:
        """The control plane's side: it holds this cluster's tunnel."""
        status, body = self.cp.request("GET", f"/debug/tunnels/{self.cluster_id}")
        return status == 200 and bool(body.get("connected"))

    def _registered(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.state / "identity.json").read_text())["data"]
        except (FileNotFoundError, ValueError):
            return None
        return data if data.get("state") == "registered" else None

    def argv(self, name: str, grpc: dict[str, int] | None = None) -> list[str]:
        ports = {**self.grpc, **(grpc or {})}
        assert self.world is not None
        return [
            str(BIN / f"pipeops-{name}"), "--config", str(self.config), "--api-url", self.cp.url,
            "--state-dir", str(self.state), "--kubeconfig", self.world.kubeconfig,
            "--cluster-name", "httpapi-test",
            "--set", "kubernetes.in_cluster=false",
            "--set", f"kubernetes.service_account_token_path={self.sa_token}",
            "--set", f"kubernetes.namespace={self.agent_namespace}",
            "--set", f"kubernetes.session_namespace={self.session_namespace}",
            "--set", f"pipeops.heartbeat_interval={self.interval}",
            "--set", "pipeops.reconnect.backoff_base=0.1",
            "--set", "pipeops.reconnect.backoff_max=1",
            *(a for n, p in ports.items() for a in ("--set", f"grpc.{n}={p}")),
            *(a for n, p in self.metrics_ports.items() for a in ("--set", f"metrics.{n}={p}")),
            "--set", "grpc.probe_host=",
        ]

    def service(self, name: str, *, wait: bool = True) -> ServiceProcess:
        proc = ServiceProcess(self.argv(name), env={"PIPEOPS_TOKEN": self.cp.token}).start()
        self.started.append(proc)
        if wait:
            proc.wait_started(30)
        return proc

    def http_api(self, *extra: str, grpc: dict[str, int] | None = None,
                 token: str | None = None, env: dict[str, str] | None = None,
                 ca_file: str = "") -> HttpApi:
        """A further http-api (``ca_file``: it serves HTTPS with a certificate of that CA,
        given in ``extra``)."""
        use = self.token if token is None else token
        ports = dict(grpc or {})
        port = self.http_port
        if hasattr(self, "api"):  # a further http-api: its own HTTP and gRPC ports
            port = free_port()
            ports.setdefault("http_api", free_port())
        proc = HttpApi([*self.argv("http-api", ports), "--host", "127.0.0.1",
                        "--port", str(port), *extra],
                       {"PIPEOPS_TOKEN": self.cp.token, "PIPEOPS_DASHBOARD_TOKEN": use,
                        **(env or {})}, port, use, ca_file)
        proc.start()
        self.started.append(proc)
        return proc.wait_serving()

    def stop(self) -> None:
        for thing in reversed(self.started):
            with contextlib.suppress(Exception):
                thing.stop()
        self.started.clear()
        if self.world is not None and self.agent_namespace != AGENT_NAMESPACE:
            for namespace in (self.agent_namespace, self.session_namespace):
                with contextlib.suppress(Exception):  # what the agent made goes with it
                    self.world.request("DELETE", f"/api/v1/namespaces/{namespace}")

    @property
    def cluster_id(self) -> str:
        return str(self.identity["cluster_id"])

    @property
    def agent_id(self) -> str:
        return str(self.identity["agent_id"])
