"""The sans-I/O connection: handshake, credit, half-close, reset and every receive rule."""

from __future__ import annotations

import pytest

from agentkit.mux.connection import MuxConnection
from agentkit.mux.errors import MuxClosed, MuxDraining, StreamError, StreamReset
from agentkit.mux.events import (
    DataReceived,
    OpenAccepted,
    OpenRequested,
    ProtocolError,
    SendReady,
    StreamEnded,
)
from agentkit.mux.frames import FrameType, encode_frame
from agentkit.mux.settings import MuxSettings, Role
from agentkit.mux.state import CloseCause, Phase, StreamState
from tests.mux.helpers import Pair, decoded, drain_out, jraw, raw, rsts, window

KiB = 1024


def open_pair(
    pair: Pair, request: dict[str, object] | None = None
) -> tuple[StreamState, StreamState]:
    """cp opens a stream, the agent accepts it: (cp side, agent side)."""
    local = pair.cp.open_stream(request or {"forward": "kubernetes-api"})
    pair.pump()
    (ev,) = [e for e in pair.agent.take_events() if isinstance(e, OpenRequested)]
    pair.agent.accept(ev.stream)
    pair.pump()
    assert any(isinstance(e, OpenAccepted) for e in pair.cp.take_events())
    return local, ev.stream


def agent_with_open_stream() -> tuple[MuxConnection, StreamState]:
    """An agent connection that accepted stream 1 from a (hand-driven) control plane."""
    agent = MuxConnection(Role.AGENT)
    agent.receive(jraw(FrameType.OPEN, 1, {"forward": "x"}))
    (ev,) = agent.take_events()
    assert isinstance(ev, OpenRequested)
    agent.accept(ev.stream)
    drain_out(agent)
    return agent, ev.stream


def test_open_accept_handshake_and_ids() -> None:
    pair = Pair()
    a, b = open_pair(pair, {"service": "web", "namespace": "shop", "port": 80})
    assert (a.id, b.id) == (1, 1)
    assert a.phase is b.phase is Phase.OPEN
    assert b.request == {"service": "web", "namespace": "shop", "port": 80}
    assert b.label == "shop/web:80"
    assert [pair.cp.open_stream({}).id for _ in range(3)] == [3, 5, 7]
    assert [pair.agent.open_stream({}).id for _ in range(3)] == [2, 4, 6]
    assert pair.cp.stats.streams_opened == pair.agent.stats.streams_opened == 1
    assert pair.cp.stats.streams_active == 1


def test_transfer_respects_window_and_returns_credit_on_read() -> None:
    pair = Pair(MuxSettings(window=64 * KiB, max_frame=16 * KiB))
    a, b = open_pair(pair)
    payload = bytes(range(256)) * 4096  # 1 MiB
    pair.cp.send_data(a, payload)
    got = bytearray()
    while len(got) < len(payload):
        pair.pump()
        assert b.recv_buffered <= 64 * KiB
        got += pair.agent.read(b, 10_000)
    assert bytes(got) == payload
    assert a.bytes_out == b.bytes_in == len(payload)
    assert pair.cp.stats.bytes_out == pair.agent.stats.bytes_in == len(payload)


def test_sender_stops_at_the_window_and_counts_blocked_time() -> None:
    now = [100.0]
    settings = MuxSettings(window=64 * KiB)
    pair = Pair(settings)
    pair.cp = cp = MuxConnection(Role.CONTROL_PLANE, settings, clock=lambda: now[0])
    a, b = open_pair(pair)
    cp.send_data(a, b"x" * (200 * KiB))
    pair.pump()
    assert b.recv_buffered == 64 * KiB
    assert a.send_credit == 0
    assert a.send_buffered == 136 * KiB
    now[0] += 2.5
    pair.agent.read(b)  # frees the window: WINDOW goes back at once
    pair.pump()
    assert cp.stats.window_blocked_seconds == pytest.approx(2.5)
    assert b.recv_buffered == 64 * KiB and a.send_buffered == 72 * KiB


def test_frames_are_full_size_and_control_goes_first() -> None:
    pair = Pair()
    a, _b = open_pair(pair)
    pair.cp.send_data(a, b"a" * (200 * KiB))
    first = pair.cp.next_frame()
    assert isinstance(first, bytes) and len(first) == 8 + 64 * KiB
    pair.cp.send_text('{"type":"status"}')
    pair.cp.reset(pair.cp.open_stream({}), "x")  # OPEN + RST queued
    kinds = [m if isinstance(m, str) else FrameType(m[0]).name for m in drain_out(pair.cp)]
    assert kinds[:3] == ['{"type":"status"}', "OPEN", "RST"]
    assert kinds[3:] == ["DATA", "DATA", "DATA"]


def test_round_robin_between_streams() -> None:
    pair = Pair()
    (a1, _), (a2, _), (a3, _) = open_pair(pair), open_pair(pair), open_pair(pair)
    for st in (a1, a2, a3):
        pair.cp.send_data(st, b"z" * (150 * KiB))
    ids = [t[1] for t in decoded(drain_out(pair.cp))]
    assert ids == [1, 3, 5, 1, 3, 5, 1, 3, 5]


def test_credit_comes_back_only_on_release() -> None:
    pair = Pair()
    a, b = open_pair(pair)
    pair.cp.send_data(a, b"q" * (256 * KiB))
    pair.pump()
    assert a.send_credit == 0
    chunks = [pair.agent.read_chunk(b), pair.agent.read_chunk(b)]
    assert [len(c) if c is not None else 0 for c in chunks] == [64 * KiB, 64 * KiB]
    assert pair.agent.next_frame() is None  # nothing returned before release()
    pair.agent.release(b, 64 * KiB)
    assert pair.agent.next_frame() is None  # batched: WINDOW once half the window is free
    pair.agent.release(b, 64 * KiB)
    (frame,) = decoded(drain_out(pair.agent))
    assert frame == (FrameType.WINDOW, 1, (128 * KiB).to_bytes(4, "big"))


def test_half_close_both_ways() -> None:
    pair = Pair()
    a, b = open_pair(pair)
    pair.cp.send_data(a, b"request")
    pair.cp.send_eof(a)
    pair.pump()
    assert pair.agent.read(b) == b"request"
    assert b.at_eof and b.phase is Phase.OPEN
    with pytest.raises(StreamError):
        pair.cp.send_data(a, b"more")
    pair.agent.send_data(b, b"response")
    pair.agent.send_eof(b)
    pair.pump()
    assert a.phase is b.phase is Phase.CLOSED
    assert a.cause is b.cause is CloseCause.FINISHED
    assert pair.cp.read(a) == b"response"  # still readable after the close
    assert pair.cp.stats.streams_closed == pair.agent.stats.streams_closed == 1
    assert pair.cp.stats.streams_active == 0
    assert not pair.cp.streams and not pair.agent.streams


def test_fin_waits_for_buffered_data() -> None:
    pair = Pair(MuxSettings(window=16 * KiB))
    a, b = open_pair(pair)
    pair.cp.send_data(a, b"d" * (40 * KiB))
    pair.cp.send_eof(a)
    pair.pump()
    assert not b.remote_fin
    total = b""
    while not b.at_eof:
        total += pair.agent.read(b)
        pair.pump()
    assert total == b"d" * (40 * KiB)


def test_reset_reaches_the_peer_with_its_reason() -> None:
    pair = Pair()
    a, b = open_pair(pair)
    pair.cp.send_data(a, b"lost")
    pair.agent.reset(b, "target went away")
    pair.pump()
    assert a.cause is CloseCause.RESET_PEER and a.reason == "target went away"
    assert b.cause is CloseCause.RESET_LOCAL
    with pytest.raises(StreamReset) as info:
        pair.cp.send_data(a, b"x")
    assert info.value.by_peer and info.value.reason == "target went away"
    with pytest.raises(StreamReset):
        pair.cp.read(a)
    assert pair.cp.stats.resets_received == 1 and pair.agent.stats.resets_sent == 1
    assert pair.cp.stats.late_frames + pair.agent.stats.late_frames <= 1


def test_refused_open() -> None:
    pair = Pair()
    a = pair.cp.open_stream({"service": "db"})
    pair.pump()
    (ev,) = pair.agent.take_events()
    assert isinstance(ev, OpenRequested)
    pair.agent.refuse(ev.stream, "target not allowed")
    pair.pump()
    (ended,) = pair.cp.take_events()
    assert isinstance(ended, StreamEnded)
    assert (ended.cause, ended.reason) == (CloseCause.REFUSED, "target not allowed")
    assert a.phase is Phase.CLOSED
    assert pair.cp.stats.open_failed == pair.agent.stats.open_failed == 1
    assert pair.cp.stats.streams_opened == 0


def test_draining_refuses_and_stops_opening() -> None:
    pair = Pair()
    pair.agent.draining = True
    a = pair.cp.open_stream({})
    pair.pump()
    assert a.cause is CloseCause.REFUSED and a.reason == "draining"
    pair.cp.peer_draining = True
    with pytest.raises(MuxDraining):
        pair.cp.open_stream({})


def test_max_streams() -> None:
    pair = Pair(MuxSettings(max_streams=2))
    opened = [pair.cp.open_stream({}) for _ in range(3)]
    pair.pump()
    assert [s.phase for s in opened] == [Phase.OPENING, Phase.OPENING, Phase.CLOSED]
    assert opened[2].reason == "too many streams"


# --- receive rules ------------------------------------------------------------------


def test_data_beyond_credit_is_reset() -> None:
    agent, st = agent_with_open_stream()
    agent.receive(raw(FrameType.DATA, 1, b"x" * (64 * KiB)))
    agent.receive(raw(FrameType.DATA, 1, b"x" * (64 * KiB)))
    agent.receive(raw(FrameType.DATA, 1, b"x" * (64 * KiB)))
    agent.receive(raw(FrameType.DATA, 1, b"x" * (64 * KiB)))
    assert st.recv_buffered == 256 * KiB and st.phase is Phase.OPEN
    agent.receive(raw(FrameType.DATA, 1, b"x"))
    assert "flow control" in rsts(drain_out(agent))[1]
    assert st.cause is CloseCause.RESET_LOCAL and st.recv_buffered == 0


def test_data_after_fin_and_double_fin_are_reset() -> None:
    agent, _st = agent_with_open_stream()
    agent.receive(raw(FrameType.FIN, 1))
    agent.receive(raw(FrameType.DATA, 1, b"late"))
    assert rsts(drain_out(agent)) == {1: "DATA after FIN"}
    agent2, _ = agent_with_open_stream()
    agent2.receive(raw(FrameType.FIN, 1))
    agent2.receive(raw(FrameType.FIN, 1))
    assert rsts(drain_out(agent2)) == {1: "FIN after FIN"}


def test_data_over_max_frame_is_reset() -> None:
    agent, st = agent_with_open_stream()
    agent.receive(raw(FrameType.DATA, 1, b"x" * (64 * KiB + 1)))
    assert "exceeds max frame" in rsts(drain_out(agent))[1]
    assert st.phase is Phase.CLOSED


def test_frames_before_open_ok_are_reset() -> None:
    agent = MuxConnection(Role.AGENT)
    agent.receive(jraw(FrameType.OPEN, 1, {}))
    agent.take_events()
    agent.receive(raw(FrameType.DATA, 1, b"early"))
    assert "pending" in rsts(drain_out(agent))[1]
    cp = MuxConnection(Role.CONTROL_PLANE)
    st = cp.open_stream({})
    drain_out(cp)
    cp.receive(window(st.id, 5))
    assert "opening" in rsts(drain_out(cp))[1]


def test_unexpected_open_ok_and_open_fail_are_reset() -> None:
    agent, _ = agent_with_open_stream()
    agent.receive(raw(FrameType.OPEN_OK, 1))  # we did not open stream 1
    assert 1 in rsts(drain_out(agent))
    cp = MuxConnection(Role.CONTROL_PLANE)
    st = cp.open_stream({})
    cp.receive(raw(FrameType.OPEN_OK, st.id))
    drain_out(cp)
    cp.receive(jraw(FrameType.OPEN_FAIL, st.id, {"reason": "late"}))
    assert "OPEN_FAIL on a stream that is open" in rsts(drain_out(cp))[st.id]


def test_unknown_streams_get_rst_but_rst_is_not_answered() -> None:
    agent = MuxConnection(Role.AGENT)
    agent.receive(raw(FrameType.DATA, 9, b"?"))
    agent.receive(window(11, 1))
    agent.receive(raw(FrameType.FIN, 13))
    agent.receive(raw(FrameType.OPEN_OK, 2))  # an even id we never allocated
    agent.receive(jraw(FrameType.RST, 15, {"reason": "x"}))
    assert sorted(rsts(drain_out(agent))) == [2, 9, 11, 13]


def test_late_frames_for_closed_streams_are_ignored_quietly() -> None:
    agent, st = agent_with_open_stream()
    agent.reset(st, "done")
    drain_out(agent)
    for frame in (
        raw(FrameType.DATA, 1, b"in flight"),
        window(1, 100),
        raw(FrameType.FIN, 1),
        jraw(FrameType.RST, 1, {"reason": "crossed"}),
        raw(FrameType.WINDOW, 1, b"bad"),
    ):
        agent.receive(frame)
    assert drain_out(agent) == []
    assert agent.stats.late_frames == 5
    cp = MuxConnection(Role.CONTROL_PLANE)
    mine = cp.open_stream({})
    cp.reset(mine, "open timed out")
    drain_out(cp)
    cp.receive(raw(FrameType.OPEN_OK, mine.id))  # answer to an abandoned OPEN
    assert drain_out(cp) == [] and cp.stats.late_frames == 1


def test_open_with_wrong_parity_or_reused_id() -> None:
    agent = MuxConnection(Role.AGENT)
    agent.receive(jraw(FrameType.OPEN, 2, {}))  # even ids are the agent's
    assert "wrong parity" in rsts(drain_out(agent))[2]
    agent.receive(jraw(FrameType.OPEN, 5, {}))
    (ev,) = agent.take_events()
    assert isinstance(ev, OpenRequested)
    agent.accept(ev.stream)
    drain_out(agent)
    agent.receive(jraw(FrameType.OPEN, 5, {}))  # reuse of a live id: both reset
    assert "reuses" in rsts(drain_out(agent))[5]
    assert ev.stream.cause is CloseCause.RESET_LOCAL
    agent.receive(jraw(FrameType.OPEN, 3, {}))  # lower than an id already used
    assert "reuses" in rsts(drain_out(agent))[3]
    agent.receive(jraw(FrameType.OPEN, 7, {}))
    assert isinstance(agent.take_events()[-1], OpenRequested)


def test_window_overflow_is_reset() -> None:
    agent, _st = agent_with_open_stream()
    agent.receive(window(1, 2**31 - 1))
    assert "overflows" in rsts(drain_out(agent))[1]


@pytest.mark.parametrize("message", [b"", b"\x01\x00", raw(FrameType.DATA, 0, b"x")])
def test_unreadable_header_fails_the_connection(message: bytes) -> None:
    agent, st = agent_with_open_stream()
    agent.receive(message)
    assert agent.failure is not None and agent.failure[0] == 1002
    assert agent.closed and st.cause is CloseCause.CONNECTION
    events = agent.take_events()
    assert any(isinstance(e, ProtocolError) for e in events)
    assert agent.stats.streams_opened == agent.stats.streams_closed == 1
    agent.receive(raw(FrameType.DATA, 1, b"x"))  # ignored once closed
    with pytest.raises(MuxClosed):
        agent.open_stream({})


def test_connection_lost_ends_every_stream() -> None:
    pair = Pair()
    streams = [open_pair(pair)[0] for _ in range(5)]
    pending = pair.cp.open_stream({})
    pair.cp.connection_lost("transport closed")
    assert all(s.cause is CloseCause.CONNECTION for s in [*streams, pending])
    with pytest.raises(StreamReset, match="transport closed"):
        pair.cp.send_data(streams[0], b"x")
    stats = pair.cp.stats
    assert (stats.streams_opened, stats.streams_closed, stats.open_failed) == (5, 5, 1)


def test_events_wake_the_right_parties() -> None:
    pair = Pair(MuxSettings(write_limit=64 * KiB))
    a, _b = open_pair(pair)
    pair.cp.send_data(a, b"x" * (128 * KiB))
    frames = [pair.cp.next_frame()]
    assert pair.cp.take_events() == []  # 64 KiB left: not under the limit yet
    frames.append(pair.cp.next_frame())
    assert [type(e) for e in pair.cp.take_events()] == [SendReady]
    for f in frames:
        assert isinstance(f, bytes)
        pair.agent.receive(f)
    assert {type(e) for e in pair.agent.take_events()} == {DataReceived}


def test_stream_info() -> None:
    pair = Pair()
    a, _b = open_pair(pair)
    pair.cp.send_data(a, b"12345")
    pair.pump()
    (info,) = pair.agent.stream_info()
    assert (info.stream_id, info.label, info.state, info.initiator) == (
        1, "kubernetes-api", "open", "remote",
    )
    assert (info.bytes_in, info.recv_buffered, info.send_credit) == (5, 5, 256 * KiB)
    assert encode_frame(FrameType.FIN, 1)  # keep the import used


def test_answers_to_unknown_streams_are_bounded() -> None:
    """A peer that floods frames for unknown streams and never reads cannot make us queue
    RSTs without limit; live streams still get theirs."""
    from agentkit.mux.settings import MAX_QUEUED_CONTROL

    agent, st = agent_with_open_stream()
    for sid in range(9, 9 + 2 * (MAX_QUEUED_CONTROL + 100), 2):
        agent.receive(raw(FrameType.DATA, sid, b"?"))
    agent.receive(raw(FrameType.FIN, 1))
    agent.receive(raw(FrameType.FIN, 1))  # a violation on a live stream: always answered
    out = drain_out(agent)
    assert len(out) == MAX_QUEUED_CONTROL + 1
    assert rsts(out)[1] == "FIN after FIN" and st.phase is Phase.CLOSED
    agent.receive(raw(FrameType.DATA, 99_999, b"?"))  # room again once it was sent
    assert rsts(drain_out(agent)) == {99_999: "unknown stream 99999"}
