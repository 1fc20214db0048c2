"""The tunnel frame codec (PROTOCOL.md section 2): pure functions, no state, no I/O.

One binary WebSocket message carries exactly one frame: an 8-byte big-endian header
``type u8 | flags u8 | reserved u16 | stream_id u32`` and the payload, whose length is the
rest of the message. Decoding validates everything that can be checked without knowing
the connection's state; the errors say what the receiver must do about a bad frame:

* :class:`HeaderError`: the header itself is unusable (short message, stream id 0): the
  connection is closed with code 1002 (protocol error).
* :class:`StreamFrameError`: the header is readable but the frame is bad (unknown type, bad
  payload, DATA over the max frame): the stream named by ``stream_id`` is reset (RST).

``flags`` and ``reserved`` are carried but ignored on receipt and sent as zero, so a later
version can use them without breaking this one.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from agentkit.peerinput import PeerInputError, parse_object

__all__ = [
    "CLOSE_PROTOCOL_ERROR",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_WINDOW",
    "HEADER_SIZE",
    "MAX_STREAM_ID",
    "MAX_WINDOW",
    "Frame",
    "FrameError",
    "FrameType",
    "HeaderError",
    "StreamFrameError",
    "decode_frame",
    "decode_header",
    "encode_data_header",
    "encode_frame",
    "encode_json_frame",
    "encode_window",
]

HEADER = struct.Struct(">BBHI")
HEADER_SIZE = HEADER.size
WINDOW_PAYLOAD = struct.Struct(">I")

DEFAULT_WINDOW = 256 * 1024
"""Initial per-stream credit each side grants the other, in bytes."""
DEFAULT_MAX_FRAME = 64 * 1024
"""Largest DATA payload (and JSON payload) a frame may carry, in bytes."""
MAX_WINDOW = 2**31 - 1
"""Credit held for one stream may never exceed this (a WINDOW overflowing it is a reset)."""
MAX_STREAM_ID = 2**32 - 1
CLOSE_PROTOCOL_ERROR = 1002
"""WebSocket close code used when the peer's framing cannot be trusted any more."""


class FrameType(IntEnum):
    OPEN = 1
    OPEN_OK = 2
    OPEN_FAIL = 3
    DATA = 4
    WINDOW = 5
    FIN = 6
    RST = 7


_TYPES = frozenset(int(t) for t in FrameType)
_EMPTY_TYPES = frozenset({FrameType.OPEN_OK, FrameType.FIN})
_JSON_TYPES = frozenset({FrameType.OPEN, FrameType.OPEN_FAIL, FrameType.RST})


class FrameError(Exception):
    """A frame that must not be acted upon."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HeaderError(FrameError):
    """The header is unreadable or invalid: close the connection with 1002."""


class StreamFrameError(FrameError):
    """The frame is bad for its stream: reset ``stream_id`` and carry on."""

    def __init__(self, stream_id: int, reason: str) -> None:
        super().__init__(reason)
        self.stream_id = stream_id


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame.

    ``payload`` is a zero-copy view into the received message for DATA; ``body`` is the
    decoded JSON object for OPEN, OPEN_FAIL and RST; ``increment`` is set for WINDOW.
    """

    type: FrameType
    stream_id: int
    payload: memoryview
    flags: int = 0
    body: dict[str, Any] | None = None
    increment: int = 0


def encode_header(frame_type: int, stream_id: int, flags: int = 0) -> bytes:
    return HEADER.pack(frame_type, flags, 0, stream_id)


def encode_data_header(stream_id: int) -> bytes:
    return HEADER.pack(FrameType.DATA, 0, 0, stream_id)


def encode_frame(frame_type: FrameType, stream_id: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(frame_type, 0, 0, stream_id) + payload


def encode_json_frame(frame_type: FrameType, stream_id: int, body: dict[str, Any]) -> bytes:
    """OPEN, OPEN_FAIL or RST with a compact JSON object payload."""
    return encode_frame(frame_type, stream_id, json.dumps(body, separators=(",", ":")).encode())


def encode_window(stream_id: int, increment: int) -> bytes:
    if not 0 < increment <= MAX_WINDOW:
        raise ValueError(f"window increment out of range: {increment}")
    return HEADER.pack(FrameType.WINDOW, 0, 0, stream_id) + WINDOW_PAYLOAD.pack(increment)


def decode_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """(type, flags, stream_id) of a message, or :class:`HeaderError`."""
    if len(data) < HEADER_SIZE:
        raise HeaderError(f"short frame: {len(data)} bytes, header needs {HEADER_SIZE}")
    frame_type, flags, _reserved, stream_id = HEADER.unpack_from(data)
    if stream_id == 0:
        raise HeaderError("stream id 0 is reserved")
    return frame_type, flags, stream_id


def _json_object(stream_id: int, payload: memoryview, what: str) -> dict[str, Any]:
    try:
        return parse_object(payload, what=f"{what} payload")
    except PeerInputError as exc:
        raise StreamFrameError(stream_id, str(exc)) from None


def decode_frame(data: bytes | bytearray | memoryview, max_frame: int = DEFAULT_MAX_FRAME) -> Frame:
    """Decode one binary message; raises :class:`HeaderError` or :class:`StreamFrameError`."""
    frame_type, flags, stream_id = decode_header(data)
    view = memoryview(data)[HEADER_SIZE:]
    if frame_type not in _TYPES:
        raise StreamFrameError(stream_id, f"unknown frame type {frame_type}")
    ftype = FrameType(frame_type)
    size = len(view)
    if size > max_frame:
        raise StreamFrameError(
            stream_id, f"{ftype.name} payload of {size} bytes exceeds max frame {max_frame}"
        )
    if ftype is FrameType.DATA:
        return Frame(ftype, stream_id, view, flags)
    if ftype is FrameType.WINDOW:
        if size != WINDOW_PAYLOAD.size:
            raise StreamFrameError(stream_id, f"WINDOW payload must be 4 bytes, got {size}")
        (increment,) = WINDOW_PAYLOAD.unpack(view)
        if increment == 0:
            raise StreamFrameError(stream_id, "WINDOW increment of 0")
        if increment > MAX_WINDOW:
            raise StreamFrameError(stream_id, f"WINDOW increment {increment} too large")
        return Frame(ftype, stream_id, view, flags, increment=increment)
    if ftype in _EMPTY_TYPES:
        if size:
            raise StreamFrameError(stream_id, f"{ftype.name} payload must be empty")
        return Frame(ftype, stream_id, view, flags)
    body = _json_object(stream_id, view, ftype.name)
    if ftype is not FrameType.OPEN and not isinstance(body.get("reason", ""), str):
        raise StreamFrameError(stream_id, f"{ftype.name}: reason must be a string")
    return Frame(ftype, stream_id, view, flags, body=body)
