"""The seed metrics that need the pod disturbed to move, in a pod of their own (this
module stops its control plane at the end): the registration counter on a forced
re-registration, the node gauge on a new node, uptime with time, and the tunnel's status
and active forwards, the agent status when the control plane goes away. Each is read from
the http-api's whole-pod scrape."""

from __future__ import annotations

from tests.helpers import wait_for
from tests.httpapi.pod import Pod


def test_metrics_move_with_the_pod(pod: Pod) -> None:
    api = pod.api
    wait_for(lambda: api.metric("pipeops_tunnel_status") == 1, 30, what="tunnel connected")
    assert api.metric("pipeops_tunnel_forwards_active") == 2

    uptime = api.metric("pipeops_agent_uptime_seconds")
    wait_for(lambda: api.metric("pipeops_agent_uptime_seconds") > uptime, 10,
             what="uptime to grow")

    nodes = api.metric("pipeops_cluster_nodes_total")
    status, body = pod.kubesim.request("POST", "/api/v1/nodes", {
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-added-by-test"}})
    assert status == 201, body
    wait_for(lambda: api.metric("pipeops_cluster_nodes_total") == nodes + 1, 15,
             what="the node gauge to count the new node")

    assert api.metric("pipeops_registration_attempts_total", result="success") == 1
    pod.cp.forget(pod.cluster_id)  # heartbeats now get 404: the registrar registers again
    wait_for(lambda: api.metric("pipeops_registration_attempts_total", result="success") == 2,
             30, what="a second registration counted")

    pod.cp.stop()  # the control plane goes away: the tunnel and heartbeats with it
    wait_for(lambda: api.metric("pipeops_tunnel_status") == 0, 30,
             what="the tunnel status gauge to drop")
    assert api.metric("pipeops_tunnel_forwards_active") == 0
    wait_for(lambda: api.metric("pipeops_agent_status") == 0, 30,
             what="the agent status gauge to drop")
    assert api.metric("pipeops_container_up", container="tunnel") == 1  # down is not gone
