"""The tunnel agent as a real process against a control plane written with the same mux:
identity wait, allocation, handshake, hello, forwards, refusals, reconnect, drain."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from agentkit.mux import OpenFailed, StreamReset
from kubesim.tls import write_tls
from pipeops.agent.v1 import events_pb2, events_pb2_grpc, tunnel_pb2, tunnel_pb2_grpc
from tests.tunnel.agent_helpers import (
    AGENT_ID,
    CLUSTER_ID,
    CLUSTER_TOKEN,
    FakeControlPlane,
    FakeGateway,
    TcpServer,
    TunnelRun,
    eventually,
    source,
    until,
    write_identity,
)

PORTS = {"echo": 41001, "kubernetes-api": 41002}


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane(remote_ports=PORTS).start()
    yield plane
    await plane.stop()


@pytest.fixture
async def gateway() -> AsyncIterator[FakeGateway]:
    gw = await FakeGateway(set()).start()
    yield gw
    await gw.stop()


@pytest.fixture
async def tunnel(cp: FakeControlPlane, echo_server: TcpServer, gateway: FakeGateway,
                 state_dir: Path) -> AsyncIterator[TunnelRun]:
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr},
                    gateway_port=gateway.port).start()
    try:
        await run.started()
        write_identity(state_dir)
        yield run
    finally:
        await asyncio.to_thread(run.stop)
    assert CLUSTER_TOKEN not in run.all_output()


async def roundtrip(cp: FakeControlPlane, payload: dict[str, object], data: bytes) -> bytes:
    stream = await cp.sessions[-1].open_stream(payload)
    await stream.send(data)
    stream.write_eof()
    got = await stream.read()
    await stream.wait_closed()
    return got


async def test_waits_for_identity_and_allocation_then_forwards_bytes(
    cp: FakeControlPlane, echo_server: TcpServer, gateway: FakeGateway, state_dir: Path
) -> None:
    cp.status_override = (200, {"status": "pending", "tunnel_url": ""})
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr},
                    gateway_port=gateway.port).start()
    try:
        # no identity: alive and SERVING, the truth in Describe and GetStatus
        # ("started" is said before the main task looks for the file: wait for the verdict)
        info = await eventually(lambda: run.grpc("pipeops.agent.v1.Service/Describe"),
                                lambda i: i["state"] == "SERVICE_STATE_DEGRADED",
                                what="degraded for want of an identity")
        assert "identity file" in info["detail"]
        assert str(state_dir) in info["detail"]
        health = await run.grpc("grpc.health.v1.Health/Check")
        assert health == {"status": "SERVING"}
        status = await run.grpc("pipeops.agent.v1.Tunnel/GetStatus")
        assert status["state"] == "TUNNEL_STATE_DISCONNECTED"
        assert cp.status_requests == []

        # an unregistered identity is not enough
        write_identity(state_dir, state="unregistered")
        await asyncio.sleep(0.5)  # give a wrong implementation the chance to ask anyway
        assert cp.status_requests == []

        # registered, allocation pending: it polls and says so
        write_identity(state_dir)
        await until(lambda: len(cp.status_requests) >= 3, what="status polls")
        request = cp.status_requests[0]
        assert request["query"] == {"cluster_id": CLUSTER_ID, "agent_id": AGENT_ID}
        assert request["authorization"] == f"Bearer {CLUSTER_TOKEN}"
        info = await run.grpc("pipeops.agent.v1.Service/Describe")
        assert "not allocated" in info["detail"]
        assert cp.handshakes == []

        # disabled by the control plane: said so, still polling
        cp.status_override = (200, {"status": "disabled"})
        await eventually(lambda: run.grpc("pipeops.agent.v1.Tunnel/GetStatus"),
                         lambda s: s["state"] == "TUNNEL_STATE_DISABLED", what="disabled")
        info = await run.grpc("pipeops.agent.v1.Service/Describe")
        assert info["state"] == "SERVICE_STATE_IDLE" and "disabled" in info["detail"]

        # a malformed reply is an error that is reported, then retried
        cp.status_override = (200, {"status": "ready", "tunnel_url": "http://nope"})
        await run.wait_log(lambda r: "ready without a ws://" in r.get("msg", ""),
                           what="the malformed reply logged")
        assert cp.handshakes == []

        cp.status_override = None
        session = await cp.wait_connected()
        headers = cp.handshakes[-1]
        assert headers["Authorization"] == f"Bearer {CLUSTER_TOKEN}"
        assert headers["X-PipeOps-Cluster-ID"] == CLUSTER_ID
        assert headers["X-PipeOps-Agent-ID"] == AGENT_ID
        assert headers["Sec-WebSocket-Protocol"] == "pipeops.tunnel.v1"
        assert "permessage-deflate" not in headers.get("Sec-WebSocket-Extensions", "")
        hello = cp.hellos[0]
        assert hello["agent_id"] == AGENT_ID and hello["cluster_id"] == CLUSTER_ID
        assert hello["forwards"] == [{"name": "echo"}]
        assert hello["window"] == 256 * 1024 and hello["version"]

        status = await eventually(lambda: run.grpc("pipeops.agent.v1.Tunnel/GetStatus"),
                                  lambda s: s["state"] == "TUNNEL_STATE_CONNECTED",
                                  what="GetStatus to say connected")
        assert status["tunnel_url"] == cp.tunnel_url
        assert status["forwards"] == [{"name": "echo", "local_addr": echo_server.addr,
                                       "remote_port": PORTS["echo"]}]
        info = await run.grpc("pipeops.agent.v1.Service/Describe")
        assert info["state"] == "SERVICE_STATE_READY"

        # bytes echo through a stream, half-close travels both ways
        payload = bytes(range(256)) * 1024
        assert await roundtrip(cp, {"forward": "echo"}, payload) == payload
        assert echo_server.accepted == 1

        # ListStreams shows an open stream
        stream = await session.open_stream({"forward": "echo"})
        await stream.send(b"ping")
        assert await stream.readexactly(4) == b"ping"
        listed = await run.grpc("pipeops.agent.v1.Tunnel/ListStreams")
        assert [s["target"] for s in listed["streams"]] == ["echo"]
        assert listed["streams"][0]["bytes_in"] == "4"
        assert listed["streams"][0]["state"] == "open"
        stream.write_eof()
        assert await stream.read() == b""
    finally:
        await asyncio.to_thread(run.stop)
    assert CLUSTER_TOKEN not in run.all_output()


async def test_targets_that_are_not_allowed_get_open_fail_and_nothing_is_dialled(
    cp: FakeControlPlane, echo_server: TcpServer, gateway: FakeGateway, tunnel: TunnelRun
) -> None:
    session = await cp.wait_connected()
    refused = [
        {"forward": "kubernetes-api"},  # not configured here
        {"forward": "nope"},
        {"forward": "echo", "extra": 1},
        {"host": "127.0.0.1", "port": echo_server.port},
        {"service": "web", "namespace": "apps", "port": echo_server.port},  # gateway: no
        {"service": "Web!", "namespace": "apps", "port": 80},
        {"service": "web", "namespace": "apps", "port": "80"},
        {},
    ]
    for payload in refused:
        with pytest.raises(OpenFailed) as info:
            await session.open_stream(payload)
        assert info.value.reason == "target not allowed", payload
    assert gateway.calls == [("apps", "web", echo_server.port)]
    assert echo_server.accepted == 0
    metrics = await tunnel.metrics()
    assert metrics["pipeops_tunnel_opens_refused_total{reason=not_allowed}"] == len(refused)
    # the session is still fine
    assert await roundtrip(cp, {"forward": "echo"}, b"still here") == b"still here"


async def test_unknown_control_message_gets_one_error_and_the_tunnel_carries_on(
    cp: FakeControlPlane, tunnel: TunnelRun
) -> None:
    session = await cp.wait_connected()
    session.send_control({"type": "frobnicate", "x": 1})
    error = await cp.wait_message(lambda m: m["type"] == "error", what="the error reply")
    assert "frobnicate" in error["reason"]
    assert await roundtrip(cp, {"forward": "echo"}, b"ok") == b"ok"
    assert [m["type"] for m in cp.messages].count("error") == 1


async def test_killed_websocket_resets_streams_and_the_tunnel_reconnects(
    cp: FakeControlPlane, echo_server: TcpServer, tunnel: TunnelRun
) -> None:
    session = await cp.wait_connected()
    stream = await session.open_stream({"forward": "echo"})
    await stream.send(b"x" * 100_000)
    await until(lambda: stream.info().bytes_in > 0, what="echoed bytes")
    await until(lambda: echo_server.accepted == 1, what="the local connection")

    polls = len(cp.status_requests)
    killed_at = time.monotonic()
    cp.kill()
    # the control plane's side of the in-flight stream errors ...
    with pytest.raises(StreamReset):
        while True:
            await stream.send(b"y" * 65536)
    # ... and so does the agent's: its local connection is torn down
    await until(lambda: echo_server.ended == 1, what="the agent to drop the local connection")

    second = await cp.wait_connected(2, timeout=20)
    # reconnects within the backoff cap (1 s here) plus the handshake
    assert time.monotonic() - killed_at < 1.0 + 5.0
    assert second is not session
    assert len(cp.status_requests) == polls  # the allocation survived the reconnect
    assert cp.hellos[1]["agent_id"] == AGENT_ID
    assert await roundtrip(cp, {"forward": "echo"}, b"after the storm") == b"after the storm"

    status = await tunnel.grpc("pipeops.agent.v1.Tunnel/GetStatus")
    assert status["state"] == "TUNNEL_STATE_CONNECTED"
    assert status["reconnects"] == "1"
    metrics = await tunnel.metrics()
    assert metrics["pipeops_tunnel_reconnects_total"] == 1
    assert metrics["pipeops_tunnel_status"] == 1


async def test_refused_handshake_asks_for_the_allocation_again(
    cp: FakeControlPlane, tunnel: TunnelRun
) -> None:
    cp.reject_handshake = 403
    await until(lambda: len(cp.handshakes) >= 2, what="refused handshakes")
    polls = len(cp.status_requests)
    assert polls >= 2  # one allocation per refused handshake
    info = await tunnel.grpc("pipeops.agent.v1.Service/Describe")
    assert info["state"] == "SERVICE_STATE_DEGRADED"
    cp.reject_handshake = None
    await cp.wait_connected()
    assert await roundtrip(cp, {"forward": "echo"}, b"in") == b"in"


async def test_sigterm_drains_and_exits_zero(cp: FakeControlPlane, tunnel: TunnelRun) -> None:
    session = await cp.wait_connected()
    stream = await session.open_stream({"forward": "echo"})
    await stream.send(b"held open")
    code = await tunnel.aterminate()
    assert code == 0
    assert tunnel.stop_seconds() < 3.0
    assert any(m["type"] == "drain" for m in cp.messages)
    await until(lambda: session.closed, what="the session to close")
    assert cp.connections[0].close_code == 1001
    with pytest.raises(StreamReset):
        await stream.read()
    assert tunnel.records()[-1]["msg"] == "stopped"


async def test_metrics_move(cp: FakeControlPlane, echo_server: TcpServer, state_dir: Path
                            ) -> None:
    big = 2 * 1024 * 1024
    src = await TcpServer(source(big)).start()
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr, "source": src.addr,
                                                 "unallocated": "127.0.0.1:9"}).start()
    try:
        await run.started()
        before = await run.metrics()
        assert before["pipeops_tunnel_status"] == 0
        assert before["pipeops_tunnel_forwards_active"] == 0
        write_identity(state_dir)
        session = await cp.wait_connected()
        await eventually(run.metrics, lambda m: m["pipeops_tunnel_status"] == 1,
                         what="pipeops_tunnel_status 1")
        m = await run.metrics()
        assert m["pipeops_tunnel_forwards_active"] == 1  # echo: the only one given a port
        assert m["pipeops_tunnel_streams_opened_total"] == 0

        stream = await session.open_stream({"forward": "echo"})
        await stream.send(b"12345")
        assert await stream.readexactly(5) == b"12345"
        m = await run.metrics()
        assert m["pipeops_tunnel_streams_active"] == 1
        assert m["pipeops_tunnel_streams_opened_total"] == 1
        assert m["pipeops_tunnel_bytes_in_total"] == 5
        assert m["pipeops_tunnel_bytes_out_total"] == 5
        stream.write_eof()
        assert await stream.read() == b""
        await stream.wait_closed()
        m = await eventually(run.metrics, lambda m: m["pipeops_tunnel_streams_closed_total"] == 1,
                             what="the stream counted closed")
        assert m["pipeops_tunnel_streams_active"] == 0

        # a reader that does not read: the agent runs out of credit on that stream
        slow = await session.open_stream({"forward": "source"})
        await eventually(lambda: run.grpc("pipeops.agent.v1.Tunnel/ListStreams"),
                         lambda r: any(s["target"] == "source" and "send_credit" not in s
                                       for s in r.get("streams", [])),
                         what="the source stream to run out of credit")
        assert m["pipeops_tunnel_window_blocked_seconds_total"] == 0
        assert len(await slow.read()) == big
        m = await eventually(run.metrics,
                             lambda m: m["pipeops_tunnel_window_blocked_seconds_total"] > 0,
                             what="window-blocked time counted")
        assert m["pipeops_tunnel_bytes_out_total"] == 5 + big
    finally:
        await asyncio.to_thread(run.stop)
        await src.stop()


async def test_watch_status_streams_state_changes_and_events_tell_the_story(
    cp: FakeControlPlane, echo_server: TcpServer, state_dir: Path
) -> None:
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr}).start()
    try:
        address = await run.address()
        async with grpc.aio.insecure_channel(address) as channel:
            watch = tunnel_pb2_grpc.TunnelStub(channel).WatchStatus(
                tunnel_pb2.WatchTunnelStatusRequest(), timeout=20)
            first = await watch.read()
            assert first.state == tunnel_pb2.TUNNEL_STATE_DISCONNECTED
            write_identity(state_dir)
            seen = [first.state]
            while seen[-1] != tunnel_pb2.TUNNEL_STATE_CONNECTED:
                update = await watch.read()
                seen.append(update.state)
            assert tunnel_pb2.TUNNEL_STATE_CONNECTING in seen
            assert update.forwards[0].remote_port == PORTS["echo"]
            watch.cancel()

            events = events_pb2_grpc.EventsStub(channel).Subscribe(
                events_pb2.SubscribeRequest(history=200), timeout=10)
            messages = []
            while "tunnel connected" not in messages:
                event = await events.read()
                messages.append(event.message)
            events.cancel()
        assert "started" in messages
    finally:
        await asyncio.to_thread(run.stop)


async def test_a_peer_that_stops_answering_pings_is_declared_dead(
    cp: FakeControlPlane, echo_server: TcpServer, state_dir: Path
) -> None:
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr},
                    extra=["--set", "tunnel.ping_interval=0.3",
                           "--set", "tunnel.ping_timeout=0.6"]).start()
    try:
        await run.started()
        write_identity(state_dir)
        session = await cp.wait_connected()
        stream = await session.open_stream({"forward": "echo"})
        await stream.send(b"before")
        assert await stream.readexactly(6) == b"before"
        await until(lambda: echo_server.accepted == 1, what="the local connection")
        # the control plane's host freezes: TCP stays up, nothing is read or answered
        cp.connections[0].transport.pause_reading()
        await until(lambda: echo_server.ended == 1, timeout=10,
                    what="the agent to give up on the silent connection")
        await run.wait_log(lambda r: "tunnel connection" in r.get("msg", "")
                           and "failed" in r.get("msg", ""), what="the loss logged")
        cp.connections[0].transport.abort()
        await cp.wait_connected(2)
        assert await roundtrip(cp, {"forward": "echo"}, b"after") == b"after"
    finally:
        await asyncio.to_thread(run.stop)


async def test_a_new_identity_reconnects_with_the_new_token(
    cp: FakeControlPlane, tunnel: TunnelRun, state_dir: Path
) -> None:
    await cp.wait_connected()
    polls = len(cp.status_requests)
    new_token = "cluster-token-rotated-0f9e8d7c6b5a"
    write_identity(state_dir, cluster_token=new_token)
    await cp.wait_connected(2)
    assert cp.handshakes[-1]["Authorization"] == f"Bearer {new_token}"
    assert len(cp.status_requests) == polls + 1  # the allocation is asked for again
    assert cp.status_requests[-1]["authorization"] == f"Bearer {new_token}"
    assert cp.connections[0].close_code == 1000
    assert await roundtrip(cp, {"forward": "echo"}, b"new me") == b"new me"
    assert new_token not in tunnel.all_output()


async def test_tls_control_plane_with_an_extra_ca(
    echo_server: TcpServer, state_dir: Path, tmp_path: Path
) -> None:
    files = write_tls(tmp_path, [])
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(files.cert, files.key)
    cp = await FakeControlPlane(remote_ports=PORTS, tls=server_tls).start()
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr},
                    extra=["--set", f"pipeops.tls.ca_file={files.ca_cert}"]).start()
    try:
        await run.started()
        write_identity(state_dir)
        await cp.wait_connected()
        assert cp.tunnel_url.startswith("wss://")
        assert await roundtrip(cp, {"forward": "echo"}, b"over tls") == b"over tls"
    finally:
        await asyncio.to_thread(run.stop)
        await cp.stop()


async def test_tls_control_plane_with_an_unknown_ca_is_refused(
    echo_server: TcpServer, state_dir: Path, tmp_path: Path
) -> None:
    files = write_tls(tmp_path, [])
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(files.cert, files.key)
    cp = await FakeControlPlane(remote_ports=PORTS, tls=server_tls).start()
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr}).start()
    try:
        await run.started()
        write_identity(state_dir)
        await run.wait_log(lambda r: "CERTIFICATE_VERIFY_FAILED" in r.get("msg", ""),
                           what="the verification failure logged")
        assert cp.status_requests == [] and cp.sessions == []
    finally:
        await asyncio.to_thread(run.stop)
        await cp.stop()
