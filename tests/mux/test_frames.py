"""The frame codec: round trips and every malformed-frame rule."""

from __future__ import annotations

import struct

import pytest

from agentkit.mux.frames import (
    HEADER_SIZE,
    FrameType,
    HeaderError,
    StreamFrameError,
    decode_frame,
    encode_frame,
    encode_json_frame,
    encode_window,
)
from tests.mux.helpers import raw


def test_header_layout_is_big_endian() -> None:
    assert encode_frame(FrameType.DATA, 0x01020304, b"xy") == b"\x04\x00\x00\x00\x01\x02\x03\x04xy"
    assert HEADER_SIZE == 8


@pytest.mark.parametrize("payload", [b"", b"a", bytes(range(256)) * 256])
def test_data_round_trip(payload: bytes) -> None:
    f = decode_frame(encode_frame(FrameType.DATA, 7, payload))
    assert (f.type, f.stream_id, bytes(f.payload)) == (FrameType.DATA, 7, payload)


def test_json_round_trips() -> None:
    for ftype, body in [
        (FrameType.OPEN, {"forward": "kubernetes-api"}),
        (FrameType.OPEN, {"service": "web", "namespace": "default", "port": 80}),
        (FrameType.OPEN_FAIL, {"reason": "target not allowed"}),
        (FrameType.RST, {"reason": "bye"}),
    ]:
        f = decode_frame(encode_json_frame(ftype, 2**32 - 1, body))
        assert (f.type, f.stream_id, f.body) == (ftype, 2**32 - 1, body)


def test_window_and_empty_frames_round_trip() -> None:
    f = decode_frame(encode_window(3, 2**31 - 1))
    assert (f.type, f.increment) == (FrameType.WINDOW, 2**31 - 1)
    for ftype in (FrameType.OPEN_OK, FrameType.FIN):
        f = decode_frame(encode_frame(ftype, 9))
        assert (f.type, f.stream_id, len(f.payload)) == (ftype, 9, 0)


def test_flags_and_reserved_are_ignored() -> None:
    f = decode_frame(raw(FrameType.FIN, 5, flags=0xFF, reserved=0xFFFF))
    assert (f.type, f.stream_id, f.flags) == (FrameType.FIN, 5, 0xFF)


def test_encode_window_rejects_bad_increments() -> None:
    for inc in (0, -1, 2**31):
        with pytest.raises(ValueError):
            encode_window(1, inc)


@pytest.mark.parametrize("data", [b"", b"\x04", b"\x04\x00\x00\x00\x00\x00\x01", raw(4, 0, b"x")])
def test_unreadable_headers(data: bytes) -> None:
    with pytest.raises(HeaderError):
        decode_frame(data)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (raw(0, 3), "unknown frame type 0"),
        (raw(8, 3), "unknown frame type 8"),
        (raw(255, 3, b"zz"), "unknown frame type 255"),
        (raw(FrameType.DATA, 3, b"x" * 65537), "exceeds max frame"),
        (raw(FrameType.OPEN, 3, b"x" * 65537), "exceeds max frame"),
        (raw(FrameType.WINDOW, 3, b"\x00\x00\x01"), "4 bytes"),
        (raw(FrameType.WINDOW, 3, b"\x00\x00\x00\x01\x00"), "4 bytes"),
        (raw(FrameType.WINDOW, 3, b""), "4 bytes"),
        (raw(FrameType.WINDOW, 3, struct.pack(">I", 0)), "increment of 0"),
        (raw(FrameType.WINDOW, 3, struct.pack(">I", 2**31)), "too large"),
        (raw(FrameType.OPEN, 3, b"{not json"), "not JSON"),
        (raw(FrameType.OPEN, 3, b"\xff\xfe"), "not JSON"),
        (raw(FrameType.OPEN, 3, b""), "not JSON"),
        (raw(FrameType.OPEN, 3, b"[1,2]"), "not a JSON object"),
        (raw(FrameType.OPEN_FAIL, 3, b'"x"'), "not a JSON object"),
        (raw(FrameType.OPEN_FAIL, 3, b'{"reason": 5}'), "reason must be a string"),
        (raw(FrameType.RST, 3, b"nope"), "not JSON"),
        (raw(FrameType.RST, 3, b""), "not JSON"),
        (raw(FrameType.OPEN_OK, 3, b"x"), "must be empty"),
        (raw(FrameType.FIN, 3, b"x"), "must be empty"),
    ],
)
def test_bad_frames_name_their_stream(data: bytes, words: str) -> None:
    with pytest.raises(StreamFrameError) as info:
        decode_frame(data)
    assert info.value.stream_id == 3
    assert words in info.value.reason


def test_max_frame_is_a_parameter() -> None:
    decode_frame(raw(FrameType.DATA, 1, b"x" * 1024), max_frame=1024)
    with pytest.raises(StreamFrameError):
        decode_frame(raw(FrameType.DATA, 1, b"x" * 1025), max_frame=1024)


def test_data_payload_is_a_zero_copy_view() -> None:
    message = raw(FrameType.DATA, 1, b"hello")
    f = decode_frame(message)
    assert isinstance(f.payload, memoryview)
    assert f.payload.obj is message


def test_deeply_nested_json_is_a_stream_error_not_a_crash() -> None:
    """json.loads raises RecursionError on deep nesting; that must reset the stream too."""
    with pytest.raises(StreamFrameError, match="nested too deeply") as info:
        decode_frame(raw(FrameType.OPEN, 5, b"[" * 60_000), 1 << 20)
    assert info.value.stream_id == 5
