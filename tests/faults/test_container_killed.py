"""Each container killed with SIGKILL (no goodbye) and started again while the others keep
serving: the http-api answers and shows the sibling down, then up; the tunnel stays
connected while another container dies; heartbeats go on unless the registrar is the one
killed; a change made while the gateway is dead is published once it is back; after the
restart the whole pod converges, as the same cluster."""

from __future__ import annotations

import pytest

from tests.faults.pod import FaultPod
from tests.helpers import wait_for


def _up(pod: FaultPod, name: str) -> float:
    return pod.api.metric("pipeops_container_up", container=name)


@pytest.mark.parametrize("name", ["registrar", "tunnel", "gateway", "http-api"])
def test_a_container_killed_comes_back_while_the_others_keep_serving(
        pod: FaultPod, name: str) -> None:
    cluster_id = pod.cluster_id
    tunnel_before = pod.cp.request("GET", f"/debug/tunnels/{cluster_id}")[1]
    beats = pod.heartbeats()
    host = f"while-{name}-dead.faults.test"
    pod.kill(name)
    if name != "http-api":  # it answers, and says the sibling is down
        assert pod.api.request("GET", "/health", token="")[0] == 200
        wait_for(lambda: _up(pod, name) == 0, 15, what=f"the http-api to see {name} down")
        status, reply, _ = pod.api.request("GET", "/ready", token="")
        assert status == 503 and name in str(reply), reply
    if name != "registrar":  # heartbeats go on
        wait_for(lambda: pod.heartbeats() >= beats + 3, 15, what="heartbeats meanwhile")
    if name == "tunnel":  # ... and say so honestly
        wait_for(lambda: (pod.cp.cluster(cluster_id) or {}).get("last_heartbeat", {})
                 .get("tunnel_status") not in (None, "connected"), 15,
                 what="the heartbeat to say the tunnel is not connected")
    else:  # the tunnel stays connected: the same connection all along
        assert pod.tunnel_connected()
    pod.add_ingress(f"while-{name}-dead", host)  # a change while it is dead
    pod.start_again(name)
    pod.wait_settled(40)
    assert (host, "/") in pod.held_routes()
    assert pod.cluster_id == cluster_id == pod.identity_now()["cluster_id"]
    assert [c["cluster_id"] for c in pod.cp.clusters()] == [cluster_id]
    assert _up(pod, name) == 1
    tunnel_after = pod.cp.request("GET", f"/debug/tunnels/{cluster_id}")[1]
    if name == "tunnel":
        assert tunnel_after["connects"] == tunnel_before["connects"] + 1
    else:
        assert tunnel_after["connects"] == tunnel_before["connects"], (
            f"the tunnel reconnected while {name} was killed")
    pod.delete_ingress(f"while-{name}-dead")
    wait_for(lambda: (host, "/") not in pod.held_routes(), 15, what="the route deleted")
