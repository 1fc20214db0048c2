"""The dev control plane's public listener: a request's Host picks a held route and goes
through a tunnel stream to the route's Service, streaming both ways.

The control plane is the real process; the agent's end is ``MiniAgent`` (the mux over a
real WebSocket) which dials a real HTTP app (``pipeops_controlplane.demoapp``, uvicorn)
for the route's Service: a slow download, an upload, SSE and a WebSocket cross it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from pipeops_controlplane.demoapp import DemoServer
from pipeops_controlplane.testing import ControlPlane
from tests.gateway.test_cp_routes_api import call, route
from tests.tunnel.e2e_helpers import MiniAgent, tunnel_status


@pytest.fixture
async def app() -> AsyncIterator[DemoServer]:
    server = await DemoServer("backend").start()
    yield server
    await server.stop()


@pytest.fixture
async def agent(controlplane: ControlPlane, reg: dict[str, Any], app: DemoServer
                ) -> AsyncIterator[MiniAgent]:
    status, body = tunnel_status(controlplane, reg)
    assert status == 200 and body["status"] == "ready", body
    mini = MiniAgent(reg, services={("apps", "web", 80): ("127.0.0.1", app.port)})
    await mini.connect()
    yield mini
    await mini.close()


def host() -> str:
    return f"h{uuid.uuid4().hex[:8]}.example.test"


@pytest.fixture
def client(controlplane: ControlPlane) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=controlplane.public_url, timeout=20)


async def test_a_request_reaches_the_routes_service_through_the_tunnel(
        controlplane: ControlPlane, reg: dict[str, Any], agent: MiniAgent,
        client: httpx.AsyncClient) -> None:
    name = host()
    assert call(controlplane, reg, "register", route(reg, name))[0] == 201
    async with client:
        reply = await client.get("/some/path?x=1", headers={"Host": f"{name}:8080"})
        assert reply.status_code == 200
        body = reply.json()
        assert body["app"] == "backend" and body["path"] == "/some/path"
        assert body["host"] == f"{name}:8080" and body["forwarded_for"] == "127.0.0.1"
        assert reply.headers["connection"] == "close"
        assert agent.opens[-1] == {"service": "web", "namespace": "apps", "port": 80}
        # an unknown host is the listener's own 404; nothing is opened
        opens = len(agent.opens)
        reply = await client.get("/", headers={"Host": "nobody.example.test"})
        assert reply.status_code == 404 and "no route" in reply.text
        assert len(agent.opens) == opens


async def test_paths_and_wildcards_follow_the_ingress_rules(
        controlplane: ControlPlane, reg: dict[str, Any], app: DemoServer) -> None:
    other = await DemoServer("other").start()
    mini = MiniAgent(reg, services={("apps", "web", 80): ("127.0.0.1", app.port),
                                    ("apps", "api", 81): ("127.0.0.1", other.port)})
    tunnel_status(controlplane, reg)
    await mini.connect()
    name = host()
    wild = f"*.w{uuid.uuid4().hex[:6]}.example.test"
    for body in (route(reg, name), route(reg, name, "/api", service_name="api",
                                         service_port=81),
                 route(reg, name, "/exact", path_type="Exact", service_name="api",
                       service_port=81),
                 route(reg, wild, service_name="api", service_port=81)):
        assert call(controlplane, reg, "register", body)[0] == 201
    try:
        async with httpx.AsyncClient(base_url=controlplane.public_url, timeout=20) as client:
            async def who(hostname: str, path: str) -> str | int:
                reply = await client.get(path, headers={"Host": hostname})
                return reply.json()["app"] if reply.status_code == 200 else reply.status_code

            assert await who(name, "/") == "backend"
            assert await who(name, "/api") == "other"
            assert await who(name, "/api/v1/x") == "other"
            assert await who(name, "/apis") == "backend"  # element-wise prefix
            assert await who(name, "/exact") == "other"
            assert await who(name, "/exact/more") == "backend"
            assert await who("a" + wild[1:], "/") == "other"
            assert await who("a.b" + wild[1:], "/") == 404  # one label only
    finally:
        await mini.close()
        await other.stop()


async def test_slow_download_upload_and_sse_stream_both_ways(
        controlplane: ControlPlane, reg: dict[str, Any], agent: MiniAgent,
        client: httpx.AsyncClient) -> None:
    name = host()
    assert call(controlplane, reg, "register", route(reg, name))[0] == 201
    headers = {"Host": name}
    async with client:
        # a slow download arrives chunk by chunk, not at the end
        started = time.monotonic()
        firsts: list[float] = []
        total = 0
        async with client.stream("GET", "/stream?chunks=10&size=50000&delay=0.1",
                                 headers=headers) as reply:
            assert reply.status_code == 200
            async for chunk in reply.aiter_raw():
                firsts.append(time.monotonic() - started)
                total += len(chunk)
        assert total == 500_000
        assert firsts[0] < firsts[-1] - 0.5  # bytes flowed while the backend still wrote
        # an upload larger than many windows, streamed
        data = os.urandom(6 * 1024 * 1024)
        reply = await client.post("/upload", content=data, headers=headers)
        assert reply.json() == {"app": "backend", "bytes": len(data),
                                "sha256": hashlib.sha256(data).hexdigest()}
        # SSE: each event is read before the next is written
        seen: list[tuple[int, float]] = []
        started = time.monotonic()
        async with client.stream("GET", "/events?n=5&delay=0.2", headers=headers) as reply:
            assert reply.headers["content-type"].startswith("text/event-stream")
            async for line in reply.aiter_lines():
                if line.startswith("data: "):
                    seen.append((json.loads(line[6:])["n"], time.monotonic() - started))
        assert [n for n, _ in seen] == [0, 1, 2, 3, 4]
        assert seen[0][1] < seen[-1][1] - 0.5


async def test_a_websocket_upgrade_passes_through(
        controlplane: ControlPlane, reg: dict[str, Any], agent: MiniAgent) -> None:
    name = host()
    assert call(controlplane, reg, "register", route(reg, name))[0] == 201
    port = int(controlplane.public_url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    async with connect(f"ws://{name}/ws", sock=sock, open_timeout=10) as ws:
        await ws.send("hello through the tunnel")
        assert await ws.recv() == "hello through the tunnel"
        payload = os.urandom(300_000)
        await ws.send(payload)
        assert await ws.recv() == payload


async def test_no_tunnel_or_a_refused_stream_is_a_502(
        controlplane: ControlPlane, reg: dict[str, Any], app: DemoServer) -> None:
    name = host()
    assert call(controlplane, reg, "register", route(reg, name))[0] == 201
    refused = host()
    assert call(controlplane, reg, "register", route(reg, refused, service_name="ghost"))[0] \
        == 201
    async with httpx.AsyncClient(base_url=controlplane.public_url, timeout=30) as client:
        reply = await client.get("/", headers={"Host": name})  # no agent connected yet
        assert reply.status_code == 502 and "not connected" in reply.text
        tunnel_status(controlplane, reg)
        mini = MiniAgent(reg, services={("apps", "web", 80): ("127.0.0.1", app.port)})
        await mini.connect()
        try:
            reply = await client.get("/", headers={"Host": refused})
            assert reply.status_code == 502 and "target not allowed" in reply.text
            reply = await client.get("/", headers={"Host": name})
            assert reply.status_code == 200
        finally:
            await mini.close()
    counts = controlplane._ok("GET", "/debug/routes")["public_requests"]
    assert counts["502"] >= 2 and counts["proxied"] >= 1


async def test_bad_heads_get_the_listeners_own_answers(controlplane: ControlPlane) -> None:
    port = int(controlplane.public_url.rsplit(":", 1)[1])

    async def raw(data: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(10):
            answer = await reader.read()
        writer.close()
        return answer

    assert (await raw(b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 400")  # no Host
    assert (await raw(b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n"
    assert (await raw(big)).startswith(b"HTTP/1.1 431")


async def test_a_direct_route_is_dialled_at_its_public_endpoint(
        controlplane: ControlPlane, reg: dict[str, Any], app: DemoServer) -> None:
    name = host()
    body = route(reg, name, routing_mode="direct", public_endpoint=f"127.0.0.1:{app.port}")
    assert call(controlplane, reg, "register", body)[0] == 201
    async with httpx.AsyncClient(base_url=controlplane.public_url, timeout=20) as client:
        reply = await client.get("/direct", headers={"Host": name})
        assert reply.status_code == 200 and reply.json()["path"] == "/direct"
        data = os.urandom(500_000)
        reply = await client.post("/upload", content=data, headers={"Host": name})
        assert reply.json()["bytes"] == len(data)
    dead = host()
    body = route(reg, dead, routing_mode="direct", public_endpoint="127.0.0.1:9")
    assert call(controlplane, reg, "register", body)[0] == 201
    async with httpx.AsyncClient(base_url=controlplane.public_url, timeout=20) as client:
        reply = await client.get("/", headers={"Host": dead})
        assert reply.status_code == 502 and "cannot reach" in reply.text
