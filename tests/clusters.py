"""The two worlds a cluster-facing test runs in: kubesim and the real control plane.

`cluster` (imported into tests/conftest.py) is parametrised over both: a test that takes
it runs once against kubesim (`Kubesim(demo=True)`) and once against `RealKube` (etcd,
kube-apiserver, controller manager, scheduler, kwok nodes; built by `make setup`). Both
are shared by the whole session (one start each); a test makes its own namespace and
leaves the rest alone. `Cluster` is the common face: url, kubeconfig, ca, token, port,
kubectl_args, env(), request(), wait_for(), plus what differs between the worlds:

* `service_account_token(namespace, name)`: kubesim binds a token of ours to the
  ServiceAccount; the real one issues a JWT by TokenRequest. Either way the token's
  rights are what the stored RBAC grants.
* `grant_cluster_rules(namespace, name, rules)`: a ClusterRole and its binding to a
  ServiceAccount (both worlds enforce stored RBAC).
* `append_log(namespace, pod, lines)`: lines a `logs -f` of that pod shows next.
* `outage(seconds)`: a context in which the API server is away for `seconds` (kubesim's
  503s; the real kube-apiserver stopped), answering again after it.
* `restart()`: every watch ends and the server is away a moment (kubesim's restart; the
  real kube-apiserver process stopped and started).
* `list_requests(plural)`: how many list requests for that resource the server has
  answered so far (kubesim's request counters; the real one's apiserver_request_total
  metric, verb LIST), for a test to compare before and after.
* `end_watches()`, `expire_history()`: kubesim's drop_watches(expired=True) and
  expire_history; on the real one, etcd compaction (and an API server restart to end
  the watches). With the watch cache the real server answers from the cache's window,
  so a 410 there is not guaranteed: what a test can assert is that nothing is lost.
* `demo_pods`: pods that exist in namespace "demo" (kubesim's demo seed; on the real one,
  three pods created at start and scheduled onto the kwok nodes).
* `loopback_services()`: a context in which a Service may have clusterIP 127.0.0.1, so
  the tunnel, which dials a Service's clusterIP, reaches a process of the test (kubesim
  takes any address; the real one gets a ServiceCIDR 127.0.0.0/30 for the while).

A missing real binary fails the test at setup with RealKubeError naming `make setup`:
it is never a skip.
"""

from __future__ import annotations

import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from kubesim.testing import Kubesim
from realkube.testing import RealKube

T = TypeVar("T")
WORLDS = ("kubesim", "real")
DEMO_NAMESPACE = "demo"
LOOPBACK_IP = "127.0.0.1"


class Cluster:
    """One world, behind the face the tests use."""

    def __init__(self, world: str, server: Kubesim | RealKube) -> None:
        self.world = world
        self.server = server

    @property
    def real(self) -> bool:
        return self.world == "real"

    url = property(lambda self: self.server.url)
    kubeconfig = property(lambda self: self.server.kubeconfig)
    ca = property(lambda self: self.server.ca)
    token = property(lambda self: self.server.token)
    port = property(lambda self: self.server.port)
    kubectl_args = property(lambda self: self.server.kubectl_args)

    def env(self) -> dict[str, str]:
        return self.server.env()

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any
                ) -> tuple[int, Any]:
        return self.server.request(method, path, body, **kwargs)

    def wait_for(self, predicate: Callable[[], T], timeout: float = 30.0) -> T:
        result: T = self.server.wait_for(predicate, timeout=timeout)
        return result

    def create_namespace(self, prefix: str = "t") -> str:
        name = f"{prefix}-{secrets.token_hex(4)}"
        status, body = self.request("POST", "/api/v1/namespaces",
                                    {"apiVersion": "v1", "kind": "Namespace",
                                     "metadata": {"name": name}})
        assert status == 201, body
        if self.real:  # no Pod is admitted until the controller has made this one
            self.wait_for(lambda: self.request(
                "GET", f"/api/v1/namespaces/{name}/serviceaccounts/default")[0] == 200)
        return name

    def service_account_token(self, namespace: str, name: str) -> str:
        if isinstance(self.server, RealKube):
            return self.server.service_account_token(namespace, name)
        for path, obj in (("/api/v1/namespaces", {"metadata": {"name": namespace}}),
                          (f"/api/v1/namespaces/{namespace}/serviceaccounts",
                           {"metadata": {"name": name, "namespace": namespace}})):
            status, body = self.request("POST", path, obj)
            assert status in (201, 409), body
        token = "sa-" + secrets.token_hex(12)
        self.server.add_token(token, service_account=f"{namespace}/{name}")
        return token

    def grant_cluster_rules(self, namespace: str, name: str,
                            rules: list[dict[str, Any]]) -> None:
        """A ClusterRole with `rules`, bound to ServiceAccount namespace/name (stored RBAC,
        which both worlds enforce)."""
        role = f"{namespace}-{name}"
        for path, obj in (
                ("/apis/rbac.authorization.k8s.io/v1/clusterroles",
                 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                  "metadata": {"name": role}, "rules": rules}),
                ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                 {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                  "metadata": {"name": role},
                  "roleRef": {"apiGroup": "rbac.authorization.k8s.io",
                              "kind": "ClusterRole", "name": role},
                  "subjects": [{"kind": "ServiceAccount", "name": name,
                                "namespace": namespace}]})):
            status, body = self.request("POST", path, obj)
            assert status == 201, body

    def end_watches(self) -> None:
        """Every open watch ends and its history is gone: kubesim sends each an ERROR
        event 410; the real API server is restarted after compacting etcd."""
        if isinstance(self.server, RealKube):
            self.server.compact()
            self.server.restart_apiserver(downtime=0.2)
        else:
            assert self.server.drop_watches(expired=True) >= 1

    def expire_history(self) -> None:
        """A watch from any resourceVersion seen so far is refused (410): kubesim's
        expire_history; on the real one, etcd compacted at its current revision."""
        if isinstance(self.server, RealKube):
            self.server.compact()
        else:
            self.server.expire_history()

    def append_log(self, namespace: str, pod: str, lines: list[str]) -> None:
        """Lines the pod's log shows next: kubesim's per-pod log; on the real one kwok
        serves every pod's log from one file (RealKube.pod_log), in the CRI format."""
        if isinstance(self.server, RealKube):
            with self.server.pod_log.open("a") as log:
                log.writelines(f"2026-01-01T00:00:00Z stdout F {line}\n" for line in lines)
        else:
            self.server.append_log(namespace, pod, lines)

    @contextlib.contextmanager
    def outage(self, seconds: float) -> Iterator[None]:
        """The API server away for `seconds` from entry (kubesim answers 503; the real
        kube-apiserver is stopped, then started again); on exit, it answers again."""
        if isinstance(self.server, RealKube):
            rk = self.server
            thread = threading.Thread(target=rk.restart_apiserver, args=(seconds,),
                                      name="apiserver-outage", daemon=True)
            thread.start()
            rk.wait_for(lambda: not rk.process("kube-apiserver").alive(), timeout=30)
            try:
                yield
            finally:
                thread.join(120)
                assert not thread.is_alive(), "kube-apiserver did not come back"
        else:
            self.server.restart(downtime=seconds)
            try:
                yield
            finally:
                self.wait_for(lambda: self.request("GET", "/version")[0] == 200,
                              timeout=seconds + 30)

    def restart(self) -> None:
        if isinstance(self.server, RealKube):
            self.server.restart_apiserver(downtime=0.2)
        else:
            self.server.restart(downtime=0.2)

    def list_requests(self, plural: str) -> int:
        if isinstance(self.server, RealKube):
            status, text = self.request("GET", "/metrics", headers={"Accept": "text/plain"})
            assert status == 200, text
            return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                           if line.startswith("apiserver_request_total{")
                           and 'verb="LIST"' in line and f'resource="{plural}"' in line))
        return sum(int(counter["requests"])
                   for key, counter in self.server.stats()["paths"].items()
                   if key.split("?")[0].endswith(f"/{plural}") and "watch=" not in key)

    @contextlib.contextmanager
    def loopback_services(self) -> Iterator[str]:
        """Yields the clusterIP to give a Service: 127.0.0.1. On the real API server a
        clusterIP must lie in a ServiceCIDR: one of 127.0.0.0/30 is made for the while
        (tiny, so other tests' Services rarely draw from it) and deleted on exit, which
        the API server completes once no Service holds an address in it."""
        if not self.real:
            yield LOOPBACK_IP
            return
        name = f"loopback-{secrets.token_hex(4)}"
        status, body = self.request("POST", "/apis/networking.k8s.io/v1/servicecidrs", {
            "apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
            "metadata": {"name": name}, "spec": {"cidrs": ["127.0.0.0/30"]}})
        assert status == 201, body

        def ready() -> bool:
            _, cidr = self.request("GET", f"/apis/networking.k8s.io/v1/servicecidrs/{name}")
            return any(c.get("type") == "Ready" and c.get("status") == "True"
                       for c in (cidr.get("status") or {}).get("conditions", []))

        try:
            self.wait_for(ready)
            yield LOOPBACK_IP
        finally:
            self.request("DELETE", f"/apis/networking.k8s.io/v1/servicecidrs/{name}")

    def demo_pods(self) -> list[str]:
        status, body = self.request("GET", f"/api/v1/namespaces/{DEMO_NAMESPACE}/pods")
        assert status == 200, body
        return sorted(p["metadata"]["name"] for p in body["items"])


def seed_demo(rk: RealKube) -> None:
    """Namespace "demo" with three pods, each scheduled and Ready, like kubesim's demo."""
    rk.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": DEMO_NAMESPACE}})
    rk.wait_for(lambda: rk.request(
        "GET", f"/api/v1/namespaces/{DEMO_NAMESPACE}/serviceaccounts/default")[0] == 200)
    for i in range(3):
        rk.apply({"apiVersion": "v1", "kind": "Pod",
                  "metadata": {"name": f"demo-{i}", "namespace": DEMO_NAMESPACE,
                               "labels": {"app": "demo"}},
                  "spec": {"containers": [{"name": "app", "image": "nginx"}]}})

    def all_ready() -> bool:
        _, body = rk.request("GET", f"/api/v1/namespaces/{DEMO_NAMESPACE}/pods")
        return len(body["items"]) == 3 and all(
            p["status"].get("phase") == "Running" for p in body["items"])

    rk.wait_for(all_ready, timeout=60)


@contextlib.contextmanager
def real_cluster(**kwargs: Any) -> Iterator[RealKube]:
    with RealKube(**kwargs) as rk:
        seed_demo(rk)
        yield rk


@pytest.fixture(scope="session")
def real_kube() -> Iterator[RealKube]:
    """One real control plane for the session (fresh namespaces per test)."""
    with real_cluster() as rk:
        yield rk


@pytest.fixture(scope="session")
def demo_kubesim() -> Iterator[Kubesim]:
    with Kubesim(demo=True) as ks:
        yield ks


@pytest.fixture(params=WORLDS)
def cluster(request: pytest.FixtureRequest) -> Cluster:
    """The test, once against kubesim and once against the real control plane."""
    if request.param == "real":
        return Cluster("real", request.getfixturevalue("real_kube"))
    return Cluster("kubesim", request.getfixturevalue("demo_kubesim"))
