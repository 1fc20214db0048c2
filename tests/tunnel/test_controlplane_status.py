"""The tunnel status poll and the WebSocket handshake of the dev control plane.

Real process, real HTTP and WebSocket clients; each test registers its own cluster.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agentkit.mux import SUBPROTOCOL
from pipeops_controlplane.testing import ControlPlane
from tests.helpers import free_port, wait_for
from tests.tunnel.e2e_helpers import MiniAgent, headers_for, http_json, register, tunnel_status


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_status_needs_the_cluster_token_and_the_right_agent(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    query = f"cluster_id={reg['cluster_id']}&agent_id={reg['agent_id']}"
    status, _ = controlplane.request("GET", f"/api/v1/tunnel/status?{query}")
    assert status == 401
    assert tunnel_status(controlplane, reg, token="pct_wrong")[0] == 401
    assert tunnel_status(controlplane, reg, token=controlplane.token)[0] == 401  # install token
    other = {**reg, "agent_id": "someone-else"}
    assert tunnel_status(controlplane, other)[0] == 409
    unknown = {**reg, "cluster_id": "00000000-0000-4000-8000-000000000000"}
    assert tunnel_status(controlplane, unknown)[0] == 404
    status, body = controlplane.request(
        "GET", f"/api/v1/tunnel/status?cluster_id={reg['cluster_id']}",
        headers={"Authorization": f"Bearer {reg['token']}"})
    assert status == 422, body  # agent_id is required


def test_ready_status_allocates_listening_ports_that_stay(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    status, body = tunnel_status(controlplane, reg)
    assert status == 200, body
    assert body["status"] == "ready"
    assert body["tunnel_url"] == reg["tunnel_url"]  # registration handed out the same
    assert body["tunnel_url"].startswith("ws://127.0.0.1:")
    assert body["tunnel_url"].endswith("/api/v1/tunnel/connect")
    names = [f["name"] for f in body["forwards"]]
    assert sorted(names) == ["agent-http", "kubelet", "kubernetes-api"]
    ports = {f["remote_port"] for f in body["forwards"]}
    assert len(ports) == 3 and all(_listening(p) for p in ports)
    assert tunnel_status(controlplane, reg)[1] == body  # the allocation is stable


def test_a_requested_port_is_honoured(controlplane: ControlPlane) -> None:
    port = free_port()
    reg = register(controlplane, ports={"kubernetes_api": port})
    body = tunnel_status(controlplane, reg)[1]
    forwards = {f["name"]: f["remote_port"] for f in body["forwards"]}
    assert forwards["kubernetes-api"] == port
    assert _listening(port)


def test_a_taken_requested_port_gets_another_one(controlplane: ControlPlane) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        reg = register(controlplane, ports={"kubelet": port})
        body = tunnel_status(controlplane, reg)[1]
    forwards = {f["name"]: f["remote_port"] for f in body["forwards"]}
    assert forwards["kubelet"] not in (0, port)
    wait_for(lambda: any("requested forward port is taken" in line
                         for line in controlplane.lines), what="the warning")


async def test_an_agent_without_the_tunnel_feature_is_disabled(
        controlplane: ControlPlane) -> None:
    reg = register(controlplane, tunnel=False)
    status, body = tunnel_status(controlplane, reg)
    assert (status, body) == (200, {"status": "disabled", "tunnel_url": "", "forwards": []})
    with pytest.raises(InvalidStatus) as err:
        await connect(reg["tunnel_url"], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                      additional_headers=headers_for(reg))
    assert err.value.response.status_code == 403


async def test_debug_mode_holds_the_tunnel_pending_then_releases_it(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    path = f"/debug/tunnels/{reg['cluster_id']}/mode"
    assert (await http_json(controlplane, "POST", path, {"mode": "pending"}))[0] == 200
    body = tunnel_status(controlplane, reg)[1]
    assert body["status"] == "pending" and body["forwards"] == []
    with pytest.raises(InvalidStatus) as err:
        await connect(reg["tunnel_url"], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                      additional_headers=headers_for(reg))
    assert err.value.response.status_code == 503
    assert (await http_json(controlplane, "POST", path, {"mode": "disabled"}))[1]["status"] \
        == "disabled"
    assert tunnel_status(controlplane, reg)[1]["status"] == "disabled"
    assert (await http_json(controlplane, "POST", path, {"mode": None}))[1]["status"] == "ready"
    assert tunnel_status(controlplane, reg)[1]["status"] == "ready"
    assert (await http_json(controlplane, "POST", path, {"mode": "sideways"}))[0] == 422


@pytest.mark.parametrize(("change", "code"), [
    ({"Authorization": "Bearer pct_wrong"}, 401),
    ({"Authorization": ""}, 401),
    ({"X-PipeOps-Cluster-ID": "00000000-0000-4000-8000-000000000000"}, 404),
    ({"X-PipeOps-Agent-ID": "someone-else"}, 409),
])
async def test_the_handshake_checks_the_credentials(
        controlplane: ControlPlane, reg: dict[str, Any], change: dict[str, str],
        code: int) -> None:
    headers = {k: v for k, v in {**headers_for(reg), **change}.items() if v}
    with pytest.raises(InvalidStatus) as err:
        await connect(reg["tunnel_url"], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                      additional_headers=headers)
    assert err.value.response.status_code == code


async def test_the_handshake_needs_the_subprotocol_and_the_path(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    with pytest.raises(InvalidStatus) as err:
        await connect(reg["tunnel_url"], additional_headers=headers_for(reg))
    assert err.value.response.status_code == 400
    with pytest.raises(InvalidStatus) as err:
        await connect(reg["tunnel_url"].replace("/connect", "/other"),
                      subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                      additional_headers=headers_for(reg))
    assert err.value.response.status_code == 404


async def test_compression_is_refused_and_the_subprotocol_chosen(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    ws = await connect(reg["tunnel_url"], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                       additional_headers=headers_for(reg), compression="deflate")
    try:
        assert ws.subprotocol == SUBPROTOCOL
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
    finally:
        await ws.close()


async def test_hello_ack_gives_every_announced_forward_a_port(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, forwards={"kubernetes-api": ("127.0.0.1", 1),
                                     "metrics": ("127.0.0.1", 1)})
    try:
        ack = await agent.connect()
        assert ack["type"] == "hello_ack"
        assert ack["window"] == 256 * 1024
        ports = {f["name"]: f["remote_port"] for f in ack["forwards"]}
        assert set(ports) == {"kubernetes-api", "metrics"}
        assert _listening(ports["metrics"])
        status = tunnel_status(controlplane, reg)[1]
        listed = {f["name"]: f["remote_port"] for f in status["forwards"]}
        assert listed["metrics"] == ports["metrics"]
        assert listed["kubernetes-api"] == ports["kubernetes-api"]
        view = (await http_json(controlplane, "GET", f"/debug/tunnels/{reg['cluster_id']}"))[1]
        assert view["connected"] is True and view["connects"] == 1
        assert view["hello"]["version"] == "test"
    finally:
        await agent.close()


@pytest.mark.parametrize("bad", [
    {"cluster_id": "00000000-0000-4000-8000-000000000000"},
    {"agent_id": "someone-else"},
    {"forwards": "kubernetes-api"},
    {"window": 0},
])
async def test_a_bad_hello_gets_an_error_and_the_connection_closes(
        controlplane: ControlPlane, reg: dict[str, Any], bad: dict[str, Any]) -> None:
    agent = MiniAgent(reg)
    hello = {"type": "hello", "agent_id": reg["agent_id"], "cluster_id": reg["cluster_id"],
             "version": "test", "forwards": [], **bad}
    try:
        reply = await agent.connect(hello=hello)
        assert reply["type"] == "error" and "hello" in reply["reason"]
        assert agent.session is not None
        await agent.session.wait_closed()
        assert agent.ws is not None and agent.ws.close_code == 1008
    finally:
        await agent.close()


def test_the_kubeconfig_helper_waits_for_a_connected_tunnel(
        controlplane: ControlPlane, reg: dict[str, Any], tmp_path: Any) -> None:
    from pipeops_controlplane.tunnel import TunnelNotReady, kubeconfig_through_tunnel

    tunnel_status(controlplane, reg)  # allocated, but no agent connected
    source = tmp_path / "source.kubeconfig"
    source.write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(TunnelNotReady, match="not connected"):
        kubeconfig_through_tunnel(controlplane.url, source, tmp_path / "out",
                                  cluster_id=reg["cluster_id"], wait=0.3)
    tunnel_status(controlplane, register(controlplane))  # a second cluster with a tunnel
    with pytest.raises(TunnelNotReady, match="several clusters"):
        kubeconfig_through_tunnel(controlplane.url, source, tmp_path / "out", wait=0.3)
    assert not (tmp_path / "out").exists()
