"""The API server restarted, and watches that expire mid-sync: no delete is lost.

Every open watch first hangs (a stuck proxy: changes are made that no watch delivers),
then ends with 410 Gone and the history expired, so resuming from the last
resourceVersion is refused and only a fresh list tells what happened; then the API
server restarts (watches end, history expired, 503 for a while) while more changes are
made. Both followers must catch up: the gateway's (Ingresses -> the control plane's
route table) and the tunnel's session status watch (session Deployments -> ``status``
messages: a session deleted behind its back reported ``stopped``)."""

from __future__ import annotations

from typing import Any

from pipeops_tunnel.sessions import object_name
from tests.faults.pod import APPS, FaultPod
from tests.helpers import wait_for
from tests.httpapi.pod import SESSION_NAMESPACE


def _command(pod: FaultPod, action: str, session_id: str) -> dict[str, Any]:
    payload = {"sessionId": session_id}
    if action == "start_session":
        payload["template"] = "nginx"
    status, reply = pod.cp.request("POST", f"/api/v1/agents/{pod.agent_id}/command",
                                   {"action": action, "payload": payload, "wait": 30},
                                   timeout=40)
    assert status == 200 and reply["state"] == "complete", reply
    return dict(reply)


def _sessions(pod: FaultPod) -> dict[str, Any]:
    status, view = pod.cp.request("GET", f"/debug/tunnels/{pod.cluster_id}")
    return dict(view["sessions"]) if status == 200 else {}


def _delete_session_deployment(pod: FaultPod, session_id: str) -> None:
    status, reply = pod.kubesim.request(
        "DELETE", f"/apis/apps/v1/namespaces/{SESSION_NAMESPACE}/deployments/"
                  f"{object_name(session_id)}")
    assert status == 200, reply


def _ingresses(pod: FaultPod) -> set[str]:
    status, listed = pod.kubesim.request(
        "GET", f"/apis/networking.k8s.io/v1/namespaces/{APPS}/ingresses")
    assert status == 200, listed
    return {i["metadata"]["name"] for i in listed["items"]}


def test_api_server_restart_and_expired_watches_lose_no_delete(pod: FaultPod) -> None:
    ks = pod.kubesim
    for session_id in ("keep", "gone-in-gap", "gone-in-restart"):
        _command(pod, "start_session", session_id)
    wait_for(lambda: {"keep", "gone-in-gap", "gone-in-restart"} <= set(_sessions(pod)), 15,
             what="the sessions' state at the control plane")
    for number in range(4):
        pod.add_ingress(f"api{number}", f"api{number}.faults.test")
    wait_for(pod.routes_match, 15, what="the routes published")

    # 1. the watches hang: changes nobody hears of; then they end with 410, history gone
    assert ks.hang_watches() >= 2  # the gateway's and the tunnel's at least
    pod.delete_ingress("api0")
    pod.delete_ingress("api1")
    pod.add_ingress("api-gap", "api-gap.faults.test")
    _delete_session_deployment(pod, "gone-in-gap")
    ks.expire_history()
    ks.drop_watches(expired=True)
    held = wait_for(pod.routes_match, 20, what="the routes after the expired watches")
    assert ("api0.faults.test", "/") not in held and ("api-gap.faults.test", "/") in held
    wait_for(lambda: "gone-in-gap" not in _sessions(pod), 20,
             what="the session deleted in the gap reported stopped")

    # 2. the API server restarts (503s a while) while the cluster changes again
    ks.restart(downtime=1.0)
    assert ks.request("GET", "/version")[0] == 503  # down a while
    wait_for(lambda: ks.request("GET", "/version")[0] == 200, 15, what="the API server back")
    pod.delete_ingress("api2")
    _delete_session_deployment(pod, "gone-in-restart")
    pod.add_ingress("api-restart", "api-restart.faults.test")
    held = wait_for(pod.routes_match, 30, what="the routes after the restart")
    assert ("api2.faults.test", "/") not in held
    assert ("api-restart.faults.test", "/") in held
    wait_for(lambda: "gone-in-restart" not in _sessions(pod), 30,
             what="the session deleted around the restart reported stopped")
    assert "keep" in _sessions(pod)
    pod.wait_settled(30)

    # leave the pod as it was
    _command(pod, "stop_session", "keep")
    for name in _ingresses(pod):
        pod.delete_ingress(name)
    wait_for(pod.routes_match, 15, what="the routes cleaned up")

