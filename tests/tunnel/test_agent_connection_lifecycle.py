"""The tunnel agent's connection lifecycle against a fake control plane (real process):
shutdown within the runner's grace, a stale tunnel_url, the window granted in hello_ack,
the protocol's fixed max frame, a drain from the control plane, transient command
refusals."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentkit.mux import Multiplexer, MuxSettings
from tests.helpers import free_port
from tests.tunnel.agent_helpers import (
    FakeControlPlane,
    TcpServer,
    TunnelRun,
    eventually,
    source,
    until,
    write_identity,
)

RUNNER_GRACE = 3.0  # agentkit runner --shutdown-grace default


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane(remote_ports={"echo": 41101, "src": 41102}).start()
    yield plane
    await plane.stop()


@pytest.fixture
async def source_server() -> AsyncIterator[TcpServer]:
    server = await TcpServer(source(1 << 20)).start()
    yield server
    await server.stop()


async def started(cp: FakeControlPlane, state_dir: Path, forwards: dict[str, str],
                  extra: list[str] | None = None) -> TunnelRun:
    write_identity(state_dir)
    run = TunnelRun(cp.url, state_dir, forwards=forwards, extra=extra).start()
    await run.started()
    return run


async def test_sigterm_with_a_peer_that_stopped_reading_exits_within_the_grace(
    cp: FakeControlPlane, echo_server: TcpServer, tmp_path: Path
) -> None:
    for attempt in range(3):
        run = await started(cp, tmp_path / str(attempt), {"echo": echo_server.addr})
        try:
            session = await cp.wait_connected(count=attempt + 1)
            stream = await session.open_stream({"forward": "echo"})
            await stream.send(b"x")
            assert await stream.read(1) == b"x"
            # the control plane stops reading: drain, flush and the close handshake all
            # go unanswered, so every shutdown step runs to its timeout
            cp.connections[-1].transport.pause_reading()
            code = await run.aterminate(timeout=10)
            took = run.stop_seconds()
        finally:
            await asyncio.to_thread(run.stop)
            cp.kill()  # the frozen connection: nothing more to hear on it
        assert code == 0
        assert took < RUNNER_GRACE, f"attempt {attempt}: exited after {took:.2f}s"
        assert not any("grace" in str(r.get("msg")) for r in run.records())


async def test_a_stale_tunnel_url_sends_the_agent_back_to_the_allocation(
    cp: FakeControlPlane, echo_server: TcpServer, state_dir: Path
) -> None:
    dead = f"ws://127.0.0.1:{free_port()}/tunnel"
    cp.status_override = (200, {"status": "ready", "tunnel_url": dead, "forwards": []})
    run = await started(cp, state_dir, {"echo": echo_server.addr})
    try:
        await run.wait_log(lambda r: "connection failed" in str(r.get("msg")),
                           what="a failed attempt on the dead URL")
        polls = len(cp.status_requests)
        cp.status_override = None  # the allocation now names the live URL
        await cp.wait_connected(timeout=15)
        assert len(cp.status_requests) > polls
        await run.wait_log(lambda r: "asking for the allocation again" in str(r.get("msg")),
                           what="the re-allocation logged")
    finally:
        await asyncio.to_thread(run.stop)


async def test_streams_opened_right_after_hello_ack_use_the_granted_window(
    cp: FakeControlPlane, source_server: TcpServer, state_dir: Path
) -> None:
    # the control plane grants 64 KiB (the agent's own window is 256 KiB) and opens a
    # bulk stream in the same breath as hello_ack, as the hub does for waiting clients
    cp.settings = MuxSettings(window=64 * 1024)
    cp.ack_window = 64 * 1024
    results: list[bytes | BaseException] = []
    tasks: set[asyncio.Task[None]] = set()

    async def pull(session: Multiplexer) -> None:
        try:
            stream = await session.open_stream({"forward": "src"})
            results.append(await stream.read())
        except Exception as exc:
            results.append(exc)

    def after_ack(session: Multiplexer) -> None:
        tasks.add(asyncio.create_task(pull(session)))

    cp.after_ack = after_ack
    run = await started(cp, state_dir, {"src": source_server.addr})
    try:
        await until(lambda: results, 20, "the stream opened after hello_ack")
        assert isinstance(results[0], bytes), results[0]
        assert len(results[0]) == 1 << 20
        assert cp.sessions[0].stats.protocol_errors == 0
    finally:
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(run.stop)


async def test_a_drain_from_the_control_plane_moves_the_agent_to_a_new_connection(
    cp: FakeControlPlane, echo_server: TcpServer, state_dir: Path
) -> None:
    run = await started(cp, state_dir, {"echo": echo_server.addr})
    try:
        old = await cp.wait_connected()
        lingering = await old.open_stream({"forward": "echo"})
        old.drain()  # {"type": "drain"}: the control plane opens nothing more here
        new = await cp.wait_connected(count=2, timeout=15)
        # new streams work on the new connection ...
        stream = await new.open_stream({"forward": "echo"})
        await stream.send(b"after the drain")
        stream.write_eof()
        assert await stream.read() == b"after the drain"
        # ... the old one keeps its open stream until it ends, then the agent closes it
        assert not old.closed
        await lingering.send(b"still here")
        lingering.write_eof()
        assert await lingering.read() == b"still here"
        await asyncio.wait_for(old.wait_closed(), 10)
        assert cp.connections[0].close_code == 1000
        assert not new.closed
        await eventually(lambda: run.grpc("pipeops.agent.v1.Tunnel/GetStatus"),
                         lambda s: s["state"] == "TUNNEL_STATE_CONNECTED", what="connected")
    finally:
        await asyncio.to_thread(run.stop)


async def test_a_transient_command_refusal_forgets_the_id(
    cp: FakeControlPlane, state_dir: Path
) -> None:
    # no Kubernetes client (out of cluster, no kubeconfig): refused before anything ran,
    # so the same id sent again is carried out again, not answered as a duplicate
    run = await started(cp, state_dir, {"agent-http": "127.0.0.1:9"})
    try:
        await cp.wait_connected()
        for sends in (1, 2):
            cp.sessions[-1].send_control({"type": "command", "id": "c-retry",
                                          "action": "wake_session",
                                          "payload": {"sessionId": "s1"}})
            await until(lambda: sum(m["type"] == "failed"
                                    for m in cp.messages_for("c-retry")) == sends,  # noqa: B023
                        what=f"outcome #{sends}")
        assert [m["type"] for m in cp.messages_for("c-retry")] == ["ack", "failed"] * 2
        assert "Kubernetes" in cp.messages_for("c-retry")[-1]["error"]
        assert not any(r.get("msg") == "duplicate command not executed again"
                       for r in run.records())
    finally:
        await asyncio.to_thread(run.stop)
