"""The control plane gone, then back: nothing is lost.

* Down 60 s (the process frozen: every connection to it hangs, as through a network
  partition or a control plane too sick to answer) with its memory kept. Meanwhile the
  pod keeps serving and says honestly that the control plane is unreachable, and the
  cluster changes (an Ingress deleted, one created). After: the same cluster (no second
  registration), heartbeats again, the tunnel back within the reconnect policy's cap, the
  routes equal to the cluster's (the delete made during the outage is not lost).
* Restarted with its memory lost (a new process, same ports, no state): the agent
  registers again as the same cluster, heartbeats, the gateway publishes its routes again
  to a control plane that forgot them, and the tunnel is back within the cap.
* Restarted with half its memory: the clusters kept (``--state``), the routes lost. The
  agent is told nothing (its token still works); the gateway, seeing the tunnel connect
  anew, reads what the control plane holds and publishes what is missing.
"""

from __future__ import annotations

import time
from pathlib import Path

from tests.faults.pod import BACKOFF_MAX, PING_TIMEOUT, FaultPod
from tests.helpers import wait_for

OUTAGE = 60.0
# reconnecting: the failure noticed (a ping timeout, a request timeout: 2 s), then one
# backoff (at most the cap), then the handshake; a loaded two-core machine gets slack
SLACK = 5.0


def test_control_plane_down_60s_and_back_loses_nothing(pod: FaultPod) -> None:
    cluster_id, agent_id = pod.cluster_id, pod.agent_id
    registered = pod.cp.cluster(cluster_id)
    assert registered is not None
    pod.add_ingress("doomed", "doomed.faults.test")
    wait_for(pod.routes_match, 15, what="the doomed route published")
    pod.cp.pause()
    paused = time.monotonic()
    try:
        # honest: the registrar says heartbeats fail, the tunnel that it is not connected,
        # the http-api that the control plane does not answer; and they all keep serving
        described = wait_for(lambda: (d := pod.describe("registrar"))
                             and d["state"] == "SERVICE_STATE_DEGRADED" and d, 15,
                             what="the registrar to say heartbeats fail")
        assert "heartbeats failing" in described["detail"]
        wait_for(lambda: pod.describe("tunnel")["state"] != "SERVICE_STATE_READY", 15,
                 what="the tunnel to say it is not connected")
        status, reply, _ = pod.api.request("GET", "/api/status/connectivity", timeout=30)
        assert status == 200 and reply["control_plane"]["ok"] is False, reply
        assert reply["kubernetes"]["ok"] is True, reply
        # the cluster changes while nobody can tell the control plane
        pod.delete_ingress("doomed")
        pod.add_ingress("born", "born.faults.test")
        wait_for(lambda: {r["hostname"] for r in pod.gateway_routes()}
                 >= {"born.faults.test"}, 15, what="the gateway to see the new Ingress")
        gateway = wait_for(lambda: (d := pod.describe("gateway"))
                           and d["state"] == "SERVICE_STATE_DEGRADED" and d, 15,
                           what="the gateway to say publishing fails")
        assert "publishing routes failed" in gateway["detail"]
        checks = 0
        while time.monotonic() - paused < OUTAGE:  # the outage lasts its 60 s
            assert pod.api.request("GET", "/health", token="", timeout=10)[0] == 200
            for name in ("registrar", "tunnel", "gateway", "http-api"):
                assert pod.process(name).proc.poll() is None, f"{name} exited"
            assert pod.describe("gateway")["state"] == "SERVICE_STATE_DEGRADED"
            assert pod.describe("registrar")["state"] == "SERVICE_STATE_DEGRADED"
            checks += 1
            time.sleep(1.0)  # the outage is a length of time, by definition
        assert checks >= 10  # the pod was looked at all along
    finally:
        pod.cp.resume()
    resumed = time.monotonic()
    wait_for(pod.tunnel_connected, BACKOFF_MAX + PING_TIMEOUT + SLACK,
             what="the tunnel back within the reconnect cap")
    back = pod.cp.cluster(cluster_id)
    assert back is not None and back["agent_id"] == agent_id
    assert back["registration_count"] == registered["registration_count"]  # same cluster
    assert len(pod.cp.clusters()) == 1
    beats = back["heartbeat_count"]
    wait_for(lambda: pod.heartbeats() >= beats + 2, 10, what="heartbeats again")
    held = wait_for(pod.routes_match, 15, what="the routes equal to the cluster's")
    assert ("born.faults.test", "/") in held and ("doomed.faults.test", "/") not in held
    assert pod.identity_now()["cluster_id"] == cluster_id
    pod.wait_settled(30)
    print(f"settled {time.monotonic() - resumed:.1f}s after the control plane came back")
    pod.delete_ingress("born")


def test_control_plane_restarted_with_its_memory_lost(pod: FaultPod, tmp_path: Path) -> None:
    cluster_id, agent_id = pod.cluster_id, pod.agent_id
    token = pod.identity_now()["cluster_token"]
    published = pod.held_routes()
    kept = list(pod.cp.extra_args)
    pod.cp.extra_args += ["--state", str(tmp_path / "controlplane.json")]
    pod.cp.restart()  # no state file yet: it knows nothing
    restarted = time.monotonic()
    # the agent registers again: the same cluster id, offered by the agent and honoured
    wait_for(lambda: pod.heartbeats() >= 2, 15, what="heartbeats to the new control plane")
    found = pod.cp.cluster(cluster_id)
    assert found is not None and found["agent_id"] == agent_id
    assert [c["cluster_id"] for c in pod.cp.clusters()] == [cluster_id]
    identity = wait_for(lambda: (d := pod.identity_now())["cluster_token"] != token and d,
                        10, what="the new cluster token written")
    assert identity["cluster_id"] == cluster_id and identity["agent_id"] == agent_id
    # the tunnel: the old token is refused, the new one is read, then one backoff
    wait_for(pod.tunnel_connected, 2 * pod.interval + BACKOFF_MAX + SLACK,
             what="the tunnel back within the reconnect cap")
    took = time.monotonic() - restarted
    # the gateway publishes again what the control plane forgot
    assert wait_for(pod.routes_match, 15, what="the routes published again") == published
    pod.wait_settled(30)
    print(f"tunnel back {took:.1f}s after the restart")

    # half the memory lost: the cluster (and its token) kept, the routes gone
    try:
        pod.cp.restart()
    finally:
        pod.cp.extra_args = kept  # the next restart, by any test, forgets everything
    assert [c["cluster_id"] for c in pod.cp.clusters()] == [cluster_id]
    assert pod.held_routes() == set()
    assert wait_for(pod.routes_match, 15, what="the routes published again") == published
    assert pod.identity_now()["cluster_token"] == identity["cluster_token"]  # told nothing
    pod.wait_settled(30)
