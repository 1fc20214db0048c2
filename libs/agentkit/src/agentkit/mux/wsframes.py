"""RFC 6455 framing of the fast path: the mux's own messages framed and unframed here.

websockets' parser costs, per message, a generator round per read, a ``Frame`` dataclass,
an ``Opcode`` enum lookup and two copies of the payload (into its buffer, out of it); its
serializer a ``BytesIO`` and two more copies. That was most of what websockets added to a
1 KiB round trip (issue 15's profile). For the one kind of frame the mux moves by the
thousand, a complete (FIN) unfragmented message with no extension negotiated, this module
does the framing itself:

* :class:`FrameReader` splits what the transport read into frames. A binary frame that
  websockets would deliver as it is (the connection open, no fragmented message in
  progress, nothing queued for ``recv()``, within the size limits, masked as the side
  requires, no reserved bit) goes to ``handle`` with one copy. Every other frame (text,
  control, fragments, anything invalid or too big) is handed to websockets byte for byte
  and whole, so its parser is always at a frame boundary when it gets bytes, and what it
  does with them (pongs, close, errors, limits) is unchanged. Once the connection is not
  open, every byte goes websockets' way.
* :class:`FrameWriter` frames outgoing messages (masked with a key from ``os.urandom``
  on the client side, drawn 4 KiB at a time: one system call per 1024 frames);
  :meth:`FrameWriter.binary` frames one DATA message (the mux header and the payload)
  into one ``bytes``, for the multiplexer's direct send.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any


def _apply_mask() -> Callable[[Any, bytes], bytes]:
    """websockets' (C) masking function, imported on first use: importing agentkit.mux
    loads no websockets until a fast path is built, as before this module."""
    try:
        from websockets.speedups import apply_mask
    except ImportError:  # websockets without its C extension
        from websockets.utils import apply_mask
    return apply_mask

__all__ = ["OP_BINARY", "OP_TEXT", "FrameReader", "FrameWriter"]

OP_TEXT = 0x1
OP_BINARY = 0x2
_FIN = 0x80
_MASK_BIT = 0x80
_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")
_HEAD8 = struct.Struct("!BB")
_HEAD16 = struct.Struct("!BBH")
_HEAD64 = struct.Struct("!BBQ")
_MAX_HEADER = 14  # 2 + 8 (length) + 4 (mask)
_KEYS = 4096  # bytes of masking keys drawn per os.urandom call
_UNLIMITED = 1 << 63  # no size limit: above any 64-bit frame length


class FrameWriter:
    """Frames messages for one side of a connection (``mask``: we are the client)."""

    __slots__ = ("_apply", "_keys", "_mask", "_used")

    def __init__(self, mask: bool) -> None:
        self._apply = _apply_mask()
        self._mask = mask
        self._keys = b""
        self._used = _KEYS

    def frame(self, parts: list[bytes], opcode: int, payload: bytes) -> None:
        """Append one final frame of ``opcode`` carrying ``payload`` to ``parts``."""
        n = len(payload)
        mbit = _MASK_BIT if self._mask else 0
        if n < 126:
            head = bytes((_FIN | opcode, mbit | n))
        elif n < 65536:
            head = _HEAD16.pack(_FIN | opcode, mbit | 126, n)
        else:
            head = _HEAD64.pack(_FIN | opcode, mbit | 127, n)
        if not mbit:
            parts.append(head)
            parts.append(payload)
            return
        if self._used >= _KEYS:
            self._keys = os.urandom(_KEYS)
            self._used = 0
        key = self._keys[self._used : self._used + 4]
        self._used += 4
        parts.append(head + key)
        parts.append(self._apply(payload, key))


    def binary(self, prefix: bytes, payload: bytes | bytearray | memoryview) -> bytes:
        """One final binary frame carrying ``prefix + payload``, framed (and masked) into
        one ``bytes`` with one copy of the payload (two on the client side: the mask)."""
        n = len(prefix) + len(payload)
        mbit = _MASK_BIT if self._mask else 0
        if n < 126:
            head = _HEAD8.pack(_FIN | OP_BINARY, mbit | n)
        elif n < 65536:
            head = _HEAD16.pack(_FIN | OP_BINARY, mbit | 126, n)
        else:
            head = _HEAD64.pack(_FIN | OP_BINARY, mbit | 127, n)
        if not mbit:
            return b"".join((head, prefix, payload))
        if self._used >= _KEYS:
            self._keys = os.urandom(_KEYS)
            self._used = 0
        key = self._keys[self._used : self._used + 4]
        self._used += 4
        return b"".join((head, key, self._apply(prefix + payload, key)))


class FrameReader:
    """Feeds one connection's received bytes: the mux's binary messages to ``handle``,
    every other frame to websockets (``ws.data_received``) whole and in order."""

    __slots__ = (
        "_apply",
        "_body",
        "_body_head",
        "_head",
        "_key",
        "_limit",
        "_need",
        "_open",
        "_queue",
        "_server",
        "_skip",
        "_through",
        "_ws",
        "handle",
    )

    def __init__(self, ws: Any, handle: Callable[[bytes | bytearray], None]) -> None:
        from websockets.protocol import Side, State

        self._apply = _apply_mask()
        self._ws = ws
        self._open = State.OPEN
        self._server = ws.protocol.side is Side.SERVER  # the client masks what it sends
        self._queue = ws.recv_messages.frames
        # the largest frame websockets would take whole (its limits are set at its start)
        limits = [n for n in (ws.protocol.max_message_size, ws.protocol.max_fragment_size)
                  if n is not None]
        self._limit = min(limits, default=_UNLIMITED)
        self.handle = handle
        self._head = bytearray()  # an incomplete header
        self._body: bytearray | None = None  # a direct frame's payload, arriving
        self._body_head = b""  # that frame's header
        self._key = b""  # its masking key (server side)
        self._need = 0  # bytes of that payload still to come
        self._skip = 0  # bytes of a frame going websockets' way still to come
        self._through = False  # everything goes websockets' way from now on

    def feed(self, data: memoryview) -> None:
        """One transport read (valid only during the call: nothing keeps a view of it)."""
        pos, end = 0, len(data)
        while pos < end:
            if self._skip:
                n = min(self._skip, end - pos)
                self._skip -= n
                self._ws.data_received(data[pos : pos + n])
                pos += n
            elif self._body is not None:
                n = min(self._need, end - pos)
                self._body += data[pos : pos + n]
                self._need -= n
                pos += n
                if not self._need:
                    body, self._body = self._body, None
                    self.handle(self._apply(body, self._key) if self._server else body)
            elif self._through:
                self._ws.data_received(data[pos:])
                return
            else:
                pos = self._frame(data, pos, end)

    def _frame(self, data: memoryview, pos: int, end: int) -> int:
        """At a frame boundary: take the frame that starts at ``pos``; returns the position
        after what was taken."""
        protocol = self._ws.protocol
        if protocol.state is not self._open:
            self._through = True
            if self._head:  # an incomplete header is websockets' from now on too
                head, self._head = bytes(self._head), bytearray()
                self._ws.data_received(head)
            return pos
        if self._head:  # complete the header kept from the last read first
            old = len(self._head)
            self._head += data[pos : pos + _MAX_HEADER - old]
            header = _parse_header(self._head, 0, len(self._head))
            if header is None:
                return end  # all of it was kept: still not a whole header
            hlen = header[0]
            buf: memoryview | bytearray = self._head
            start, pos = 0, pos + hlen - old
            self._head = bytearray()
        else:
            header = _parse_header(data, pos, end)
            if header is None:
                self._head = bytearray(data[pos:end])
                return end
            hlen = header[0]
            buf, start = data, pos
            pos += hlen
        _, head1, masked, length = header
        if not (
            head1 == _FIN | OP_BINARY
            and masked is self._server
            and length <= self._limit
            and protocol.current_size is None
            and not self._queue
        ):  # websockets' frame: its header now, its payload as it arrives
            self._ws.data_received(bytes(buf[start : start + hlen]))
            self._skip = length
            return pos
        key = bytes(buf[start + hlen - 4 : start + hlen]) if masked else b""
        if end - pos >= length:
            payload = data[pos : pos + length]
            self.handle(self._apply(payload, key) if masked else bytes(payload))
            return pos + length
        self._body = bytearray(data[pos:end])
        self._body_head = bytes(buf[start : start + hlen])
        self._key = key
        self._need = length - (end - pos)
        return end

    def hand_over(self) -> None:
        """Leave the rest to websockets (the fast path is being removed): what is held of
        a frame goes to it now, so its parser sees every frame whole from its start."""
        self._through = True
        if self._head:
            head, self._head = bytes(self._head), bytearray()
            self._ws.data_received(head)
        if self._body is not None:
            body, self._body = self._body, None
            self._ws.data_received(self._body_head)
            self._ws.data_received(body)
            self._skip = self._need


def _parse_header(
    buf: memoryview | bytearray, pos: int, end: int
) -> tuple[int, int, bool, int] | None:
    """(header length, first byte, masked, payload length) of the frame at ``pos``, or
    None while the header is incomplete."""
    if end - pos < 2:
        return None
    head1, head2 = buf[pos], buf[pos + 1]
    masked = bool(head2 & _MASK_BIT)
    length = head2 & 0x7F
    hlen = 2
    if length == 126:
        hlen = 4
        if end - pos < hlen:
            return None
        (length,) = _U16.unpack_from(buf, pos + 2)
    elif length == 127:
        hlen = 10
        if end - pos < hlen:
            return None
        (length,) = _U64.unpack_from(buf, pos + 2)
    if masked:
        hlen += 4
    if end - pos < hlen:
        return None
    return hlen, head1, masked, length
