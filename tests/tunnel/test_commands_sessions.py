"""Session commands over the tunnel (PROTOCOL.md section 3): each creates/scales/deletes
the right objects and reports; bad payloads create nothing; a command id is never
executed twice. A test that takes ``cluster`` runs in both worlds (kubesim and the real
control plane); the others use this module's kubesim. Each test has its own namespace
(the tunnel's ``kubernetes.session_namespace``)."""

from __future__ import annotations

import asyncio
import itertools
import json
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from kubernetes.utils import parse_quantity

from agentkit.config import KubernetesConfig
from agentkit.kube import Kube
from kubesim.testing import Kubesim
from pipeops_tunnel.sessions import Sessions, StartSession, StopSession, decode
from tests.clusters import Cluster
from tests.tunnel.agent_helpers import (
    FakeControlPlane,
    TunnelRun,
    until,
    write_identity,
)

SELECTOR = "app=pipeops-session"
RUNNING = 60  # seconds for a session's pod to be Ready (a kwok node on a loaded machine)


@pytest.fixture(scope="module")
def kubesim() -> Iterator[Kubesim]:
    with Kubesim() as ks:
        yield ks


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Cluster:
    """The test's ``cluster`` when it takes one, else this module's kubesim."""
    if "cluster" in request.fixturenames:
        chosen: Cluster = request.getfixturevalue("cluster")
        return chosen
    return Cluster("kubesim", request.getfixturevalue("kubesim"))


@pytest.fixture
def ns(world: Cluster) -> str:
    return world.create_namespace("sessions")


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane().start()
    yield plane
    await plane.stop()


@pytest.fixture
async def tunnel(cp: FakeControlPlane, world: Cluster, ns: str, state_dir: Path
                 ) -> AsyncIterator[TunnelRun]:
    run = TunnelRun(cp.url, state_dir, forwards={"agent-http": "127.0.0.1:9"},
                    kubeconfig=world.kubeconfig,
                    extra=["--set", f"kubernetes.session_namespace={ns}"]).start()
    try:
        await run.started()
        write_identity(state_dir)
        await cp.wait_connected()
        yield run
    finally:
        await asyncio.to_thread(run.stop)


async def objects(ks: Cluster | Kubesim, ns: str, session_id: str
                  ) -> dict[str, list[dict[str, Any]]]:
    """The session's objects in namespace `ns`, found by label."""
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, path in (("deployments", f"/apis/apps/v1/namespaces/{ns}/deployments"),
                       ("services", f"/api/v1/namespaces/{ns}/services"),
                       ("pvcs", f"/api/v1/namespaces/{ns}/persistentvolumeclaims")):
        status, body = await asyncio.to_thread(
            ks.request, "GET", f"{path}?labelSelector={SELECTOR},session={session_id}")
        assert status == 200, body
        out[kind] = body["items"]
    return out


async def _one_ready_pod(ks: Cluster, ns: str, session_id: str) -> None:
    """Until the session has exactly one pod, not terminating, and Ready."""
    path = (f"/api/v1/namespaces/{ns}/pods?labelSelector="
            + urllib.parse.quote(f"session={session_id}"))

    def settled(pods: list[dict[str, Any]]) -> bool:
        return len(pods) == 1 and not pods[0]["metadata"].get("deletionTimestamp") and any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (pods[0].get("status") or {}).get("conditions") or [])

    async with asyncio.timeout(RUNNING):
        while True:
            status, body = await asyncio.to_thread(ks.request, "GET", path)
            assert status == 200, body
            if settled(body["items"]):
                return
            await asyncio.sleep(0.1)


def quantities(resources: dict[str, str]) -> dict[str, Decimal]:
    return {name: parse_quantity(value) for name, value in resources.items()}


def replicas(objs: dict[str, list[dict[str, Any]]]) -> int:
    return int(objs["deployments"][0]["spec"]["replicas"])


async def test_session_lifecycle_creates_scales_and_deletes_the_right_objects(
    cp: FakeControlPlane, cluster: Cluster, ns: str, tunnel: TunnelRun
) -> None:
    payload = {"sessionId": "s1", "user": "alice", "template": "firefox",
               "persistentHome": True, "memory": "2Gi", "cpu": "1000m"}
    outcome = await cp.command("c-start", "start_session", payload)
    assert [m["type"] for m in cp.messages_for("c-start")] == ["ack", "complete"]
    result = outcome["result"]
    assert result["deployment"] == "session-s1" and result["pvc"] == "session-s1-home"
    objs = await objects(cluster, ns, "s1")
    assert [len(objs[k]) for k in ("deployments", "services", "pvcs")] == [1, 1, 1]
    deploy = objs["deployments"][0]
    assert deploy["metadata"]["labels"] == {"app": "pipeops-session", "session": "s1"}
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "firefox"
    assert quantities(container["resources"]["limits"]) == quantities(
        {"memory": "2Gi", "cpu": "1000m"})  # the real server writes 1000m as 1
    assert deploy["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "session-s1-home"}
    assert objs["services"][0]["spec"]["selector"] == {"app": "pipeops-session",
                                                       "session": "s1"}
    assert result["serviceIP"] == objs["services"][0]["spec"]["clusterIP"]
    assert replicas(objs) == 1

    outcome = await cp.command("c-hib", "hibernate_session", {"sessionId": "s1"})
    assert outcome["type"] == "complete", outcome
    assert replicas(await objects(cluster, ns, "s1")) == 0

    outcome = await cp.command("c-wake", "wake_session", {"sessionId": "s1"})
    assert outcome["type"] == "complete", outcome
    assert replicas(await objects(cluster, ns, "s1")) == 1

    outcome = await cp.command("c-stop", "stop_session", {"sessionId": "s1"})
    assert outcome["type"] == "complete", outcome
    objs = await objects(cluster, ns, "s1")
    assert [len(objs[k]) for k in ("deployments", "services", "pvcs")] == [0, 0, 1]

    # started again after a stop that kept the home: the same volume is taken up
    home_uid = objs["pvcs"][0]["metadata"]["uid"]
    outcome = await cp.command("c-restart", "start_session", payload)
    assert outcome["type"] == "complete", outcome
    objs = await objects(cluster, ns, "s1")
    assert [len(objs[k]) for k in ("deployments", "services", "pvcs")] == [1, 1, 1]
    assert objs["pvcs"][0]["metadata"]["uid"] == home_uid
    outcome = await cp.command("c-stop-again", "stop_session", {"sessionId": "s1"})
    assert outcome["type"] == "complete", outcome

    outcome = await cp.command("c-stop-pvc", "stop_session",
                               {"sessionId": "s1", "deletePVC": True})
    assert outcome["type"] == "complete", outcome
    assert outcome["result"]["deleted"] == ["persistentvolumeclaims/session-s1-home"]
    objs = await objects(cluster, ns, "s1")
    assert [len(objs[k]) for k in ("deployments", "services", "pvcs")] == [0, 0, 0]

    metrics = await tunnel.metrics()
    assert metrics["pipeops_tunnel_commands_total{action=start_session,result=complete}"] == 2
    assert metrics["pipeops_tunnel_commands_total{action=stop_session,result=complete}"] == 3


@pytest.mark.parametrize(("action", "payload", "reason"), [
    ("start_session", {"user": "bob", "template": "firefox"}, "sessionId"),
    ("start_session", {"sessionId": "s2", "template": "firefox", "persistentHome": "yes"},
     "persistentHome"),
    ("start_session", {"sessionId": "S2_bad", "template": "firefox"}, "sessionId"),
    ("start_session", {"sessionId": "s2", "template": "firefox", "memory": "lots"}, "memory"),
    ("start_session", {"sessionId": "s2"}, "template"),
    ("start_session", ["s2"], "expected a JSON object"),
    ("reboot_session", {"sessionId": "s2"}, "unknown action"),
    # bounded by Kubernetes' own rules before anything is written
    ("start_session", {"sessionId": "s2", "template": "firefox", "cpu": "9" * 5000}, "cpu"),
    ("start_session", {"sessionId": "s2", "template": "firefox", "memory": "1" * 19}, "memory"),
    ("start_session", {"sessionId": "s2", "template": "firefox", "storage": "1e999"}, "storage"),
    ("start_session", {"sessionId": "s2", "template": "a" * 300}, "template"),
    ("start_session", {"sessionId": "s2", "template": "firefox", "image": "Fire Fox"}, "image"),
    ("start_session", {"sessionId": "s2", "template": "firefox", "user": "bob\n"}, "user"),
    ("start_session", {"sessionId": "s2", "template": "firefox", "user": "u" * 254}, "user"),
    ("start_session", {"sessionId": "s" * 56, "template": "firefox"}, "sessionId"),
    # a payload nested deeper than anything the protocol sends: refused, not a crash
    ("start_session", {"sessionId": "s2", "template": "firefox",
                       "extra": json.loads("[" * 37 + "1" + "]" * 37)},
     "nested too deeply"),
])
async def test_bad_payload_fails_with_the_reason_and_creates_nothing(
    cp: FakeControlPlane, kubesim: Kubesim, ns: str, tunnel: TunnelRun, action: str, payload: Any,
    reason: str
) -> None:
    # kubesim only: refused before any API call, so the real world would add nothing
    outcome = await cp.command("c-bad", action, payload)
    assert [m["type"] for m in cp.messages_for("c-bad")] == ["ack", "failed"]
    assert reason in outcome["error"]
    for session_id in ("s2", "S2_bad"):
        objs = await objects(kubesim, ns, session_id.lower().replace("_", "-"))
        assert objs == {"deployments": [], "services": [], "pvcs": []}


async def test_kubernetes_errors_are_reported_and_a_half_made_start_is_undone(
    cp: FakeControlPlane, cluster: Cluster, ns: str, tunnel: TunnelRun
) -> None:
    outcome = await cp.command("c-missing", "hibernate_session", {"sessionId": "nobody"})
    assert outcome["type"] == "failed"
    assert 'deployments.apps "session-nobody" not found' in outcome["error"]

    # a Service of that name exists already: PVC and Deployment are made, the Service
    # conflicts, and what this command created is deleted again
    status, body = await asyncio.to_thread(cluster.request, "POST",
                                           f"/api/v1/namespaces/{ns}/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "session-s3"},
        "spec": {"ports": [{"port": 80}]}})
    assert status == 201, body
    outcome = await cp.command("c-conflict", "start_session",
                               {"sessionId": "s3", "template": "firefox",
                                "persistentHome": True})
    assert outcome["type"] == "failed"
    assert "already exists" in outcome["error"]
    objs = await objects(cluster, ns, "s3")
    assert objs["deployments"] == [] and objs["pvcs"] == []


async def test_a_start_interrupted_half_way_is_finished_by_the_next_one(
    cp: FakeControlPlane, cluster: Cluster, ns: str, tunnel: TunnelRun
) -> None:
    """What an interrupted start left (here: its Deployment, scaled to 0) is this
    session's and is taken up, not a conflict; so is a start resent under a new id."""
    session = {"sessionId": "s4", "template": "firefox"}
    status, body = await asyncio.to_thread(
        cluster.request, "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "session-s4",
                         "labels": {"app": "pipeops-session", "session": "s4"}},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"session": "s4"}},
                     "template": {"metadata": {"labels": {"session": "s4"}},
                                  "spec": {"containers": [{"name": "s", "image": "x"}]}}}})
    assert status == 201, body
    for command_id in ("c-s4-a", "c-s4-b"):
        outcome = await cp.command(command_id, "start_session", session)
        assert outcome["type"] == "complete", outcome
        objs = await objects(cluster, ns, "s4")
        assert [len(objs[k]) for k in ("deployments", "services", "pvcs")] == [1, 1, 0]
        taken = objs["deployments"][0]
        assert taken["metadata"]["uid"] == body["metadata"]["uid"]
        assert replicas(objs) == 1
        # brought to what the start asks for; the immutable selector kept
        assert taken["spec"]["template"]["spec"]["containers"][0]["image"] == "firefox"
        assert taken["spec"]["selector"] == {"matchLabels": {"session": "s4"}}
    outcome = await cp.command("c-s4-stop", "stop_session", {"sessionId": "s4"})
    assert outcome["type"] == "complete", outcome


async def test_a_start_again_with_new_settings_updates_the_running_session(
    cp: FakeControlPlane, cluster: Cluster, ns: str, tunnel: TunnelRun
) -> None:
    first = await cp.command("c-s6-a", "start_session",
                             {"sessionId": "s6", "template": "firefox", "port": 8080})
    assert first["type"] == "complete", first
    before = await objects(cluster, ns, "s6")
    again = await cp.command("c-s6-b", "start_session",
                             {"sessionId": "s6", "template": "chromium", "port": 9090,
                              "user": "bob", "memory": "1Gi"})
    assert again["type"] == "complete", again
    after = await objects(cluster, ns, "s6")
    deployment, service = after["deployments"][0], after["services"][0]
    assert deployment["metadata"]["uid"] == before["deployments"][0]["metadata"]["uid"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "chromium"
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}  # one pod at a time
    assert container["ports"][0]["containerPort"] == 9090
    assert container["resources"]["limits"]["memory"] == "1Gi"
    assert deployment["metadata"]["annotations"]["pipeops.io/user"] == "bob"
    assert service["spec"]["ports"][0]["port"] == 9090
    # the Service keeps its address, and the result says where the session is now
    assert service["spec"]["clusterIP"] == before["services"][0]["spec"]["clusterIP"]
    assert (again["result"]["serviceIP"], again["result"]["port"]) == (
        service["spec"]["clusterIP"], 9090)
    outcome = await cp.command("c-s6-stop", "stop_session", {"sessionId": "s6"})
    assert outcome["type"] == "complete", outcome


def _status_watch(path: str) -> bool:
    """A request of the session status watch: every session's Deployments by the label
    alone (a command names its session in the path or in the selector)."""
    url = urllib.parse.urlsplit(path)
    selector = urllib.parse.parse_qs(url.query).get("labelSelector", [""])[0]
    return url.path.endswith("/deployments") and selector == SELECTOR


async def test_a_command_id_is_never_executed_twice(
    cp: FakeControlPlane, kubesim: Kubesim, ns: str, tunnel: TunnelRun
) -> None:
    # kubesim only: needs its per-path request counters (nothing executed the second time)
    payload = {"sessionId": "s4", "template": "nginx"}
    first = await cp.command("c-dup", "start_session", payload)
    assert first["type"] == "complete"
    # the session status watch starts with the first session command: once it reported
    # s4 running, its list and its (long) watch request are made and not counted below
    await until(lambda: any(m.get("type") == "status" and m.get("sessionId") == "s4"
                            and m.get("state") == "running" for m in cp.messages),
                what="s4 reported by the status watch")
    await asyncio.to_thread(kubesim.reset_stats)
    # the same id again: acked, the stored outcome repeated, nothing executed (a second
    # create would have failed with AlreadyExists)
    cp.sessions[-1].send_control({"type": "command", "id": "c-dup",
                                  "action": "start_session", "payload": payload})
    await until(lambda: len(cp.messages_for("c-dup")) == 4, what="the repeated answer")
    assert [m["type"] for m in cp.messages_for("c-dup")] == ["ack", "complete",
                                                            "ack", "complete"]
    assert cp.messages_for("c-dup")[3] == first
    stats = await asyncio.to_thread(kubesim.stats)
    # a watch that was open before the reset still streams (its bytes are counted under
    # its path again, with no request): only requests made since the reset count; and the
    # status watch (every session, by the label alone) may list or watch again at any time
    made = [path for path, counts in stats["paths"].items() if counts["requests"]
            and not _status_watch(path)]
    assert not any("s4" in path or "deployments" in path for path in made), made
    objs = await objects(kubesim, ns, "s4")
    assert len(objs["deployments"]) == 1
    await tunnel.wait_log(lambda r: r.get("msg") == "duplicate command not executed again",
                          what="the duplicate logged")
    metrics = await tunnel.metrics()
    assert metrics["pipeops_tunnel_commands_total{action=start_session,result=duplicate}"] == 1
    # a command without an id is an error, not a command
    cp.sessions[-1].send_control({"type": "command", "action": "wake_session",
                                  "payload": {"sessionId": "s4"}})
    error = await cp.wait_message(lambda m: m["type"] == "error", what="the error reply")
    assert "id" in error["reason"]


async def test_sigterm_fails_a_running_command_and_drains(
    cp: FakeControlPlane, kubesim: Kubesim, ns: str, tunnel: TunnelRun
) -> None:
    await asyncio.to_thread(kubesim.set_delay, 2.0)  # kubesim only: slowed answers
    try:
        cp.sessions[-1].send_control({"type": "command", "id": "c-slow",
                                      "action": "wake_session",
                                      "payload": {"sessionId": "slow"}})
        await cp.wait_message(lambda m: m == {"type": "ack", "id": "c-slow"}, what="the ack")
        assert await tunnel.aterminate() == 0
    finally:
        await asyncio.to_thread(kubesim.set_delay, 0)
    kinds = [(m["type"], m.get("id")) for m in cp.messages]
    assert kinds[-2:] == [("failed", "c-slow"), ("drain", None)]
    assert "stopped before it finished" in cp.messages_for("c-slow")[-1]["error"]
    assert cp.connections[-1].close_code == 1001


async def test_outcomes_kept_for_the_next_connection_wait_for_its_hello_ack(
    cp: FakeControlPlane, kubesim: Kubesim, ns: str, tunnel: TunnelRun
) -> None:
    await asyncio.to_thread(kubesim.set_delay, 1.0)  # kubesim only: slowed answers
    try:
        cp.sessions[-1].send_control({"type": "command", "id": "c-kept",
                                      "action": "wake_session",
                                      "payload": {"sessionId": "kept"}})
        await cp.wait_message(lambda m: m == {"type": "ack", "id": "c-kept"}, what="the ack")
        cp.ack_gate = asyncio.Event()  # the next connection gets no hello_ack for now
        cp.kill()  # the outcome finds no connection: it waits in the outbox
        await tunnel.wait_log(lambda r: r.get("command_id") == "c-kept"
                              and str(r.get("msg")).startswith("command failed"),
                              what="the outcome, made while disconnected")
        await cp.wait_connected(count=2)
        # a round trip on the new connection: anything queued before it has arrived
        cp.sessions[1].send_control({"type": "no-such-type"})
        await until(lambda: any(m["type"] == "error" for m in cp.session_messages[1]),
                    what="the error reply")
        assert not [m for m in cp.session_messages[1] if m.get("id") == "c-kept"]
        cp.ack_gate.set()
        await until(lambda: any(m.get("id") == "c-kept" for m in cp.session_messages[1]),
                    what="the kept outcome after hello_ack")
        outcome = next(m for m in cp.session_messages[1] if m.get("id") == "c-kept")
        assert outcome["type"] == "failed"
    finally:
        await asyncio.to_thread(kubesim.set_delay, 0)


async def test_an_adopted_object_changed_meanwhile_is_read_again_and_updated(
    cluster: Cluster, ns: str
) -> None:
    """A controller writing the Deployment between the read and the update (409 from
    the API server) costs one more read, not a failed start."""
    kube = await Kube.connect(KubernetesConfig(in_cluster=False,
                                               kubeconfig=cluster.kubeconfig))
    path = f"/apis/apps/v1/namespaces/{ns}/deployments/session-s7"
    replace = kube.replace
    interfered = 0

    async def replace_after_another_writer(*args: Any) -> dict[str, Any]:
        nonlocal interfered
        if not interfered:  # the other writer goes first, once
            interfered += 1
            status, body = await asyncio.to_thread(
                cluster.request, "PATCH", path, {"metadata": {"annotations": {"x": "y"}}},
                content_type="application/merge-patch+json")
            assert status == 200, body
        return await replace(*args)

    try:
        sessions = Sessions(kube, ns)
        payload = decode(StartSession, {"sessionId": "s7", "template": "firefox"})
        await sessions.start(payload)
        await asyncio.to_thread(cluster.request, "PATCH", path, {"spec": {"replicas": 0}},
                                content_type="application/merge-patch+json")
        kube.replace = replace_after_another_writer  # type: ignore[method-assign]
        again = decode(StartSession, {"sessionId": "s7", "template": "chromium"})
        await sessions.start(again)
        assert interfered == 1
        status, body = await asyncio.to_thread(cluster.request, "GET", path)
        assert status == 200, body
        assert body["spec"]["replicas"] == 1
        assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "chromium"
        assert body["metadata"]["annotations"]["x"] == "y"  # the other writer's change kept
        await sessions.stop(decode(StopSession, {"sessionId": "s7"}))
    finally:
        await kube.aclose()


async def test_session_states_are_reported_and_sent_again_on_a_new_connection(
    cp: FakeControlPlane, cluster: Cluster, ns: str, tunnel: TunnelRun
) -> None:
    def reported(session_id: str, messages: list[dict[str, Any]] | None = None
                 ) -> list[dict[str, Any]]:
        return [m for m in (cp.messages if messages is None else messages)
                if m.get("type") == "status" and m.get("sessionId") == session_id]

    def last_state(session_id: str) -> str | None:
        said = reported(session_id)
        return said[-1]["state"] if said else None

    payload = {"sessionId": "s8", "template": "firefox"}
    assert (await cp.command("c-s8", "start_session", payload))["type"] == "complete"
    await until(lambda: last_state("s8") == "running", RUNNING, what="s8 running")
    assert reported("s8")[-1] == {"type": "status", "sessionId": "s8", "state": "running",
                                  "replicas": 1, "readyReplicas": 1}
    assert (await cp.command("c-s8-h", "hibernate_session", payload))["type"] == "complete"
    await until(lambda: last_state("s8") == "hibernated", what="s8 hibernated")
    assert (await cp.command("c-s8-w", "wake_session", payload))["type"] == "complete"
    await until(lambda: last_state("s8") == "running", RUNNING, what="s8 running again")
    if cluster.real:
        # The real controllers can report the hibernated pod, still terminating, as the
        # woken one's replica for a moment ("running"), then "starting" until the new pod
        # is Ready: the state is settled once only that pod is left, and Ready.
        await _one_ready_pod(cluster, ns, "s8")
        await until(lambda: last_state("s8") == "running", RUNNING, what="s8 running, settled")

    # A new connection hears every live session's state again, without a change.
    cp.kill()
    await cp.wait_connected(2)
    await until(lambda: reported("s8", cp.session_messages[1]), what="s8 on the new connection")
    assert [m["state"] for m in reported("s8", cp.session_messages[1])] == ["running"]

    assert (await cp.command("c-s8-stop", "stop_session", payload))["type"] == "complete"
    await until(lambda: last_state("s8") == "stopped", what="s8 stopped")
    # one message per change: nothing repeated while nothing changed (on the real one a
    # pod takes a moment to be Ready: "starting", its replicas counting up, comes first;
    # a hibernated session's pod takes a moment to go: "hibernated" 0/1, then 0/0)
    messages = reported("s8", cp.session_messages[0])
    assert all(a != b for a, b in pairwise(messages)), messages
    states = [m["state"] for m in messages]
    changes = [s for s, _ in itertools.groupby(s for s in states if s != "starting")]
    assert changes == ["running", "hibernated", "running"], messages
    assert all(b in ("starting", "running") for a, b in pairwise([*states, ""])
               if a == "starting"), states
