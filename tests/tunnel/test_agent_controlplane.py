"""The tunnel agent against the real dev control plane's tunnel side: allocation, the
WebSocket endpoint, a forward's TCP listener, commands over HTTP, a dropped connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeops_controlplane.testing import ControlPlane
from tests.tunnel.agent_helpers import TcpServer, TunnelRun, echo, eventually, write_identity
from tests.tunnel.e2e_helpers import register


@pytest.fixture
async def echo_server() -> AsyncIterator[TcpServer]:
    server = await TcpServer(echo).start()
    yield server
    await server.stop()


async def debug(cp: ControlPlane, cluster_id: str) -> dict[str, Any]:
    status, body = await asyncio.to_thread(cp.request, "GET", f"/debug/tunnels/{cluster_id}")
    return body if status == 200 else {}


async def through(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    writer.write_eof()
    got = await reader.read()
    writer.close()
    await writer.wait_closed()
    return got


async def test_agent_against_the_real_control_plane(
    controlplane: ControlPlane, echo_server: TcpServer, state_dir: Path
) -> None:
    reg = await asyncio.to_thread(register, controlplane)
    write_identity(state_dir, agent_id=reg["agent_id"], cluster_id=reg["cluster_id"],
                   cluster_token=reg["token"])
    run = TunnelRun(controlplane.url, state_dir,
                    forwards={"agent-http": echo_server.addr}).start()
    try:
        view = await eventually(lambda: debug(controlplane, reg["cluster_id"]),
                                lambda v: bool(v.get("connected")), timeout=20,
                                what="the control plane to see the tunnel")
        assert view["hello"]["forwards"] == [{"name": "agent-http"}]
        port = next(f["remote_port"] for f in view["forwards"] if f["name"] == "agent-http")
        assert await through(port, b"hello through the real control plane") \
            == b"hello through the real control plane"
        status = await eventually(lambda: run.grpc("pipeops.agent.v1.Tunnel/GetStatus"),
                                  lambda s: s["state"] == "TUNNEL_STATE_CONNECTED",
                                  what="connected")
        assert {"name": "agent-http", "local_addr": echo_server.addr,
                "remote_port": port} in status["forwards"]

        # a command, end to end: validation fails before Kubernetes is needed
        code, record = await asyncio.to_thread(
            controlplane.request, "POST", f"/api/v1/agents/{reg['agent_id']}/command",
            {"action": "wake_session", "payload": {}, "wait": 10})
        assert code == 200, record
        assert record["state"] == "failed", record
        assert "sessionId" in record["error"]
        assert record["acked_at"]

        # the control plane drops the WebSocket: the agent comes back, same port
        code, body = await asyncio.to_thread(
            controlplane.request, "POST", f"/debug/tunnels/{reg['cluster_id']}/drop")
        assert code == 200, body
        await eventually(lambda: debug(controlplane, reg["cluster_id"]),
                         lambda v: v.get("connects", 0) >= 2 and bool(v.get("connected")),
                         timeout=20, what="the agent to reconnect")
        assert await through(port, b"again") == b"again"
        metrics = await run.metrics()
        assert metrics["pipeops_tunnel_reconnects_total"] == 1

        code = await run.aterminate()
        assert code == 0
        view = await debug(controlplane, reg["cluster_id"])
        assert view["connected"] is False
    finally:
        await asyncio.to_thread(run.stop)
    assert reg["token"] not in run.all_output()
