"""TCP/UDP exposure against kubesim: the seed's examples become Gateway API and Istio
objects (server-side apply, labelled); changed settings update them, removed settings
delete them; an object of the same name that is not ours is never touched (reported)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubesim.testing import Kubesim
from pipeops_gateway import exposure
from tests.gateway.harness import kubectl, namespace
from tests.helpers import BIN, ServiceProcess, wait_for

NS = "pipeops-system"
LISTENERS = [{"name": "tcp-runner", "port": 5000, "protocol": "TCP"},
             {"name": "udp-runner", "port": 6000, "protocol": "UDP"}]
TCP = [{"name": "runner-tcp", "sectionName": "tcp-runner",
        "backendRefs": [{"name": "runner", "namespace": NS, "port": 5000}]}]
UDP = [{"name": "runner-udp", "sectionName": "udp-runner",
        "backendRefs": [{"name": "runner", "namespace": NS, "port": 6000}]}]
SERVERS = [{"port": {"number": 6379, "name": "tcp-redis", "protocol": "TCP"}},
           {"port": {"number": 443, "name": "tls-app", "protocol": "TLS"},
            "hosts": ["app.example.com"], "tls": {"mode": "PASSTHROUGH"}}]
ISTIO_TCP = [{"name": "redis", "port": 6379,
              "destination": {"host": "redis.default.svc.cluster.local", "port": 6379}}]
ISTIO_TLS = [{"name": "app", "port": 443, "sniHosts": ["app.example.com"],
              "destination": {"host": "app.default.svc.cluster.local", "port": 443}}]


@pytest.fixture(scope="module")
def kubesim() -> Iterator[Kubesim]:
    with Kubesim() as ks:
        for name in (NS, "istio-system"):
            namespace(ks, name)
        yield ks


def run(ks: Kubesim, *args: str, env: dict[str, str] | None = None) -> ServiceProcess:
    """The gateway with these settings, until its first exposure pass is done."""
    proc = ServiceProcess([
        str(BIN / "pipeops-gateway"), "--kubeconfig", ks.kubeconfig, "--grpc-port", "0",
        "--set", "kubernetes.in_cluster=false", "--set", f"kubernetes.namespace={NS}",
        "--set", "metrics.gateway=0", "--set", "grpc.gateway_probe=0",
        "--set", "pipeops.reconnect.backoff_base=0.05",
        "--set", "pipeops.reconnect.backoff_max=0.5", *args], env=env).start()
    proc.wait_started()
    return proc


def get(ks: Kubesim, resource: str, name: str, ns: str = NS) -> dict[str, Any] | None:
    out = subprocess.run(
        [*ks.kubectl_args, "get", resource, name, "-n", ns, "-o", "json"],
        capture_output=True, text=True, timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else None


def names(ks: Kubesim, resource: str, ns: str = NS) -> set[str]:
    items = json.loads(kubectl(ks, "get", resource, "-n", ns, "-o", "json",
                               "-l", "pipeops.io/exposure-of=pipeops-agent"))["items"]
    return {item["metadata"]["name"] for item in items}


def settled(proc: ServiceProcess, check: Any, what: str) -> Any:
    return wait_for(check, 20, what=what)


GWAPI_FLAGS = ["--gateway-enabled", "true", "--gateway-gwapi-enabled", "true",
               "--gateway-gwapi-gateway-class", "istio",
               "--gateway-env-mode", "single-vm", "--gateway-env-vm-ip", "192.0.2.10",
               "--gateway-gwapi-listeners-json", json.dumps(LISTENERS),
               "--gateway-gwapi-tcp-routes-json", json.dumps(TCP),
               "--gateway-gwapi-udp-routes-json", json.dumps(UDP)]


def test_gateway_api_listeners_and_routes_from_flags(kubesim: Kubesim) -> None:
    proc = run(kubesim, *GWAPI_FLAGS)
    try:
        gateway = settled(proc, lambda: get(kubesim, "gateways.gateway.networking.k8s.io",
                                            "pipeops-agent"), "the Gateway")
        assert gateway["spec"]["gatewayClassName"] == "istio"
        assert gateway["spec"]["addresses"] == [{"type": "IPAddress", "value": "192.0.2.10"}]
        assert [(x["name"], x["port"], x["protocol"]) for x in gateway["spec"]["listeners"]] \
            == [("tcp-runner", 5000, "TCP"), ("udp-runner", 6000, "UDP")]
        assert gateway["metadata"]["labels"][exposure.OWNER] == "pipeops-agent"
        tcp = settled(proc, lambda: get(kubesim, "tcproutes", "runner-tcp"), "the TCPRoute")
        assert tcp["spec"]["parentRefs"] == [{"name": "pipeops-agent",
                                              "sectionName": "tcp-runner"}]
        assert tcp["spec"]["rules"][0]["backendRefs"][0]["port"] == 5000
        assert get(kubesim, "udproutes", "runner-udp") is not None
    finally:
        proc.stop()
    # the settings changed (env JSON this time): a route gone, a listener changed
    listeners = [{"name": "tcp-runner", "port": 5001, "protocol": "TCP"}]
    tcp_routes = [{**TCP[0], "backendRefs": [{"name": "runner", "port": 5001}]}]
    proc = run(kubesim, "--set", "gateway.enabled=true",
               "--set", "gateway.gateway_api.enabled=true",
               env={"GATEWAY_GWAPI_LISTENERS_JSON": json.dumps(listeners),
                    "GATEWAY_GWAPI_TCP_ROUTES_JSON": json.dumps(tcp_routes)})
    try:
        settled(proc, lambda: get(kubesim, "udproutes", "runner-udp") is None,
                "the UDPRoute to be deleted")
        gateway = get(kubesim, "gateways.gateway.networking.k8s.io", "pipeops-agent")
        assert gateway is not None
        assert [x["port"] for x in gateway["spec"]["listeners"]] == [5001]
        assert "addresses" not in gateway["spec"]  # applied before, not now: removed
        tcp = get(kubesim, "tcproutes", "runner-tcp")
        assert tcp is not None and tcp["spec"]["rules"][0]["backendRefs"][0]["port"] == 5001
    finally:
        proc.stop()
    # removed from config: deleted from the cluster
    proc = run(kubesim)
    try:
        settled(proc, lambda: not names(kubesim, "gateways.gateway.networking.k8s.io")
                and not names(kubesim, "tcproutes"), "every exposure object deleted")
    finally:
        proc.stop()


def test_istio_servers_routes_and_service(kubesim: Kubesim) -> None:
    proc = run(kubesim, "--gateway-enabled", "true", "--gateway-istio-enabled", "true",
               "--gateway-istio-service-create", "true",
               "--gateway-istio-servers-json", json.dumps(SERVERS),
               "--gateway-istio-tcp-routes-json", json.dumps(ISTIO_TCP),
               "--gateway-istio-tls-routes-json", json.dumps(ISTIO_TLS))
    try:
        gateway = settled(proc, lambda: get(kubesim, "gateways.networking.istio.io",
                                            "pipeops-agent"), "the Istio Gateway")
        assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
        assert [s["hosts"] for s in gateway["spec"]["servers"]] == [["*"],
                                                                    ["app.example.com"]]
        vs = settled(proc, lambda: get(kubesim, "virtualservices", "pipeops-agent"),
                     "the VirtualService")
        assert vs["spec"]["tcp"][0]["route"][0]["destination"] == {
            "host": "redis.default.svc.cluster.local", "port": {"number": 6379}}
        assert vs["spec"]["tls"][0]["match"][0]["sniHosts"] == ["app.example.com"]
        svc = settled(proc, lambda: get(kubesim, "services", "pipeops-agent-istio-ingress",
                                        "istio-system"), "the Istio ingress Service")
        assert svc["spec"]["type"] == "LoadBalancer"
        assert [p["port"] for p in svc["spec"]["ports"]] == [6379, 443]
    finally:
        proc.stop()
    proc = run(kubesim, "--gateway-enabled", "true", "--gateway-istio-enabled", "true",
               "--gateway-istio-servers-json", json.dumps(SERVERS[:1]),
               "--gateway-istio-tcp-routes-json", json.dumps(ISTIO_TCP))
    try:
        settled(proc, lambda: get(kubesim, "services", "pipeops-agent-istio-ingress",
                                  "istio-system") is None, "the Service deleted")
        vs = get(kubesim, "virtualservices", "pipeops-agent")
        assert vs is not None and "tls" not in vs["spec"]
    finally:
        proc.stop()
    proc = run(kubesim, "--set", "gateway.enabled=false")
    try:
        settled(proc, lambda: not names(kubesim, "virtualservices")
                and not names(kubesim, "gateways.networking.istio.io"), "Istio objects gone")
    finally:
        proc.stop()


def test_an_object_that_is_not_ours_is_never_touched(kubesim: Kubesim, tmp_path: Path) -> None:
    theirs = {"apiVersion": "gateway.networking.k8s.io/v1alpha2", "kind": "TCPRoute",
              "metadata": {"name": "runner-tcp", "namespace": NS, "labels": {"team": "x"}},
              "spec": {"parentRefs": [{"name": "someone-else"}], "rules": []}}
    kubectl(kubesim, "apply", "-f", "-", stdin=json.dumps(theirs))
    before = get(kubesim, "tcproutes", "runner-tcp")
    assert before is not None
    proc = run(kubesim, *GWAPI_FLAGS)
    try:
        settled(proc, lambda: get(kubesim, "udproutes", "runner-udp"), "ours applied")
        line = proc.wait_record(lambda r: "is not ours" in str(r.get("msg")), 15)
        assert line["level"] == "error" and "TCPRoute pipeops-system/runner-tcp" in line["msg"]
        after = get(kubesim, "tcproutes", "runner-tcp")
        assert after is not None
        assert after["spec"] == before["spec"]
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
        events = settled(proc, lambda: json.loads(kubectl(
            kubesim, "get", "events", "-n", NS, "-o", "json", "--field-selector",
            "involvedObject.name=runner-tcp"))["items"], "the Event on it")
        assert events[0]["reason"] == "NotOwnedByAgent"
    finally:
        proc.stop()
    proc = run(kubesim)  # exposure off: ours deleted, theirs kept
    try:
        settled(proc, lambda: get(kubesim, "udproutes", "runner-udp") is None, "ours gone")
        assert get(kubesim, "tcproutes", "runner-tcp") is not None
    finally:
        proc.stop()
        kubectl(kubesim, "delete", "tcproutes", "runner-tcp", "-n", NS)
