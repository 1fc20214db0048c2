"""The tunnel hub in-process (the ``TunnelHub`` a test or tool can drive directly):
opening Service streams from code, the hello timeout, and a clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect

from agentkit.mux import SUBPROTOCOL, OpenFailed
from pipeops_controlplane.store import Cluster, ClusterStore
from pipeops_controlplane.tunnel import NotConnected, TunnelHub, TunnelSettings
from tests.tunnel.e2e_helpers import MiniAgent, echo_server, headers_for, port_of


@pytest.fixture
async def hub() -> AsyncIterator[tuple[TunnelHub, dict[str, Any]]]:
    store = ClusterStore()
    cluster = Cluster(cluster_id="3f1c0f7e-1111-4a2b-9c3d-000000000001", agent_id="agent-x",
                      name="x", workspace_id="w", token="pct_in_process",
                      registration={"features": {"tunnel": True}})
    store.put(cluster)
    tunnel_hub = TunnelHub(TunnelSettings(hello_timeout=0.3, connect_wait=0.3), store)
    url = await tunnel_hub.start()
    reg = {"cluster_id": cluster.cluster_id, "agent_id": cluster.agent_id,
           "token": cluster.token, "tunnel_url": url}
    yield tunnel_hub, reg
    await tunnel_hub.stop()


async def test_open_stream_reaches_a_service(hub: tuple[TunnelHub, dict[str, Any]]) -> None:
    tunnel_hub, reg = hub
    server = await echo_server()
    agent = MiniAgent(reg, services={("apps", "web", 8080): ("127.0.0.1", port_of(server))})
    try:
        with pytest.raises(NotConnected):
            await tunnel_hub.open_stream(reg["cluster_id"], {"forward": "x"})
        await agent.connect()
        stream = await tunnel_hub.open_stream(
            reg["cluster_id"], {"service": "web", "namespace": "apps", "port": 8080})
        await stream.send(b"ping")
        stream.write_eof()
        assert await stream.read(-1) == b"ping"
        with pytest.raises(OpenFailed) as err:
            await tunnel_hub.open_stream(
                reg["cluster_id"], {"service": "db", "namespace": "apps", "port": 5432})
        assert err.value.reason == "target not allowed"
    finally:
        await agent.close()
        server.close()


async def test_a_connection_without_hello_is_closed(
        hub: tuple[TunnelHub, dict[str, Any]]) -> None:
    _, reg = hub
    ws = await connect(reg["tunnel_url"], subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
                       additional_headers=headers_for(reg))
    async with asyncio.timeout(5):
        await ws.wait_closed()
    assert ws.close_code == 1008 and ws.close_reason == "no hello"


async def test_stop_closes_the_tunnels_and_their_ports(
        hub: tuple[TunnelHub, dict[str, Any]]) -> None:
    tunnel_hub, reg = hub
    agent = MiniAgent(reg, forwards={"kubernetes-api": ("127.0.0.1", 1)})
    ack = await agent.connect()
    port = ack["forwards"][0]["remote_port"]
    await tunnel_hub.stop()
    assert agent.session is not None
    async with asyncio.timeout(5):
        await agent.session.wait_closed()
    assert agent.ws is not None and agent.ws.close_code == 1001
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_hello_asking_for_too_many_listeners_is_refused_and_opens_none(
        hub: tuple[TunnelHub, dict[str, Any]]) -> None:
    from pipeops_controlplane.tunnel.cluster import MAX_LISTENERS

    tunnel_hub, reg = hub
    agent = MiniAgent(reg, forwards={f"f{n}": ("127.0.0.1", 1)
                                     for n in range(MAX_LISTENERS + 1)})
    try:
        reply = await agent.connect()
        assert reply["type"] == "error" and "listeners" in reply["reason"], reply
        assert agent.session is not None
        async with asyncio.timeout(5):
            await agent.session.wait_closed()
        assert agent.ws is not None and agent.ws.close_code == 1008
        assert tunnel_hub.tunnels[reg["cluster_id"]].listeners == {}
    finally:
        await agent.close()


async def test_forgetting_a_cluster_closes_its_tunnel_and_ports(
        hub: tuple[TunnelHub, dict[str, Any]]) -> None:
    tunnel_hub, reg = hub
    agent = MiniAgent(reg, forwards={"kubernetes-api": ("127.0.0.1", 1)})
    try:
        ack = await agent.connect()
        port = ack["forwards"][0]["remote_port"]
        assert await tunnel_hub.forget(reg["cluster_id"])
        assert agent.session is not None
        async with asyncio.timeout(5):
            await agent.session.wait_closed()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        assert reg["cluster_id"] not in tunnel_hub.tunnels
        assert not await tunnel_hub.forget(reg["cluster_id"])
    finally:
        await agent.close()
