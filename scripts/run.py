"""``make run``: the whole agent on a laptop, no cluster needed.

Starts, as separate processes on 127.0.0.1: the local Kubernetes API (kubesim, seeded
with a small demo cluster; or, with ``--cluster real``, a real control plane built by
``make setup``: etcd, kube-apiserver, controller manager, scheduler and kwok nodes) unless
``--kubeconfig`` names a real cluster, the dev control plane, and the four services with
the same config the chart renders, route sync on. With kubesim it also starts a small real
HTTP app (``pipeops_controlplane.demoapp``) and seeds a Service that reaches it, to which
the demo Ingress ``demo.example.test`` points, so
``curl -H 'Host: demo.example.test' <gateway.public_url>`` answers through the control
plane's public listener and the tunnel. When everything
answers it writes ``.run/endpoints.json`` (DESIGN.md) so people, scripts and tests find
what is running; on Ctrl-C or SIGTERM (or when any process dies) it stops everything it
started and removes the file. Each process's output goes to ``.run/logs/NAME.log`` (mode
0600, every token masked: the kubeconfig holds kubesim's admin token, no log does).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from agentkit.logs import SecretMasker

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTALL_TOKEN = "dev-install-token"
AGENT_NAMESPACE = "pipeops-system"
SESSION_NAMESPACE = "pipeops-sessions"
DEMO_HOST = "demo.example.test"
DEMO_NAMESPACE = "demo"
# Every token seen (the install token, tokens in ready lines) is masked in what the
# children print before it reaches .run/logs (0600) or the terminal.
masker = SecretMasker()
masker.register(INSTALL_TOKEN)


def demo_service(app_port: int) -> str:
    """The Service the demo Ingress is pointed at (kubesim's demo cluster has the Ingress
    ``demo/demo`` for ``demo.example.test``; its own Service dials nothing real). Its
    clusterIP is 127.0.0.1 and its port the app's: the tunnel resolves a Service through
    the API and dials clusterIP:port."""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: demo-web, namespace: {DEMO_NAMESPACE}}}
spec:
  clusterIP: 127.0.0.1
  ports: [{{name: http, port: {app_port}, targetPort: {app_port}}}]
"""


def point_demo_ingress(kubeconfig: str) -> None:
    """The demo Ingress's backend becomes ``demo-web`` (by port name), with the official
    client, as ``kubectl patch`` would."""
    from kubernetes import client, config

    api = config.new_client_from_config(config_file=kubeconfig)
    try:
        client.NetworkingV1Api(api).patch_namespaced_ingress(DEMO_NAMESPACE, DEMO_NAMESPACE, {
            "spec": {"rules": [{"host": DEMO_HOST, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "demo-web", "port": {"name": "http"}}}}]}}]}})
    finally:
        api.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Child:
    """One started process: stdout parsed for JSON lines, everything teed to a log."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str],
                 echo: TextIO | None) -> None:
        self.name = name
        self.records: list[dict[str, Any]] = []
        self.log_path = log_dir / f"{name}.log"
        # 0600 like the kubeconfig: a log is the process's, not everyone's on the machine
        self.log_path.unlink(missing_ok=True)
        self._log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                      0o600), "w")
        self._echo = echo
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **env}, start_new_session=True,
        )
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                with contextlib.suppress(json.JSONDecodeError):
                    record = json.loads(line)
                    if isinstance(record, dict):
                        self.records.append(record)
                        # a ready line hands out a token (kubesim's admin token): it is
                        # read from the record, never written to a log or the terminal
                        for key, value in record.items():
                            if "token" in key.lower() and isinstance(value, str):
                                masker.register(value)
                line = masker.mask(line)
                with self._lock:
                    self._log.write(line)
                    self._log.flush()
                    if self._echo:
                        self._echo.write(f"{self.name:>12} | {line}")
                        self._echo.flush()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float
                 ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in list(self.records):
                if predicate(record):
                    return record
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump.join(timeout=2)
        self._log.close()


class Stack:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.run_dir = Path(args.run_dir).resolve()
        self.log_dir = self.run_dir / "logs"
        self.state_dir = self.run_dir / "state"
        self.endpoints_path = self.run_dir / "endpoints.json"
        self.children: list[Child] = []
        self.endpoints: dict[str, Any] = {}
        self.realkube: Any = None

    def port(self, default: int) -> int:
        return free_port() if self.args.free_ports else default

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, self.log_dir, env or {},
                      None if self.args.quiet else sys.stdout)
        self.children.append(child)
        return child

    def up(self) -> None:
        for folder in (self.log_dir, self.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.endpoints_path.unlink(missing_ok=True)
        kubeconfig = self.args.kubeconfig
        token_file = self.run_dir / "serviceaccount-token"

        if kubeconfig is None and self.args.cluster == "real":
            kubeconfig = self._start_realkube(token_file)
        elif kubeconfig is None:
            # The namespaces `helm install` would create: the agent's state lives in one,
            # session commands act in the other.
            seed = self.run_dir / "agent-namespaces.yaml"
            seed.write_text("".join(
                f"---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
                for ns in (AGENT_NAMESPACE, SESSION_NAMESPACE)))
            # the app behind the demo Ingress, then its Service and Ingress
            app = self.start("demoapp", [str(BIN / "python"), "-m", "pipeops_controlplane.demoapp",
                                         "--port", str(self.port(self.args.demo_port)),
                                         "--name", "demo"])
            app_url = app.wait_for(lambda r: r.get("event") == "ready", 30)["url"]
            demo = self.run_dir / "demo-service.yaml"
            demo.write_text(demo_service(int(app_url.rsplit(":", 1)[1])))
            kubesim = self.start("kubesim", [
                str(BIN / "pipeops-kubesim"), "--host", "127.0.0.1", "--port", "0",
                "--data-dir", str(self.run_dir / "kubesim"), "--demo", "--seed", str(seed),
                "--seed", str(demo)])
            ready = kubesim.wait_for(lambda r: r.get("event") == "ready", 30)
            kubeconfig = ready["kubeconfig"]
            masker.register(ready["token"])
            token_file.write_text(ready["token"])
            token_file.chmod(0o600)
            self.endpoints["kubesim"] = {"url": ready["url"], "kubeconfig": kubeconfig}
            point_demo_ingress(kubeconfig)

        tls = ["--tunnel-tls-dir", str(self.run_dir / "controlplane")] if self.args.tunnel_tls \
            else []
        controlplane = self.start("controlplane", [
            str(BIN / "pipeops-dev-controlplane"), "--host", "127.0.0.1", "--port", "0",
            "--public-port", str(self.port(self.args.public_port)), "--token", INSTALL_TOKEN,
            *tls])
        cp = controlplane.wait_for(lambda r: r.get("event") == "ready", 30)
        self.endpoints["controlplane"] = {"url": cp["url"], "tunnel_url": cp["tunnel_url"]}

        http_port = self.port(self.args.http_port)
        common = [
            "--api-url", cp["url"], "--state-dir", str(self.state_dir),
            "--cluster-name", "dev-cluster", "--kubeconfig", str(kubeconfig),
            "--set", "kubernetes.in_cluster=false",
            "--set", f"kubernetes.namespace={AGENT_NAMESPACE}",
            "--set", f"kubernetes.session_namespace={SESSION_NAMESPACE}",
            "--set", f"grpc.registrar={self.port(50051)}",
            "--set", f"grpc.tunnel={self.port(50052)}",
            "--set", f"grpc.gateway={self.port(50053)}",
            "--set", f"grpc.http_api={self.port(50054)}",
            "--set", f"metrics.registrar={self.port(9101)}",
            "--set", f"metrics.tunnel={self.port(9102)}",
            "--set", f"metrics.gateway={self.port(9103)}",
            "--set", f"agent.port={http_port}",
            "--set", "agent.enable_ingress_sync=true",
            "--log-level", self.args.log_level,
        ]
        if token_file.exists():
            common += ["--set", f"kubernetes.service_account_token_path={token_file}"]
        if cp.get("tunnel_ca_file"):  # wss://: the agent trusts the control plane's CA
            common += ["--set", f"pipeops.tls.ca_file={cp['tunnel_ca_file']}"]
            self.endpoints["controlplane"]["tunnel_ca_file"] = cp["tunnel_ca_file"]
        # MALLOC_ARENA_MAX as the images set it (docker/base.Dockerfile): one malloc arena
        env = {"PIPEOPS_TOKEN": INSTALL_TOKEN, "MALLOC_ARENA_MAX": "1"}
        # A fresh dashboard token each run, for the http-api only (it never logs it).
        dashboard_token = secrets.token_urlsafe(24)
        services = {}
        # As in a pod, the tunnel finds the API server in KUBERNETES_SERVICE_HOST/PORT (its
        # kubernetes-api forward then needs no kubeconfig read, and no `kubernetes` import).
        api_env = {}
        if "kubesim" in self.endpoints:
            api = urllib.parse.urlsplit(self.endpoints["kubesim"]["url"])
            api_env = {"KUBERNETES_SERVICE_HOST": api.hostname or "127.0.0.1",
                       "KUBERNETES_SERVICE_PORT": str(api.port or 443)}
        for name in ("registrar", "tunnel", "gateway", "http-api"):
            extra = ["--host", "127.0.0.1"] if name == "http-api" else []
            own = {"PIPEOPS_DASHBOARD_TOKEN": dashboard_token} if name == "http-api" else {}
            services[name] = self.start(name, [str(BIN / f"pipeops-{name}"), *common, *extra],
                                        {**env, **own, **(api_env if name == "tunnel" else {})})
        grpc = {}
        for name, child in services.items():
            started = child.wait_for(lambda r: r.get("msg") == "started", 30)
            grpc[name.replace("-", "_")] = started["grpc"]
        self.endpoints["grpc"] = {k: v for k, v in grpc.items() if k != "http_api"}
        self.endpoints["http_api"] = {"url": f"http://127.0.0.1:{http_port}",
                                      "grpc": grpc["http_api"], "token": dashboard_token,
                                      "dashboard": f"http://127.0.0.1:{http_port}/dashboard"}
        self._wait_http(f"http://127.0.0.1:{http_port}/health", 30)
        if "kubesim" in self.endpoints or "realkube" in self.endpoints:
            self.endpoints["tunnel"] = {"kubeconfig": str(self._tunnel_kubeconfig(
                cp["url"], kubeconfig, services["tunnel"]))}
        if "kubesim" in self.endpoints:
            self._wait_demo(cp["public_url"], 60, services["gateway"])
            self.endpoints["gateway"] = {"public_url": cp["public_url"], "demo_host": DEMO_HOST}
        tmp = self.endpoints_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.endpoints, indent=2) + "\n")
        tmp.replace(self.endpoints_path)
        print(f"make run: everything is up; endpoints in {self.endpoints_path}\n"
              f"make run: dashboard {self.endpoints['http_api']['dashboard']}  "
              f"token {dashboard_token}", file=sys.stderr, flush=True)

    def _start_realkube(self, token_file: Path) -> str:
        """The real control plane (dev/realkube), with the namespaces helm would create;
        the services use its admin token, as they use kubesim's."""
        from realkube.testing import RealKube

        print("make run: starting the real control plane (etcd, kube-apiserver, "
              "controller manager, scheduler, kwok)", file=sys.stderr, flush=True)
        self.realkube = RealKube(nodes=2).start()
        for ns in (AGENT_NAMESPACE, SESSION_NAMESPACE):
            self.realkube.apply({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": ns}})
        masker.register(self.realkube.token)  # never in a log, as kubesim's
        token_file.write_text(self.realkube.token)
        token_file.chmod(0o600)
        self.endpoints["realkube"] = {"url": self.realkube.url,
                                      "kubeconfig": self.realkube.kubeconfig,
                                      "logs": str(self.realkube.dir)}
        return str(self.realkube.kubeconfig)

    def _tunnel_kubeconfig(self, cp_url: str, kubeconfig: str, tunnel: Child) -> Path:
        """A kubeconfig whose server is the control plane's ``kubernetes-api`` port: kubectl
        with it reaches kubesim through the tunnel (TLS passes through end to end)."""
        from pipeops_controlplane.tunnel import TunnelNotReady, kubeconfig_through_tunnel

        out = self.run_dir / "tunnel.kubeconfig"
        try:
            server_name = "kubernetes" if self.realkube is not None else "kubesim.local"
            kubeconfig_through_tunnel(cp_url, kubeconfig, out, tls_server_name=server_name,
                                      wait=60)
        except TunnelNotReady as exc:
            raise RuntimeError(f"the tunnel did not connect ({exc}); see {tunnel.log_path}"
                               ) from exc
        return out

    def _wait_demo(self, public_url: str, timeout: float, gateway: Child) -> None:
        """Until the demo host answers 200 through the public listener (the route synced,
        the tunnel connected and allowed to dial the demo Service)."""
        import urllib.request

        deadline = time.monotonic() + timeout
        request = urllib.request.Request(public_url + "/", headers={"Host": DEMO_HOST})
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(request, timeout=2) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.2)
        raise RuntimeError(f"{DEMO_HOST} did not answer through {public_url}; see "
                           f"{gateway.log_path}")

    def _wait_http(self, url: str, timeout: float) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=1) as reply:
                    if reply.status == 200:
                        return
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not answer")

    def wait(self, stop: threading.Event) -> int:
        while not stop.wait(0.2):
            for child in self.children:
                if child.proc.poll() is not None:
                    print(f"make run: {child.name} exited with {child.proc.returncode}; "
                          f"see {child.log_path}", file=sys.stderr, flush=True)
                    return 1
            if self.realkube is not None:
                for name in ("etcd", "kube-apiserver", "kwok"):
                    if not self.realkube.process(name).alive():
                        print(f"make run: {name} exited; see {self.realkube.dir}",
                              file=sys.stderr, flush=True)
                        return 1
        return 0

    def down(self) -> None:
        self.endpoints_path.unlink(missing_ok=True)
        for child in reversed(self.children):
            child.stop()
        if self.realkube is not None:
            self.realkube.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", help="use this real cluster instead of kubesim")
    parser.add_argument("--cluster", choices=("kubesim", "real"), default="kubesim",
                        help="without --kubeconfig: kubesim, or the real control plane "
                             "`make setup` builds (Go >= 1.26)")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--public-port", type=int, default=8088,
                        help="the control plane's public listener (the demo Ingress)")
    parser.add_argument("--demo-port", type=int, default=8089,
                        help="the small HTTP app behind the demo Ingress")
    parser.add_argument("--free-ports", action="store_true",
                        help="pick free ports for everything (tests, busy laptops)")
    parser.add_argument("--run-dir", default=str(ROOT / ".run"))
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--quiet", action="store_true", help="logs only to .run/logs")
    parser.add_argument("--tunnel-tls", action="store_true",
                        help="the production path: the control plane's tunnel endpoint serves "
                             "wss:// with a throwaway CA (.run/controlplane/ca.crt), which the "
                             "agent trusts through pipeops.tls.ca_file")
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(args)
    try:
        stack.up()
        return stack.wait(stop)
    except RuntimeError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
