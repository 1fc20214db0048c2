"""Every endpoint of the http-api against the whole pod, siblings up: each says what the
siblings say (identity, heartbeat, tunnel, runtime), actions are carried out by the
sibling that owns them, and the seed metrics move when their thing happens."""

from __future__ import annotations

import json
import platform
import re
from typing import Any

from tests.helpers import wait_for
from tests.httpapi.pod import SIBLINGS, Pod

CONTAINERS = ("http-api", *SIBLINGS)
SEED_METRICS = (
    "pipeops_agent_status", "pipeops_tunnel_status", "pipeops_heartbeat_total",
    "pipeops_heartbeat_errors_total", "pipeops_registration_attempts_total",
    "pipeops_http_requests_total", "pipeops_tunnel_forwards_active",
    "pipeops_websocket_connections", "pipeops_sse_connections", "pipeops_cluster_nodes_total",
    "pipeops_cluster_pods_total", "pipeops_agent_uptime_seconds",
    "pipeops_kubernetes_api_calls_total",
)


def test_version(pod: Pod) -> None:
    body = pod.api.get("/version", token="")
    assert body["version"] == "0.1.0"
    assert body["python"] == platform.python_version()
    assert body["protocol_version"] == {"tunnel": "pipeops.tunnel.v1",
                                        "grpc": "pipeops.agent.v1"}
    assert {"commit", "build_date"} <= body.keys()


def test_version_says_the_commit_and_build_date_the_image_gives(pod: Pod) -> None:
    """The image sets PIPEOPS_COMMIT and PIPEOPS_BUILD_DATE from its build args
    (tests/images checks that wiring): /version reports them as given."""
    other = pod.http_api(env={"PIPEOPS_COMMIT": "3f2c9e1d0a7b",
                              "PIPEOPS_BUILD_DATE": "2026-12-02T09:00:00Z"})
    body = other.get("/version", token="")
    assert body["commit"] == "3f2c9e1d0a7b"
    assert body["build_date"] == "2026-12-02T09:00:00Z"


def test_metrics_are_the_whole_pod(pod: Pod) -> None:
    text = pod.api.get("/metrics", token="")
    series = [line.split(" ")[0] for line in text.splitlines()
              if line and not line.startswith("#")]
    assert len(series) == len(set(series)), "a series appears twice"
    declared = re.findall(r"^# TYPE (\S+) ", text, re.M)
    assert len(declared) == len(set(declared)), "a family is declared twice"
    for name in CONTAINERS:
        assert f'pipeops_container_up{{container="{name}"}} 1.0' in text
        assert f'process_resident_memory_bytes{{container="{name}"}}' in text
    for seed in SEED_METRICS:  # declared (a labelled counter has no sample until it moves)
        assert f"# TYPE {seed} " in text, f"{seed} is not exported"


def test_seed_metrics_move(pod: Pod) -> None:
    api = pod.api
    assert api.metric("pipeops_registration_attempts_total", result="success",
                      container="registrar") == 1
    assert api.metric("pipeops_agent_status") == 1
    assert api.metric("pipeops_tunnel_status") == 1
    assert api.metric("pipeops_tunnel_forwards_active") == 2
    assert api.metric("pipeops_agent_uptime_seconds") > 0
    beats = api.metric("pipeops_heartbeat_total")
    wait_for(lambda: api.metric("pipeops_heartbeat_total") > beats, 10,
             what="a heartbeat in the http-api's scrape")
    calls = api.metric("pipeops_kubernetes_api_calls_total")
    wait_for(lambda: api.metric("pipeops_kubernetes_api_calls_total") > calls, 10,
             what="a Kubernetes API call counted")
    nodes = len(pod.kubesim.request("GET", "/api/v1/nodes")[1]["items"])
    assert api.metric("pipeops_cluster_nodes_total") == nodes
    pods = api.metric("pipeops_cluster_pods_total")
    status, body = pod.kubesim.request("POST", "/api/v1/namespaces/default/pods", {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "one-more-for-metrics"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert status == 201, body
    wait_for(lambda: api.metric("pipeops_cluster_pods_total") == pods + 1, 10,
             what="the pod gauge to count the new pod")
    served = api.metric("pipeops_http_requests_total", endpoint="/version", code="200")
    api.get("/version", token="")
    assert api.metric("pipeops_http_requests_total", endpoint="/version",
                      code="200") == served + 1
    refused = api.metric("pipeops_http_requests_total", endpoint="/api/agent/status",
                         code="401")
    assert api.request("GET", "/api/agent/status", token="")[0] == 401
    assert api.metric("pipeops_http_requests_total", endpoint="/api/agent/status",
                      code="401") == refused + 1


def test_heartbeat_errors_move(pod: Pod) -> None:
    api = pod.api
    errors = api.metric("pipeops_heartbeat_errors_total")
    pod.cp.set_fault("5xx", target="heartbeat")
    try:
        status, body, _ = api.request("POST", "/api/agent/heartbeat")
        assert status == 200 and body["delivered"] is False and body["error"], body
        wait_for(lambda: api.metric("pipeops_heartbeat_errors_total") > errors, 10,
                 what="heartbeat errors to count")
        wait_for(lambda: api.metric("pipeops_agent_status") == 0, 10,
                 what="the agent status gauge to drop")
    finally:
        pod.cp.clear_fault()
    wait_for(lambda: api.metric("pipeops_agent_status") == 1, 10,
             what="the agent status gauge to recover")


def test_health_detailed(pod: Pod) -> None:
    body = pod.api.get("/api/health/detailed")
    assert body["status"] == "healthy"
    for name in CONTAINERS:
        info = body["containers"][name]
        assert info["grpc_health"] == "SERVING"
        assert info["state"] in ("ready", "idle"), info
        assert int(info["runtime"]["rss_bytes"]) > 0
    assert body["identity"]["cluster_id"] == pod.cluster_id
    assert body["identity"]["state"] == "REGISTRATION_STATE_REGISTERED"
    assert int(body["heartbeat"]["sent_total"]) >= 1 and body["heartbeat"]["last_success"]
    assert body["tunnel"]["state"] == "TUNNEL_STATE_CONNECTED"
    assert "gateway" in body  # the gateway's own answer, or what it said instead


def test_features(pod: Pod) -> None:
    body = pod.api.get("/api/status/features")
    assert body["tunnel"] == {"enabled": True, "available": True, "detail": ""}
    assert body["heartbeat"]["available"] is True
    assert body["session_commands"]["available"] is True
    assert body["sse"]["available"] and body["websocket"]["available"]
    assert body["ingress_sync"]["enabled"] is False and body["ingress_sync"]["available"] is False
    assert body["ingress_sync"]["detail"]


def test_runtime_per_container(pod: Pod) -> None:
    body = pod.api.get("/api/metrics/runtime")
    assert set(body) == set(CONTAINERS)
    for name, runtime in body.items():
        assert int(runtime["rss_bytes"]) > 10 * 2**20, name
        assert runtime["cpu_seconds"] > 0 and runtime["threads"] >= 1
        assert runtime["open_fds"] >= 3 and runtime["uptime_seconds"] > 0
        assert runtime["loop_lag_seconds"] >= 0
        assert "grpc" in runtime["packages"], name
    # what each process holds: the registrar talks to the cluster, the tunnel does not;
    # the http-api runs uvicorn's server without its command line (click) or reloader
    assert "kubernetes" in body["registrar"]["packages"]
    assert "kubernetes" not in body["tunnel"]["packages"]
    assert not {"click", "watchfiles"} & set(body["http-api"]["packages"])


def test_parts_an_idle_http_api_leaves_unloaded_work_on_first_use(pod: Pod) -> None:
    """A fresh http-api serving probes only has not built its outbound HTTP clients
    (httpx's transport, httpcore) nor loaded the WebSocket protocol (websockets): each
    comes with its first use and works then (bench/memory_notes.md, third pass)."""
    from websockets.sync.client import connect

    api = pod.http_api()

    def packages() -> set[str]:
        return set(api.get("/api/metrics/runtime")["http-api"]["packages"])

    assert not {"httpcore", "h11", "websockets"} & packages()
    # FastAPI's OpenAPI models, built with the first document asked for
    assert api.get("/openapi.json", token="")["components"]["securitySchemes"]
    # the first scrape builds the client that reaches every sibling's metrics
    assert all(api.metric("pipeops_container_up", container=name) == 1 for name in SIBLINGS)
    assert "httpcore" in packages()
    body = api.get("/api/status/connectivity")  # the control plane's client, first use
    assert body["control_plane"]["ok"] is True, body
    with connect(api.url.replace("http", "ws") + "/ws",
                 additional_headers={"Authorization": f"Bearer {api.token}"}) as ws:
        ws.send(json.dumps({"type": "ping", "request_id": "first"}))
        while (reply := json.loads(ws.recv(timeout=10)))["type"] != "ping_response":
            pass
        assert reply["request_id"] == "first"
    assert "websockets" in packages()


def test_connectivity_really_tests(pod: Pod) -> None:
    body = pod.api.get("/api/status/connectivity")
    assert body["ok"] is True, body
    assert body["control_plane"]["ok"] and body["control_plane"]["url"] == pod.cp.url
    kube = body["kubernetes"]
    assert kube["ok"] and kube["version"].startswith("v1.") and kube["permissions"]
    assert all(p["allowed"] for p in kube["permissions"])
    assert body["tunnel"]["ok"] and body["tunnel"]["latency_ms"] > 0
    for check in ("control_plane", "kubernetes", "tunnel"):
        assert body[check]["latency_ms"] >= 0


def test_connectivity_sees_a_control_plane_fault(pod: Pod) -> None:
    api = pod.http_api("--api-url", "http://127.0.0.1:9")  # nothing listens there
    body = api.get("/api/status/connectivity")
    assert body["control_plane"]["ok"] is False and body["control_plane"]["detail"]
    assert body["ok"] is False


def test_connectivity_names_a_ca_bundle_that_cannot_be_loaded(pod: Pod) -> None:
    """The control plane's TLS context is built with its client's first use. A bundle that
    cannot be read at all stops the http-api at start (tests/services/test_config_errors);
    one that reads as PEM but does not load is the check's answer, by its setting, and
    stays so."""
    broken = pod.folder / "broken-ca.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    api = pod.http_api("--set", f"pipeops.tls.ca_file={broken}")
    for _ in range(2):  # a failed build is not remembered: the same answer again
        check = api.get("/api/status/connectivity")["control_plane"]
        assert check["ok"] is False
        assert check["detail"].startswith(f"config error: pipeops.tls.ca_file = '{broken}'")
    assert api.get("/health", token="")["status"] == "healthy"


def test_agent_status(pod: Pod) -> None:
    body = pod.api.get("/api/agent/status")
    assert body["status"] == "healthy"
    assert body["identity"]["agent_id"] == pod.agent_id
    assert set(body["containers"]) == set(CONTAINERS)
    assert body["tunnel"]["state"] == "TUNNEL_STATE_CONNECTED"
    assert body["routes"] == {"total": 0, "routes": []}  # route sync is off in this pod


def test_heartbeat_now(pod: Pod) -> None:
    before = int(pod.api.get("/api/health/detailed")["heartbeat"]["sent_total"])
    status, body, _ = pod.api.request("POST", "/api/agent/heartbeat")
    assert status == 200 and body["delivered"] is True, body
    assert int(body["heartbeat"]["sent_total"]) > before


def _over_tunnel(pod: Pod, command: dict[str, Any]) -> dict[str, Any]:
    status, record = pod.cp.request("POST", f"/api/v1/agents/{pod.agent_id}/command",
                                    command, timeout=30)
    assert status == 200, record
    return dict(record)


def test_one_runner_two_doors(pod: Pod) -> None:
    """The same command through the tunnel and through the API: the same outcome."""
    missing = {"action": "wake_session", "payload": {"sessionId": "no-such-session"}}
    tunnel = _over_tunnel(pod, {**missing, "id": "door-tunnel-1"})
    status, api, _ = pod.api.request("POST", "/api/runners/sessions/command",
                                     {**missing, "id": "door-api-1"})
    assert status == 200, api
    assert tunnel["state"] == api["type"] == "failed"
    assert tunnel["error"] == api["error"] and "not found" in api["error"]

    start = {"action": "start_session", "payload": {"template": "nginx:1.27"}}
    tunnel = _over_tunnel(pod, {"action": start["action"], "id": "door-tunnel-2",
                                "payload": {**start["payload"], "sessionId": "door-t"}})
    status, api, _ = pod.api.request("POST", "/api/runners/sessions/command", {
        "action": start["action"], "id": "door-api-2",
        "payload": {**start["payload"], "sessionId": "door-a"}})
    assert status == 200 and api["type"] == "complete", api
    assert tunnel["state"] == "complete", tunnel
    swap = {"door-t": "door-a", "session-door-t": "session-door-a"}
    differ = {"serviceIP"}  # each session's Service gets its own cluster IP
    assert {k: swap.get(v, v) if isinstance(v, str) else v
            for k, v in tunnel["result"].items() if k not in differ} == \
        {k: v for k, v in api["result"].items() if k not in differ}
    assert set(tunnel["result"]) == set(api["result"])
    status, body = pod.kubesim.request(
        "GET", "/apis/apps/v1/namespaces/pipeops-sessions/deployments/session-door-a")
    assert status == 200, body
    # both sessions, as the tunnel's watch of the session Deployments sees them
    def sessions() -> dict[str, Any] | None:
        got = {s["session_id"]: s
               for s in pod.api.get("/api/agent/status")["sessions"]["sessions"]}
        return got if {"door-t", "door-a"} <= set(got) else None

    listed = wait_for(sessions, 20, what="both sessions in /api/agent/status")
    assert listed["door-a"]["state"] in ("starting", "running")
    assert listed["door-a"]["replicas"] == 1

    again = pod.api.request("POST", "/api/runners/sessions/command", {
        "action": "stop_session", "id": "door-api-2", "payload": {"sessionId": "x"}})[1]
    assert again == api, "an id seen before is not run again: its outcome is repeated"


def test_runner_errors(pod: Pod) -> None:
    status, body, _ = pod.api.request("POST", "/api/runners/builds/command",
                                      {"action": "wake_session", "payload": {}})
    assert status == 404 and "sessions" in body["detail"]
    status, body, _ = pod.api.request("POST", "/api/runners/sessions/command", {"payload": {}})
    assert status == 422
    status, body, _ = pod.api.request("POST", "/api/runners/sessions/command",
                                      {"action": "explode", "payload": {}})
    assert status == 200 and body["type"] == "failed" and "unknown action" in body["error"]


def test_control_plane_message(pod: Pod) -> None:
    assert pod.api.request("POST", "/api/control-plane/message",
                           {"type": "ping"})[1] == {"type": "pong"}
    status, body, _ = pod.api.request("POST", "/api/control-plane/message",
                                      {"type": "heartbeat"})
    assert status == 200 and body["delivered"] is True
    status, body, _ = pod.api.request("POST", "/api/control-plane/message", {
        "type": "command", "action": "hibernate_session",
        "payload": {"sessionId": "no-such-one"}})
    assert status == 200 and body["type"] == "failed" and body["id"].startswith("local-")
    status, body, _ = pod.api.request("POST", "/api/control-plane/message", {"type": "dance"})
    assert status == 422
    status, body, _ = pod.api.request("POST", "/api/control-plane/message",
                                      {"type": "command"})
    assert status == 422 and "action" in body["detail"]
