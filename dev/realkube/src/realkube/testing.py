"""Start a real Kubernetes control plane from tests: etcd, kube-apiserver, the controller
manager, the scheduler and kwok's fake nodes, all built from the Go module proxy into
.tools/bin by `make setup` (scripts/build-realkube.sh).

Usage, with the shape of `kubesim.testing.Kubesim` (sync, or `async with`; each start makes
a fresh cluster on free loopback ports in a temporary directory and stops it on exit):

    from realkube.testing import RealKube

    with RealKube(nodes=2) as rk:
        rk.url, rk.kubeconfig, rk.ca, rk.token, rk.port      # token: the admin's
        subprocess.run(rk.kubectl_args + ["get", "nodes"])
        rk.request("GET", "/api/v1/pods")                   # (status, parsed JSON)
        rk.service_account_token("ns", "name")              # a TokenRequest, real JWT
        rk.restart_apiserver(downtime=0.5)                  # watches end, then it is back
        rk.compact()                                        # etcd compaction: old RVs 410

The API server runs with RBAC and Node authorizers, its own CA, ServiceAccount signing
keys and an admin token in system:masters (a static token file, so a kubeconfig's token
can be swapped for another identity's, as with kubesim). Components use a client
certificate. kwok marks the nodes Ready (leases renewed) and the Pods the scheduler binds
to them Running and Ready, and serves logs, exec and port-forward for them as a kubelet
(logs from a file, exec as a local process, port-forward to an echo).
A missing binary raises RealKubeError naming it and `make setup`.
Over 400 lines because starting, configuring and talking to the five processes is one
harness with one lifetime; its PKI and ports already live in pki.py and ports.py.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import secrets
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import yaml

from realkube.pki import Pki, write_pki
from realkube.ports import find_kubectl, free_port

T = TypeVar("T")
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_IP = "10.96.0.1"
# Where the API server says it is (the "kubernetes" Service's endpoint): it refuses a
# loopback address there. Nothing dials it; it binds 127.0.0.1 only.
ADVERTISE = "192.0.2.10"
NODE_ANNOTATION = "kwok.x-k8s.io/node"
ADMIN_USER = "realkube-admin"
# What a port-forward to any pod port reaches: every byte echoed (kwok relays stdio).
ECHO = "import os\nwhile data := os.read(0, 65536):\n    os.write(1, data)\n"


class RealKubeError(RuntimeError):
    pass


def tools_dir() -> Path:
    """$REALKUBE_BIN, else the nearest `.tools/bin` above this file (what `make setup` fills)."""
    if os.environ.get("REALKUBE_BIN"):
        return Path(os.environ["REALKUBE_BIN"])
    for folder in Path(__file__).resolve().parents:
        if (folder / ".tools" / "bin").is_dir():
            return folder / ".tools" / "bin"
    return Path.cwd() / ".tools" / "bin"


def missing_binaries() -> list[str]:
    folder = tools_dir()
    return [name for name in BINARIES if not os.access(folder / name, os.X_OK)]


def kwok_share() -> Path:
    return tools_dir().parent / "share" / "kwok"


class _Process:
    """One component: its argv, a log file, SIGTERM then SIGKILL on stop."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RealKubeError(f"{self.name} exited ({self.proc.returncode}); log tail:\n"
                                + self.tail())

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None


class RealKube:
    def __init__(self, *, nodes: int = 2, watch_cache: bool = True,
                 startup_timeout: float = 90.0, extra_apiserver_args: Sequence[str] = ()
                 ) -> None:
        self.node_names = [f"kwok-node-{i}" for i in range(nodes)]
        self._watch_cache = watch_cache
        self._timeout = startup_timeout
        self._extra = list(extra_apiserver_args)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._procs: dict[str, _Process] = {}
        self._ssl: ssl.SSLContext | None = None
        self.token = "admin-" + secrets.token_hex(16)

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> RealKube:
        missing = missing_binaries()
        if missing:
            raise RealKubeError(
                f"the real control plane's binaries are missing from {tools_dir()}: "
                f"{', '.join(missing)}; run `make setup` (needs Go >= 1.26 and the Go "
                "module proxy; scripts/build-realkube.sh builds them)")
        self._tmp = tempfile.TemporaryDirectory(prefix="realkube-")
        self.dir = Path(self._tmp.name)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        started = time.monotonic()
        self.pki: Pki = write_pki(self.dir / "pki", SERVICE_IP)
        self.etcd_port, peer = free_port(), free_port()
        self.port, self.kwok_port = free_port(), free_port()
        cm_port, sched_port = free_port(), free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.ca = str(self.pki.ca.cert)
        self._ssl = ssl.create_default_context(cafile=self.ca)
        (self.dir / "tokens.csv").write_text(
            f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n')
        self.kubeconfig = str(self._write_kubeconfig("admin.kubeconfig", token=self.token))
        components = str(self._write_kubeconfig("components.kubeconfig", cert=self.pki.admin))
        self._write_kwok_config()
        etcd_url = f"http://127.0.0.1:{self.etcd_port}"
        self.etcd_url = etcd_url
        self._add("etcd", [
            "--name", "realkube", "--data-dir", str(self.dir / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"realkube=http://127.0.0.1:{peer}",
            "--unsafe-no-fsync", "--log-level", "warn", "--quota-backend-bytes", "2147483648",
        ])
        self._procs["etcd"].start()
        self._wait("etcd", lambda: _http_json(f"{etcd_url}/health").get("health") == "true")
        self._add("kube-apiserver", self._apiserver_args())
        self._procs["kube-apiserver"].start()
        self._wait("kube-apiserver", self._apiserver_ready)
        common = ["--kubeconfig", components, "--authentication-kubeconfig", components,
                  "--authorization-kubeconfig", components, "--bind-address", "127.0.0.1",
                  "--leader-elect=false"]
        self._add("kube-controller-manager", [
            *common, "--secure-port", str(cm_port), "--cert-dir", str(self.dir / "cm"),
            "--service-account-private-key-file", str(self.pki.sa_private),
            "--root-ca-file", self.ca, "--use-service-account-credentials=false",
            "--cluster-signing-cert-file", str(self.pki.ca.cert),
            "--cluster-signing-key-file", str(self.pki.ca.key),
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--concurrent-deployment-syncs", "10", "--concurrent-replicaset-syncs", "10",
        ])
        self._add("kube-scheduler", [*common, "--secure-port", str(sched_port),
                                     "--cert-dir", str(self.dir / "scheduler")])
        self._add("kwok", [
            "--kubeconfig", components, "--config", str(self.dir / "kwok.yaml"),
            "--manage-nodes-with-annotation-selector", f"{NODE_ANNOTATION}=fake",
            "--node-ip", "127.0.0.1", "--node-port", str(self.kwok_port),
            "--server-address", f"127.0.0.1:{self.kwok_port}",
            "--tls-cert-file", str(self.pki.kubelet_serving.cert),
            "--tls-private-key-file", str(self.pki.kubelet_serving.key),
            "--cidr", "10.244.0.1/16",
        ])
        for name in ("kube-controller-manager", "kube-scheduler", "kwok"):
            self._procs[name].start()
        for name, port in (("kube-controller-manager", cm_port),
                           ("kube-scheduler", sched_port), ("kwok", self.kwok_port)):
            self._wait(name, lambda p=port: _https_ok(f"https://127.0.0.1:{p}/healthz"))
        for node in self.node_names:
            self._create_node(node)
        self._wait("kwok", self._nodes_ready)
        self._wait("kube-controller-manager", lambda: self.request(
            "GET", "/api/v1/namespaces/default/serviceaccounts/default")[0] == 200)
        self.startup_seconds = time.monotonic() - started

    def _apiserver_args(self) -> list[str]:
        pki = self.pki
        return [
            "--etcd-servers", self.etcd_url, "--bind-address", "127.0.0.1",
            "--secure-port", str(self.port), "--advertise-address", ADVERTISE,
            "--service-cluster-ip-range", SERVICE_CIDR,
            "--tls-cert-file", str(pki.apiserver.cert),
            "--tls-private-key-file", str(pki.apiserver.key),
            "--client-ca-file", str(pki.ca.cert),
            "--token-auth-file", str(self.dir / "tokens.csv"),
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki.sa_public),
            "--service-account-signing-key-file", str(pki.sa_private),
            "--authorization-mode", "Node,RBAC",
            "--kubelet-client-certificate", str(pki.kubelet_client.cert),
            "--kubelet-client-key", str(pki.kubelet_client.key),
            "--kubelet-preferred-address-types", "InternalIP",
            "--allow-privileged=true", "--profiling=false",
            f"--watch-cache={'true' if self._watch_cache else 'false'}",
            "--cert-dir", str(self.dir / "apiserver"),
            *self._extra,
        ]

    def _add(self, name: str, args: list[str]) -> None:
        self._procs[name] = _Process(name, [str(tools_dir() / name), *args],
                                     self.dir / f"{name}.log")

    def _wait(self, name: str, ready: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self._timeout
        while True:
            self._procs[name].check()
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                if ready():
                    return
            if time.monotonic() > deadline:
                raise RealKubeError(f"{name} not ready in {self._timeout}s; log tail:\n"
                                    + self._procs[name].tail())
            time.sleep(0.1)

    def _apiserver_ready(self) -> bool:
        return self.request("GET", "/readyz")[0] == 200

    def _create_node(self, name: str) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "annotations": {NODE_ANNOTATION: "fake"},
                             "labels": {"kubernetes.io/hostname": name,
                                        "kubernetes.io/os": "linux", "type": "kwok"}},
                "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                           "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}}
        status, body = self.request("POST", "/api/v1/nodes", node)
        if status != 201:
            raise RealKubeError(f"creating node {name}: {status} {body}")

    def _nodes_ready(self) -> bool:
        status, body = self.request("GET", "/api/v1/nodes")
        ready = {n["metadata"]["name"] for n in body["items"]
                 if any(c["type"] == "Ready" and c["status"] == "True"
                        for c in n.get("status", {}).get("conditions", []))}
        return status == 200 and ready >= set(self.node_names)

    def _write_kubeconfig(self, file: str, *, token: str | None = None,
                          cert: Any = None) -> Path:
        user: dict[str, str] = {}
        if token:
            user["token"] = token
        if cert is not None:
            user["client-certificate"] = str(cert.cert)
            user["client-key"] = str(cert.key)
        config = {
            "apiVersion": "v1", "kind": "Config", "current-context": "realkube",
            "clusters": [{"name": "realkube", "cluster": {
                "server": self.url,
                "certificate-authority-data": base64.b64encode(
                    self.pki.ca.cert.read_bytes()).decode()}}],
            "users": [{"name": "admin", "user": user}],
            "contexts": [{"name": "realkube", "context": {"cluster": "realkube",
                                                          "user": "admin"}}],
        }
        path = self.dir / file
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path

    def _write_kwok_config(self) -> None:
        """Stages (nodes Ready with leases, pods Running/Ready/deleted) from the kwok
        module, and the kubelet answers: logs from one file (`pod_log`) for every
        container, exec as a local process, port-forward to any port an echo."""
        share = kwok_share()
        stages = sorted(share.glob("*.yaml"))
        if not stages:
            raise RealKubeError(f"no kwok stages in {share}; run `make setup`")
        self.pod_log = self.dir / "pod.log"
        self.pod_log.write_text("")
        docs = [yaml.safe_load(p.read_text()) for p in stages]
        for doc in docs:
            if doc.get("metadata", {}).get("name") == "node-heartbeat-with-lease":
                _steady_node_heartbeat(doc)
        docs += [
            {"kind": "ClusterLogs", "apiVersion": "kwok.x-k8s.io/v1alpha1",
             "metadata": {"name": "logs"},
             "spec": {"logs": [{"logsFile": str(self.pod_log), "follow": True}]}},
            {"kind": "ClusterExec", "apiVersion": "kwok.x-k8s.io/v1alpha1",
             "metadata": {"name": "exec"},
             "spec": {"execs": [{"local": {"workDir": str(self.dir)}}]}},
            {"kind": "ClusterPortForward", "apiVersion": "kwok.x-k8s.io/v1alpha1",
             "metadata": {"name": "port-forward"},
             "spec": {"forwards": [{"command": [sys.executable, "-c", ECHO]}]}},
        ]
        (self.dir / "kwok.yaml").write_text(yaml.safe_dump_all(docs))

    def stop(self) -> None:
        for name in ("kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver",
                     "etcd"):
            proc = self._procs.pop(name, None)
            if proc is not None:
                proc.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> RealKube:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> RealKube:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    # ---- faults ---------------------------------------------------------------------------

    def restart_apiserver(self, downtime: float = 0.0) -> None:
        """Stop kube-apiserver (every watch and connection ends), wait, start it again on
        the same port and wait until it is ready."""
        proc = self._procs["kube-apiserver"]
        proc.stop()
        if downtime:
            time.sleep(downtime)
        proc.start()
        self._wait("kube-apiserver", self._apiserver_ready)

    def etcd_revision(self) -> int:
        status = _http_json(f"{self.etcd_url}/v3/maintenance/status", {})
        return int(status["header"]["revision"])

    def compact(self) -> int:
        """Compact etcd at its current revision; returns the revision."""
        revision = self.etcd_revision()
        _http_json(f"{self.etcd_url}/v3/kv/compaction",
                   {"revision": str(revision), "physical": True})
        return revision

    def process(self, name: str) -> _Process:
        return self._procs[name]

    def log_tail(self, name: str, lines: int = 30) -> str:
        return self._procs[name].tail(lines)

    # ---- where it is ----------------------------------------------------------------------

    @property
    def kubectl_args(self) -> list[str]:
        return [find_kubectl(), "--kubeconfig", self.kubeconfig, "--cache-dir",
                str(self.dir / "kube-cache")]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def ssl_context(self) -> ssl.SSLContext:
        assert self._ssl is not None
        return self._ssl

    # ---- HTTP -----------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                content_type: str = "application/json", raw: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One API call (the admin token unless `token` is given; "" sends none)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_context(),
                                           timeout=30)
        hdrs = {"Accept": "application/json", **(headers or {})}
        tok = self.token if token is None else token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            hdrs["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return resp.status, parsed

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create `obj` (admin); returns the stored object. A 409 is an error."""
        path = api_path(obj)
        status, body = self.request("POST", path, obj)
        if status != 201:
            raise RealKubeError(f"POST {path}: {status} {body}")
        result: dict[str, Any] = body
        return result

    def service_account_token(self, namespace: str, name: str, *, seconds: int = 3600,
                              create: bool = True) -> str:
        """A token for ServiceAccount namespace/name from the TokenRequest API (a real
        JWT signed by the API server); the namespace and account are created if absent."""
        if create:
            for obj in ({"apiVersion": "v1", "kind": "Namespace",
                         "metadata": {"name": namespace}},
                        {"apiVersion": "v1", "kind": "ServiceAccount",
                         "metadata": {"name": name, "namespace": namespace}}):
                status, body = self.request("POST", api_path(obj), obj)
                if status not in (201, 409):
                    raise RealKubeError(f"creating {obj['kind']}: {status} {body}")
        status, body = self.request(
            "POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token",
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
             "spec": {"expirationSeconds": seconds}})
        if status != 201:
            raise RealKubeError(f"TokenRequest for {namespace}/{name}: {status} {body}")
        return str(body["status"]["token"])

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0,
                 interval: float = 0.05) -> T:
        """Poll `predicate()` until truthy (returned) or raise after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                value = predicate()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)


def api_path(obj: dict[str, Any]) -> str:
    """The collection path of `obj` for the kinds the harness and its tests create."""
    group_version = obj["apiVersion"]
    prefix = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
    plural = _PLURALS.get(obj["kind"], obj["kind"].lower() + "s")
    namespace = obj.get("metadata", {}).get("namespace")
    if obj["kind"] in _CLUSTER_SCOPED or not namespace:
        return f"{prefix}/{plural}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


_PLURALS = {"Ingress": "ingresses", "IngressClass": "ingressclasses",
            "NetworkPolicy": "networkpolicies", "Endpoints": "endpoints",
            "SubjectAccessReview": "subjectaccessreviews"}
_CLUSTER_SCOPED = {"Namespace", "Node", "ClusterRole", "ClusterRoleBinding", "IngressClass",
                   "SubjectAccessReview", "CustomResourceDefinition", "PersistentVolume"}


def _http_json(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return json.loads(resp.read())


def _https_ok(url: str) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, timeout=5, context=context) as resp:
        return int(resp.status) == 200


HEARTBEAT_ADDRESSES = """
      addresses:
      {{ with NodeIP }}
      - address: {{ . | Quote }}
        type: InternalIP
      {{ end }}
      {{ with NodeName }}
      - address: {{ . | Quote }}
        type: Hostname
      {{ end }}
"""


def _steady_node_heartbeat(stage: dict[str, Any]) -> None:
    """kwok's node status heartbeat, every 2-5 s instead of every 10-20 minutes, writing the
    node's addresses afresh. Its own template re-emits ``.status.addresses`` with
    ``YAML . 1``, and a run that lasted past its first beat (10+ minutes in) saw every
    node lose its addresses (kubectl logs/exec then fail: "no preferred addresses").
    Beating early puts that path in every test of the harness, not only the late ones."""
    spec = stage["spec"]
    spec["delay"] = {"durationMilliseconds": 2000, "jitterDurationMilliseconds": 5000}
    template: str = spec["next"]["statusTemplate"]
    start = template.index("addresses:")
    end = template.index("{{ with NodePort }}")
    spec["next"]["statusTemplate"] = (template[:start] + HEARTBEAT_ADDRESSES.strip() + "\n\n"
                                      + template[end:])
