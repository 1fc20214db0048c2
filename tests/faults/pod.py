"""The whole pod as real processes, for the fault tests: break one thing, prove nothing is
lost.

``FaultPod`` is the http-api tests' pod (kubesim with its demo cluster, the dev control
plane, the four containers on their own loopback ports, tests/httpapi/pod.py) with route
sync on and short timers, plus what a fault test needs: ``respawn(name)`` SIGKILLs a
container and starts it again with the same command line and ports; ``describe(name)``
asks a container's ``Service/Describe``; ``routes_match()`` compares the control plane's
table with the cluster's Ingresses; ``tunnel_connected()`` reads the control plane's side.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

from tests.gateway.harness import ingress, kubectl
from tests.helpers import ServiceProcess, grpcurl, wait_for
from tests.httpapi.pod import HttpApi, Pod

# The pod's reconnect policy (Pod.argv): retries wait up to BACKOFF_MAX seconds.
BACKOFF_MAX = 1.0
PING_TIMEOUT = 2.0
APPS = "faults"  # the namespace of the tests' own Ingresses
GRPC_NAMES = {"registrar": "registrar", "tunnel": "tunnel", "gateway": "gateway",
              "http-api": "http_api"}


class FaultPod(Pod):
    def __init__(self, folder: Path) -> None:
        super().__init__(folder, heartbeat_interval=0.5)

    def start(self) -> FaultPod:
        super().start()
        try:
            status, body = self.kubesim.request("POST", "/api/v1/namespaces", {
                "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APPS}})
            assert status == 201, body
            wait_for(self.routes_match, 30, what="the demo routes published")
        except BaseException:
            self.stop()
            raise
        return self

    def argv(self, name: str, grpc: dict[str, int] | None = None) -> list[str]:
        return [*super().argv(name, grpc),
                "--set", "pipeops.timeout=2",
                "--set", "agent.enable_ingress_sync=true",
                "--set", "gateway.debounce=0.02",
                "--set", "gateway.public_wait=1",
                "--set", "tunnel.ping_interval=0.5",
                "--set", f"tunnel.ping_timeout={PING_TIMEOUT}",
                "--set", "tunnel.status_poll_interval=0.2"]

    # --- the containers -----------------------------------------------------------------

    def process(self, name: str) -> ServiceProcess:
        return self.api if name == "http-api" else self.services[name]

    def kill(self, name: str) -> None:
        """SIGKILL the container ``name`` (no goodbye: no last heartbeat, no close frame)."""
        old = self.process(name)
        assert old.proc is not None and old.proc.poll() is None, f"{name} is not running"
        old.proc.send_signal(signal.SIGKILL)
        old.proc.wait(10)
        old.stop()  # reads its pipes to the end

    def start_again(self, name: str, *extra: str) -> ServiceProcess:
        """Start the killed container ``name`` again, same command line, same ports (as
        the kubelet restarts a container that died); ``extra`` arguments are added to the
        pod's own (``--set`` overrides)."""
        old = self.process(name)
        assert old.proc is not None and old.proc.poll() is not None, f"{name} still runs"
        argv = [*self.argv(name), *extra] if name != "http-api" else [*old.argv, *extra]
        new: ServiceProcess
        if isinstance(old, HttpApi):
            new = HttpApi(argv, old.env, old.port, old.token)
            new.start()
            self.started.append(new)
            self.api = new.wait_serving()
        else:
            new = ServiceProcess(argv, env=old.env).start()
            self.started.append(new)
            new.wait_started(30)
            self.services[name] = new
        return new

    def gateway_routes(self) -> list[dict[str, Any]]:
        """What the gateway says it publishes (``Gateway/ListRoutes``)."""
        done = grpcurl("-plaintext", "-d", "{}", f"127.0.0.1:{self.grpc['gateway']}",
                       "pipeops.agent.v1.Gateway/ListRoutes", timeout=30)
        assert done.returncode == 0, done.stderr
        routes: list[dict[str, Any]] = json.loads(done.stdout).get("routes", [])
        return routes

    def describe(self, name: str) -> dict[str, Any]:
        port = self.grpc[GRPC_NAMES[name]]
        done = grpcurl("-plaintext", "-d", "{}", f"127.0.0.1:{port}",
                       "pipeops.agent.v1.Service/Describe", timeout=30)
        assert done.returncode == 0, done.stderr
        reply: dict[str, Any] = json.loads(done.stdout)
        return reply

    # --- the control plane's side -------------------------------------------------------

    def heartbeats(self) -> int:
        found = self.cp.cluster(self.cluster_id)
        return int(found["heartbeat_count"]) if found else 0

    # --- routes -------------------------------------------------------------------------

    def cluster_routes(self) -> set[tuple[str, str]]:
        """(host, path) of every rule of every Ingress in the cluster."""
        listed = json.loads(kubectl(self.kubesim, "get", "ingress", "-A", "-o", "json"))
        return {(rule["host"], path["path"]) for item in listed["items"]
                for rule in item["spec"].get("rules", [])
                for path in rule.get("http", {}).get("paths", [])}

    def held_routes(self) -> set[tuple[str, str]]:
        return {(r["hostname"], r["path"]) for r in self.cp.routes(self.cluster_id)}

    def routes_match(self) -> set[tuple[str, str]] | None:
        """The published set when it equals the cluster's (and is not empty), else None."""
        wanted = self.cluster_routes()
        return wanted if wanted and self.held_routes() == wanted else None

    def add_ingress(self, name: str, host: str) -> None:
        body = ingress(name, host, namespace=APPS)
        status, reply = self.kubesim.request(
            "POST", f"/apis/networking.k8s.io/v1/namespaces/{APPS}/ingresses", body)
        assert status == 201, reply

    def delete_ingress(self, name: str) -> None:
        status, reply = self.kubesim.request(
            "DELETE", f"/apis/networking.k8s.io/v1/namespaces/{APPS}/ingresses/{name}")
        assert status == 200, reply

    # --- the whole pod, settled ---------------------------------------------------------

    def identity_now(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.state / "identity.json").read_text())["data"]
        return data

    def unsettled(self) -> str:
        """Why the pod has not converged ("" once it has): every container ready and
        up at the http-api, the tunnel connected, heartbeats delivered, routes equal."""
        for name in CONTAINERS:
            proc = self.process(name).proc
            if proc is None or proc.poll() is not None:
                return f"{name} is not running"
            try:
                state = self.describe(name)
            except (AssertionError, subprocess.TimeoutExpired) as exc:  # restarting
                return f"{name} does not answer Describe: {exc}"
            if state.get("state") != "SERVICE_STATE_READY":
                return f"{name}: {state.get('state')} {state.get('detail')}"
        up = {dict(labels).get("container"): value for (metric, labels), value
              in self.api.metrics().items() if metric == "pipeops_container_up"}
        if any(up.get(name) != 1 for name in CONTAINERS):
            return f"pipeops_container_up says {up}"
        if not self.tunnel_connected():
            return "the control plane has no tunnel"
        found = self.cp.cluster(self.cluster_id)
        if found is None or found["last_heartbeat"] is None:
            return "no heartbeat at the control plane"
        if found["last_heartbeat"].get("tunnel_status") != "connected":
            return f"the heartbeat says tunnel {found['last_heartbeat'].get('tunnel_status')}"
        if not self.routes_match():
            return f"routes held {self.held_routes()} != cluster {self.cluster_routes()}"
        return ""

    def wait_settled(self, timeout: float = 30.0) -> None:
        last = ["not asked yet"]

        def settled() -> bool:
            last[0] = self.unsettled()
            return not last[0]

        try:
            wait_for(settled, timeout, interval=0.2, what="the pod to settle")
        except AssertionError:
            raise AssertionError(f"the pod did not settle in {timeout}s: {last[0]}") from None


CONTAINERS = ("registrar", "tunnel", "gateway", "http-api")
