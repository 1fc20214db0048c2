"""The mux over real websockets connections on 127.0.0.1 (compression off, subprotocol
``pipeops.tunnel.v1``, ``max_size`` set on purpose): the acceptance points of issue 5 that
are about behaviour (isolation, stream and connection churn, a killed transport, bad
frames on the wire). Sizes are kept small enough for a loaded 2-core box; timings are
the benchmark's business (bench/tunnel.py), never asserted here."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import json
import os
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from agentkit.mux import (
    DEFAULT_MAX_FRAME,
    SUBPROTOCOL,
    Multiplexer,
    MuxSettings,
    OpenHandler,
    OpenRequest,
    Role,
    Stream,
    StreamReset,
    pipe,
)
from agentkit.mux.frames import HEADER_SIZE, FrameType, decode_frame
from tests.mux.conftest import WS_OPTIONS, TcpServer, WsPair, mux_tasks
from tests.mux.helpers import jraw, raw, wait_for

MiB = 1024 * 1024


@contextlib.asynccontextmanager
async def ws_server(
    max_size: int = 1 << 20, **extra: Any
) -> AsyncIterator[tuple[str, asyncio.Queue[ServerConnection]]]:
    """A websockets server; every accepted connection is put on the queue and held open
    until it closes."""
    accepted: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def handler(conn: ServerConnection) -> None:
        await accepted.put(conn)
        await conn.wait_closed()

    options = {**WS_OPTIONS, "max_size": max_size, **extra}
    async with serve(
        handler, "127.0.0.1", 0, subprotocols=[SUBPROTOCOL], **options  # type: ignore[arg-type]
    ) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/tunnel", accepted


def ws_connect(url: str, max_size: int = 1 << 20) -> connect:
    options = {**WS_OPTIONS, "max_size": max_size}
    return connect(url, subprotocols=[SUBPROTOCOL], **options)  # type: ignore[arg-type,list-item]


async def test_isolation_a_stalled_stream_never_slows_a_bulk_one_past_its_window(
    echo_server: TcpServer, sink_server: TcpServer
) -> None:
    """200 MiB through a TCP sink on one stream while another stream's consumer (a TCP
    server that never reads) is stalled: the bulk transfer completes intact, the stalled
    stream's receive buffer never held more than its window, and only its producer waits.
    """
    stalled_conns: list[asyncio.StreamWriter] = []

    async def never_reads(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled_conns.append(writer)

    stall_server = await asyncio.start_server(never_reads, "127.0.0.1", 0)
    stall_port = stall_server.sockets[0].getsockname()[1]
    targets = {"sink": (sink_server.host, sink_server.port), "stall": ("127.0.0.1", stall_port)}
    agent_streams: dict[str, Stream] = {}

    async def dial(request: OpenRequest) -> None:
        name = str(request.payload["forward"])
        reader, writer = await asyncio.open_connection(*targets[name])
        stream = request.accept()
        agent_streams[name] = stream
        with contextlib.suppress(StreamReset):
            await pipe(stream, reader, writer)

    try:
        async with ws_server() as (url, accepted), ws_connect(url) as client:
            server_conn = await asyncio.wait_for(accepted.get(), 5)
            async with (
                Multiplexer(server_conn, Role.CONTROL_PLANE, name="cp") as cp,
                Multiplexer(client, Role.AGENT, on_open=dial, name="agent") as agent,
            ):
                window = agent.settings.window
                stalled = await cp.open_stream({"forward": "stall"})

                async def flood() -> None:  # blocks in drain() once its credit is gone
                    while True:
                        await stalled.send(b"s" * 65536)

                flooder = asyncio.create_task(flood())
                # the stalled stream fills its window and every buffer on the way first
                await wait_for(lambda: stalled.info().send_credit == 0, timeout=30)
                bulk = await cp.open_stream({"forward": "sink"})
                chunk = os.urandom(MiB)
                digest = hashlib.sha256()
                total = 200 * MiB
                for _ in range(total // MiB):
                    await bulk.send(chunk)
                    digest.update(chunk)
                bulk.write_eof()
                answer = await asyncio.wait_for(bulk.read(-1), 60)
                assert answer.decode() == f"{total} {digest.hexdigest()}"

                stalled_remote = agent_streams["stall"].info()
                assert stalled_remote.recv_buffered_peak <= window
                assert stalled_remote.recv_buffered_peak > 0  # it did receive and hold data
                assert agent_streams["sink"].info().recv_buffered_peak <= window
                assert stalled.info().send_credit == 0  # still stalled: nothing came back
                assert not flooder.done()  # its producer waits, and only it
                flooder.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await flooder
                stalled.reset("test over")
                await wait_for(lambda: agent.stats.streams_active == 0)
    finally:
        for writer in stalled_conns:
            writer.transport.abort()
        stall_server.close()
        await stall_server.wait_closed()


async def test_connect_close_cycles_leave_no_tasks_or_memory(echo_server: TcpServer) -> None:
    """100 WebSocket connect / session / stream / close cycles: the number of asyncio tasks
    returns to where it was, and traced memory does not grow with the cycles."""
    target = (echo_server.host, echo_server.port)

    async def dial(request: OpenRequest) -> None:
        reader, writer = await asyncio.open_connection(*target)
        with contextlib.suppress(StreamReset):
            await pipe(request.accept(), reader, writer)

    async def cycle(url: str, accepted: asyncio.Queue[ServerConnection], i: int) -> None:
        async with ws_connect(url) as client:
            server_conn = await asyncio.wait_for(accepted.get(), 5)
            async with (
                Multiplexer(server_conn, Role.CONTROL_PLANE, name="cp") as cp,
                Multiplexer(client, Role.AGENT, on_open=dial, name="agent") as agent,
            ):
                finished = await cp.open_stream({"forward": "echo"})
                await finished.send(f"cycle {i}".encode())
                finished.write_eof()
                assert await finished.read(-1) == f"cycle {i}".encode()
                left_open = await cp.open_stream({"forward": "echo"})  # reset by the close
                await left_open.send(b"x")
                assert await left_open.readexactly(1) == b"x"
            assert cp.stats.streams_opened == cp.stats.streams_closed == 2
            await agent.wait_closed()
        await server_conn.wait_closed()

    async with ws_server() as (url, accepted):
        for i in range(10):  # warm up: caches, lazily created objects, the echo server
            await cycle(url, accepted, i)
        await wait_for(lambda: not mux_tasks() and len(echo_server.connections) == 20)
        await wait_for(lambda: all(t.done() for t in echo_server.connections))
        tasks_before = len(asyncio.all_tasks())
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.take_snapshot()
            for i in range(100):
                await cycle(url, accepted, i)
                assert len(mux_tasks()) <= 4  # at most the last cycle's pipes winding down
            await wait_for(lambda: not mux_tasks())
            await wait_for(lambda: all(t.done() for t in echo_server.connections))
            echo_server.connections.clear()
            gc.collect()
            grown = tracemalloc.take_snapshot().compare_to(base, "filename")
        finally:
            tracemalloc.stop()
        await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before)
        growth = sum(stat.size_diff for stat in grown)
        # one leaked session per cycle (connection, streams, tasks) would be several MiB
        assert growth < 256 * 1024, [str(s) for s in grown[:5]]


async def test_killing_the_websocket_mid_transfer_resets_streams_on_both_sides(
    sink_server: TcpServer,
) -> None:
    target = (sink_server.host, sink_server.port)
    agent_outcomes: list[BaseException | None] = []

    async def dial(request: OpenRequest) -> None:
        reader, writer = await asyncio.open_connection(*target)
        try:
            await pipe(request.accept(), reader, writer)
            agent_outcomes.append(None)
        except StreamReset as exc:
            agent_outcomes.append(exc)

    async with ws_server() as (url, accepted), ws_connect(url) as client:
        server_conn = await asyncio.wait_for(accepted.get(), 5)
        async with (
            Multiplexer(server_conn, Role.CONTROL_PLANE, name="cp") as cp,
            Multiplexer(client, Role.AGENT, on_open=dial, name="agent") as agent,
        ):
            streams = [await cp.open_stream({"forward": "sink"}) for _ in range(3)]
            chunk = os.urandom(256 * 1024)

            async def send_forever(stream: Stream) -> None:
                while True:
                    await stream.send(chunk)

            senders = [asyncio.create_task(send_forever(s)) for s in streams]
            await wait_for(lambda: agent.stats.bytes_in > 3 * MiB)
            server_conn.transport.abort()  # the control plane's socket dies
            for task in senders:
                with pytest.raises(StreamReset):
                    await asyncio.wait_for(task, 10)
            await asyncio.wait_for(asyncio.gather(cp.wait_closed(), agent.wait_closed()), 10)
            await wait_for(lambda: len(agent_outcomes) == 3)
            assert all(isinstance(o, StreamReset) for o in agent_outcomes)  # the agent's pipes
            for s in (cp, agent):
                assert s.stats.streams_active == 0
                assert s.stats.streams_opened == s.stats.streams_closed == 3


async def session_for_raw_peer(
    accepted: asyncio.Queue[ServerConnection], on_open: OpenHandler | None = None
) -> Multiplexer:
    """A control-plane session on the next accepted connection, whose peer the test drives
    by hand with websockets (window 64 KiB, max frame 16 KiB)."""
    server_conn = await asyncio.wait_for(accepted.get(), 5)
    session = Multiplexer(
        server_conn, Role.CONTROL_PLANE, on_open=on_open, name="cp",
        settings=MuxSettings(window=64 * 1024, max_frame=16 * 1024),
    )
    session.start()
    return session


async def test_unreadable_header_on_the_wire_closes_with_1002() -> None:
    """A hand-driven agent sends a stream frame cut short: the session closes the
    WebSocket with 1002 and resets its streams."""
    async with ws_server() as (url, accepted), ws_connect(url) as client:
        session = await session_for_raw_peer(accepted)
        try:
            await client.send(jraw(FrameType.OPEN, 2, {"forward": "x"}))  # refused: no on_open
            reply = decode_frame(await asyncio.wait_for(client.recv(decode=False), 5))
            assert (reply.type, reply.stream_id) == (FrameType.OPEN_FAIL, 2)
            await client.send(b"\x04\x00\x00")
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(client.recv(), 5)
            assert client.close_code == 1002
            await asyncio.wait_for(session.wait_closed(), 5)
            assert session.close_code == 1002 and "short frame" in session.close_reason
        finally:
            await session.close()


async def test_bad_frames_on_the_wire_reset_only_their_stream() -> None:
    """DATA over the credit, over the max frame, and an unknown type each reset their own
    stream (RST with the reason) while the connection and other streams carry on."""
    accepted_streams: list[Stream] = []

    async def keep(request: OpenRequest) -> None:
        accepted_streams.append(request.accept())

    async with ws_server() as (url, accepted), ws_connect(url) as client:
        session = await session_for_raw_peer(accepted, keep)
        try:
            for sid in (2, 4, 6, 8):
                await client.send(jraw(FrameType.OPEN, sid, {"forward": "x"}))
                reply = decode_frame(await asyncio.wait_for(client.recv(decode=False), 5))
                assert (reply.type, reply.stream_id) == (FrameType.OPEN_OK, sid)
            for _ in range(4):  # exactly the 64 KiB window: fine
                await client.send(raw(FrameType.DATA, 2, b"a" * 16 * 1024))
            await client.send(raw(FrameType.DATA, 2, b"!"))  # one byte over the credit
            await client.send(raw(FrameType.DATA, 4, b"b" * (16 * 1024 + 1)))  # over max frame
            await client.send(raw(42, 6, b""))  # unknown type
            resets: dict[int, str] = {}
            while len(resets) < 3:
                f = decode_frame(await asyncio.wait_for(client.recv(decode=False), 5))
                assert f.type is FrameType.RST and f.body is not None
                resets[f.stream_id] = f.body["reason"]
            assert "flow control" in resets[2]
            assert "exceeds max frame" in resets[4]
            assert "unknown frame type 42" in resets[6]
            await client.send(raw(FrameType.DATA, 8, b"still fine"))
            await client.send(raw(FrameType.FIN, 8))
            by_id = {s.id: s for s in accepted_streams}
            assert await asyncio.wait_for(by_id[8].read(-1), 5) == b"still fine"
            for sid in (2, 4, 6):
                with pytest.raises(StreamReset):
                    await by_id[sid].read(1)
            assert not session.closed
            assert session.stats.protocol_errors == 3 and session.stats.resets_sent == 3
        finally:
            await session.close()


async def test_one_frame_per_message_fits_a_max_size_of_max_frame_plus_header(
    echo_server: TcpServer,
) -> None:
    """With websockets' ``max_size`` at exactly max_frame + 8 both ways, full-size frames
    pass (the mux never sends a bigger message); one byte more from a broken peer is
    refused by websockets (1009), which ends the session and resets its streams."""
    limit = DEFAULT_MAX_FRAME + HEADER_SIZE
    target = (echo_server.host, echo_server.port)

    async def dial(request: OpenRequest) -> None:
        reader, writer = await asyncio.open_connection(*target)
        with contextlib.suppress(StreamReset):
            await pipe(request.accept(), reader, writer)

    async with ws_server(limit) as (url, accepted), ws_connect(url, limit) as client:
        server_conn = await asyncio.wait_for(accepted.get(), 5)
        async with (
            Multiplexer(server_conn, Role.CONTROL_PLANE, name="cp") as cp,
            Multiplexer(client, Role.AGENT, on_open=dial, name="agent") as agent,
        ):
            stream = await cp.open_stream({"forward": "echo"})
            payload = os.urandom(4 * MiB)

            async def produce() -> None:
                await stream.send(payload)
                stream.write_eof()

            producer = asyncio.create_task(produce())
            assert await asyncio.wait_for(stream.read(-1), 30) == payload
            await producer
            open_one = await cp.open_stream({"forward": "echo"})
            await client.send(b"\x04" + bytes(limit))  # a message one byte over max_size
            with pytest.raises(StreamReset):
                await asyncio.wait_for(open_one.read(1), 5)
            await asyncio.wait_for(agent.wait_closed(), 5)
            assert cp.close_code is not None
            assert agent.stats.streams_active == cp.stats.streams_active == 0


async def test_control_messages_travel_as_text() -> None:
    """Text messages are JSON control messages; the session hands them to ``on_control``
    and sends its own as text, ahead of queued DATA."""
    async with ws_server() as (url, accepted), ws_connect(url) as client:
        seen: list[dict[str, object]] = []
        server_conn = await asyncio.wait_for(accepted.get(), 5)
        async with Multiplexer(server_conn, Role.CONTROL_PLANE, on_control=seen.append) as cp:
            await client.send(json.dumps({"type": "hello", "agent_id": "a1", "window": 262144}))
            await wait_for(lambda: bool(seen))
            assert seen == [{"type": "hello", "agent_id": "a1", "window": 262144}]
            cp.send_control({"type": "hello_ack", "forwards": []})
            assert json.loads(await asyncio.wait_for(client.recv(), 5)) == {
                "type": "hello_ack", "forwards": [],
            }


async def test_a_peer_that_stops_reading_pushes_back_on_the_writer(ws_pair: WsPair) -> None:
    """When the peer's TCP side stops reading, what the session hands the WebSocket stays
    bounded (websockets' write limit plus a message or two) however much credit the
    streams hold; the rest waits in the streams' own bounded send buffers, and all of it
    arrives once the peer reads again."""
    held: list[Stream] = []

    async def hold(request: OpenRequest) -> None:
        held.append(request.accept())

    async with (
        Multiplexer(ws_pair.server, Role.CONTROL_PLANE, name="cp") as cp,
        Multiplexer(ws_pair.client, Role.AGENT, on_open=hold, name="agent") as agent,
    ):
        streams = [await cp.open_stream({"forward": f"s{i}"}) for i in range(160)]
        window = cp.settings.window
        ws_pair.client.transport.pause_reading()  # the agent's socket is no longer read
        block = b"w" * window
        for stream in streams:  # all the credit the agent granted: 40 MiB
            stream.write(block)
        server_transport = ws_pair.server.transport
        bound = 32 * 1024 + 2 * (DEFAULT_MAX_FRAME + HEADER_SIZE + 14)
        assert server_transport.get_write_buffer_size() <= bound
        # the writer pump is stuck in websockets' drain(), no further
        await wait_for(lambda: server_transport.get_write_buffer_size() > 0, timeout=30)
        assert server_transport.get_write_buffer_size() <= bound
        assert sum(s.info().send_buffered for s in streams) > 20 * MiB
        ws_pair.client.transport.resume_reading()
        await wait_for(lambda: agent.stats.bytes_in == 160 * window, timeout=60)
        assert all(s.info().recv_buffered == window for s in held)


async def test_keepalive_pings_pass_and_a_silent_peer_ends_the_session(
    echo_server: TcpServer,
) -> None:
    """Keepalive is the WebSocket's (PROTOCOL.md: ping 15 s, no pong in 20 s; here 50 ms
    and 300 ms): pings and pongs interleave with stream frames; when the peer goes silent
    the ping times out, the session ends and its streams are reset. (websockets then waits
    ``close_timeout`` for a closing handshake the silent peer never does: keep it short.)"""
    target = (echo_server.host, echo_server.port)

    async def dial(request: OpenRequest) -> None:
        reader, writer = await asyncio.open_connection(*target)
        with contextlib.suppress(StreamReset):
            await pipe(request.accept(), reader, writer)

    async with (
        ws_server(ping_interval=0.05, ping_timeout=0.3, close_timeout=0.5) as (url, accepted),
        ws_connect(url) as client,
    ):
        server_conn = await asyncio.wait_for(accepted.get(), 5)
        async with (
            Multiplexer(server_conn, Role.CONTROL_PLANE, name="cp") as cp,
            Multiplexer(client, Role.AGENT, on_open=dial, name="agent"),
        ):
            stream = await cp.open_stream({"forward": "echo"})
            payload = os.urandom(2 * MiB)
            for _ in range(3):  # traffic, and pongs (latency is measured from them)
                await stream.send(payload)
                assert await asyncio.wait_for(stream.readexactly(len(payload)), 10) == payload
                server_conn.latency = 0.0
                await wait_for(lambda: server_conn.latency > 0)
            assert not cp.closed
            client.transport.pause_reading()  # the agent goes silent: no more pongs
            with pytest.raises(StreamReset):
                await asyncio.wait_for(stream.read(1), 10)
            await asyncio.wait_for(cp.wait_closed(), 5)
            assert cp.close_code == 1011 and "transport closed" in cp.close_reason
            assert cp.stats.streams_active == 0
            client.transport.resume_reading()


async def test_an_idle_session_hands_data_to_the_websocket_at_once(ws_pair: WsPair) -> None:
    """With its writer pump idle, a session over websockets sends synchronously inside
    ``write()`` (no task switch: the latency saving bench/tunnel.py measures)."""
    held: list[Stream] = []

    async def hold(request: OpenRequest) -> None:
        held.append(request.accept())

    async with (
        Multiplexer(ws_pair.server, Role.CONTROL_PLANE, name="cp") as cp,
        Multiplexer(ws_pair.client, Role.AGENT, on_open=hold, name="agent") as agent,
    ):
        stream = await cp.open_stream({"forward": "x"})
        stream.write(b"now")
        assert cp.stats.bytes_out == 3  # framed and written before write() returned
        await wait_for(lambda: agent.stats.bytes_in == 3)
        assert await held[0].read(3) == b"now"


async def test_fragmented_messages_keep_their_order_among_direct_ones() -> None:
    """Complete messages are handled as websockets parses them; a fragmented one goes
    through ``recv()``, and the messages behind it wait their turn: the stream reads the
    bytes in the order they were sent, whichever way each message took."""
    accepted_streams: list[Stream] = []

    async def keep(request: OpenRequest) -> None:
        accepted_streams.append(request.accept())

    async with ws_server() as (url, accepted), ws_connect(url) as client:
        session = await session_for_raw_peer(accepted, keep)
        try:
            await client.send(jraw(FrameType.OPEN, 2, {"forward": "x"}))
            reply = decode_frame(await asyncio.wait_for(client.recv(decode=False), 5))
            assert (reply.type, reply.stream_id) == (FrameType.OPEN_OK, 2)
            assert "process_event" in vars(session._transport)  # the direct path is on
            await client.send(raw(FrameType.DATA, 2, b"one,"))
            two = raw(FrameType.DATA, 2, b"two,")
            await client.send([two[:3], two[3:7], two[7:]])  # one message in three frames
            await client.send(raw(FrameType.DATA, 2, b"three,"))
            await client.send([b'{"type":', b'"noted"}'])  # fragmented text as well
            await client.send(raw(FrameType.DATA, 2, b"four"))
            await client.send(raw(FrameType.FIN, 2))
            await wait_for(lambda: len(accepted_streams) == 1)
            data = await asyncio.wait_for(accepted_streams[0].read(-1), 5)
            assert data == b"one,two,three,four"
            assert not session.closed and session.stats.protocol_errors == 0
        finally:
            await session.close()
        assert "process_event" not in vars(session._transport)  # undone with the session


async def test_pipe_takes_over_what_its_reader_already_buffered(ws_pair: WsPair) -> None:
    """Bytes and EOF that reached the StreamReader before ``pipe`` started (a client that
    writes before the stream is open) go first, then the connection is the pipe's."""
    got: list[bytes] = []

    async def collect(request: OpenRequest) -> None:
        stream = request.accept()
        got.append(await stream.read(-1))
        stream.write(b"reply")
        stream.write_eof()

    arrived = asyncio.Event()
    outcome: list[BaseException | None] = []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await wait_for(lambda: reader._eof)  # type: ignore[attr-defined]  # data, then EOF
        arrived.set()
        try:
            await pipe(await cp.open_stream({"forward": "x"}), reader, writer)
            outcome.append(None)
        except (StreamReset, OSError) as exc:
            outcome.append(exc)

    async with (
        Multiplexer(ws_pair.server, Role.CONTROL_PLANE, name="cp") as cp,
        Multiplexer(ws_pair.client, Role.AGENT, on_open=collect, name="agent"),
    ):
        server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.sockets[0].getsockname()[1])
            payload = os.urandom(5000)
            writer.write(payload)
            writer.write_eof()
            await asyncio.wait_for(arrived.wait(), 5)
            assert await asyncio.wait_for(reader.read(), 5) == b"reply"
            writer.close()
            await wait_for(lambda: outcome == [None])
            assert got == [payload]
        finally:
            server.close()
            await server.wait_closed()


def test_pipe_round_trips_on_the_services_event_loop() -> None:
    """The services run on uvloop (``agentkit.runner.run_loop``), whose transports are
    not asyncio's classes: request/response, a large transfer and half-closes through
    two pipes, both ends on that loop."""
    from agentkit.runner import run_loop

    async def scenario() -> tuple[list[bytes], bytes, str]:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(1 << 16):
                    writer.write(data)
                    await writer.drain()
                writer.write_eof()
                await reader.read()  # until the pipe closes the connection
            finally:
                writer.close()

        async def dial(request: OpenRequest) -> None:
            r, w = await asyncio.open_connection("127.0.0.1", target_port)
            with contextlib.suppress(StreamReset, OSError):
                await pipe(request.accept(), r, w)

        async def listen(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(StreamReset, OSError):
                await pipe(await cp.open_stream({"forward": "echo"}), r, w)

        target = await asyncio.start_server(echo, "127.0.0.1", 0)
        target_port = target.sockets[0].getsockname()[1]
        async with ws_server() as (url, accepted), ws_connect(url) as client:
            cp = Multiplexer(await asyncio.wait_for(accepted.get(), 5), Role.CONTROL_PLANE)
            async with cp, Multiplexer(client, Role.AGENT, on_open=dial):
                front = await asyncio.start_server(listen, "127.0.0.1", 0)
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", front.sockets[0].getsockname()[1])
                replies = []
                for i in range(20):
                    writer.write(b"%04d" % i * 256)
                    replies.append(await asyncio.wait_for(reader.readexactly(1024), 5))
                big = os.urandom(3 * MiB)
                writer.write(big)
                writer.write_eof()
                back = await asyncio.wait_for(reader.read(), 20)
                writer.close()
                front.close()
                await front.wait_closed()
        target.close()
        await target.wait_closed()
        assert back == big
        return replies, back[:4], type(asyncio.get_running_loop()).__module__

    replies, _, loop_module = run_loop(scenario())
    assert replies == [b"%04d" % i * 256 for i in range(20)]
    assert loop_module.startswith("uvloop")
