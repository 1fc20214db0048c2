"""The fast path's own WebSocket framing (agentkit.mux.wsframes), against websockets' own
serializer and parser: frames cut at any point arrive whole and in order, the mux's
binary messages directly, every other frame through websockets, which always gets them
from their first byte (so its parser is never out of step)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, Side, State

from agentkit.mux.wsframes import OP_BINARY, OP_TEXT, FrameReader, FrameWriter


class FakeConnection:
    """What FrameReader uses of a websockets connection, over a real websockets parser."""

    def __init__(self, side: Side, max_size: int | None = 1 << 20) -> None:
        self.protocol = Protocol(side, max_size=max_size)
        self.recv_messages = type("Queue", (), {"frames": []})()
        self.log: list[tuple[str, Any]] = []  # ("direct", bytes) / ("ws", Frame)

    def data_received(self, data: memoryview | bytes) -> None:
        self.protocol.receive_data(bytes(data))
        for event in self.protocol.events_received():
            self.log.append(("ws", (event.opcode, bytes(event.data), event.fin)))


def _reader(side: Side, **kwargs: Any) -> tuple[FakeConnection, FrameReader]:
    ws = FakeConnection(side, **kwargs)
    return ws, FrameReader(ws, lambda m: ws.log.append(("direct", bytes(m))))


def _wire(frames: list[Frame], side: Side) -> bytes:
    """What the peer of ``side`` sends: masked when we are the server."""
    return b"".join(f.serialize(mask=side is Side.SERVER) for f in frames)


def _feed_in_pieces(reader: FrameReader, data: bytes, cuts: list[int]) -> None:
    buf = bytearray(len(data) + 1)  # one reused buffer, as the transport's read buffer
    pos = 0
    for cut in [*sorted({min(c, len(data)) for c in cuts}), len(data)]:
        if cut <= pos:
            continue
        n = cut - pos
        buf[:n] = data[pos:cut]
        reader.feed(memoryview(buf)[:n])
        buf[:n] = b"\xee" * n  # the next read overwrites it: nothing may keep a view
        pos = cut


MIXED = [
    Frame(Opcode.BINARY, b"a" * 5),
    Frame(Opcode.TEXT, b'{"type":"status"}'),
    Frame(Opcode.BINARY, b"b" * 300),
    Frame(Opcode.PING, b"hi"),
    Frame(Opcode.BINARY, b"c" * 70_000),
    Frame(Opcode.BINARY, b"d" * 126),
    Frame(Opcode.BINARY, b""),
    Frame(Opcode.BINARY, b"e" * 65_535),
]


def _expected() -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for f in MIXED:
        if f.opcode is Opcode.BINARY:
            out.append(("direct", f.data))
        else:
            out.append(("ws", (f.opcode, f.data, True)))
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(side=st.sampled_from([Side.CLIENT, Side.SERVER]),
       cuts=st.lists(st.integers(min_value=0, max_value=len(_wire(MIXED, Side.CLIENT)) + 40),
                     max_size=30))
def test_frames_cut_anywhere_arrive_whole_and_in_order(side: Side, cuts: list[int]) -> None:
    ws, reader = _reader(side)
    _feed_in_pieces(reader, _wire(MIXED, side), cuts)
    assert ws.log == _expected()
    assert ws.protocol.state is State.OPEN


@pytest.mark.parametrize("side", [Side.CLIENT, Side.SERVER])
def test_every_byte_boundary(side: Side) -> None:
    frames = [Frame(Opcode.BINARY, b"x" * 200), Frame(Opcode.TEXT, b"t"),
              Frame(Opcode.BINARY, b"y" * 3)]
    data = _wire(frames, side)
    for cut in range(len(data) + 1):
        ws, reader = _reader(side)
        _feed_in_pieces(reader, data, [cut])
        assert [kind for kind, _ in ws.log] == ["direct", "ws", "direct"], cut
        assert ws.log[0][1] == b"x" * 200 and ws.log[2][1] == b"y" * 3


def test_fragments_and_what_queues_behind_them_go_through_websockets() -> None:
    ws, reader = _reader(Side.CLIENT)
    frames = [Frame(Opcode.BINARY, b"part1", fin=False), Frame(Opcode.CONT, b"part2")]
    reader.feed(memoryview(_wire(frames, Side.CLIENT)))
    assert [k for k, _ in ws.log] == ["ws", "ws"]
    ws.recv_messages.frames.append("a message nobody received yet")
    reader.feed(memoryview(_wire([Frame(Opcode.BINARY, b"after")], Side.CLIENT)))
    assert ws.log[-1] == ("ws", (Opcode.BINARY, b"after", True))  # kept behind the queue
    ws.recv_messages.frames.clear()
    reader.feed(memoryview(_wire([Frame(Opcode.BINARY, b"direct")], Side.CLIENT)))
    assert ws.log[-1] == ("direct", b"direct")


def test_what_websockets_refuses_it_still_refuses() -> None:
    # too big for max_size: websockets fails the connection with 1009, as without us
    ws, reader = _reader(Side.CLIENT, max_size=1000)
    reader.feed(memoryview(_wire([Frame(Opcode.BINARY, b"z" * 1001)], Side.CLIENT)))
    assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1009
    assert ws.log == []
    # wrong masking (a client must not receive masked frames): 1002
    ws, reader = _reader(Side.CLIENT)
    reader.feed(memoryview(Frame(Opcode.BINARY, b"m").serialize(mask=True)))
    assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1002
    # a reserved bit without an extension: 1002
    ws, reader = _reader(Side.CLIENT)
    reader.feed(memoryview(bytes([0x80 | 0x40 | OP_BINARY, 1]) + b"r"))  # FIN RSV1 BINARY
    assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1002
    # and once it is not open, everything after is websockets' too
    reader.feed(memoryview(_wire([Frame(Opcode.BINARY, b"late")], Side.CLIENT)))
    assert ("direct", b"late") not in ws.log


def test_a_close_frame_ends_the_direct_path() -> None:
    ws, reader = _reader(Side.SERVER)
    close = Frame(Opcode.CLOSE, b"\x03\xe8bye")
    reader.feed(memoryview(_wire([close, Frame(Opcode.BINARY, b"after close")], Side.SERVER)))
    assert ws.protocol.state is not State.OPEN
    assert ("direct", b"after close") not in ws.log


@pytest.mark.parametrize("held", ["header", "payload"])
def test_hand_over_gives_websockets_the_frame_it_holds(held: str) -> None:
    ws, reader = _reader(Side.SERVER)
    data = _wire([Frame(Opcode.BINARY, b"w" * 1000)], Side.SERVER)
    cut = 3 if held == "header" else 500
    reader.feed(memoryview(data[:cut]))
    assert ws.log == []
    reader.hand_over()
    ws.data_received(data[cut:])  # the transport feeds websockets directly from now on
    assert ws.log == [("ws", (Opcode.BINARY, b"w" * 1000, True))]


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65_535, 65_536, 70_000])
def test_written_frames_parse_in_websockets(mask: bool, size: int) -> None:
    writer = FrameWriter(mask)
    parts: list[bytes] = []
    payload = bytes(i % 256 for i in range(size))
    writer.frame(parts, OP_BINARY, payload)
    writer.frame(parts, OP_TEXT, b'{"type":"x"}')
    peer = Protocol(Side.SERVER if mask else Side.CLIENT, max_size=None)
    peer.receive_data(b"".join(parts))
    events = peer.events_received()
    assert [(e.opcode, bytes(e.data), e.fin) for e in events] == [
        (Opcode.BINARY, payload, True), (Opcode.TEXT, b'{"type":"x"}', True)]
    assert peer.state is State.OPEN


@pytest.mark.parametrize("mask", [True, False])
@pytest.mark.parametrize("size", [0, 1, 117, 118, 125, 65_527, 65_528, 70_000])
def test_a_data_message_framed_in_one_piece_parses_in_websockets(mask: bool, size: int) -> None:
    """``binary(prefix, payload)``: the mux header and the payload in one frame (the
    sizes straddle each header length, the 8-byte prefix included)."""
    writer = FrameWriter(mask)
    payload = bytes(i % 251 for i in range(size))
    data = writer.binary(b"\x04\x00\x00\x00\x00\x00\x00\x07", memoryview(payload))
    data += writer.binary(b"", b"next")
    peer = Protocol(Side.SERVER if mask else Side.CLIENT, max_size=None)
    peer.receive_data(data)
    events = peer.events_received()
    assert [(e.opcode, bytes(e.data), e.fin) for e in events] == [
        (Opcode.BINARY, b"\x04\x00\x00\x00\x00\x00\x00\x07" + payload, True),
        (Opcode.BINARY, b"next", True)]
    assert peer.state is State.OPEN


def test_masking_keys_differ_between_frames() -> None:
    writer = FrameWriter(True)
    parts: list[bytes] = []
    for _ in range(2000):  # across a refill of the key pool
        writer.frame(parts, OP_BINARY, b"k")
    keys = {parts[i][2:6] for i in range(0, len(parts), 2)}
    assert len(keys) > 1900


def test_importing_the_mux_loads_no_websockets() -> None:
    """websockets is loaded when a fast path is built, not by the import (as before the
    mux framed frames itself)."""
    code = ("import sys, agentkit.mux; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'websockets'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
