"""Two Multiplexers over a real websockets connection on 127.0.0.1, with real TCP servers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from agentkit.mux import (
    Multiplexer,
    MuxDraining,
    OpenFailed,
    OpenRequest,
    OpenTimeout,
    Role,
    Stream,
    StreamReset,
    pipe,
)
from tests.mux.conftest import TcpServer, WsPair
from tests.mux.helpers import wait_for

MiB = 1024 * 1024


@dataclass
class Dialer:
    """An agent-style ``on_open``: dials the TCP target named by ``forward`` and pipes."""

    targets: dict[str, tuple[str, int]] = field(default_factory=dict)
    outcomes: list[BaseException | None] = field(default_factory=list)

    async def __call__(self, request: OpenRequest) -> None:
        target = self.targets.get(str(request.payload.get("forward")))
        if target is None:
            request.refuse("target not allowed")
            return
        reader, writer = await asyncio.open_connection(*target)
        stream = request.accept()
        try:
            await pipe(stream, reader, writer)
            self.outcomes.append(None)
        except (StreamReset, OSError) as exc:
            self.outcomes.append(exc)


@dataclass
class Tunnel:
    cp: Multiplexer
    agent: Multiplexer
    cp_dialer: Dialer
    agent_dialer: Dialer
    cp_messages: list[dict[str, Any]]
    agent_messages: list[dict[str, Any]]


@pytest.fixture
async def tunnel(
    ws_pair: WsPair, echo_server: TcpServer, sink_server: TcpServer
) -> AsyncIterator[Tunnel]:
    targets = {
        "echo": (echo_server.host, echo_server.port),
        "sink": (sink_server.host, sink_server.port),
    }
    cp_dialer, agent_dialer = Dialer(dict(targets)), Dialer(dict(targets))
    cp_messages: list[dict[str, Any]] = []
    agent_messages: list[dict[str, Any]] = []
    cp = Multiplexer(
        ws_pair.server, Role.CONTROL_PLANE, on_open=cp_dialer,
        on_control=cp_messages.append, name="cp",
    )
    agent = Multiplexer(
        ws_pair.client, Role.AGENT, on_open=agent_dialer,
        on_control=agent_messages.append, name="agent",
    )
    async with cp, agent:
        yield Tunnel(cp, agent, cp_dialer, agent_dialer, cp_messages, agent_messages)


async def exchange(stream: Stream, payload: bytes) -> bytes:
    """Send ``payload`` then FIN while reading everything back until EOF."""

    async def produce() -> None:
        view = memoryview(payload)
        for i in range(0, len(view), 200_000):
            await stream.send(view[i : i + 200_000])
        stream.write_eof()

    producer = asyncio.create_task(produce())
    received = await stream.read(-1)
    await producer
    return received


async def test_echo_both_directions_multi_megabyte(tunnel: Tunnel) -> None:
    payload = os.urandom(8 * MiB)
    down = await tunnel.cp.open_stream({"forward": "echo"})  # cp -> agent: odd id
    up = await tunnel.agent.open_stream({"forward": "echo"})  # agent -> cp: even id
    assert (down.id % 2, up.id % 2) == (1, 0)
    got_down, got_up = await asyncio.gather(exchange(down, payload), exchange(up, payload[::-1]))
    assert got_down == payload
    assert got_up == payload[::-1]
    await asyncio.wait_for(asyncio.gather(down.wait_closed(), up.wait_closed()), 10)
    await wait_for(lambda: len(tunnel.agent_dialer.outcomes) == len(tunnel.cp_dialer.outcomes) == 1)
    assert tunnel.agent_dialer.outcomes == [None] and tunnel.cp_dialer.outcomes == [None]
    for s in (tunnel.cp, tunnel.agent):
        assert s.stats.streams_opened == s.stats.streams_closed == 2
        assert s.stats.bytes_in == s.stats.bytes_out == 16 * MiB


async def test_sink_integrity_and_half_close(tunnel: Tunnel) -> None:
    payload = os.urandom(20 * MiB + 12345)
    stream = await tunnel.cp.open_stream({"forward": "sink"})
    for i in range(0, len(payload), 1 << 20):
        await stream.send(payload[i : i + (1 << 20)])
    stream.write_eof()  # the sink answers only after our FIN reached it as a TCP EOF
    answer = await asyncio.wait_for(stream.read(-1), 20)
    assert answer.decode() == f"{len(payload)} {hashlib.sha256(payload).hexdigest()}"
    assert stream.at_eof()
    await asyncio.wait_for(stream.wait_closed(), 5)
    assert stream.reset_reason is None


async def test_open_fail_carries_the_reason(tunnel: Tunnel) -> None:
    with pytest.raises(OpenFailed) as info:
        await tunnel.cp.open_stream({"forward": "nope"})
    assert info.value.reason == "target not allowed"
    assert tunnel.cp.stats.open_failed == 1 and tunnel.cp.stats.streams_opened == 0


async def test_reset_by_peer_reaches_reader_and_writer(tunnel: Tunnel) -> None:
    accepted: asyncio.Queue[Stream] = asyncio.Queue()

    async def keep(request: OpenRequest) -> None:
        await accepted.put(request.accept())

    tunnel.agent._handlers.on_open = keep
    stream = await tunnel.cp.open_stream({"forward": "custom"})
    remote = await asyncio.wait_for(accepted.get(), 5)
    await stream.send(b"hello")
    assert await remote.readexactly(5) == b"hello"
    reader = asyncio.create_task(stream.read(10))
    remote.reset("backend crashed")
    with pytest.raises(StreamReset) as info:
        await asyncio.wait_for(reader, 5)
    assert info.value.by_peer and info.value.reason == "backend crashed"
    with pytest.raises(StreamReset):
        await stream.send(b"more")
    await asyncio.wait_for(stream.wait_closed(), 5)
    assert tunnel.cp.stats.resets_received == 1


async def test_open_timeout_resets_the_stream(tunnel: Tunnel) -> None:
    release = asyncio.Event()
    seen: list[OpenRequest] = []

    async def slow(request: OpenRequest) -> None:
        seen.append(request)
        await release.wait()

    tunnel.agent._handlers.on_open = slow
    with pytest.raises(OpenTimeout):
        await tunnel.cp.open_stream({"forward": "x"}, timeout=0.2)
    await wait_for(lambda: bool(seen) and seen[0].decided)  # the RST reached the agent
    with pytest.raises(StreamReset):
        seen[0].accept()
    release.set()


async def test_control_messages_and_drain(tunnel: Tunnel) -> None:
    tunnel.cp.send_control({"type": "command", "id": "c1", "action": "wake_session"})
    tunnel.agent.send_control({"type": "ack", "id": "c1"})
    await wait_for(lambda: bool(tunnel.agent_messages) and bool(tunnel.cp_messages))
    assert tunnel.agent_messages == [{"type": "command", "id": "c1", "action": "wake_session"}]
    assert tunnel.cp_messages == [{"type": "ack", "id": "c1"}]
    stream = await tunnel.cp.open_stream({"forward": "echo"})
    tunnel.agent.drain()
    await wait_for(lambda: tunnel.cp.peer_draining)
    assert tunnel.cp_messages[-1] == {"type": "drain"}
    with pytest.raises(MuxDraining):
        await tunnel.cp.open_stream({"forward": "echo"})
    with pytest.raises(MuxDraining):
        await tunnel.agent.open_stream({"forward": "echo"})
    assert await exchange(stream, b"still works") == b"still works"  # existing streams go on


async def test_invalid_text_gets_an_error_reply(ws_pair: WsPair) -> None:
    async with Multiplexer(ws_pair.client, Role.AGENT, name="agent"):
        await ws_pair.server.send("{not json")
        reply = json.loads(await asyncio.wait_for(ws_pair.server.recv(), 5))
        assert reply["type"] == "error"
        assert reply["reason"].startswith("invalid control message: control message is not JSON")


@pytest.mark.parametrize("text", ["[" * 100_000, '{"type": "x", "a": ' + "[" * 5000 + "]" * 5000
                                  + "}", "1" * 5000, '{"type": 1}'])
async def test_text_that_breaks_json_loads_is_refused_and_the_connection_lives(
        ws_pair: WsPair, text: str) -> None:
    """Deep nesting (RecursionError in json.loads, or deeper than anything we walk), an
    over-long number: every failure is an ``error`` reply, and the connection goes on."""
    seen: list[dict[str, Any]] = []
    async with Multiplexer(ws_pair.client, Role.AGENT, name="agent", on_control=seen.append) as mux:
        await ws_pair.server.send(text)
        reply = json.loads(await asyncio.wait_for(ws_pair.server.recv(), 5))
        assert reply["type"] == "error" and reply["reason"].startswith("invalid control message")
        await ws_pair.server.send('{"type": "ping"}')
        await wait_for(lambda: seen == [{"type": "ping"}])
        assert not mux.closed


async def test_thousand_concurrent_streams(ws_pair: WsPair) -> None:
    async def echo(request: OpenRequest) -> None:
        stream = request.accept()
        data = await stream.read(-1)
        await stream.send(data)
        stream.write_eof()
        await stream.wait_closed()

    async with (
        Multiplexer(ws_pair.server, Role.CONTROL_PLANE, name="cp") as cp,
        Multiplexer(ws_pair.client, Role.AGENT, on_open=echo, name="agent") as agent,
    ):
        streams = await asyncio.gather(*(cp.open_stream({"forward": f"s{i}"}) for i in range(1000)))
        assert cp.stats.streams_active == 1000
        await wait_for(lambda: agent.stats.streams_active == 1000)
        assert len(agent.stream_info()) == 1000

        async def one(i: int, stream: Stream) -> None:
            payload = f"stream {i}".encode() * 10
            assert await exchange(stream, payload) == payload
            await stream.wait_closed()

        await asyncio.wait_for(asyncio.gather(*(one(i, s) for i, s in enumerate(streams))), 30)
        await wait_for(lambda: agent.stats.streams_active == 0 and not agent._handlers)
        for s in (cp, agent):
            assert s.stats.streams_opened == s.stats.streams_closed == 1000
            assert s.stats.streams_active == 0 and not s.connection.streams
        # only the session's own three tasks are left
        names = sorted(t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("mux:"))
        assert names == [
            "mux:agent:reader", "mux:agent:supervisor", "mux:agent:writer",
            "mux:cp:reader", "mux:cp:supervisor", "mux:cp:writer",
        ]


async def test_transport_killed_mid_transfer(tunnel: Tunnel) -> None:
    stream = await tunnel.cp.open_stream({"forward": "sink"})
    up = await tunnel.agent.open_stream({"forward": "sink"})
    chunk = os.urandom(1 << 20)

    async def send_forever(s: Stream) -> None:
        while True:
            await s.send(chunk)

    senders = [asyncio.create_task(send_forever(s)) for s in (stream, up)]
    await wait_for(lambda: tunnel.agent.stats.bytes_in > 4 * MiB)
    transport = tunnel.agent._transport.transport  # type: ignore[attr-defined]
    transport.abort()  # the TCP connection under the WebSocket dies
    for task in senders:
        with pytest.raises(StreamReset):
            await asyncio.wait_for(task, 10)
    await asyncio.wait_for(asyncio.gather(tunnel.cp.wait_closed(), tunnel.agent.wait_closed()), 10)
    with pytest.raises(StreamReset):
        await stream.read(1)
    assert stream.reset_reason is not None and up.reset_reason is not None
    await wait_for(lambda: len(tunnel.agent_dialer.outcomes) == len(tunnel.cp_dialer.outcomes) == 1)
    assert isinstance(tunnel.agent_dialer.outcomes[0], StreamReset)  # the agent's pipe ended
    assert isinstance(tunnel.cp_dialer.outcomes[0], StreamReset)
    for s in (tunnel.cp, tunnel.agent):
        assert s.stats.streams_active == 0
        assert s.close_code is not None
    await tunnel.cp.close()  # idempotent
    await tunnel.agent.close()


class _ClosingTransport:
    """A transport whose reader and writer both fail at the same moment, as a WebSocket's
    do when it is closed with 1009 (message too big) or 1007 (invalid data)."""

    def __init__(self, code: int) -> None:
        self.code = code
        self.gone = asyncio.Event()

    async def _fail(self) -> None:
        await self.gone.wait()
        raise ConnectionError(f"closed with {self.code}")

    async def send(self, message: bytes | str, /) -> None:
        self.gone.set()  # the close arrives while this send is under way
        await self._fail()

    async def recv(self) -> bytes | str:
        await self._fail()
        raise AssertionError("unreachable")

    async def close(self, code: int = 1000, reason: str = "") -> None:
        return None


@pytest.mark.parametrize("code", [1009, 1007])
async def test_both_pumps_failing_at_once_leaves_no_exception_unretrieved(code: int) -> None:
    import gc

    unretrieved: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unretrieved.append(context))
    try:
        transport = _ClosingTransport(code)
        mux = Multiplexer(transport, Role.AGENT, name="closing", fast_path=False)
        mux.start()
        mux.send_control({"type": "hello"})  # the writer is in send when both fail
        await asyncio.wait_for(mux.wait_closed(), 5)
        assert mux.close_code == 1011 and str(code) in mux.close_reason
        del mux
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [c.get("message") for c in unretrieved] == []
