"""The agent on a real control plane, installed by helm, on its chart's own identity.

The registrar and the tunnel run with a TokenRequest token of the chart's ServiceAccount
(see agent_stack.py): the real RBAC authorizer decides every call they make, so a single
403 in their logs fails the test that was running. What the identity must not do is
checked with SubjectAccessReview and with its token. Sessions are real Deployments whose
Pods the real scheduler binds to kwok nodes; the tunnel reports their state to the dev
control plane. The API server is restarted under the running agent.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.chart import NAMESPACE
from tests.helpers import free_port, wait_for
from tests.realkube.agent_stack import SESSIONS, ChartedAgent


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChartedAgent]:
    stack = ChartedAgent(tmp_path_factory.mktemp("charted")).start()
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(autouse=True)
def _no_403(agent: ChartedAgent) -> Iterator[None]:
    """The chart's RBAC is sufficient: no service met a 403 during the test."""
    yield
    assert agent.forbidden() == {}


def _count(agent: ChartedAgent, path: str) -> int:
    status, body = agent.rk.request("GET", path)
    assert status == 200, body
    return len(body["items"])


def test_it_registers_stores_its_identity_and_heartbeats_the_real_counts(
        agent: ChartedAgent) -> None:
    status, stored = agent.rk.request(
        "GET", f"/api/v1/namespaces/{NAMESPACE}/configmaps/pipeops-agent-identity")
    assert status == 200 and stored["data"]["agent_id"] == agent.identity["agent_id"]
    status, secret = agent.rk.request(
        "GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/pipeops-agent-state")
    assert status == 200 and secret["data"]
    first = wait_for(lambda: (c := agent.heartbeat()) and c["heartbeat_count"] >= 1 and c,
                     timeout=20, what="a heartbeat")
    cluster = wait_for(lambda: (c := agent.heartbeat()) and c["heartbeat_count"]
                       >= first["heartbeat_count"] + 3 and c, timeout=20,
                       what="more heartbeats")
    beat = cluster["last_heartbeat"]
    assert beat["metadata"]["node_count"] == len(agent.rk.node_names) == 2
    pods = _count(agent, "/api/v1/pods")
    assert pods >= 4  # the three demo pods and the agent's own (bound to a kwok node)
    assert beat["metadata"]["pod_count"] == pods
    # handed to the control plane: the token the real token controller issued
    assert agent.cp_token.count(".") == 2
    assert cluster["k8s_service_token_sha256"] == hashlib.sha256(
        agent.cp_token.encode()).hexdigest()[:16]


def _review(agent: ChartedAgent, **attributes: Any) -> bool:
    status, body = agent.rk.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
         "spec": {"user": agent.user,
                  "groups": ["system:serviceaccounts",
                             f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
                  "resourceAttributes": attributes}})
    assert status == 201, body
    return bool(body["status"]["allowed"])


def test_the_agents_identity_is_least_privilege(agent: ChartedAgent) -> None:
    allowed = [
        {"verb": "list", "resource": "pods"},
        {"verb": "watch", "resource": "nodes"},
        {"verb": "get", "resource": "secrets", "namespace": NAMESPACE,
         "name": "pipeops-agent-state"},
        {"verb": "update", "resource": "configmaps", "namespace": NAMESPACE,
         "name": "pipeops-agent-identity"},
        {"verb": "create", "resource": "deployments", "group": "apps", "namespace": SESSIONS},
        {"verb": "delete", "resource": "services", "namespace": SESSIONS},
    ]
    refused = [
        {"verb": "get", "resource": "secrets", "namespace": "kube-system"},
        {"verb": "list", "resource": "secrets"},
        {"verb": "get", "resource": "secrets", "namespace": NAMESPACE,
         "name": "pa-pipeops-agent-token"},
        {"verb": "list", "resource": "secrets", "namespace": NAMESPACE},
        {"verb": "create", "resource": "deployments", "group": "apps", "namespace": "default"},
        {"verb": "delete", "resource": "nodes"},
        {"verb": "create", "resource": "clusterroles", "group": "rbac.authorization.k8s.io"},
        {"verb": "create", "resource": "clusterrolebindings",
         "group": "rbac.authorization.k8s.io"},
        {"verb": "escalate", "resource": "roles", "group": "rbac.authorization.k8s.io",
         "namespace": NAMESPACE},
        {"verb": "create", "resource": "pods", "subresource": "exec", "namespace": SESSIONS},
        {"verb": "create", "resource": "serviceaccounts", "subresource": "token",
         "namespace": NAMESPACE},
        {"verb": "patch", "resource": "namespaces"},
    ]
    assert [a for a in allowed if not _review(agent, **a)] == []
    assert [a for a in refused if _review(agent, **a)] == []
    # and the API server refuses its token the same, with a real 403 body
    status, body = agent.rk.request("GET", "/api/v1/namespaces/kube-system/secrets",
                                    token=agent.token)
    assert status == 403 and body["reason"] == "Forbidden"
    assert body["message"].startswith(f'secrets is forbidden: User "{agent.user}"')


def _session_pods(agent: ChartedAgent, session_id: str) -> list[dict[str, Any]]:
    status, body = agent.rk.request(
        "GET", f"/api/v1/namespaces/{SESSIONS}/pods?labelSelector=session%3D{session_id}")
    assert status == 200, body
    items: list[dict[str, Any]] = body["items"]
    return items


class StateRecorder:
    """Every distinct state in a row the control plane heard for each session: its
    bounded per-session history (a state that lasted less than a poll is kept there),
    polled every 20 ms from a thread, from before the first command on. The history
    restarts when the session is dropped (stopped) or the tunnel reconnects."""

    def __init__(self, agent: ChartedAgent) -> None:
        self.agent = agent
        self.seen: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.wait(0.02):
            for sid, session in self.agent.sessions().items():
                self.seen[sid] = list(session["history"])

    def __enter__(self) -> StateRecorder:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def until(self, sid: str, final: str, timeout: float = 60) -> list[str]:
        """The states seen so far once the latest is `final`."""
        wait_for(lambda: self.seen.get(sid, [""])[-1] == final, timeout=timeout,
                 what=f"{sid} {final} (seen {self.seen.get(sid)})")
        return list(self.seen[sid])


def _states_until(agent: ChartedAgent, session_id: str, final: str,
                  timeout: float = 60) -> None:
    wait_for(lambda: agent.sessions().get(session_id, {}).get("state") == final,
             timeout=timeout, what=f"{session_id} {final}")


def _ready_on_kwok(agent: ChartedAgent, session_id: str) -> dict[str, Any] | None:
    pods = _session_pods(agent, session_id)
    ready = [p for p in pods if p["spec"].get("nodeName") in agent.rk.node_names
             and any(c["type"] == "Ready" and c["status"] == "True"
                     for c in p["status"].get("conditions", []))]
    return ready[0] if len(pods) == 1 and ready else None


def test_a_session_starts_runs_hibernates_wakes_and_stops(agent: ChartedAgent) -> None:
    sid = "real-s1"
    with StateRecorder(agent) as recorder:
        _session_lifecycle(agent, recorder, sid)


def _session_lifecycle(agent: ChartedAgent, recorder: StateRecorder, sid: str) -> None:
    record = agent.command("start_session", {"sessionId": sid, "user": "alice",
                                             "template": "firefox", "memory": "512Mi",
                                             "cpu": "250m"})
    assert record["state"] == "complete", record
    assert recorder.until(sid, "running") == ["starting", "running"]
    pod = wait_for(lambda: _ready_on_kwok(agent, sid), timeout=30, what="a Ready pod")
    assert pod["status"]["phase"] == "Running"
    assert pod["spec"]["containers"][0]["resources"]["limits"]["memory"] == "512Mi"

    assert agent.command("hibernate_session", {"sessionId": sid})["state"] == "complete"
    assert recorder.until(sid, "hibernated")[2:] == ["hibernated"]
    wait_for(lambda: _session_pods(agent, sid) == [], timeout=60, what="the pod gone")

    assert agent.command("wake_session", {"sessionId": sid})["state"] == "complete"
    assert recorder.until(sid, "running")[3:] == ["starting", "running"]
    wait_for(lambda: _ready_on_kwok(agent, sid), timeout=30, what="a Ready pod again")

    assert agent.command("stop_session", {"sessionId": sid})["state"] == "complete"
    wait_for(lambda: sid not in agent.sessions(), timeout=30, what="the session dropped")
    for path in (f"/apis/apps/v1/namespaces/{SESSIONS}/deployments",
                 f"/api/v1/namespaces/{SESSIONS}/services"):
        wait_for(lambda p=path: _count(agent, f"{p}?labelSelector=session%3D{sid}") == 0,
                 timeout=30, what=f"{path} gone")


def _kubectl(agent: ChartedAgent, kubeconfig: Path, *args: str, timeout: float = 60,
             stdin: str | None = None) -> str:
    proc = subprocess.run(agent.kubectl(kubeconfig, *args), capture_output=True, text=True,
                          timeout=timeout, input=stdin, check=False)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc.stdout


def test_real_kubectl_through_the_tunnel_gets_applies_and_watches(
        agent: ChartedAgent) -> None:
    kubeconfig = agent.tunnel_kubeconfig()
    nodes = _kubectl(agent, kubeconfig, "get", "nodes", "-o", "name").split()
    assert nodes == [f"node/{n}" for n in agent.rk.node_names]
    manifest = {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "through-tunnel", "namespace": "default"},
                "data": {"k": "v1"}}
    out = _kubectl(agent, kubeconfig, "apply", "--server-side", "-f", "-",
                   stdin=yaml.safe_dump(manifest))
    assert "serverside-applied" in out

    # a watch held open across the tunnel's and the control plane's ping timeouts (2 s)
    watch = subprocess.Popen(agent.kubectl(kubeconfig, "get", "configmaps", "-n", "default",
                                           "--watch", "-o", "name", "--request-timeout=0"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert watch.stdout is not None
        assert watch.stdout.readline().strip() in ("configmap/kube-root-ca.crt",
                                                   "configmap/through-tunnel")
        time.sleep(5)  # past every timeout on the path: the point of the test
        assert watch.poll() is None
        manifest["metadata"]["name"] = "after-the-wait"
        _kubectl(agent, kubeconfig, "apply", "-f", "-", stdin=yaml.safe_dump(manifest))
        lines = [watch.stdout.readline().strip() for _ in range(2)]
        assert lines[-1] == "configmap/after-the-wait" or "configmap/after-the-wait" in lines
    finally:
        watch.kill()
        watch.communicate(timeout=10)


def test_logs_exec_and_port_forward_through_the_tunnel_reach_kwoks_kubelet(
        agent: ChartedAgent) -> None:
    kubeconfig = agent.tunnel_kubeconfig()
    pod = "demo-0"
    agent.rk.pod_log.write_text("")
    follow = subprocess.Popen(agent.kubectl(kubeconfig, "logs", "-f", "-n", "demo", pod),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with agent.rk.pod_log.open("a") as log:
            log.write("2026-01-01T00:00:00Z stdout F first line\n")
        assert follow.stdout is not None
        assert "first line" in follow.stdout.readline()
        with agent.rk.pod_log.open("a") as log:
            log.write("2026-01-01T00:00:01Z stdout F second line\n")
        assert "second line" in follow.stdout.readline()
    finally:
        follow.kill()
        follow.communicate(timeout=10)

    out = _kubectl(agent, kubeconfig, "exec", "-n", "demo", pod, "--", "echo", "hello-exec")
    assert out.strip() == "hello-exec"
    local = free_port()
    forward = subprocess.Popen(
        agent.kubectl(kubeconfig, "port-forward", "-n", "demo", f"pod/{pod}",
                      f"{local}:8080"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    try:
        assert forward.stdout is not None
        assert "Forwarding from" in forward.stdout.readline()
        with socket.create_connection(("127.0.0.1", local), timeout=10) as sock:
            sock.sendall(b"ping through the kubelet\n")
            assert sock.recv(100) == b"ping through the kubelet\n"
    finally:
        forward.kill()
        forward.communicate(timeout=10)


def test_an_api_server_restart_under_the_agent_loses_nothing(agent: ChartedAgent) -> None:
    sid = "real-restart"
    agent.command("start_session", {"sessionId": sid, "template": "firefox"})
    _states_until(agent, sid, "running")
    before = agent.heartbeat()
    assert before is not None
    agent.rk.restart_apiserver(downtime=1.0)
    # a change right after the restart: the status watch, re-established, reports it
    assert agent.command("hibernate_session", {"sessionId": sid})["state"] == "complete"
    _states_until(agent, sid, "hibernated")
    # a new pod after the restart: the registrar's next counts include it
    agent.rk.apply({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "after-restart", "namespace": "demo"},
                    "spec": {"containers": [{"name": "c", "image": "x"}]}})
    pods = _count(agent, "/api/v1/pods")
    wait_for(lambda: (c := agent.heartbeat()) and c["heartbeat_count"] > before[
        "heartbeat_count"] and c["last_heartbeat"]["metadata"]["pod_count"] == pods, timeout=30,
             what="heartbeats counting the new pod")
    assert agent.tunnel_view()["connected"]  # type: ignore[index]
    agent.command("stop_session", {"sessionId": sid})
