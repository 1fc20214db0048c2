"""The websockets fast path: the one module that reaches into websockets' internals.

Through websockets' public API every message costs a task switch on each side of each
direction (``recv()`` wakes the reader pump a loop iteration after the message was
parsed; ``await send()`` yields even when the socket takes the bytes at once): most of
what the tunnel added to a round trip. On a websockets asyncio connection of the version
range below, :class:`FastPath` does instead:

* receiving: messages are handled as they arrive, in the transport's read callback, not
  queued for ``recv()``. With no extension negotiated, :class:`~.wsframes.FrameReader`
  unframes complete unfragmented binary messages itself (websockets' parser costs more
  than the mux per message) and hands every other frame whole to websockets'
  ``data_received``, whose ``process_event`` is wrapped the same way. Only complete
  unfragmented messages with nothing queued ahead of them go directly; the rest
  (fragments, the messages after them, text that is not UTF-8) takes websockets' own path
  to ``recv()``, in order.
* reading from the transport: while the reader is installed, the connection's transport
  feeds a :class:`_BufferedReader` (an ``asyncio.BufferedProtocol`` in front of the
  websockets connection) that reuses one :data:`READ_BUFFER` per thread for every read. Over TLS
  this moves uvloop's (and asyncio's) SSL layer onto its buffered read path: records are
  decrypted straight into that buffer, where the copying path allocates a 256 KiB
  ``bytes`` per TLS record, joins them, and pays an ``SSLWantReadError`` per read.
* sending: while the multiplexer's writer pump is idle, frames are written synchronously
  (what ``send()`` does before it awaits ``drain()``: the frames, framed by
  :class:`~.wsframes.FrameWriter` unless an extension is in use, then ``protocol.send_*``,
  go to the transport up to :data:`BATCH` bytes at a time, over TLS as one ``bytes``;
  a stream's write that nothing is queued ahead of goes out at once as one frame,
  :meth:`FastPath.send_now`, past the core's queues),
  only while the connection is open, not paused (its write buffer under the high-water
  mark) and no fragmented message is being sent; otherwise the pump ``await``s ``send()``
  and so honours the transport's backpressure.

Those internals (``process_event``, ``recv_messages.frames``, ``send_data``, ``paused``,
``send_in_progress``, ``protocol.data_to_send``/``writes``/``state``/``current_size``/
``max_message_size``/``max_fragment_size``) are not a public API, so the
fast path is used only when the installed websockets is within :data:`SUPPORTED` (the
same range agentkit's dependency pins; a test checks both) and has them. Otherwise, or
with ``AGENTKIT_MUX_FAST_PATH=0`` in the environment, the multiplexer uses
``send()``/``recv()`` alone: same behaviour, more latency.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from .connection import MuxConnection
from .frames import encode_data_header
from .state import StreamState
from .wsframes import OP_BINARY, OP_TEXT, FrameReader, FrameWriter

__all__ = ["ENV_SWITCH", "SUPPORTED", "FastPath", "fast_path_for", "supported_version"]

log = logging.getLogger("agentkit.mux")

Data = bytes | bytearray | memoryview

SUPPORTED = (">=17.4", "<17.5")
"""The websockets versions whose internals this module was written against; agentkit's
pyproject pins ``websockets>=17.4,<17.5`` to match."""
ENV_SWITCH = "AGENTKIT_MUX_FAST_PATH"
"""Set to ``0`` to force the public path (send()/recv() only)."""

BATCH = 256 * 1024
"""Bytes of frames handed to the transport in one ``writelines`` by :meth:`FastPath.write`."""
READ_BUFFER = 256 * 1024
"""Bytes the transport may read (or decrypt) in one go into :class:`_BufferedReader`'s
buffer: uvloop's own read size for TCP and for TLS."""

_per_thread = threading.local()


def _read_buffer() -> memoryview:
    """The read buffer of this thread's connections, one for all of them: a loop runs one
    read callback at a time, and websockets copies a read into its own parse buffer first
    thing in ``data_received``, so no read can land in it while another is still in use.
    (One per connection would cost 256 KiB each, and malloc keeps freed ones around.)"""
    buffer: memoryview | None = getattr(_per_thread, "buffer", None)
    if buffer is None:
        buffer = _per_thread.buffer = memoryview(bytearray(READ_BUFFER))
    return buffer

_NEEDED = ("protocol", "paused", "send_in_progress", "send_data", "transport", "process_event")
_PROTOCOL_NEEDED = ("state", "side", "extensions", "writes", "current_size",
                    "max_message_size", "max_fragment_size")


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:3] if part.isdigit())


def supported_version(version: str) -> bool:
    """Is websockets ``version`` within :data:`SUPPORTED`?"""
    low, high = _parse(SUPPORTED[0][2:]), _parse(SUPPORTED[1][1:])
    return low <= _parse(version) < high


def fast_path_for(transport: object) -> FastPath | None:
    """A fast path for ``transport`` if it is a websockets asyncio connection it can use."""
    if os.environ.get(ENV_SWITCH, "1") == "0":
        return None
    try:
        from websockets.asyncio.connection import Connection
    except ImportError:
        return None
    if not isinstance(transport, Connection):
        return None
    version = importlib.metadata.version("websockets")
    if not supported_version(version):
        log.info("websockets %s is outside %s: the mux uses its public path", version,
                 ",".join(SUPPORTED))
        return None
    if not all(hasattr(transport, name) for name in _NEEDED):
        return None
    if not all(hasattr(transport.protocol, name) for name in _PROTOCOL_NEEDED):
        return None
    if not hasattr(getattr(transport, "recv_messages", None), "frames"):
        return None
    if "process_event" in vars(transport):  # another multiplexer's hook is on it
        return None
    return FastPath(transport)


class FastPath:
    """Synchronous sends and in-callback receives on one websockets connection.
    ``sent`` and ``received`` count the messages that went this way, ``reads`` the
    transport reads that went through :class:`_BufferedReader`."""

    __slots__ = ("_frames", "_join", "_open", "_writer", "_ws", "reads", "received", "sent")

    def __init__(self, ws: Any) -> None:
        from websockets.protocol import Side, State

        self._ws = ws
        self._open = State.OPEN
        self._frames: FrameReader | None = None
        # our own framing unless an extension (compression) is in use: websockets' then
        own = not ws.protocol.extensions
        self._writer = FrameWriter(ws.protocol.side is Side.CLIENT) if own else None
        # over TLS a batch goes to the transport as one bytes: its writelines() makes a
        # TLS record (and an encryption call) of every piece, a 2-byte header included
        self._join = ws.transport.get_extra_info("sslcontext") is not None
        self.sent = 0
        self.received = 0
        self.reads = 0

    def write(self, conn: MuxConnection) -> bool:
        """Send what ``conn`` has queued while the transport takes it without waiting;
        False if it could not be used at all (the writer pump then sends)."""
        ws = self._ws
        protocol = ws.protocol
        if (
            protocol.state is not self._open
            or ws.paused
            or ws.send_in_progress is not None
            or ws.transport.is_closing()
        ):
            return False
        # our own framing, unless an extension is in use or websockets has frames of its
        # own queued (which go first): then websockets frames them
        writer = self._writer if not protocol.writes else None
        transport = ws.transport
        try:
            while not ws.paused:
                # Up to BATCH bytes of frames go to the transport at once: over TLS one
                # encryption pass and one send for several frames, not one each.
                # Backpressure is looked at between batches, as send() would after each.
                if writer is not None:
                    parts: list[bytes] = []
                    if not self._batch(conn, partial(writer.frame, parts, OP_TEXT),
                                       partial(writer.frame, parts, OP_BINARY)):
                        break
                    if self._join:
                        transport.write(b"".join(parts))
                    else:
                        transport.writelines(parts)
                    continue
                if not self._batch(conn, protocol.send_text, protocol.send_binary):
                    break
                chunks = protocol.data_to_send()
                if all(chunks):
                    transport.writelines(chunks)
                else:  # an end-of-stream marker among them: websockets' own handling
                    protocol.writes[:0] = chunks
                    ws.send_data()
        except Exception as exc:  # the connection is failing: the pumps will see it
            log.debug("direct send failed: %r", exc)
            return False
        return True

    def _batch(self, conn: MuxConnection, text: Callable[[bytes], object],
               binary: Callable[[bytes], object]) -> int:
        """Frame up to :data:`BATCH` bytes of what ``conn`` has queued, each message with
        ``text`` or ``binary``; returns the bytes taken (0: nothing was queued)."""
        size = 0
        while size < BATCH:
            message = conn.next_frame()
            if message is None:
                break
            if isinstance(message, str):
                text(message.encode())
            else:
                binary(message)
            size += len(message)
            self.sent += 1
        return size

    def send_now(self, conn: MuxConnection, st: StreamState, data: Data) -> bool:
        """Send ``data`` as one DATA frame of ``st`` at once, framed into one ``bytes``,
        when the transport takes it without waiting and ``conn`` allows it
        (:meth:`~.connection.MuxConnection.send_direct`: nothing queued ahead, credit);
        False (nothing done) otherwise. The caller checks that the writer pump is idle."""
        writer = self._writer
        ws = self._ws
        if writer is None or ws.paused or ws.send_in_progress is not None:
            return False
        protocol = ws.protocol
        transport = ws.transport
        if (
            protocol.state is not self._open
            or protocol.writes
            or transport.is_closing()
            or not conn.send_direct(st, len(data))
        ):
            return False
        try:
            transport.write(writer.binary(encode_data_header(st.id), data))
        except Exception as exc:  # the connection is failing: the pumps will see it
            log.debug("direct send failed: %r", exc)
        self.sent += 1
        return True

    def install_reader(
        self,
        handle: Callable[[bytes | bytearray | str], bool],
        begin: Callable[[], None] | None = None,
        end: Callable[[], None] | None = None,
    ) -> Callable[[], None]:
        """Hand complete messages to ``handle`` as they are parsed (from the current task,
        the reader pump, which is cancelled when ``handle`` returns False, as a failing
        ``recv()`` would end it), and put a :class:`_BufferedReader` in front of the
        connection, which calls ``begin`` before and ``end`` after the messages of each
        transport read. Returns the undo. A binary message may be the parser's
        ``bytearray`` (not copied to ``bytes``: nothing else holds it)."""
        from websockets.frames import Opcode

        ws = self._ws
        original = ws.process_event
        queue = ws.recv_messages.frames
        reader = asyncio.current_task()
        assert reader is not None
        binary, text, cont = Opcode.BINARY, Opcode.TEXT, Opcode.CONT
        fragmented = False  # a fragmented message is going websockets' way

        def process_event(event: Any) -> None:
            nonlocal fragmented
            opcode = event.opcode
            if opcode is not binary and opcode is not text:
                if opcode is cont and event.fin:
                    fragmented = False
                original(event)
                return
            if fragmented or not event.fin or len(queue):
                fragmented = fragmented or not event.fin
                original(event)
                return
            data = event.data
            message: bytes | bytearray | str
            if opcode is text:
                try:
                    message = bytes(data).decode()
                except UnicodeDecodeError:  # recv() raises it, as it would have
                    original(event)
                    return
            else:  # bytes (unmasked by websockets) or the parser's own bytearray
                message = data if type(data) in (bytes, bytearray) else bytes(data)
            deliver(message)

        def deliver(message: bytes | bytearray | str) -> None:
            self.received += 1
            try:
                ok = handle(message)
            except Exception:  # not expected: the multiplexer's handlers catch their own
                log.exception("handling a message failed")
                ok = False
            if not ok:
                reader.cancel()

        ws.process_event = process_event
        frames = FrameReader(ws, deliver) if not ws.protocol.extensions else None
        self._frames = frames
        transport = ws.transport
        buffered = _BufferedReader(self, ws, frames, begin, end)
        if transport.get_protocol() is ws and not transport.is_closing():
            transport.set_protocol(buffered)

        def uninstall() -> None:
            vars(ws).pop("process_event", None)
            if transport.get_protocol() is buffered:
                transport.set_protocol(ws)
            if frames is not None:
                frames.hand_over()

        return uninstall


class _BufferedReader(asyncio.BufferedProtocol):
    """The transport's protocol while the fast path reads: every read lands in the
    thread's read buffer (:func:`_read_buffer`) and goes to the websockets connection as a
    memoryview (websockets appends it to its own parse buffer at once, so the buffer is
    free again before anything else runs). Everything else is the connection's, passed
    through."""

    __slots__ = ("_begin", "_buffer", "_end", "_fast", "_feed", "_ws")

    def __init__(
        self,
        fast: FastPath,
        ws: Any,
        frames: FrameReader | None,
        begin: Callable[[], None] | None,
        end: Callable[[], None] | None,
    ) -> None:
        self._fast = fast
        self._ws = ws
        self._feed = frames.feed if frames is not None else ws.data_received
        self._begin = begin
        self._end = end
        self._buffer = _read_buffer()

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        self._fast.reads += 1
        if self._begin is None or self._end is None:
            self._feed(self._buffer[:nbytes])
            return
        self._begin()
        try:
            self._feed(self._buffer[:nbytes])
        finally:
            self._end()

    def eof_received(self) -> bool | None:
        result: bool | None = self._ws.eof_received()
        return result

    def connection_lost(self, exc: Exception | None) -> None:
        self._ws.connection_lost(exc)

    def pause_writing(self) -> None:
        self._ws.pause_writing()

    def resume_writing(self) -> None:
        self._ws.resume_writing()
