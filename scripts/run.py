"""``make run``: the whole agent on a laptop, no cluster needed.

Starts, as separate processes on 127.0.0.1: the local Kubernetes API (kubesim, seeded
with a small demo cluster; or, with ``--cluster real``, a real control plane built by
``make setup``: etcd, kube-apiserver, controller manager, scheduler and kwok nodes) unless
``--kubeconfig`` names a real cluster, the dev control plane, and the four services with
the same config the chart renders, route sync on. With kubesim it also starts a small real
HTTP app (``pipeops_controlplane.demoapp``) behind the demo Ingress ``demo.example.test``
(its Service is seeded with the demo cluster), so
``curl -H 'Host: demo.example.test' <gateway.public_url>`` answers through the control
plane's public listener and the tunnel.

What does not depend on each other starts at once (kubesim, the control plane and the
demo app; then the four services), and each thing a person wants is announced on stdout
the moment it answers, one human line each (``make run | LABEL  TEXT``: the cluster, the
dashboard with its token, a grpcurl line, kubectl through the tunnel, the demo's curl
line). When everything answers it writes ``.run/endpoints.json`` (DESIGN.md; mode 0600,
it holds the dashboard token) with the same lines under ``lines``, so people, scripts and
tests find what is running; on Ctrl-C or SIGTERM (also during startup), or when any
process dies, it stops everything it started and removes the file. Each process's output
goes to ``.run/logs/NAME.log`` (mode 0600, every token masked: the kubeconfig holds
kubesim's admin token, no log does; see run_child.py).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from run_child import Child, masker

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
INSTALL_TOKEN = "dev-install-token"
AGENT_NAMESPACE = "pipeops-system"
SESSION_NAMESPACE = "pipeops-sessions"
DEMO_HOST = "demo.example.test"
DEMO_NAMESPACE = "demo"
SERVICES = ("registrar", "tunnel", "gateway", "http-api")
# How the images run the services (docker/base.Dockerfile's runtime ENV; tests/images
# holds the two together): one malloc arena; no docstrings or asserts in memory.
IMAGE_ENV = {"MALLOC_ARENA_MAX": "1", "PYTHONOPTIMIZE": "2"}
T = TypeVar("T")
masker.register(INSTALL_TOKEN)


class Stopped(Exception):
    """Ctrl-C or SIGTERM arrived while things were starting."""


def demo_seed(app_port: int) -> dict[str, Any]:
    """kubesim's demo cluster (``kubesim.seed.demo_cluster``), the namespaces ``helm
    install`` would create, and a Service ``demo-web`` to which the demo Ingress is
    pointed (by port name). Its clusterIP is 127.0.0.1 and its port the app's: the tunnel
    resolves a Service through the API and dials clusterIP:port. Seeded, not patched after
    start: nothing waits for an API round trip, and run.py never imports ``kubernetes``."""
    from kubesim.seed import demo_cluster

    items = demo_cluster()
    for obj in items:
        if obj["kind"] == "Ingress" and obj["metadata"]["name"] == "demo":
            obj["spec"]["rules"] = [{"host": DEMO_HOST, "http": {"paths": [{
                "path": "/", "pathType": "Prefix",
                "backend": {"service": {"name": "demo-web", "port": {"name": "http"}}}}]}}]
    items += [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
              for ns in (AGENT_NAMESPACE, SESSION_NAMESPACE)]
    items.append({"apiVersion": "v1", "kind": "Service",
                  "metadata": {"name": "demo-web", "namespace": DEMO_NAMESPACE},
                  "spec": {"clusterIP": "127.0.0.1", "ports": [
                      {"name": "http", "port": app_port, "targetPort": app_port}]}})
    return {"apiVersion": "v1", "kind": "List", "items": items}


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now, never handed out before by this run, and below the
    kernel's ephemeral range: the ports the OS picks for a bind to port 0 (the control
    plane's tunnel endpoint and forward listeners, which bind while the services start)
    never collide with the ones picked here for the services to bind a moment later."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    for _ in range(200):
        port = random.randrange(15000, low) if low > 16000 else 0
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def shown(path: str | Path) -> str:
    """A path as a person would type it here: relative when under the current folder."""
    absolute = Path(path).resolve()
    with contextlib.suppress(ValueError):
        return str(absolute.relative_to(Path.cwd()))
    return str(absolute)


def command(name: str) -> str:
    """The program to print in a line: the venv's or .tools/bin's, else the bare name."""
    for folder in (BIN, ROOT / ".tools" / "bin"):
        if (folder / name).exists():
            return shown(folder / name)
    return shutil.which(name) or name


def line(label: str, text: str) -> str:
    return f"make run | {label:<9} {text}"


def http_ok(url: str, headers: dict[str, str] | None = None, timeout: float = 2) -> bool:
    with contextlib.suppress(OSError):
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return bool(reply.status == 200)
    return False


class Stack:
    def __init__(self, args: argparse.Namespace, stop: threading.Event) -> None:
        self.args = args
        self.stop = stop
        self.run_dir = Path(args.run_dir).resolve()
        self.log_dir = self.run_dir / "logs"
        self.state_dir = self.run_dir / "state"
        self.endpoints_path = self.run_dir / "endpoints.json"
        self.children: list[Child] = []
        self.endpoints: dict[str, Any] = {}
        self.lines: dict[str, str] = {}
        self.realkube: Any = None
        self.started = time.monotonic()
        self._out = threading.Lock()  # one line at a time on the terminal
        self._failed = threading.Event()
        self.dashboard_token = ""

    def port(self, default: int) -> int:
        return free_port() if self.args.free_ports else default

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        child = Child(name, argv, self.log_dir, env or {},
                      None if self.args.quiet else sys.stdout, self._out)
        self.children.append(child)
        return child

    def say(self, label: str, text: str) -> None:
        """One human line on stdout, kept for endpoints.json's ``lines``."""
        self.lines[label] = text
        with self._out:
            print(line(label, text), flush=True)

    def until(self, what: str, check: Callable[[], T | None], timeout: float,
              see: Child | None = None, interval: float = 0.05) -> T:
        """Poll ``check`` until it returns something; fail at once when a child dies, on
        Ctrl-C (``Stopped``), or when another wait has failed."""
        deadline = time.monotonic() + timeout
        while True:
            if self.stop.is_set():
                raise Stopped
            if self._failed.is_set():
                raise RuntimeError(f"{what}: given up (something else failed)")
            result = check()
            if result is not None:
                return result
            for child in self.children:
                if child.proc.poll() is not None:
                    raise RuntimeError(f"{child.name} exited with {child.proc.returncode}; "
                                       f"see {child.log_path}")
            if time.monotonic() > deadline:
                hint = f"; see {see.log_path}" if see else ""
                raise RuntimeError(f"{what} after {timeout:.0f} s{hint}")
            time.sleep(interval)

    def ready_line(self, child: Child, timeout: float = 30) -> dict[str, Any]:
        return self.until(f"{child.name} did not start",
                          lambda: child.find(lambda r: r.get("event") == "ready"), timeout,
                          child)

    def up(self) -> None:
        for folder in (self.log_dir, self.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.endpoints_path.unlink(missing_ok=True)
        kubeconfig = self.args.kubeconfig
        # A cluster started here is reached as a pod reaches its own (below): this folder
        # is its ServiceAccount volume (token, ca.crt)
        token_file = self.run_dir / "serviceaccount" / "token"
        token_file.parent.mkdir(mode=0o700, exist_ok=True)
        app = kubesim = None
        # The control plane first, the slowest to start. Its port is picked here, so the
        # services need not wait for it to answer: the registrar's first call waits on its
        # import of the Kubernetes client and its read of the cluster, by when the control
        # plane listens (else it retries after at most pipeops.reconnect.backoff_base).
        cp_url = f"http://127.0.0.1:{free_port()}"
        tls = ["--tunnel-tls-dir", str(self.run_dir / "controlplane")] if self.args.tunnel_tls \
            else []
        controlplane = self.start("controlplane", [
            str(BIN / "pipeops-dev-controlplane"), "--host", "127.0.0.1",
            "--port", cp_url.rsplit(":", 1)[1],
            "--public-port", str(self.port(self.args.public_port)), "--token", INSTALL_TOKEN,
            *tls])
        if kubeconfig is None and self.args.cluster == "real":
            kubeconfig = self._start_realkube(token_file)
        elif kubeconfig is None:
            # kubesim, seeded with the demo cluster and the demo app's Service, beside the
            # app itself and the control plane: none of the three waits for another
            app_port = self.port(self.args.demo_port)
            seed = self.run_dir / "kubesim-seed.json"
            seed.write_text(json.dumps(demo_seed(app_port)))
            app = self.start("demoapp", [str(BIN / "python"), "-m", "pipeops_controlplane.demoapp",
                                         "--port", str(app_port), "--name", "demo"])
            kubesim = self.start("kubesim", [
                str(BIN / "pipeops-kubesim"), "--host", "127.0.0.1", "--port", "0",
                "--data-dir", str(self.run_dir / "kubesim"), "--seed", str(seed)])
        if kubesim is not None:
            ready = self.ready_line(kubesim)
            kubeconfig = ready["kubeconfig"]
            masker.register(ready["token"])
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(ready["token"])
            shutil.copyfile(ready["ca"], token_file.parent / "ca.crt")
            self.endpoints["kubesim"] = {"url": ready["url"], "kubeconfig": kubeconfig}
        self.say("cluster", f"{command('kubectl')} --kubeconfig {shown(kubeconfig)} get pods -A"
                            f"   # {self._cluster_name()}, directly")
        ca_file = None
        if self.args.tunnel_tls:  # the CA file the services load is written at its start
            ca_file = Path(self.ready_line(controlplane)["tunnel_ca_file"])
        services = self._start_services(cp_url, ca_file, str(kubeconfig), token_file)
        cp = self.ready_line(controlplane)
        if cp["url"] != cp_url:
            raise RuntimeError(f"the control plane listens on {cp['url']}, not {cp_url}")
        self.endpoints["controlplane"] = {"url": cp["url"], "tunnel_url": cp["tunnel_url"]}
        if cp.get("tunnel_ca_file"):
            self.endpoints["controlplane"]["tunnel_ca_file"] = cp["tunnel_ca_file"]

        waits: list[Callable[[], None]] = [
            lambda: self._announce_grpc(services),
            lambda: self._announce_dashboard(services["http-api"]),
        ]
        if "kubesim" in self.endpoints or "realkube" in self.endpoints:
            waits.append(lambda: self._announce_tunnel(cp["url"], str(kubeconfig),
                                                       services["tunnel"]))
        if app is not None:
            waits.append(lambda: self._announce_demo(app, cp["public_url"], services["gateway"]))
        with concurrent.futures.ThreadPoolExecutor(len(waits), "announce") as pool:
            futures = [pool.submit(wait) for wait in waits]
            errors = []
            for future in concurrent.futures.as_completed(futures):
                error = future.exception()
                if error is not None:
                    self._failed.set()  # the other waits give up at once
                    errors.append(error)
        if self.stop.is_set() or any(isinstance(e, Stopped) for e in errors):
            raise Stopped
        if errors:
            raise next((e for e in errors if "given up" not in str(e)), errors[0])
        self.endpoints["lines"] = dict(self.lines)
        tmp = self.endpoints_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # the dashboard token
        with os.fdopen(fd, "w") as out:
            out.write(json.dumps(self.endpoints, indent=2) + "\n")
        tmp.replace(self.endpoints_path)
        if not self.args.quiet:  # the lines again, together, below the children's logs
            with self._out:
                for label, text in self.lines.items():
                    print(line(label, text), flush=True)
        self.say("up", f"everything answers ({time.monotonic() - self.started:.1f} s); "
                       f"endpoints in {shown(self.endpoints_path)}; Ctrl-C stops it all")

    def _cluster_name(self) -> str:
        if "kubesim" in self.endpoints:
            return "kubesim"
        return "the real control plane" if self.realkube is not None else "your cluster"

    def _start_services(self, cp_url: str, ca_file: Path | None, kubeconfig: str,
                        token_file: Path) -> dict[str, Child]:
        http_port = self.port(self.args.http_port)
        self.endpoints["http_api"] = {"url": f"http://127.0.0.1:{http_port}"}
        # A cluster started here (kubesim, the real control plane) is reached as a pod
        # reaches its own: the in-cluster loader, KUBERNETES_SERVICE_HOST/PORT and the
        # ServiceAccount folder (the client's kubeconfig loader would add pydantic, +9 MiB a
        # service); a cluster named by --kubeconfig through its kubeconfig.
        ours = next((self.endpoints[k]["url"] for k in ("kubesim", "realkube")
                     if k in self.endpoints), None)
        api_env: dict[str, str] = {}
        if ours is not None and token_file.exists():
            api = urllib.parse.urlsplit(ours)
            api_env = {"KUBERNETES_SERVICE_HOST": api.hostname or "127.0.0.1",
                       "KUBERNETES_SERVICE_PORT": str(api.port or 443)}
            cluster = ["--set", "kubernetes.in_cluster=true"]
        else:
            cluster = ["--kubeconfig", kubeconfig, "--set", "kubernetes.in_cluster=false"]
        common = [
            "--api-url", cp_url, "--state-dir", str(self.state_dir),
            "--cluster-name", "dev-cluster", *cluster,
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
        if ca_file is not None:  # wss://: the agent trusts the control plane's CA
            common += ["--set", f"pipeops.tls.ca_file={ca_file}"]
        # MALLOC_ARENA_MAX and PYTHONOPTIMIZE as the images set them (docker/base.Dockerfile)
        env = {"PIPEOPS_TOKEN": INSTALL_TOKEN, **IMAGE_ENV, **api_env}
        # A fresh dashboard token each run, for the http-api only (it never logs it).
        self.dashboard_token = secrets.token_urlsafe(24)
        services = {}
        for name in SERVICES:
            extra = ["--host", "127.0.0.1"] if name == "http-api" else []
            own = {"PIPEOPS_DASHBOARD_TOKEN": self.dashboard_token} if name == "http-api" \
                else {}
            services[name] = self.start(name, [str(BIN / f"pipeops-{name}"), *common, *extra],
                                        {**env, **own})
        return services

    def _announce_grpc(self, services: dict[str, Child]) -> None:
        grpc = {}
        for name, child in services.items():
            started = self.until(f"{name} did not start",
                                 lambda c=child: c.find(lambda r: r.get("msg") == "started"),
                                 30, child)
            grpc[name.replace("-", "_")] = started["grpc"]
        self.endpoints["grpc"] = {k: v for k, v in grpc.items() if k != "http_api"}
        self.endpoints["http_api"]["grpc"] = grpc["http_api"]
        others = ", ".join(f"{name} {grpc[name.replace('-', '_')]}" for name in SERVICES[1:])
        self.say("grpc", f"{command('grpcurl')} -plaintext {grpc['registrar']} "
                         f"pipeops.agent.v1.Service/Describe   # registrar; {others}")

    def _announce_dashboard(self, http_api: Child) -> None:
        url = self.endpoints["http_api"]["url"]
        self.until("the http-api did not answer", lambda: http_ok(f"{url}/health") or None,
                   30, http_api)
        self.endpoints["http_api"].update(token=self.dashboard_token,
                                          dashboard=f"{url}/dashboard")
        self.say("dashboard", f"{url}/dashboard   token {self.dashboard_token}")

    def _announce_tunnel(self, cp_url: str, kubeconfig: str, tunnel: Child) -> None:
        """A kubeconfig whose server is the control plane's ``kubernetes-api`` port: kubectl
        with it reaches the cluster through the tunnel (TLS passes through end to end)."""
        from pipeops_controlplane.tunnel.kubeconfig import (
            TunnelNotReady,
            kubeconfig_through_tunnel,
        )

        out = self.run_dir / "tunnel.kubeconfig"
        server_name = "kubernetes" if self.realkube is not None else "kubesim.local"

        def written() -> Path | None:
            with contextlib.suppress(TunnelNotReady, OSError):
                return kubeconfig_through_tunnel(cp_url, kubeconfig, out,
                                                 tls_server_name=server_name, wait=0)
            return None

        path = self.until("the tunnel did not connect", written, 60, tunnel, interval=0.1)
        self.endpoints["tunnel"] = {"kubeconfig": str(path)}
        self.say("kubectl", f"{command('kubectl')} --kubeconfig {shown(path)} get pods -A"
                            "   # the cluster through the tunnel")

    def _announce_demo(self, app: Child, public_url: str, gateway: Child) -> None:
        """Once the demo host answers 200 through the public listener (the route synced,
        the tunnel connected and allowed to dial the demo Service)."""
        self.ready_line(app)
        self.until(f"{DEMO_HOST} did not answer through {public_url}",
                   lambda: http_ok(public_url + "/", {"Host": DEMO_HOST}) or None, 60, gateway,
                   interval=0.1)
        self.endpoints["gateway"] = {"public_url": public_url, "demo_host": DEMO_HOST}
        self.say("demo", f"curl -H 'Host: {DEMO_HOST}' {public_url}/"
                         "   # the demo app, through the control plane and the tunnel")

    def _start_realkube(self, token_file: Path) -> str:
        """The real control plane (dev/realkube), with the namespaces helm would create;
        the services use its admin token, as they use kubesim's."""
        from realkube.testing import RealKube

        with self._out:
            print("make run | starting the real control plane (etcd, kube-apiserver, "
                  "controller manager, scheduler, kwok)", flush=True)
        self.realkube = RealKube(nodes=2).start()
        for ns in (AGENT_NAMESPACE, SESSION_NAMESPACE):
            self.realkube.apply({"apiVersion": "v1", "kind": "Namespace",
                                 "metadata": {"name": ns}})
        masker.register(self.realkube.token)  # never in a log, as kubesim's
        fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.realkube.token)
        shutil.copyfile(self.realkube.ca, token_file.parent / "ca.crt")
        self.endpoints["realkube"] = {"url": self.realkube.url,
                                      "kubeconfig": self.realkube.kubeconfig,
                                      "logs": str(self.realkube.dir)}
        return str(self.realkube.kubeconfig)

    def wait(self) -> int:
        while not self.stop.wait(0.2):
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
        """The four services at once (each says goodbye to the control plane), then the
        rest at once; a child that ignores SIGTERM for 5 s is killed."""
        self.endpoints_path.unlink(missing_ok=True)
        for group in ([c for c in self.children if c.name in SERVICES],
                      [c for c in self.children if c.name not in SERVICES]):
            for child in group:
                child.terminate()
            for child in group:
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
    parser.add_argument("--quiet", action="store_true",
                        help="the children's logs only to .run/logs (the make run lines stay)")
    parser.add_argument("--tunnel-tls", action="store_true",
                        help="the production path: the control plane's tunnel endpoint serves "
                             "wss:// with a throwaway CA (.run/controlplane/ca.crt), which the "
                             "agent trusts through pipeops.tls.ca_file")
    args = parser.parse_args()

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stack = Stack(args, stop)
    try:
        stack.up()
        return stack.wait()
    except Stopped:
        return 0
    except RuntimeError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.down()


if __name__ == "__main__":
    sys.exit(main())
