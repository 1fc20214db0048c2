"""Micro-benchmark of the mux alone: one bulk stream (and N parallel streams) from the
control plane's session to a TCP sink behind the agent's session, over a real websockets
connection on loopback, next to the same transfer over plain loopback TCP.

    uv run python bench/mux_throughput.py [--mb 200] [--streams 1]

Prints MB/s for each and the ratio; never part of the tests.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from agentkit.mux import SUBPROTOCOL, MuxSession, OpenRequest, Role, pipe

CHUNK = b"\0" * (1 << 20)


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    total = 0
    while data := await reader.read(1 << 18):
        total += len(data)
    writer.write(str(total).encode())
    await writer.drain()
    writer.close()



async def plain_tcp(port: int, mb: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    start = time.perf_counter()
    for _ in range(mb):
        writer.write(CHUNK)
        await writer.drain()
    writer.write_eof()
    assert int(await reader.read()) == mb << 20
    elapsed = time.perf_counter() - start
    writer.close()
    return mb / elapsed


async def through_mux(port: int, mb: int, streams: int) -> float:
    accepted: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()

    async def handler(conn: ServerConnection) -> None:
        accepted.set_result(conn)
        await conn.wait_closed()

    async def on_open(request: OpenRequest) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await pipe(request.accept(), reader, writer)

    options = {"compression": None, "max_size": 1 << 20, "ping_interval": None}
    protocols = [SUBPROTOCOL]
    async with serve(handler, "127.0.0.1", 0, subprotocols=protocols, **options) as server:  # type: ignore[arg-type]
        url = f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        async with connect(url, subprotocols=protocols, **options) as client:  # type: ignore[arg-type]
            server_conn = await accepted
            async with (
                MuxSession(server_conn, Role.CONTROL_PLANE, name="cp") as cp,
                MuxSession(client, Role.AGENT, on_open=on_open, name="agent"),
            ):
                per_stream = max(1, mb // streams)

                async def one() -> None:
                    stream = await cp.open_stream({"forward": "sink"})
                    for _ in range(per_stream):
                        await stream.send(CHUNK)
                    stream.write_eof()
                    assert int(await stream.read(-1)) == per_stream << 20

                start = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(streams)))
                return per_stream * streams / (time.perf_counter() - start)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--streams", type=int, default=1)
    args = parser.parse_args()
    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    tcp = await plain_tcp(port, args.mb)
    mux = await through_mux(port, args.mb, args.streams)
    print(f"loopback_tcp_MBps: {tcp:.0f}")
    print(f"mux_{args.streams}_streams_MBps: {mux:.0f}")
    print(f"ratio_vs_tcp: {mux / tcp:.2f}")
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
