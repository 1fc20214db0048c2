"""Multiplexer semantics over the in-process transport: lifecycle, handlers, errors."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from agentkit.mux import (
    Multiplexer,
    MuxClosed,
    MuxSettings,
    OpenFailed,
    OpenRequest,
    Role,
    Stream,
    StreamError,
    StreamReset,
    pipe,
)
from agentkit.mux.memory import MemoryTransport, memory_transport_pair
from tests.mux.helpers import raw, wait_for


@contextlib.asynccontextmanager
async def sessions(
    on_open: Any = None, on_control: Any = None
) -> AsyncIterator[tuple[Multiplexer, Multiplexer, MemoryTransport, MemoryTransport]]:
    a, b = memory_transport_pair()
    cp = Multiplexer(a, Role.CONTROL_PLANE, name="cp", handler_grace=0.2)
    agent = Multiplexer(
        b, Role.AGENT, on_open=on_open, on_control=on_control, name="agent", handler_grace=0.2
    )
    async with cp, agent:
        yield cp, agent, a, b


async def accept_and_hold(request: OpenRequest) -> None:
    stream = request.accept()
    with contextlib.suppress(StreamReset):
        await stream.read(-1)
        stream.write_eof()


async def test_close_is_idempotent_and_resets_streams_on_both_sides() -> None:
    async with sessions(accept_and_hold) as (cp, agent, a, _):
        stream = await cp.open_stream({"forward": "x"})
        reader = asyncio.create_task(stream.read(1))
        await asyncio.gather(cp.close(1001, "going away"), cp.close(), cp.close())
        with pytest.raises(StreamReset, match="going away"):
            await reader
        assert cp.closed and cp.close_code == 1001
        assert a.closed is not None and a.closed.code == 1001
        await asyncio.wait_for(agent.wait_closed(), 5)  # the peer saw the transport close
        assert agent.stats.streams_active == cp.stats.streams_active == 0
        with pytest.raises(MuxClosed):
            await cp.open_stream({"forward": "x"})


async def test_close_before_start() -> None:
    a, _ = memory_transport_pair()
    session = Multiplexer(a, Role.AGENT)
    await session.close()
    await session.close()
    assert session.closed and a.closed is not None


async def test_handler_outcomes() -> None:
    async def handler(request: OpenRequest) -> None:
        kind = request.payload["kind"]
        if kind == "raise":
            raise ValueError("boom")
        if kind == "raise-after-accept":
            request.accept()
            raise ValueError("boom")
        # "ignore": returns without deciding

    async with sessions(handler) as (cp, _, _, _):
        with pytest.raises(OpenFailed, match="internal error: ValueError"):
            await cp.open_stream({"kind": "raise"})
        with pytest.raises(OpenFailed, match="not accepted"):
            await cp.open_stream({"kind": "ignore"})
        stream = await cp.open_stream({"kind": "raise-after-accept"})
        with pytest.raises(StreamReset, match="handler failed"):
            await stream.read(1)


async def test_no_handler_refuses() -> None:
    async with sessions() as (cp, _, _, _):
        with pytest.raises(OpenFailed, match="not accepting streams"):
            await cp.open_stream({"forward": "x"})


async def test_control_handler_errors_do_not_end_the_session() -> None:
    seen: list[dict[str, Any]] = []

    def on_control(message: dict[str, Any]) -> None:
        seen.append(message)
        raise RuntimeError("bad handler")

    async with sessions(accept_and_hold, on_control) as (cp, agent, _, _):
        cp.send_control({"type": "one"})
        cp.send_control({"type": "two"})
        await wait_for(lambda: len(seen) == 2)
        assert not agent.closed
        with pytest.raises(ValueError):
            cp.send_control({"no": "type"})


async def test_protocol_error_closes_with_1002() -> None:
    async with sessions(accept_and_hold) as (cp, agent, a, _):
        stream = await cp.open_stream({"forward": "x"})
        await a.send(b"\x04\x00")  # a header cut short
        await asyncio.wait_for(agent.wait_closed(), 5)
        assert agent.close_code == 1002 and "short frame" in agent.close_reason
        with pytest.raises(StreamReset):
            await asyncio.wait_for(stream.read(1), 5)
        await asyncio.wait_for(cp.wait_closed(), 5)


async def test_bad_frame_resets_only_its_stream() -> None:
    async with sessions(accept_and_hold) as (cp, agent, a, _):
        s1 = await cp.open_stream({"forward": "x"})
        s2 = await cp.open_stream({"forward": "y"})
        await a.send(raw(4, s1.id, b"x" * 70_000))  # DATA over the max frame
        with pytest.raises(StreamReset, match="exceeds max frame"):
            await asyncio.wait_for(s1.read(1), 5)
        await s2.send(b"fine")
        s2.write_eof()
        await asyncio.wait_for(s2.wait_closed(), 5)
        assert not agent.closed and s2.reset_reason is None


async def test_stream_misuse_and_info() -> None:
    streams: list[Stream] = []

    async def keep(request: OpenRequest) -> None:
        streams.append(request.accept())

    async with sessions(keep) as (cp, agent, _, _):
        stream = await cp.open_stream({"service": "web", "namespace": "shop", "port": 8080})
        assert stream.local and stream.label == "shop/web:8080"
        await stream.send(b"abc")
        stream.write_eof()
        stream.write_eof()  # idempotent
        with pytest.raises(StreamError):
            stream.write(b"late")
        await wait_for(lambda: bool(streams) and streams[0].info().recv_buffered == 3)
        (info,) = agent.stream_info()
        assert (info.label, info.initiator, info.bytes_in) == ("shop/web:8080", "remote", 3)
        assert info.state == "open (remote half-closed)"
        assert await streams[0].read() == b"abc"
        assert await streams[0].read() == b""
        assert streams[0].at_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await streams[0].readexactly(1)
        streams[0].write_eof()
        await asyncio.wait_for(stream.wait_closed(), 5)
        assert agent.streams() == [] and cp.stats.streams_active == 0


async def test_pipe_resets_the_stream_when_the_local_connection_breaks() -> None:
    async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.transport.abort()  # RST to the pipe's socket

    server = await asyncio.start_server(rude, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    outcome: list[BaseException] = []

    async def dial(request: OpenRequest) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await pipe(request.accept(), reader, writer)
        except (OSError, StreamReset) as exc:
            outcome.append(exc)

    try:
        async with sessions(dial) as (cp, _, _, _):
            stream = await cp.open_stream({"forward": "rude"})
            with pytest.raises(StreamReset) as info:
                while True:
                    await stream.send(b"x" * 65536)
            assert info.value.by_peer and "local connection error" in info.value.reason
            await wait_for(lambda: bool(outcome))
            assert isinstance(outcome[0], OSError)
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def idle_tcp_server() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """Accepts connections and neither reads, writes nor closes them."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], held
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()


async def test_pipe_notices_a_reset_while_both_directions_wait_on_tcp() -> None:
    """After the peer's FIN reached the TCP side, the pipe waits only on the local socket,
    which is idle: a reset from the peer must still end it at once."""
    outcome: asyncio.Queue[BaseException | None] = asyncio.Queue()

    async with idle_tcp_server() as (port, held):

        async def dial(request: OpenRequest) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            try:
                await pipe(request.accept(), reader, writer)
                await outcome.put(None)
            except StreamReset as exc:
                await outcome.put(exc)

        async with sessions(dial) as (cp, agent, _, _):
            stream = await cp.open_stream({"forward": "idle"})
            stream.write_eof()  # the agent's pipe half-closes its TCP side and waits on it
            await wait_for(lambda: bool(held))
            await wait_for(lambda: agent.stream_info()[0].state == "open (remote half-closed)")
            stream.reset("client gone")
            result = await asyncio.wait_for(outcome.get(), 5)
            assert isinstance(result, StreamReset) and result.by_peer
            assert result.reason == "client gone"
            assert agent.stats.streams_active == 0


async def test_cancelling_a_pipe_resets_its_stream() -> None:
    """A handler cancelled mid-pipe (service shutdown) resets the stream: the peer hears
    RST instead of waiting on a stream nobody serves."""
    handlers: list[asyncio.Task[object]] = []

    async with idle_tcp_server() as (port, _):

        async def dial(request: OpenRequest) -> None:
            task = asyncio.current_task()
            assert task is not None
            handlers.append(task)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await pipe(request.accept(), reader, writer)

        async with sessions(dial) as (cp, _, _, _):
            stream = await cp.open_stream({"forward": "idle"})
            await stream.send(b"hello")
            handlers[0].cancel()
            with pytest.raises(StreamReset, match="cancelled") as info:
                await asyncio.wait_for(stream.read(1), 5)
            assert info.value.by_peer
            assert handlers[0].cancelled()


async def test_cancelled_mid_teardown_still_ends_closed() -> None:
    """The owner's grace runs out while the session waits for a peer that never answers
    the close: the supervisor is cancelled mid-teardown, and still every waiter returns
    and the session is marked closed (before, close() and wait_closed() hung forever)."""
    a, b = memory_transport_pair()
    never = asyncio.Event()

    async def close_hangs(code: int = 1000, reason: str = "") -> None:
        await never.wait()

    a.close = close_hangs  # type: ignore[method-assign]
    session = Multiplexer(a, Role.CONTROL_PLANE, name="cp", close_timeout=60)
    peer = Multiplexer(b, Role.AGENT, name="agent")
    session.start()
    peer.start()
    closing = asyncio.create_task(session.close())
    await wait_for(lambda: session.close_code is not None)  # tearing down, stuck in close
    assert session._supervisor is not None
    session._supervisor.cancel()
    await asyncio.wait_for(session.wait_closed(), timeout=2)
    await asyncio.wait_for(closing, timeout=2)
    assert session.closed
    with pytest.raises(MuxClosed):
        await session.open_stream({"forward": "x"})
    await peer.close()


async def test_replies_are_dropped_while_the_control_queue_is_full() -> None:
    """Answers to a peer's messages (acks, errors) are bounded: a peer that floods us and
    never reads cannot grow our queue past MAX_QUEUED_CONTROL; our own messages still go."""
    from agentkit.mux.settings import MAX_QUEUED_CONTROL

    a, _b = memory_transport_pair()
    session = Multiplexer(a, Role.AGENT, name="agent")  # not started: nothing is sent
    replied = sum(session.reply_control({"type": "error", "reason": "flood"})
                  for _ in range(MAX_QUEUED_CONTROL + 100))
    assert replied == MAX_QUEUED_CONTROL
    assert session.queued_control == MAX_QUEUED_CONTROL
    session.send_control({"type": "status"})  # the owner's own messages are never dropped
    assert session.queued_control == MAX_QUEUED_CONTROL + 1
    await session.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_pipe_keeps_reading_paused_after_bytes_read_before_it_started(loop: str) -> None:
    """The StreamReader paused the socket holding > 128 KiB when ``pipe`` took over; those
    bytes alone fill the stream's send buffer while the peer grants no credit. Reading
    must then stay paused: resuming it after feeding them used to leave it on for good,
    buffering the whole flood in memory (hundreds of MB a second on uvloop)."""
    from agentkit.runner import run_loop

    async def scenario() -> int:
        async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while True:
                    writer.write(b"x" * 65536)
                    await writer.drain()

        server = await asyncio.start_server(flood, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        piped: list[tuple[Stream, asyncio.StreamWriter]] = []

        async def dial(request: OpenRequest) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await wait_for(lambda: len(getattr(reader, "_buffer", b"")) > 200 * 1024)
            stream = request.accept()
            piped.append((stream, writer))
            await pipe(stream, reader, writer)

        a, b = memory_transport_pair()
        cp = Multiplexer(a, Role.CONTROL_PLANE, name="cp")  # opens, then never reads
        agent = Multiplexer(b, Role.AGENT, on_open=dial, name="agent", handler_grace=0.2)
        try:
            async with cp, agent:
                st = await cp.open_stream({"forward": "flood"})
                await wait_for(lambda: bool(piped))
                stream, writer = piped[0]
                await wait_for(lambda: stream.info().send_buffered >= limit)
                transport = writer.transport
                await wait_for(lambda: not transport.is_reading()  # type: ignore[attr-defined]
                               or stream.info().send_buffered > 16 * 1024 * 1024)
                buffered = stream.info().send_buffered
                st.reset("done")
                transport.abort()  # the flood stops here, whatever the outcome
        finally:
            server.close()
        return buffered

    limit = MuxSettings().write_limit
    buffered = run_loop(scenario()) if loop == "uvloop" else asyncio.run(scenario())
    # Paused for good: what is buffered is bounded by the limit plus one read.
    assert buffered <= limit + 512 * 1024, buffered


async def test_flush_waits_until_queued_output_was_handed_to_the_transport() -> None:
    a, b = memory_transport_pair(max_queue=4)  # b is never read: a's sends block at 4
    a.sent = []
    mux = Multiplexer(a, Role.AGENT, name="agent")
    for i in range(10):
        mux.send_control({"type": "note", "n": i})
    flushing = asyncio.create_task(mux.flush())
    mux.start()
    await wait_for(lambda: len(a.sent or []) == 5)  # 4 queued at the peer, 1 send waiting
    with pytest.raises(TimeoutError):  # output is stuck: flush() must not return
        await asyncio.wait_for(asyncio.shield(flushing), 0.2)
    received = [await b.recv() for _ in range(10)]  # the peer reads: everything goes
    await asyncio.wait_for(flushing, 5)
    assert received == [f'{{"type":"note","n":{i}}}' for i in range(10)]
    assert mux.queued_control == 0 and not mux.connection.has_output
    await asyncio.wait_for(mux.flush(), 1)  # nothing queued: at once
    await mux.close()
    await asyncio.wait_for(mux.flush(), 1)  # closed: at once


async def test_flush_returns_when_the_multiplexer_closes_with_output_stuck() -> None:
    a, _b = memory_transport_pair(max_queue=1)
    mux = Multiplexer(a, Role.AGENT, name="agent", close_timeout=0.5)
    mux.start()
    for i in range(5):
        mux.send_control({"type": "note", "n": i})
    flushing = asyncio.create_task(mux.flush())
    await wait_for(lambda: mux.queued_control < 5)
    assert not flushing.done()
    await mux.close()
    await asyncio.wait_for(flushing, 5)
