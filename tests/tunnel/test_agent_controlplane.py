"""The tunnel agent against the real dev control plane's tunnel side: allocation, the
WebSocket endpoint, a forward's TCP listener, commands over HTTP, a dropped connection;
and the whole chain with the real registrar writing the identity and kubesim."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from kubesim.testing import Kubesim
from pipeops_controlplane.testing import ControlPlane
from tests.registrar.harness import RegistrarRun, sa_token_file
from tests.tunnel.agent_helpers import TcpServer, TunnelRun, eventually, write_identity
from tests.tunnel.e2e_helpers import register


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
        # (counted by the agent once it has the hello's ack, after the control plane saw it)
        await eventually(run.metrics, lambda m: m["pipeops_tunnel_reconnects_total"] == 1,
                         what="the reconnect counted")

        code = await run.aterminate()
        assert code == 0
        await eventually(lambda: debug(controlplane, reg["cluster_id"]),
                         lambda v: v["connected"] is False, what="the control plane to see it go")
    finally:
        await asyncio.to_thread(run.stop)
    assert reg["token"] not in run.all_output()


async def test_registrar_tunnel_and_control_plane_carry_a_session_command(
    controlplane: ControlPlane, echo_server: TcpServer, state_dir: Path, tmp_path: Path
) -> None:
    ks = await asyncio.to_thread(Kubesim().start)
    registrar: RegistrarRun | None = None
    run: TunnelRun | None = None
    try:
        for ns in ("pipeops-system", "pipeops-sessions"):
            code, body = await asyncio.to_thread(ks.request, "POST", "/api/v1/namespaces",
                                                 {"metadata": {"name": ns}})
            assert code == 201, body
        # the real registrar writes the identity file the tunnel reads
        registrar = RegistrarRun(controlplane, ks.kubeconfig, sa_token_file(tmp_path, ks.token),
                                 state_dir, "pipeops-system").start()
        identity = await asyncio.to_thread(registrar.wait_registered)
        run = TunnelRun(controlplane.url, state_dir, forwards={"agent-http": echo_server.addr},
                        kubeconfig=ks.kubeconfig).start()
        await eventually(lambda: debug(controlplane, identity["cluster_id"]),
                         lambda v: bool(v.get("connected")), timeout=20,
                         what="the tunnel of the registered cluster")
        code, record = await asyncio.to_thread(
            controlplane.request, "POST", f"/api/v1/agents/{identity['agent_id']}/command",
            {"action": "start_session", "payload": {"sessionId": "e2e", "template": "nginx"},
             "wait": 15})
        assert code == 200, record
        assert record["state"] == "complete", record
        assert record["result"]["service"] == "session-e2e"
        code, body = await asyncio.to_thread(
            ks.request, "GET", "/apis/apps/v1/namespaces/pipeops-sessions/deployments"
            "?labelSelector=app%3Dpipeops-session,session%3De2e")
        assert code == 200 and len(body["items"]) == 1, body
        # and the control plane hears the session's state from the agent
        view = await eventually(lambda: debug(controlplane, identity["cluster_id"]),
                                lambda v: v.get("sessions", {}).get("e2e", {}).get("state")
                                == "running", what="the session running at the control plane")
        session = view["sessions"]["e2e"]
        assert session.pop("history")[-1] == "running"
        assert session == {"state": "running", "replicas": 1, "readyReplicas": 1}
        assert identity["cluster_token"] not in run.all_output()
    finally:
        for proc in (run, registrar):
            if proc is not None:
                await asyncio.to_thread(proc.stop)
        await asyncio.to_thread(ks.stop)
