"""The direct send (``MuxConnection.send_direct``): a write that nothing is queued ahead
of may go out at once as one DATA frame, past the send buffer, but only within every
rule the buffered path keeps: the credit, the max frame, the order of output (control
messages, the stream's own buffer, other streams' turn) and the stream's state."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.mux.connection import MuxConnection
from agentkit.mux.events import DataReceived, OpenAccepted, OpenRequested
from agentkit.mux.frames import encode_data_header
from agentkit.mux.settings import MuxSettings, Role
from agentkit.mux.state import StreamState

KiB = 1024


class Pair:
    """A control plane and an agent with ``streams`` open streams from cp to agent."""

    def __init__(self, settings: MuxSettings, streams: int = 1) -> None:
        self.cp = MuxConnection(Role.CONTROL_PLANE, settings)
        self.agent = MuxConnection(Role.AGENT, settings)
        self.senders = [self.cp.open_stream({"forward": "x"}) for _ in range(streams)]
        self.pump()
        self.readers: list[StreamState] = []
        for ev in self.agent.take_events():
            assert isinstance(ev, OpenRequested)
            self.agent.accept(ev.stream)
            self.readers.append(ev.stream)
        self.pump()
        assert all(isinstance(e, OpenAccepted) for e in self.cp.take_events())

    def pump(self) -> None:
        moved = True
        while moved:
            moved = False
            for a, b in ((self.cp, self.agent), (self.agent, self.cp)):
                while (msg := a.next_frame()) is not None:
                    if isinstance(msg, bytes):  # text (control) is the owner's business
                        b.receive(msg)
                    moved = True

    def direct(self, st: StreamState, data: bytes) -> bool:
        """What the fast path does: send_direct, then the frame straight to the peer."""
        if not self.cp.send_direct(st, len(data)):
            return False
        self.agent.receive(encode_data_header(st.id) + data)
        return True


def test_a_direct_frame_arrives_and_spends_credit() -> None:
    pair = Pair(MuxSettings(window=64 * KiB))
    sender, reader = pair.senders[0], pair.readers[0]
    assert pair.direct(sender, b"hello")
    assert sender.send_credit == 64 * KiB - 5 and sender.bytes_out == 5
    assert pair.cp.stats.bytes_out == 5
    assert [type(e) for e in pair.agent.take_events()] == [DataReceived]
    assert pair.agent.read(reader) == b"hello"
    assert pair.agent.stats.protocol_errors == 0


def test_refused_beyond_the_credit_or_the_max_frame_and_nothing_changes() -> None:
    pair = Pair(MuxSettings(window=16 * KiB, max_frame=4 * KiB))
    sender = pair.senders[0]
    assert not pair.cp.send_direct(sender, 4 * KiB + 1)  # over the max frame
    assert not pair.cp.send_direct(sender, 0)  # nothing to send
    for _ in range(4):
        assert pair.direct(sender, b"x" * 4 * KiB)
    assert sender.send_credit == 0
    assert not pair.cp.send_direct(sender, 1)  # no credit left
    assert sender.send_credit == 0 and pair.cp.stats.bytes_out == 16 * KiB
    assert pair.agent.stats.protocol_errors == 0


def test_refused_while_anything_is_queued_ahead() -> None:
    pair = Pair(MuxSettings(window=64 * KiB), streams=2)
    (a, b) = pair.senders
    pair.cp.send_text('{"type":"x"}')  # a control message goes first
    assert not pair.cp.send_direct(a, 10)
    pair.pump()
    pair.cp.send_data(b, b"queued")  # another stream's DATA has its turn first
    assert not pair.cp.send_direct(a, 10)
    pair.pump()
    pair.cp.send_data(a, b"mine")  # the stream's own buffer goes first
    assert not pair.cp.send_direct(a, 10)
    pair.pump()
    assert pair.direct(a, b"now")
    pair.cp.send_eof(a)  # half-closed: no more data
    assert not pair.cp.send_direct(a, 3)
    pair.cp.reset(b, "gone")
    pair.pump()
    assert not pair.cp.send_direct(b, 3)  # closed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    writes=st.lists(st.integers(min_value=1, max_value=20 * KiB), min_size=1, max_size=40),
    reads=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_direct_and_buffered_writes_mixed_keep_order_and_credit(
    writes: list[int], reads: list[bool]
) -> None:
    """Whatever mix of direct and buffered sends (direct whenever allowed) and whatever
    the reader's pace, the bytes arrive in order, the sender never exceeds its credit
    and the receiver never sees a violation."""
    window = 16 * KiB
    pair = Pair(MuxSettings(window=window, max_frame=8 * KiB))
    sender, reader = pair.senders[0], pair.readers[0]
    sent = bytearray()
    got = bytearray()
    for i, n in enumerate(writes):
        data = bytes([i % 256]) * n
        if not pair.direct(sender, data):
            pair.cp.send_data(sender, data)
        sent += data
        if reads[i % len(reads)]:
            got += pair.agent.read(reader)
        pair.pump()
        assert sender.send_credit >= 0
        assert reader.recv_buffered <= window
        assert pair.agent.stats.protocol_errors == 0
    while len(got) < len(sent):
        got += pair.agent.read(reader)
        pair.pump()
    assert bytes(got) == bytes(sent)
