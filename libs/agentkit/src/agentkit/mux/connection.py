"""The sans-I/O mux connection: stream table, credit, half-close, reset, scheduling.

:class:`MuxConnection` does no I/O, knows no event loop and reads time only through the
clocks it is given, so every rule of PROTOCOL.md section 2 is testable by feeding it bytes.
Its user (normally :class:`~.multiplexer.Multiplexer`):

* feeds every received binary message to :meth:`MuxConnection.receive`;
* calls the stream operations (:meth:`~MuxConnection.open_stream`, ``accept``, ``refuse``,
  ``send_data`` (or ``send_direct``, when it writes a DATA frame itself), ``send_eof``,
  ``reset``, ``read``, ``read_chunk``/``read_chunks``, ``release``);
* takes the resulting :mod:`.events` with :meth:`~MuxConnection.take_events`;
* pulls outgoing messages one at a time with :meth:`~MuxConnection.next_frame`: control
  messages (text, OPEN*, WINDOW, FIN, RST) first, then DATA from streams with buffered bytes
  and credit, round-robin, one max-size frame per turn;
* after a protocol error (``failure`` is set) closes the transport with ``failure[0]``.

Rules enforced on receipt (anything else is a reset of that stream, or close 1002):

* DATA beyond the credit we granted, over the max frame, before OPEN_OK or after FIN: RST.
* FIN twice, WINDOW/FIN before the stream is open, OPEN_OK/OPEN_FAIL for a stream we did
  not open or that is already open: RST.
* OPEN with the opener's wrong parity, or an id not above every id that peer used before
  (:mod:`.ids`): RST (and that id's stream, if any, is reset too).
* Frames for ids that were never opened: RST (an RST for such an id is ignored).
  Frames for streams that are already closed (late frames in flight when we closed it):
  ignored quietly and counted in ``stats.late_frames``.
* A short header or stream id 0: the connection fails with 1002.
"""

from __future__ import annotations

import struct
from typing import Any

from .errors import MuxClosed, MuxDraining, StreamError
from .events import DataReceived, OpenAccepted, OpenRequested
from .frames import (
    CLOSE_PROTOCOL_ERROR,
    HEADER_SIZE,
    MAX_WINDOW,
    FrameType,
    HeaderError,
    StreamFrameError,
    decode_frame,
    encode_frame,
    encode_json_frame,
    encode_window,
)
from .settings import MAX_QUEUED_CONTROL
from .state import CloseCause, Phase, StreamState
from .table import StreamTable

__all__ = ["MuxConnection"]

_DATA = int(FrameType.DATA)
_STREAM_ID = struct.Struct(">I")  # of the header, at offset 4


class MuxConnection(StreamTable):
    """The state of one tunnel connection, without I/O: the stream operations its owner
    calls and the rules every received frame is checked against."""

    def update_peer_settings(self, *, window: int | None = None) -> None:
        """Apply the peer's advertised window to streams opened from now on."""
        if window is not None:
            if not 0 < window <= MAX_WINDOW:
                raise ValueError(f"window out of range: {window}")
            self._peer_window = window

    # --- stream operations ------------------------------------------------------------

    def open_stream(self, request: dict[str, Any]) -> StreamState:
        """Allocate an id and queue OPEN; the stream is open after :class:`OpenAccepted`."""
        if self.closed:
            raise MuxClosed(self.close_reason or "connection closed")
        if self.draining or self.peer_draining:
            raise MuxDraining("connection is draining")
        sid = self._ids.allocate()
        frame = encode_json_frame(FrameType.OPEN, sid, request)
        st = self.streams[sid] = self._new_state(sid, True, request)
        self._control.append(frame)
        return st

    def accept(self, st: StreamState) -> None:
        """Answer the peer's OPEN with OPEN_OK."""
        if st.phase is Phase.CLOSED:
            raise st.error()
        if st.phase is not Phase.PENDING:
            raise StreamError(f"stream {st.id} is not waiting for accept ({st.phase.value})")
        st.phase = Phase.OPEN
        st.opened = True
        self.stats.streams_opened += 1
        self._control.append(encode_frame(FrameType.OPEN_OK, st.id))

    def refuse(self, st: StreamState, reason: str) -> None:
        """Answer the peer's OPEN with OPEN_FAIL {reason}."""
        if st.phase is Phase.CLOSED:
            return
        if st.phase is not Phase.PENDING:
            raise StreamError(f"stream {st.id} is not waiting for accept ({st.phase.value})")
        self._control.append(encode_json_frame(FrameType.OPEN_FAIL, st.id, {"reason": reason}))
        self._close(st, CloseCause.REFUSED, reason)

    def send_data(self, st: StreamState, data: bytes | bytearray | memoryview) -> int:
        """Buffer ``data`` for sending; returns the stream's buffered byte count."""
        if st.phase is Phase.CLOSED and st.reset:
            raise st.error()
        if st.local_fin:
            raise StreamError(f"stream {st.id}: write after write_eof")
        if st.phase is not Phase.OPEN:
            raise StreamError(f"stream {st.id} is not open ({st.phase.value})")
        if not len(data):
            return st.send_buffered
        st.buffer(data)
        if st.send_credit > 0:
            if not st.in_ready:
                st.in_ready = True
                self._ready.append(st)
        elif st.blocked_since is None:
            st.blocked_since = self.clock()
        return st.send_buffered

    def send_direct(self, st: StreamState, n: int) -> bool:
        """Spend the credit for ``n`` bytes the caller sends at once as one DATA frame,
        past the send buffer, if that keeps every rule and the order of output: the stream
        is open and not half-closed, nothing is queued (its own buffer, control messages,
        other streams' DATA), ``n`` is within the max frame and the credit. False (nothing
        changed) otherwise: :meth:`send_data` then buffers it as usual."""
        if (
            st.send_buffered
            or self._control
            or self._ready
            or st.phase is not Phase.OPEN
            or st.local_fin
            or not 0 < n <= st.send_credit
            or n > self.settings.max_frame
        ):
            return False
        st.send_credit -= n
        st.bytes_out += n
        self.stats.bytes_out += n
        return True

    def send_eof(self, st: StreamState) -> None:
        """Half-close: FIN after the buffered data. Idempotent."""
        if st.phase is Phase.CLOSED:
            if st.reset:
                raise st.error()
            return
        if st.phase is not Phase.OPEN:
            raise StreamError(f"stream {st.id} is not open ({st.phase.value})")
        if st.local_fin:
            return
        st.local_fin = True
        if not st.send_buffered:
            self._queue_fin(st)

    def read(self, st: StreamState, n: int = -1) -> bytes:
        """Up to ``n`` buffered bytes (all if n < 0), credit returned at once; b"" if none."""
        if st.reset:
            raise st.error()
        if not st.recv_buffered or n == 0:
            return b""
        data = st.take_received(n)
        self.release(st, len(data))
        return data

    def read_chunk(self, st: StreamState) -> memoryview | None:
        """The next received chunk as-is (zero copy), without returning credit: call
        :meth:`release` with its length once it was written out. None if nothing is buffered.
        """
        if st.reset:
            raise st.error()
        return st.take_chunk()

    def read_chunks(self, st: StreamState) -> list[memoryview]:
        """Every received chunk (zero copy), [] if none; like :meth:`read_chunk`, credit
        goes back only with :meth:`release`."""
        if st.reset:
            raise st.error()
        return st.take_chunks()

    def release(self, st: StreamState, n: int) -> bool:
        """Return ``n`` bytes of credit to the peer (batched into WINDOW frames); True
        when a WINDOW was queued (the only output this can cause)."""
        if n <= 0 or st.phase is not Phase.OPEN or st.remote_fin:
            return False
        # never more than was handed out: credit + buffered + unacked stays <= the window
        n = min(n, self.settings.window - st.recv_credit - st.recv_buffered - st.recv_unacked)
        if n <= 0:
            return False
        st.recv_unacked += n
        if st.recv_unacked < self._ack_threshold:
            return False
        inc = st.recv_unacked
        st.recv_unacked = 0
        st.recv_credit += inc
        self._control.append(encode_window(st.id, inc))
        return True

    # --- incoming -------------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Process one received binary message. Never raises for bad input."""
        if self.closed:
            return
        if len(data) >= HEADER_SIZE and data[0] == _DATA:  # the common case, decoded inline
            sid = _STREAM_ID.unpack_from(data, 4)[0]
            st = self.streams.get(sid) if sid else None
            if st is not None and len(data) - HEADER_SIZE <= self.settings.max_frame:
                self._on_data(st, memoryview(data)[HEADER_SIZE:])
                return
        try:
            frame = decode_frame(data, self.settings.max_frame)
        except HeaderError as exc:
            self.fail(CLOSE_PROTOCOL_ERROR, exc.reason)
            return
        except StreamFrameError as exc:
            self._bad_frame(exc.stream_id, exc.reason)
            return
        sid = frame.stream_id
        ftype = frame.type
        if ftype is FrameType.OPEN:
            assert frame.body is not None
            self._on_open(sid, frame.body)
            return
        st = self.streams.get(sid)
        if st is None:
            if self._ids.is_past(sid):
                self.stats.late_frames += 1
            elif ftype is not FrameType.RST:
                self._answer_stranger(sid, f"unknown stream {sid}")
            return
        if ftype is FrameType.DATA:
            self._on_data(st, frame.payload)
        elif ftype is FrameType.WINDOW:
            self._on_window(st, frame.increment)
        elif ftype is FrameType.FIN:
            if st.phase is not Phase.OPEN:
                self._violation(st, f"FIN on a stream that is {st.phase.value}")
            elif st.remote_fin:
                self._violation(st, "FIN after FIN")
            else:
                st.remote_fin = True
                self._events.append(DataReceived(st))
                self._maybe_finished(st)
        elif ftype is FrameType.RST:
            assert frame.body is not None
            self.stats.resets_received += 1
            reason = str(frame.body.get("reason", "")) or "reset by peer"
            self._close(st, CloseCause.RESET_PEER, reason)
        elif not (st.local and st.phase is Phase.OPENING):  # OPEN_OK, OPEN_FAIL
            self._violation(st, f"{ftype.name} on a stream that is {st.phase.value}")
        elif ftype is FrameType.OPEN_OK:
            st.phase = Phase.OPEN
            st.opened = True
            self.stats.streams_opened += 1
            self._events.append(OpenAccepted(st))
        else:  # OPEN_FAIL
            assert frame.body is not None
            reason = str(frame.body.get("reason", "")) or "open refused"
            self._close(st, CloseCause.REFUSED, reason)

    def _on_open(self, sid: int, request: dict[str, Any]) -> None:
        reason = self._ids.check_peer_open(sid)
        if reason:  # never a late frame: an OPEN starts a stream
            st = self.streams.get(sid)
            if st is not None:
                self._violation(st, reason)
            else:
                self.stats.protocol_errors += 1
                self._answer_stranger(sid, reason)
            return
        st = self._new_state(sid, False, request)
        if self.draining:
            self._refuse_new(st, "draining")
        elif len(self.streams) >= self.settings.max_streams:
            self._refuse_new(st, "too many streams")
        else:
            self.streams[sid] = st
            self._events.append(OpenRequested(st))

    def _refuse_new(self, st: StreamState, reason: str) -> None:
        self._control.append(encode_json_frame(FrameType.OPEN_FAIL, st.id, {"reason": reason}))
        st.phase = Phase.CLOSED
        st.cause = CloseCause.REFUSED
        st.reason = reason
        self.stats.open_failed += 1

    def _on_data(self, st: StreamState, payload: memoryview) -> None:
        if st.phase is not Phase.OPEN:
            self._violation(st, f"DATA on a stream that is {st.phase.value}")
            return
        if st.remote_fin:
            self._violation(st, "DATA after FIN")
            return
        n = len(payload)
        if n > st.recv_credit:
            self._violation(st, f"flow control: {n} bytes of DATA with {st.recv_credit} credit")
            return
        if not n:
            return
        st.received(payload)
        self.stats.bytes_in += n
        self._events.append(DataReceived(st))

    def _on_window(self, st: StreamState, increment: int) -> None:
        if st.phase is not Phase.OPEN:
            self._violation(st, f"WINDOW on a stream that is {st.phase.value}")
            return
        credit = st.send_credit + increment
        if credit > MAX_WINDOW:
            self._violation(st, f"WINDOW overflows credit ({credit})")
            return
        st.send_credit = credit
        if st.blocked_since is not None:
            self.stats.window_blocked_seconds += self.clock() - st.blocked_since
            st.blocked_since = None
        if st.send_buffered and not st.in_ready:
            st.in_ready = True
            self._ready.append(st)

    def _bad_frame(self, sid: int, reason: str) -> None:
        st = self.streams.get(sid)
        if st is not None:
            self._violation(st, reason)
        elif self._ids.is_past(sid):
            self.stats.late_frames += 1
        else:
            self._answer_stranger(sid, reason)

    def _violation(self, st: StreamState, reason: str) -> None:
        self.stats.protocol_errors += 1
        self.reset(st, reason)

    def _answer_stranger(self, sid: int, reason: str) -> None:
        """RST for a frame naming no stream of ours. These answers are the only output a
        peer can make us queue without limit, so past ``MAX_QUEUED_CONTROL`` queued control
        messages (a peer that floods and does not read) they are dropped, not queued."""
        if len(self._control) < MAX_QUEUED_CONTROL:
            self._send_rst(sid, reason)

