"""The tunnel process under many streams and many reconnects: nothing is left behind.

1,000 streams open at once on one tunnel, then all closed: the metrics count every one
opened and every one closed. Then 100 reconnect cycles: the process's file descriptors,
threads and memory settle instead of growing with the cycles.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agentkit.mux import Stream
from tests.tunnel.agent_helpers import (
    FakeControlPlane,
    TcpServer,
    TunnelRun,
    eventually,
    until,
    write_identity,
)

STREAMS = 1000
CYCLES = 100


@pytest.fixture
async def cp() -> AsyncIterator[FakeControlPlane]:
    plane = await FakeControlPlane(remote_ports={"echo": 41011}).start()
    yield plane
    await plane.stop()


@pytest.fixture
async def tunnel(cp: FakeControlPlane, echo_server: TcpServer, state_dir: Path
                 ) -> AsyncIterator[TunnelRun]:
    # Reconnects as fast as the backoff allows, so 100 cycles take seconds, not minutes.
    run = TunnelRun(cp.url, state_dir, forwards={"echo": echo_server.addr},
                    extra=["--set", "pipeops.reconnect.backoff_base=0.01",
                           "--set", "pipeops.reconnect.backoff_max=0.05",
                           "--log-level", "info"]).start()
    try:
        await run.started()
        write_identity(state_dir)
        yield run
    finally:
        await asyncio.to_thread(run.stop)


def _process(pid: int) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in
                  Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"fds": len(os.listdir(f"/proc/{pid}/fd")),
            "threads": int(status["Threads"]),
            "rss_kib": int(status["VmRSS"].split()[0])}


async def _open_and_echo(session_open: asyncio.Semaphore, cp: FakeControlPlane,
                         i: int) -> Stream:
    async with session_open:
        stream = await cp.sessions[-1].open_stream({"forward": "echo"})
    payload = f"stream {i}".encode()
    await stream.send(payload)
    assert await stream.readexactly(len(payload)) == payload
    return stream


async def test_a_thousand_concurrent_streams_all_counted_open_and_closed(
    cp: FakeControlPlane, echo_server: TcpServer, tunnel: TunnelRun
) -> None:
    await cp.wait_connected()
    gate = asyncio.Semaphore(200)  # OPENs in flight at once; all 1,000 stay open together
    streams = await asyncio.gather(*(_open_and_echo(gate, cp, i) for i in range(STREAMS)))

    m = await tunnel.metrics()
    assert m["pipeops_tunnel_streams_active"] == STREAMS
    assert m["pipeops_tunnel_streams_opened_total"] == STREAMS
    assert echo_server.accepted == STREAMS
    listed = await tunnel.grpc("pipeops.agent.v1.Tunnel/ListStreams")
    assert len(listed["streams"]) == STREAMS

    async def close(stream: Stream) -> None:
        stream.write_eof()
        assert await stream.read() == b""
        await stream.wait_closed()

    await asyncio.gather(*(close(s) for s in streams))
    m = await eventually(tunnel.metrics,
                         lambda m: m["pipeops_tunnel_streams_closed_total"] == STREAMS,
                         what="every stream counted closed")
    assert m["pipeops_tunnel_streams_opened_total"] == m["pipeops_tunnel_streams_closed_total"]
    assert m["pipeops_tunnel_streams_active"] == 0
    assert (await tunnel.grpc("pipeops.agent.v1.Tunnel/ListStreams")).get("streams", []) == []
    await until(lambda: echo_server.ended == STREAMS,
                what="every local connection closed by the agent")


async def test_a_hundred_reconnect_cycles_leave_nothing_behind(
    cp: FakeControlPlane, echo_server: TcpServer, tunnel: TunnelRun
) -> None:
    assert tunnel.proc is not None
    pid = tunnel.proc.pid

    async def cycle(n: int) -> None:
        """Connection n: one stream through it, then the WebSocket dies under it."""
        session = await cp.wait_connected(n)
        stream = await session.open_stream({"forward": "echo"})
        await stream.send(b"ping")
        assert await stream.readexactly(4) == b"ping"
        cp.kill()

    warmup = 10
    for n in range(1, warmup + 1):
        await cycle(n)
    await cp.wait_connected(warmup + 1)
    await eventually(tunnel.metrics, lambda m: m["pipeops_tunnel_streams_active"] == 0,
                     what="the warm-up streams closed")
    before = _process(pid)

    for n in range(warmup + 1, warmup + CYCLES + 1):
        await cycle(n)
    await cp.wait_connected(warmup + CYCLES + 1)
    # (the control plane sees the hello before the agent has its ack and counts it)
    m = await eventually(tunnel.metrics, lambda m: m["pipeops_tunnel_streams_active"] == 0
                         and m["pipeops_tunnel_reconnects_total"] == warmup + CYCLES
                         and m["pipeops_tunnel_status"] == 1,
                         what="every stream of a dead connection closed, connected again")
    after = _process(pid)

    assert m["pipeops_tunnel_streams_opened_total"] == m["pipeops_tunnel_streams_closed_total"]
    # Nothing grows with the cycles. A leak per cycle would show as 100 more descriptors
    # or threads; the slack of 3 allows for a worker thread started late by the default
    # executor. Memory stays within allocator noise (one connection's buffers leaked per
    # cycle would be megabytes over 100 cycles).
    assert after["fds"] <= before["fds"] + 3, (before, after)
    assert after["threads"] <= before["threads"] + 3, (before, after)
    assert after["rss_kib"] - before["rss_kib"] < 4096, (before, after)
