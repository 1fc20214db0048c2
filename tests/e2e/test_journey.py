"""The user journey, one test per world (kubesim and the real control plane), everything
a real process: the cluster, the dev control plane, the four containers, a small HTTP app
behind an Ingress, kubectl, curl and a headless Chromium.

In order, each step waiting (with a deadline) for the state it asserts on:
register -> a heartbeat visible at the control plane -> the tunnel connected (and the
heartbeat saying so) -> kubectl through the tunnel: get, apply, watch, logs -f -> an
Ingress applied through the tunnel -> its host answers on the control plane's public URL
-> a session command completes and the session's state arrives at the control plane ->
the dashboard shows the cluster registered, heartbeats rising, the tunnel connected, the
route (its host, Service and Ingress) and the session running -> SIGTERM to each
container in turn (the browser still following the http-api's streams): each exits 0
within its grace, by its own log well inside the runner's shutdown grace, and leaves no
child process and no listening port.

The pod runs in namespaces of its own in the session's cluster; its gateway publishes only
Ingresses of this test's class, so other tests' Ingresses in the shared cluster do not
count. The Ingress's Service has clusterIP 127.0.0.1 (Cluster.loopback_services): the
tunnel dials a Service's clusterIP, and the app listens there.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Page

from pipeops_controlplane.tunnel.kubeconfig import kubeconfig_through_tunnel
from tests.browser import login
from tests.clusters import DEMO_NAMESPACE, Cluster
from tests.gateway.harness import DemoApp, ingress, wait_table
from tests.helpers import (
    ROOT,
    Lines,
    ServiceProcess,
    alive,
    child_pids,
    listening_ports,
    tool,
    wait_for,
)
from tests.httpapi.pod import Pod

CHART_VALUES = ROOT / "charts" / "pipeops-agent" / "values.yaml"
# What the kubelet gives a container after SIGTERM (the chart's value), and what the runner
# gives the main task to finish (--shutdown-grace, default 3 s): a clean stop is inside
# the latter, by the service's own clock.
POD_GRACE = float(yaml.safe_load(CHART_VALUES.read_text())["agent"]
                  ["terminationGracePeriodSeconds"])
SHUTDOWN_GRACE = 3.0
ARTIFACTS = ROOT / "test-artifacts"
CP_ARGS = ["--tunnel-ping-interval", "0.5", "--tunnel-ping-timeout", "2"]


class Journey:
    """The running pod of one world and what the steps share."""

    def __init__(self, world: Cluster, folder: Path) -> None:
        self.world = world
        self.folder = folder
        self.suffix = secrets.token_hex(4)
        self.ingress_class = f"journey-{self.suffix}"
        self.host = f"journey-{self.suffix}.example.test"
        self.session = f"journey-{self.suffix}"
        self.kubeconfig = folder / "tunnel.kubeconfig"  # written once the tunnel is up
        self.stack = contextlib.ExitStack()

    def start(self) -> Journey:
        stack = self.stack
        try:
            self.app = stack.enter_context(DemoApp("journey")).wait_ready()
            self.cluster_ip = stack.enter_context(self.world.loopback_services())
            self.namespace = self.world.create_namespace("journey")
            stack.callback(self.world.request, "DELETE",
                           f"/api/v1/namespaces/{self.namespace}")
            self.pod = Pod(self.folder, world=self.world, cp_args=CP_ARGS, config={
                "tunnel": {"ping_interval": 0.5, "ping_timeout": 2.0,
                           "status_poll_interval": 0.2},
                "pipeops": {"reconnect": {"backoff_base": 0.1, "backoff_max": 0.5},
                            "timeout": 3},
                "agent": {"enable_ingress_sync": True},
                "gateway": {"ingress_classes": [self.ingress_class],
                            "routing_mode": "tunnel"}}).start()
            stack.callback(self.pod.stop)
        except BaseException:
            stack.close()
            raise
        return self

    @property
    def cp(self) -> Any:
        return self.pod.cp

    @property
    def cluster_id(self) -> str:
        return self.pod.cluster_id

    def tunnel_view(self) -> dict[str, Any]:
        status, body = self.cp.request("GET", f"/debug/tunnels/{self.cluster_id}")
        return body if status == 200 else {}

    def kubectl(self, *args: str) -> list[str]:
        return [tool("kubectl"), "--kubeconfig", str(self.kubeconfig),
                "--cache-dir", str(self.folder / "kube-cache"), *args]

    def run(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(self.kubectl(*args), input=stdin, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    def apply(self, *objects: dict[str, Any]) -> str:
        return self.run("apply", "-f", "-", stdin="\n---\n".join(map(yaml.safe_dump, objects)))

    def containers(self) -> dict[str, ServiceProcess]:
        return {**self.pod.services, "http-api": self.pod.api}


@pytest.fixture
def journey(cluster: Cluster, tmp_path: Path) -> Iterator[Journey]:
    running = Journey(cluster, tmp_path).start()
    try:
        yield running
    finally:
        running.stack.close()


def test_the_user_journey(journey: Journey, page: Page) -> None:
    _registered_heartbeating_and_connected(journey)
    _kubectl_through_the_tunnel(journey)
    _an_ingress_answers_on_the_public_url(journey)
    _a_session_command_and_its_state(journey)
    _the_dashboard_shows_it_all(journey, page)
    _sigterm_each_container_in_turn(journey)


def _registered_heartbeating_and_connected(j: Journey) -> None:
    identity = j.pod.identity
    assert identity["state"] == "registered" and identity["cluster_id"]
    known = {c["cluster_id"]: c for c in j.cp.clusters()}
    assert known[j.cluster_id]["agent_id"] == identity["agent_id"]
    wait_for(lambda: (c := j.cp.cluster(j.cluster_id)) and c["heartbeat_count"] >= 1, 30,
             what="a heartbeat at the control plane")
    wait_for(lambda: j.tunnel_view().get("connected"), 30,
             what="the tunnel connected at the control plane")
    # the registrar asks the tunnel: a heartbeat saying "connected" proves both siblings
    wait_for(lambda: ((j.cp.cluster(j.cluster_id) or {}).get("last_heartbeat") or {})
             .get("tunnel_status") == "connected", 30,
             what="a heartbeat saying the tunnel is connected")


def _kubectl_through_the_tunnel(j: Journey) -> None:
    kubeconfig_through_tunnel(
        j.cp.url, j.world.kubeconfig, j.kubeconfig,
        cluster_id=j.cluster_id, tls_server_name="kubernetes" if j.world.real
        else "kubesim.local", wait=30)
    opened = j.tunnel_view()["stats_total"]["streams_opened"]
    # get: the same nodes as asked directly
    _, nodes = j.world.request("GET", "/api/v1/nodes")
    assert j.run("get", "nodes", "-o", "name").split() == sorted(
        f"node/{n['metadata']['name']}" for n in nodes["items"])
    assert j.tunnel_view()["stats_total"]["streams_opened"] > opened  # through the tunnel
    # apply, and a watch that sees what a later apply makes
    labels = {"journey": j.suffix}
    watch = Lines(j.kubectl("get", "configmaps", "-n", j.namespace, "-w", "-o", "name",
                            "-l", f"journey={j.suffix}"))
    try:
        out = j.apply({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "first", "namespace": j.namespace,
                                    "labels": labels}, "data": {"step": "apply"}})
        assert "configmap/first created" in out
        status, stored = j.world.request(
            "GET", f"/api/v1/namespaces/{j.namespace}/configmaps/first")
        assert status == 200 and stored["data"] == {"step": "apply"}
        watch.wait_line("configmap/first", timeout=30)
        j.apply({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "second", "namespace": j.namespace, "labels": labels}})
        watch.wait_line("configmap/second", timeout=30)
    finally:
        watch.stop()
    # logs -f: lines written after it started arrive while it follows
    pod = j.world.demo_pods()[0]
    follow = Lines(j.kubectl("logs", "-f", "-n", DEMO_NAMESPACE, pod))
    try:
        for n in ("first", "second"):
            line = f"journey {n} line {j.suffix}"
            j.world.append_log(DEMO_NAMESPACE, pod, [line])
            follow.wait_line(line, timeout=30)
        assert follow.proc.poll() is None  # still following
    finally:
        follow.stop()


def _curl(j: Journey, path: str) -> tuple[int, str]:
    done = subprocess.run(["curl", "-sS", "-m", "10", "-o", "-", "-w", "\n%{http_code}",
                           "-H", f"Host: {j.host}", j.cp.public_url + path],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    body, _, code = done.stdout.rpartition("\n")
    return int(code), body


def _an_ingress_answers_on_the_public_url(j: Journey) -> None:
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": j.namespace},
               "spec": {"clusterIP": j.cluster_ip,
                        "ports": [{"name": "http", "port": j.app.port}]}}
    route = ingress("web", j.host, namespace=j.namespace, port=j.app.port,
                    ingressClassName=j.ingress_class)
    out = j.apply(service, route)
    assert "ingress.networking.k8s.io/web created" in out, out
    held = wait_table(j.cp, j.cluster_id, {(j.host, "/")}, timeout=30)
    assert held[(j.host, "/")]["routing_mode"] == "tunnel"
    _, body = wait_for(lambda: (r := _curl(j, "/journey"))[0] == 200 and r, 30,
                          what=f"{j.host} to answer on {j.cp.public_url}")
    answer = json.loads(body)
    assert (answer["app"], answer["host"], answer["path"]) == ("journey", j.host, "/journey")


def _a_session_command_and_its_state(j: Journey) -> None:
    status, record = j.cp.request("POST", f"/api/v1/agents/{j.cluster_id}/command", {
        "action": "start_session", "payload": {"sessionId": j.session, "template": "nginx"},
        "wait": 30}, timeout=40)
    assert status == 200 and record["state"] == "complete", record
    assert record["result"]["service"] == f"session-{j.session}"
    session = wait_for(lambda: (s := j.tunnel_view().get("sessions", {}).get(j.session))
                       and s["state"] == "running" and s, 60,
                       what="the session running at the control plane")
    assert session["readyReplicas"] == session["replicas"] == 1


def _text(page: Page, selector: str) -> str:
    return (page.text_content(selector) or "").strip()


def _the_dashboard_shows_it_all(j: Journey, page: Page) -> None:
    login(page, j.pod.api.url, j.pod.api.token)
    ms = 30_000
    page.wait_for_selector(f"#identity dd:has-text('{j.cluster_id}')", timeout=ms)
    page.wait_for_selector("#hb-registration:text-is('registered')", timeout=ms)
    page.wait_for_function("() => /^\\d+$/.test(document.getElementById('hb-sent')"
                           ".textContent)", timeout=ms)
    first = int(_text(page, "#hb-sent"))
    assert first >= 1
    page.wait_for_function(f"() => Number(document.getElementById('hb-sent').textContent)"
                           f" > {first}", timeout=ms)  # live: the next heartbeat shows
    page.wait_for_selector("#tn-state.state-connected", timeout=ms)
    assert _text(page, "#tn-state").startswith("connected")
    # every kubectl run and the curl above was a stream of its own through the tunnel
    opened = int(_text(page, "#tn-streams").split(", ")[1].split()[0])
    assert opened >= 6, _text(page, "#tn-streams")
    routes = len(j.cp.routes(j.cluster_id))
    assert routes == 1
    page.wait_for_selector(f"#gw-routes:text-is('{routes}')", timeout=ms)
    assert _text(page, "#gw-state") == "route sync on"
    page.wait_for_selector("#containers tr:has(td:text-is('gateway'))"
                           f":has-text('{routes} routes published')", timeout=ms)
    shown = page.wait_for_selector(f"#route-list tr:has(td:text-is('{j.host}/'))", timeout=ms)
    assert shown is not None and [c.strip() for c in shown.inner_text().split("\t")] == [
        f"{j.host}/", f"web:{j.app.port}", f"Ingress {j.namespace}/web"]
    row = page.wait_for_selector(f"#session-list tr:has(td:text-is('{j.session}'))",
                                 timeout=ms)
    assert row is not None
    page.wait_for_selector(f"#session-list tr:has(td:text-is('{j.session}'))"
                           " td:text-is('running')", timeout=ms)
    for name in ("http-api", "registrar", "tunnel", "gateway"):
        page.wait_for_selector(f"#containers tr:has(td:text-is('{name}'))"
                               " td.state-ready", timeout=ms)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"journey-{j.world.world}.png"), full_page=True)


def _sigterm_each_container_in_turn(j: Journey) -> None:
    """The http-api first, the browser still following its event and log streams; the
    tunnel with a kubectl watch open through it, which ends with the tunnel."""
    containers = j.containers()
    watch = Lines(j.kubectl("get", "configmaps", "-n", j.namespace, "-w", "-o", "name"))
    try:
        watch.wait_line("configmap/first", timeout=30)
        _sigterm_in_turn(containers)
        wait_for(lambda: watch.proc.poll() is not None, 30,
                 what="the watch through the tunnel to end with the tunnel")
    finally:
        watch.stop()


def _sigterm_in_turn(containers: dict[str, ServiceProcess]) -> None:
    for name in ("http-api", "gateway", "tunnel", "registrar"):
        proc = containers.pop(name)
        assert proc.proc is not None
        pid = proc.proc.pid
        children, ports = child_pids(pid), listening_ports(pid)
        assert ports, f"{name} listens on nothing?"
        started = time.monotonic()
        proc.proc.send_signal(signal.SIGTERM)
        try:
            code = proc.proc.wait(POD_GRACE)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} did not exit within the pod's grace "
                                 f"({POD_GRACE:g} s)") from None
        took = time.monotonic() - started
        proc.stop()  # the pipes read to their end
        assert code == 0, (name, proc.lines[-10:], proc.stderr_lines[-10:])
        assert took < POD_GRACE
        assert proc.stop_seconds() < SHUTDOWN_GRACE, name
        assert not [line for line in proc.lines if "grace period" in line], name
        assert not [pid for pid in children if alive(pid)], f"{name} left children"
        assert not ports & listening_ports(), f"{name} left {ports} listening"
        # the others keep running
        assert all(p.proc is not None and p.proc.poll() is None
                   for p in containers.values()), f"stopping {name} took others down"
