"""Credit returned in batches (a WINDOW once half the window was consumed, not one per
read): whatever the reader's pace, every byte arrives, credit never runs ahead of what
was consumed, the receive buffer stays within the window, and a sender blocked on credit
is always released once its reader drained."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.mux.connection import MuxConnection
from agentkit.mux.events import OpenAccepted, OpenRequested
from agentkit.mux.frames import FrameType, decode_frame
from agentkit.mux.settings import MuxSettings, Role
from agentkit.mux.state import StreamState

KiB = 1024


class Wire:
    """A control plane sending to an agent, every message counted on the way."""

    def __init__(self, settings: MuxSettings) -> None:
        self.cp = MuxConnection(Role.CONTROL_PLANE, settings)
        self.agent = MuxConnection(Role.AGENT, settings)
        self.credit_returned = 0  # WINDOW increments the agent sent
        self.window_frames = 0
        sender = self.cp.open_stream({"forward": "x"})
        self.pump()
        (ev,) = [e for e in self.agent.take_events() if isinstance(e, OpenRequested)]
        self.agent.accept(ev.stream)
        self.pump()
        assert any(isinstance(e, OpenAccepted) for e in self.cp.take_events())
        self.sender: StreamState = sender
        self.reader: StreamState = ev.stream

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            while (msg := self.cp.next_frame()) is not None:
                assert isinstance(msg, bytes)
                self.agent.receive(msg)
                moved = True
            while (msg := self.agent.next_frame()) is not None:
                assert isinstance(msg, bytes)
                frame = decode_frame(msg)
                if frame.type is FrameType.WINDOW:
                    self.credit_returned += frame.increment
                    self.window_frames += 1
                self.cp.receive(msg)
                moved = True


def _check_bounds(wire: Wire, consumed: int, window: int) -> None:
    reader, sender = wire.reader, wire.sender
    assert wire.credit_returned <= consumed  # never credit for bytes not consumed
    assert reader.recv_buffered <= window
    # what the sender may still send plus what is on its way never exceeds the window
    assert sender.send_credit + reader.recv_buffered + reader.recv_unacked <= window
    assert sender.send_credit >= 0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    window=st.sampled_from([4 * KiB, 16 * KiB, 64 * KiB]),
    reads=st.lists(st.integers(min_value=1, max_value=96 * KiB), min_size=1, max_size=20),
    chunked=st.booleans(),
)
def test_a_slow_reader_gets_every_byte_and_credit_never_runs_ahead(
    window: int, reads: list[int], chunked: bool
) -> None:
    wire = Wire(MuxSettings(window=window, max_frame=min(window, 16 * KiB)))
    payload = bytes(range(256)) * (2 * window // 256) + b"tail" * 100
    wire.cp.send_data(wire.sender, payload)
    wire.cp.send_eof(wire.sender)
    got = bytearray()
    i = 0
    while len(got) < len(payload):
        wire.pump()
        _check_bounds(wire, len(got), window)
        if chunked:  # read_chunk + release, as pipe does: release a part, then the rest
            chunk = wire.agent.read_chunk(wire.reader)
            assert chunk is not None, "the sender stalled with the reader drained"
            got += chunk
            part = min(len(chunk), reads[i % len(reads)])
            wire.agent.release(wire.reader, part)
            _check_bounds(wire, len(got), window)
            wire.agent.release(wire.reader, len(chunk) - part)
        else:
            data = wire.agent.read(wire.reader, reads[i % len(reads)])
            assert data, "the sender stalled with the reader drained"
            got += data
        i += 1
        _check_bounds(wire, len(got), window)
    wire.pump()
    assert bytes(got) == payload
    assert wire.reader.at_eof
    assert wire.sender.send_buffered == 0


def test_credit_goes_back_in_batches_of_half_the_window() -> None:
    window = 64 * KiB
    wire = Wire(MuxSettings(window=window, max_frame=16 * KiB))
    wire.cp.send_data(wire.sender, b"z" * (8 * window))
    consumed = 0
    while consumed < 8 * window:
        wire.pump()
        consumed += len(wire.agent.read(wire.reader, 1 * KiB))  # 1 KiB reads
    wire.pump()
    assert wire.credit_returned == 8 * window
    assert wire.window_frames == 16  # one per half window consumed, not one per read (512)


def test_a_sender_blocked_on_credit_is_released_once_the_reader_drained() -> None:
    window = 64 * KiB
    wire = Wire(MuxSettings(window=window, max_frame=16 * KiB))
    wire.cp.send_data(wire.sender, b"q" * (3 * window))
    wire.pump()
    assert wire.sender.send_credit == 0 and wire.sender.send_buffered == 2 * window
    # the reader drains what it holds in reads smaller than the ack threshold
    while wire.reader.recv_buffered:
        wire.agent.read(wire.reader, 3 * KiB)
    wire.pump()
    assert wire.sender.send_buffered < 2 * window  # it moved on
    assert wire.reader.recv_buffered > 0
