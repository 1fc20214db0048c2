"""Hypothesis fuzzing: random and mutated frames never raise, and every bad frame gets
the answer PROTOCOL.md asks for (RST of its stream, or the connection closed with 1002)."""

from __future__ import annotations

import asyncio
import json
import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.mux.connection import MuxConnection
from agentkit.mux.events import OpenRequested
from agentkit.mux.frames import (
    FrameError,
    FrameType,
    HeaderError,
    StreamFrameError,
    decode_frame,
    encode_frame,
    encode_json_frame,
    encode_window,
)
from agentkit.mux.incoming import OpenRequest
from agentkit.mux.memory import memory_transport_pair
from agentkit.mux.multiplexer import Multiplexer
from agentkit.mux.settings import MuxSettings, Role
from tests.mux.helpers import drain_out

MAX_FRAME = 1024
WINDOW = 4096

ids = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9, 11, 2**32 - 1]), st.integers(0, 2**32 - 1))

valid_frames = st.one_of(
    st.builds(lambda i, p: encode_frame(FrameType.DATA, i, p), ids, st.binary(max_size=1200)),
    st.builds(lambda i, n: encode_window(i, n), ids.filter(bool), st.integers(1, 2**31 - 1)),
    st.builds(
        lambda i, t: encode_frame(t, i), ids, st.sampled_from([FrameType.FIN, FrameType.OPEN_OK])
    ),
    st.builds(
        lambda i, t, r: encode_json_frame(t, i, {"reason": r}),
        ids,
        st.sampled_from([FrameType.RST, FrameType.OPEN_FAIL]),
        st.text(max_size=20),
    ),
    st.builds(lambda i: encode_json_frame(FrameType.OPEN, i, {"forward": "x"}), ids),
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(valid_frames))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "truncate", "extend", "type", "window"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[draw(st.integers(0, len(data))) :]
        elif op == "extend":
            data += draw(st.binary(min_size=1, max_size=40))
        elif op == "type" and data:
            data[0] = draw(st.integers(0, 255))
        elif op == "window" and len(data) >= 8:
            data[8:] = draw(st.binary(max_size=6))
    return bytes(data)


messages = st.one_of(valid_frames, mutated(), st.binary(max_size=64))


def connection_with_streams() -> MuxConnection:
    """An agent connection with streams 1 and 3 (opened by the control plane, accepted),
    2 (opened by us, accepted), 4 (ours, still opening) and 5 (theirs, pending)."""
    conn = MuxConnection(Role.AGENT, MuxSettings(window=WINDOW, max_frame=MAX_FRAME))
    for sid in (1, 3, 5):
        conn.receive(encode_json_frame(FrameType.OPEN, sid, {"forward": "x"}))
    for ev in conn.take_events():
        if isinstance(ev, OpenRequested) and ev.stream.id != 5:
            conn.accept(ev.stream)
    conn.open_stream({"forward": "mine"})
    conn.receive(encode_frame(FrameType.OPEN_OK, 2))
    conn.open_stream({"forward": "mine"})
    drain_out(conn)
    conn.take_events()
    return conn


def check_outputs(out: list[bytes | str]) -> dict[int, str]:
    """Everything we send is well formed; returns the RSTs."""
    resets: dict[int, str] = {}
    for m in out:
        assert isinstance(m, bytes)
        f = decode_frame(m, MAX_FRAME)
        if f.type is FrameType.RST:
            assert f.body is not None and isinstance(f.body["reason"], str)
            resets[f.stream_id] = f.body["reason"]
    return resets


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=25))
def test_core_answers_every_bad_frame(batch: list[bytes]) -> None:
    conn = connection_with_streams()
    for message in batch:
        if conn.closed:
            break
        try:
            decode_frame(message, MAX_FRAME)
            error: FrameError | None = None
        except FrameError as exc:
            error = exc
        sid = struct.unpack_from(">I", message, 4)[0] if len(message) >= 8 else None
        was_live = sid in conn.streams
        late_before = conn.stats.late_frames
        conn.receive(message)  # must never raise
        resets = check_outputs(drain_out(conn))
        if isinstance(error, HeaderError):
            assert conn.failure is not None and conn.failure[0] == 1002
            assert conn.closed and not conn.streams
        elif isinstance(error, StreamFrameError):
            assert conn.failure is None
            assert sid == error.stream_id
            if sid in resets:
                assert sid not in conn.streams  # reset locally as well
            else:  # only a late frame for a stream that is gone may pass quietly
                assert not was_live and conn.stats.late_frames == late_before + 1
        else:
            assert conn.failure is None
            assert set(resets) <= {sid}  # a frame can only reset its own stream
        for state in conn.streams.values():
            assert state.recv_buffered <= WINDOW
        stats = conn.stats
        live_open = sum(1 for s in conn.streams.values() if s.opened)
        assert stats.streams_opened - stats.streams_closed == live_open
    conn.take_events()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(messages, st.text(max_size=30)), min_size=1, max_size=30))
def test_session_survives_or_closes_with_1002(batch: list[bytes | str]) -> None:
    async def scenario() -> None:
        ours, theirs = memory_transport_pair(max_queue=1000)

        async def accept(request: OpenRequest) -> None:
            stream = request.accept()
            await stream.read(-1)

        session = Multiplexer(
            ours,
            Role.AGENT,
            on_open=accept,
            on_control=lambda m: None,
            settings=MuxSettings(window=WINDOW, max_frame=MAX_FRAME),
            name="fuzz",
        )
        session.start()
        bad_header = False
        for message in batch:
            if isinstance(message, bytes):
                try:
                    decode_frame(message, MAX_FRAME)
                except HeaderError:
                    bad_header = True
                except FrameError:
                    pass
            await theirs.send(message)
            if bad_header:
                break
        if bad_header:
            async with asyncio.timeout(5):
                await session.wait_closed()
            assert session.close_code == 1002
        else:
            # a marker round trip: the session processed everything before it
            await theirs.send(json.dumps({"type": "ping-marker"}))
            await theirs.send("not json")
            async with asyncio.timeout(5):
                while True:
                    reply = await theirs.recv()
                    if isinstance(reply, str) and "invalid control message" in reply:
                        break
                    if isinstance(reply, bytes):
                        decode_frame(reply, MAX_FRAME)
            assert not session.closed
            await session.close()
        assert session.stats.streams_active == 0
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("mux:")]

    asyncio.run(scenario())


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(messages, st.binary(min_size=8, max_size=80), mutated()))
def test_decoder_classifies_every_message(message: bytes) -> None:
    """decode_frame raises nothing but HeaderError (short header, stream id 0: close 1002)
    or StreamFrameError naming the header's stream (reset it); what it accepts is a
    well-formed frame that encodes back to the same bytes (flags aside)."""
    try:
        frame = decode_frame(message, MAX_FRAME)
    except HeaderError:
        assert len(message) < 8 or struct.unpack_from(">I", message, 4)[0] == 0
        return
    except StreamFrameError as exc:
        assert len(message) >= 8 and exc.stream_id == struct.unpack_from(">I", message, 4)[0]
        assert exc.stream_id != 0 and exc.reason
        return
    assert frame.stream_id != 0 and len(frame.payload) <= MAX_FRAME
    if frame.type is FrameType.WINDOW:
        assert encode_window(frame.stream_id, frame.increment)[8:] == message[8:]
        assert 0 < frame.increment <= 2**31 - 1
    elif frame.body is not None:
        assert isinstance(frame.body, dict)
        if frame.type is not FrameType.OPEN:
            assert isinstance(frame.body.get("reason", ""), str)
    else:
        assert frame.type in (FrameType.DATA, FrameType.OPEN_OK, FrameType.FIN)
    assert encode_frame(frame.type, frame.stream_id, bytes(frame.payload))[8:] == message[8:]
    assert message[0] == frame.type
