"""The control plane's forward listeners: a stream per accepted connection, bytes spliced.

A small agent written with the mux (``MiniAgent``) holds the other end over a real
WebSocket and dials local echo servers, so every byte crosses the real control plane.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import pytest

from pipeops_controlplane.testing import ControlPlane
from tests.helpers import free_port, wait_for
from tests.tunnel.e2e_helpers import (
    MiniAgent,
    echo_server,
    http_json,
    port_of,
    register,
    tunnel_status,
)

MiB = 1024 * 1024
T = TypeVar("T")


@pytest.fixture
async def echo() -> AsyncIterator[tuple[str, int]]:
    server = await echo_server()
    yield ("127.0.0.1", port_of(server))
    server.close()
    await server.wait_closed()


def _ports(body: dict[str, Any]) -> dict[str, int]:
    return {f["name"]: f["remote_port"] for f in body["forwards"]}


async def _echo_through(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async def send() -> None:
            writer.write(data)
            await writer.drain()
            writer.write_eof()  # half-close: the echo still answers

        sender = asyncio.create_task(send())
        async with asyncio.timeout(20):
            got = await reader.read(-1)
        await sender
        return got
    finally:
        writer.close()


async def _closed_unanswered(port: int) -> None:
    """A connection to ``port`` is closed without a stream behind it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(10):
            assert await reader.read() == b""
    finally:
        writer.close()


async def _view(cp: ControlPlane, cluster_id: str) -> dict[str, Any]:
    status, body = await http_json(cp, "GET", f"/debug/tunnels/{cluster_id}")
    assert status == 200, body
    result: dict[str, Any] = body
    return result


def _view_now(cp: ControlPlane, cluster_id: str) -> dict[str, Any]:
    status, body = cp.request("GET", f"/debug/tunnels/{cluster_id}")
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def _until(predicate: Callable[[], T | None], timeout: float = 10.0) -> T:
    """``wait_for`` in a thread: the agent on this loop keeps running meanwhile."""
    return await asyncio.to_thread(wait_for, predicate, timeout)


async def test_a_forward_carries_bytes_both_ways_with_half_close(
        controlplane: ControlPlane, reg: dict[str, Any], echo: tuple[str, int]) -> None:
    agent = MiniAgent(reg, forwards={"kubernetes-api": echo})
    try:
        ack = await agent.connect()
        port = _ports(ack)["kubernetes-api"]
        data = os.urandom(2 * MiB)  # several windows' worth: credit must flow back
        assert await _echo_through(port, data) == data
        assert agent.opens == [{"forward": "kubernetes-api"}]

        def settled() -> dict[str, Any] | None:
            view = _view_now(controlplane, reg["cluster_id"])
            return view if view["stats"]["streams_closed"] == 1 else None

        view = await _until(settled)
        stats = view["stats"]
        assert stats["streams_opened"] == 1 and stats["streams_active"] == 0
        assert stats["bytes_in"] == len(data) and stats["bytes_out"] == len(data)
        forward = next(f for f in view["forwards"] if f["name"] == "kubernetes-api")
        assert forward["connections_total"] == 1 and forward["connections_active"] == 0
    finally:
        await agent.close()


async def test_concurrent_connections_are_separate_streams(
        controlplane: ControlPlane, reg: dict[str, Any], echo: tuple[str, int]) -> None:
    agent = MiniAgent(reg, forwards={"agent-http": echo})
    try:
        port = _ports(await agent.connect())["agent-http"]
        payloads = [os.urandom(100_000 + i) for i in range(8)]
        results = await asyncio.gather(*(_echo_through(port, p) for p in payloads))
        assert results == payloads

        def settled() -> dict[str, Any] | None:
            view = _view_now(controlplane, reg["cluster_id"])
            return view if view["stats"]["streams_closed"] == 8 else None

        stats = (await _until(settled))["stats"]
        assert stats["streams_opened"] == 8 and stats["streams_active"] == 0
    finally:
        await agent.close()


async def test_a_refused_open_closes_the_connection(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg, forwards={})  # allows nothing
    try:
        await agent.connect()
        port = _ports(tunnel_status(controlplane, reg)[1])["kubelet"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(10):
            assert await reader.read() == b""
        writer.close()
        assert agent.opens == [{"forward": "kubelet"}]
        view = await _view(controlplane, reg["cluster_id"])
        kubelet = next(f for f in view["forwards"] if f["name"] == "kubelet")
        assert kubelet["open_failures"] == 1
        assert "target not allowed" in kubelet["last_error"]
        assert view["stats"]["open_failed"] == 1
    finally:
        await agent.close()


async def test_a_connection_waits_for_the_tunnel_to_come_up(
        controlplane: ControlPlane, reg: dict[str, Any], echo: tuple[str, int]) -> None:
    port = _ports(tunnel_status(controlplane, reg)[1])["kubernetes-api"]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    agent = MiniAgent(reg, forwards={"kubernetes-api": echo})
    try:
        await agent.connect()  # within --tunnel-connect-wait of the connection
        writer.write(b"hello")
        async with asyncio.timeout(10):
            assert await reader.readexactly(5) == b"hello"
    finally:
        writer.close()
        await agent.close()


async def test_without_a_tunnel_a_connection_is_closed_after_the_wait() -> None:
    with ControlPlane(extra_args=["--tunnel-connect-wait", "0.3"]) as cp:
        reg = register(cp)
        port = _ports(tunnel_status(cp, reg)[1])["kubernetes-api"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        async with asyncio.timeout(5):
            assert await reader.read() == b""
        writer.close()
        view = (await http_json(cp, "GET", f"/debug/tunnels/{reg['cluster_id']}"))[1]
        forward = next(f for f in view["forwards"] if f["name"] == "kubernetes-api")
        assert forward["last_error"] == "no tunnel connected"


async def test_a_new_connection_replaces_the_old_and_keeps_the_ports(
        controlplane: ControlPlane, reg: dict[str, Any], echo: tuple[str, int]) -> None:
    first = MiniAgent(reg, forwards={"kubernetes-api": echo})
    second = MiniAgent(reg, forwards={"kubernetes-api": echo})
    try:
        port = _ports(await first.connect())["kubernetes-api"]
        assert _ports(await second.connect())["kubernetes-api"] == port
        assert first.session is not None
        async with asyncio.timeout(10):
            await first.session.wait_closed()
        assert await _echo_through(port, b"x" * 1000) == b"x" * 1000
        assert second.opens and not first.opens
        view = await _view(controlplane, reg["cluster_id"])
        assert view["connected"] is True and view["connects"] == 2
        assert view["stats_total"]["streams_opened"] == 1
    finally:
        await first.close()
        await second.close()


async def test_dropping_the_websocket_ends_streams_on_both_sides(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    # a target that accepts and never answers: the stream stays open until the drop
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    agent = MiniAgent(reg, forwards={"kubernetes-api": ("127.0.0.1", port_of(server))})
    try:
        port = _ports(await agent.connect())["kubernetes-api"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping")

        def streaming() -> bool:
            return bool(_view_now(controlplane, reg["cluster_id"])["stats"]["streams_active"] == 1)

        await _until(streaming)
        status, body = await http_json(controlplane, "POST",
                                       f"/debug/tunnels/{reg['cluster_id']}/drop")
        assert status == 200, body
        async with asyncio.timeout(10):
            try:
                assert await reader.read() == b""
            except ConnectionResetError:
                pass  # aborted: also an end with an error
        assert agent.session is not None
        async with asyncio.timeout(10):
            await agent.session.wait_closed()  # the agent's side noticed too

        def disconnected() -> dict[str, Any] | None:
            view = _view_now(controlplane, reg["cluster_id"])
            return view if not view["connected"] else None

        view = await _until(disconnected)
        assert view["last_close"] is not None
        assert view["stats_total"]["streams_closed"] == 1
        writer.close()
        status, _ = await http_json(controlplane, "POST",
                                    f"/debug/tunnels/{reg['cluster_id']}/drop")
        assert status == 409  # nothing left to drop
    finally:
        await agent.close()
        server.close()


async def test_a_service_listener_opens_service_streams(
        controlplane: ControlPlane, reg: dict[str, Any], echo: tuple[str, int]) -> None:
    agent = MiniAgent(reg, services={("default", "echo", 80): echo})
    try:
        await agent.connect()
        path = f"/debug/tunnels/{reg['cluster_id']}/listeners"
        status, listener = await http_json(controlplane, "POST", path,
                                           {"service": "echo", "namespace": "default",
                                            "port": 80})
        assert status == 200, listener
        assert await _echo_through(listener["remote_port"], b"svc" * 1000) == b"svc" * 1000
        assert agent.opens == [{"service": "echo", "namespace": "default", "port": 80}]
        status, other = await http_json(controlplane, "POST", path,
                                        {"service": "db", "namespace": "default", "port": 5432})
        await _closed_unanswered(other["remote_port"])  # OPEN_FAIL
        view = await _view(controlplane, reg["cluster_id"])
        assert {entry["name"] for entry in view["listeners"]} == {listener["name"], other["name"]}
        assert (await http_json(controlplane, "POST", path, {"service": "x"}))[0] == 422
        status, _ = await http_json(controlplane, "DELETE", f"{path}/{listener['name']}")
        assert status == 200
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", listener["remote_port"])
        status, _ = await http_json(controlplane, "DELETE", f"{path}/kubernetes-api")
        assert status == 404  # forwards are not removable
    finally:
        await agent.close()


async def test_unknown_messages_get_an_error_and_status_is_kept(
        controlplane: ControlPlane, reg: dict[str, Any]) -> None:
    agent = MiniAgent(reg)
    try:
        await agent.connect()
        agent.send({"type": "bogus"})
        reply = await agent.wait_message(lambda m: m["type"] == "error")
        assert "bogus" in reply["reason"]
        agent.send({"type": "status", "state": "connected", "streams": 0})
        agent.send({"type": "error", "reason": "the agent did not like something"})

        def noted() -> dict[str, Any] | None:
            view = _view_now(controlplane, reg["cluster_id"])
            return view if view["last_status"] and view["errors"] else None

        view = await _until(noted)
        assert view["last_status"]["state"] == "connected"
        assert view["errors"][0]["reason"] == "the agent did not like something"
        assert view["connected"] is True  # it carried on

        # a session's state is kept per session until it stops
        for session_id, state in (("s1", "running"), ("s2", "hibernated"), ("s1", "stopped")):
            agent.send({"type": "status", "sessionId": session_id, "state": state,
                        "replicas": int(state != "hibernated"), "readyReplicas": 0})
        view = await _until(lambda: (v := _view_now(controlplane, reg["cluster_id"]))
                            and v["last_status"].get("state") == "stopped" and v)
        assert view["sessions"] == {"s2": {"state": "hibernated", "history": ["hibernated"],
                                           "replicas": 0, "readyReplicas": 0}}
        # ill-formed ones are not kept
        agent.send({"type": "status", "sessionId": "x" * 64, "state": "running"})
        agent.send({"type": "status", "sessionId": "s3", "state": "exploded"})
        view = await _until(lambda: (v := _view_now(controlplane, reg["cluster_id"]))
                            and v["last_status"].get("state") == "exploded" and v)
        assert list(view["sessions"]) == ["s2"]
    finally:
        await agent.close()
    # a new connection starts the picture afresh: the agent sends every live session again
    again = MiniAgent(reg)
    try:
        await again.connect()
        view = await _until(lambda: (v := _view_now(controlplane, reg["cluster_id"]))
                            and v["connects"] >= 2 and v["connected"] and v)
        assert view["sessions"] == {}
    finally:
        await again.close()


async def test_an_agent_drain_stops_new_streams_on_that_connection() -> None:
    with ControlPlane(extra_args=["--tunnel-connect-wait", "0.3"]) as cp:
        reg = register(cp)
        server = await echo_server()
        agent = MiniAgent(reg, forwards={"kubernetes-api": ("127.0.0.1", port_of(server))})
        try:
            port = _ports(await agent.connect())["kubernetes-api"]
            assert await _echo_through(port, b"before") == b"before"
            agent.send({"type": "drain"})

            def draining() -> bool:
                return bool(_view_now(cp, reg["cluster_id"])["draining"])

            await _until(draining)
            await _closed_unanswered(port)
            assert agent.opens == [{"forward": "kubernetes-api"}]
        finally:
            await agent.close()
            server.close()


def test_the_tunnel_port_and_public_host_flags() -> None:
    port = free_port()
    with ControlPlane(extra_args=["--tunnel-port", str(port),
                                  "--tunnel-public-host", "tunnel.example.test:443"]) as cp:
        reg = register(cp)
        assert reg["tunnel_url"] == "ws://tunnel.example.test:443/api/v1/tunnel/connect"
        assert tunnel_status(cp, reg)[1]["tunnel_url"] == reg["tunnel_url"]
        assert cp.request("GET", "/debug/tunnels")[1]["tunnel_url"] == reg["tunnel_url"]
        import socket

        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the endpoint listens on the given port


async def test_sigterm_closes_tunnels_with_going_away_and_exits_zero() -> None:
    cp = ControlPlane()
    await asyncio.to_thread(cp.start)
    agent = MiniAgent(register(cp))
    try:
        await agent.connect()
        code = await asyncio.to_thread(cp.stop)
        assert code == 0
        assert agent.session is not None
        async with asyncio.timeout(5):
            await agent.session.wait_closed()
        assert agent.ws is not None and agent.ws.close_code == 1001
    finally:
        await agent.close()
        await asyncio.to_thread(cp.stop)
