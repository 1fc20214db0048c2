"""End to end through the real agent: a WebSocket upgrade through a stream, commands,
and a killed WebSocket that the tunnel recovers from (real processes, in both worlds;
see ``E2EStack`` and the ``e2e`` fixture)."""

from __future__ import annotations

import os
import stat
import subprocess

from websockets.sync.client import connect

from pipeops_controlplane.tunnel import kubeconfig_through_tunnel
from tests.helpers import wait_for
from tests.tunnel.e2e_helpers import E2EStack


def test_a_websocket_upgrade_works_through_the_agent_http_forward(e2e: E2EStack) -> None:
    port = e2e.forward_port("agent-http")
    with connect(f"ws://127.0.0.1:{port}/echo", open_timeout=10) as ws:
        ws.send("hello through the tunnel")
        assert ws.recv(timeout=10) == "hello through the tunnel"
        blob = os.urandom(600 * 1024)  # over two windows' worth
        ws.send(blob)
        assert ws.recv(timeout=20) == blob
    assert e2e.view()["hello"]["forwards"] == [{"name": "kubernetes-api"},
                                               {"name": "agent-http"}]


def test_the_tunnel_kubeconfig_is_private_and_names_the_forward_port(e2e: E2EStack) -> None:
    import yaml

    mode = stat.S_IMODE(e2e.kubeconfig.stat().st_mode)
    assert mode == 0o600
    config = yaml.safe_load(e2e.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"] == f"https://127.0.0.1:{e2e.forward_port('kubernetes-api')}"
    assert cluster["tls-server-name"] == e2e.server_name
    assert config["users"][0]["user"]["token"] == e2e.world.token
    # without a tls_server_name the original server's host is used (here: 127.0.0.1)
    default = kubeconfig_through_tunnel(e2e.cp.url, e2e.world.kubeconfig,
                                        e2e.folder / "default.kubeconfig", wait=10)
    cluster = yaml.safe_load(default.read_text())["clusters"][0]["cluster"]
    assert cluster["tls-server-name"] == "127.0.0.1"
    result = subprocess.run(e2e.kubectl("get", "namespace", "demo", "-o", "name",
                                        kubeconfig=default),
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout.strip()) == (0, "namespace/demo"), result.stderr


def test_a_command_runs_on_the_real_agent(e2e: E2EStack) -> None:
    url = f"/api/v1/agents/{e2e.identity['agent_id']}/command"
    body = {"action": "start_session", "id": "e2e-start",
            "payload": {"sessionId": "e2e1", "template": "nginx:1.27"}}
    status, record = e2e.cp.request("POST", url, body, timeout=40)
    assert status == 200, record
    assert record["state"] == "complete", record
    assert [m["type"] for m in record["history"]][:1] == ["ack"]
    status, found = e2e.world.request(
        "GET", f"/apis/apps/v1/namespaces/{e2e.namespace}/deployments"
               "?labelSelector=app%3Dpipeops-session%2Csession%3De2e1")
    assert status == 200 and len(found["items"]) == 1
    bad = {"action": "start_session", "id": "e2e-bad", "payload": {"sessionId": "Not Valid"}}
    status, record = e2e.cp.request("POST", url, bad, timeout=40)
    assert (status, record["state"]) == (200, "failed")
    assert record["error"]


def test_a_killed_websocket_reconnects_and_kubectl_works_again(e2e: E2EStack) -> None:
    connects = e2e.view()["connects"]
    port = e2e.forward_port("kubernetes-api")
    status, body = e2e.cp.request("POST", f"/debug/tunnels/{e2e.cluster_id}/drop")
    assert status == 200, body
    wait_for(lambda: e2e.view()["connects"] > connects and e2e.view()["connected"],
             timeout=20, what="the tunnel to reconnect")
    assert e2e.forward_port("kubernetes-api") == port  # the allocation survived
    result = subprocess.run(e2e.kubectl("get", "namespaces", "-o", "name"),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "namespace/demo" in result.stdout.split()
