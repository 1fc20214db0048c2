"""Fixtures for the mux tests: a real websockets connection on loopback and TCP servers.
(The check that no task outlives its test is tests/conftest.py's, for every async test.)"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from agentkit.mux import SUBPROTOCOL

WS_OPTIONS = {"compression": None, "max_size": 1 << 20, "ping_interval": None}


def mux_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("mux:") and not t.done()]


@dataclass
class WsPair:
    client: ClientConnection
    server: ServerConnection


@pytest.fixture
async def ws_pair() -> AsyncIterator[WsPair]:
    """A control-plane (server) and agent (client) WebSocket, connected on 127.0.0.1."""
    async with _ws_pair() as pair:
        yield pair


@pytest.fixture(params=["ws", "wss"])
async def ws_or_wss_pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[WsPair]:
    """:func:`ws_pair`, and the same over TLS (``wss://``, the dev control plane's
    throwaway CA)."""
    if request.param == "ws":
        async with _ws_pair() as pair:
            yield pair
        return
    from pipeops_controlplane.tunnel.tls import write_tunnel_tls

    files = write_tunnel_tls(tmp_path, ["127.0.0.1"])
    client = ssl.create_default_context(cafile=str(files.ca_cert))
    async with _ws_pair(files.server_context(), client) as pair:
        yield pair


@contextlib.asynccontextmanager
async def _ws_pair(
    server_ssl: ssl.SSLContext | None = None, client_ssl: ssl.SSLContext | None = None
) -> AsyncIterator[WsPair]:
    accepted: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(conn: ServerConnection) -> None:
        accepted.set_result(conn)
        await conn.wait_closed()

    async with serve(
        handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL], ssl=server_ssl,
        **WS_OPTIONS,  # type: ignore[arg-type]
    ) as server:
        port = server.sockets[0].getsockname()[1]
        scheme = "wss" if client_ssl is not None else "ws"
        extra = {"ssl": client_ssl} if client_ssl is not None else {}
        async with connect(
            f"{scheme}://127.0.0.1:{port}/tunnel", subprotocols=[SUBPROTOCOL],
            **WS_OPTIONS, **extra,  # type: ignore[arg-type]
        ) as client:
            assert client.subprotocol == SUBPROTOCOL
            server_conn = await asyncio.wait_for(accepted, 5)
            yield WsPair(client, server_conn)


@dataclass
class TcpServer:
    host: str
    port: int
    connections: list[asyncio.Task[None]] = field(default_factory=list)


async def _serve(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[TcpServer]:
    tasks: list[asyncio.Task[None]] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.append(task)  # type: ignore[arg-type]
        try:
            await handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield TcpServer("127.0.0.1", port, tasks)
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def echo_server() -> AsyncIterator[TcpServer]:
    """Echoes everything; half-closes after the client's EOF."""

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    async for server in _serve(echo):
        yield server


@pytest.fixture
async def sink_server() -> AsyncIterator[TcpServer]:
    """Reads to EOF, then answers ``<byte count> <sha256 hex>``."""

    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        digest = hashlib.sha256()
        count = 0
        while data := await reader.read(1 << 18):
            digest.update(data)
            count += len(data)
        writer.write(f"{count} {digest.hexdigest()}".encode())
        await writer.drain()

    async for server in _serve(sink):
        yield server
