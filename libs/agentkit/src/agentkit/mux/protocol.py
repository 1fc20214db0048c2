"""The sans-I/O mux connection: stream table, credit, half-close, reset, scheduling.

:class:`MuxConnection` does no I/O and knows no event loop, so every rule of PROTOCOL.md
section 2 is testable by feeding it bytes. Its user (normally :class:`~.session.MuxSession`):

* feeds every received binary message to :meth:`MuxConnection.receive`;
* calls the stream operations (:meth:`~MuxConnection.open_stream`, ``accept``, ``refuse``,
  ``send_data``, ``send_eof``, ``reset``, ``read``, ``read_chunk``, ``release``);
* takes the resulting :class:`Event` objects with :meth:`~MuxConnection.take_events`;
* pulls outgoing messages one at a time with :meth:`~MuxConnection.next_frame`: control
  messages (text, OPEN*, WINDOW, FIN, RST) first, then DATA from streams with buffered bytes
  and credit, round-robin, one max-size frame per turn;
* after a protocol error (``failure`` is set) closes the transport with ``failure[0]``.

Rules enforced on receipt (anything else is a reset of that stream, or close 1002):

* DATA beyond the credit we granted, over the max frame, before OPEN_OK or after FIN: RST.
* FIN twice, WINDOW/FIN before the stream is open, OPEN_OK/OPEN_FAIL for a stream we did
  not open or that is already open: RST.
* OPEN with the opener's wrong parity, or an id not above every id that peer used before
  (ids only grow and are never reused): RST (and that id's stream, if any, is reset too).
* Frames for ids that were never opened: RST (an RST for such an id is ignored).
  Frames for streams that are already closed (late frames in flight when we closed it):
  ignored quietly and counted in ``stats.late_frames``.
* A short header or stream id 0: the connection fails with 1002.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import SessionClosed, SessionDraining, StreamError, StreamReset
from .frames import (
    CLOSE_PROTOCOL_ERROR,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    MAX_STREAM_ID,
    MAX_WINDOW,
    FrameType,
    HeaderError,
    StreamFrameError,
    decode_frame,
    encode_data_header,
    encode_frame,
    encode_json_frame,
    encode_window,
)

__all__ = [
    "CloseCause",
    "DataReceived",
    "Event",
    "MuxConnection",
    "MuxSettings",
    "MuxStats",
    "OpenAccepted",
    "OpenRequested",
    "Phase",
    "ProtocolError",
    "Role",
    "SendReady",
    "StreamEnded",
    "StreamInfo",
    "StreamState",
    "stream_label",
]


MAX_QUEUED_CONTROL = 4096
"""Queued control messages past which RSTs for unknown streams are no longer queued."""


class Role(Enum):
    """Which end of the tunnel: decides the parity of the ids this side allocates."""

    CONTROL_PLANE = "controlplane"  # opens odd ids
    AGENT = "agent"  # opens even ids

    @property
    def first_id(self) -> int:
        return 1 if self is Role.CONTROL_PLANE else 2


class Phase(Enum):
    OPENING = "opening"  # we sent OPEN, waiting for OPEN_OK / OPEN_FAIL
    PENDING = "pending"  # the peer sent OPEN, the owner has not accepted or refused yet
    OPEN = "open"
    CLOSED = "closed"


class CloseCause(Enum):
    FINISHED = "finished"  # FIN both ways
    RESET_LOCAL = "reset_local"  # we reset it (or we found the peer's frames bad)
    RESET_PEER = "reset_peer"  # the peer sent RST
    REFUSED = "refused"  # OPEN_FAIL (either way)
    CONNECTION = "connection"  # the connection ended under it


@dataclass(slots=True)
class MuxSettings:
    """Per-connection settings; both ends agree on them (in the hello exchange)."""

    window: int = DEFAULT_WINDOW
    """Receive window: credit we grant the peer per stream, so our buffer bound per stream.
    Consumed bytes go back in one WINDOW once half the window's worth has accumulated."""
    max_frame: int = DEFAULT_MAX_FRAME
    """Largest DATA payload we accept and send."""
    peer_window: int | None = None
    """Initial send credit per stream (the peer's window); None: same as ``window``."""
    write_limit: int = 128 * 1024
    """Send-buffer high-water mark per stream: past it, the producer's drain() waits."""
    max_streams: int = 8192
    """Concurrent streams the peer may open before its OPENs get OPEN_FAIL."""

    def __post_init__(self) -> None:
        if not 0 < self.window <= MAX_WINDOW:
            raise ValueError(f"window out of range: {self.window}")
        if self.peer_window is not None and not 0 < self.peer_window <= MAX_WINDOW:
            raise ValueError(f"peer_window out of range: {self.peer_window}")
        if not 0 < self.max_frame <= 16 * 1024 * 1024:
            raise ValueError(f"max_frame out of range: {self.max_frame}")
        if self.write_limit <= 0 or self.max_streams <= 0:
            raise ValueError("write_limit and max_streams must be positive")


@dataclass(slots=True)
class MuxStats:
    """Counters of one connection; the tunnel service exports them as metrics."""

    streams_opened: int = 0
    """Streams that became open (OPEN_OK sent or received)."""
    streams_closed: int = 0
    """Open streams that closed since (FIN both ways, reset, or connection end)."""
    open_failed: int = 0
    """OPENs that never became a stream (refused, timed out, reset while opening)."""
    bytes_in: int = 0
    bytes_out: int = 0
    window_blocked_seconds: float = 0.0
    """Summed over streams: time spent with data to send and no credit."""
    resets_sent: int = 0
    resets_received: int = 0
    late_frames: int = 0
    protocol_errors: int = 0

    @property
    def streams_active(self) -> int:
        return self.streams_opened - self.streams_closed


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A snapshot of one stream, for ListStreams."""

    stream_id: int
    label: str
    state: str
    initiator: str  # "local" or "remote"
    bytes_in: int
    bytes_out: int
    send_credit: int
    send_buffered: int
    recv_buffered: int
    opened_at: float  # time.time()
    recv_buffered_peak: int = 0
    """The most received bytes this stream ever held unread (never above the window)."""


def stream_label(request: dict[str, Any]) -> str:
    """Short name of an OPEN target: the forward name or ``namespace/service:port``."""
    forward = request.get("forward")
    if isinstance(forward, str):
        return forward
    service = request.get("service")
    if service is not None:
        return f"{request.get('namespace', '')}/{service}:{request.get('port', '')}"
    return ""


class StreamState:
    """One stream's protocol state and buffers. Owned by the connection; the adapter holds
    references to it, so buffered received data stays readable after the stream closed."""

    __slots__ = (
        "blocked_since",
        "bytes_in",
        "bytes_out",
        "cause",
        "fin_sent",
        "id",
        "in_ready",
        "label",
        "local",
        "local_fin",
        "opened",
        "opened_at",
        "phase",
        "reason",
        "recv_buf",
        "recv_buffered",
        "recv_credit",
        "recv_peak",
        "recv_unacked",
        "remote_fin",
        "request",
        "send_buf",
        "send_buffered",
        "send_credit",
        "send_offset",
        "user",
    )

    def __init__(
        self, stream_id: int, local: bool, request: dict[str, Any], window: int, credit: int
    ) -> None:
        self.id = stream_id
        self.local = local
        self.request = request
        self.label = stream_label(request)
        self.phase = Phase.OPENING if local else Phase.PENDING
        self.opened = False  # counted in stats.streams_opened
        self.opened_at = time.time()
        self.local_fin = False  # write_eof() called: no more send_data
        self.fin_sent = False  # FIN queued (after the last DATA)
        self.remote_fin = False
        self.cause: CloseCause | None = None
        self.reason = ""
        self.send_buf: deque[bytes] = deque()
        self.send_offset = 0  # consumed bytes of send_buf[0]
        self.send_buffered = 0
        self.send_credit = credit
        self.in_ready = False
        self.blocked_since: float | None = None
        self.recv_buf: deque[memoryview] = deque()
        self.recv_buffered = 0
        self.recv_peak = 0  # high-water mark of recv_buffered
        self.recv_credit = window  # what the peer may still send
        self.recv_unacked = 0  # consumed, credit not yet returned
        self.bytes_in = 0
        self.bytes_out = 0
        self.user: Any = None  # the adapter's object for this stream

    @property
    def at_eof(self) -> bool:
        return self.remote_fin and not self.recv_buffered

    @property
    def reset(self) -> bool:
        return self.cause is not None and self.cause is not CloseCause.FINISHED

    def error(self) -> StreamReset:
        by_peer = self.cause is CloseCause.RESET_PEER
        return StreamReset(self.reason or "stream reset", by_peer=by_peer)

    def info(self) -> StreamInfo:
        return StreamInfo(
            stream_id=self.id,
            label=self.label,
            state=self.phase.value
            + ("" if self.phase is not Phase.OPEN else _half(self.local_fin, self.remote_fin)),
            initiator="local" if self.local else "remote",
            bytes_in=self.bytes_in,
            bytes_out=self.bytes_out,
            send_credit=self.send_credit,
            send_buffered=self.send_buffered,
            recv_buffered=self.recv_buffered,
            opened_at=self.opened_at,
            recv_buffered_peak=self.recv_peak,
        )

    def __repr__(self) -> str:
        return f"<StreamState {self.id} {self.label!r} {self.phase.value}>"


def _half(local_fin: bool, remote_fin: bool) -> str:
    if local_fin and remote_fin:
        return ""
    if local_fin:
        return " (local half-closed)"
    if remote_fin:
        return " (remote half-closed)"
    return ""


# --- events -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenRequested:
    """The peer sent OPEN; call ``accept(stream)`` or ``refuse(stream, reason)``."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class OpenAccepted:
    """Our OPEN got OPEN_OK: the stream is open."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class DataReceived:
    """Bytes or FIN arrived: readers of ``stream`` may proceed."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class SendReady:
    """``stream``'s send buffer fell below the write limit: blocked producers may go on."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The stream left the table: finished, reset, refused or lost with the connection."""

    stream: StreamState
    cause: CloseCause
    reason: str


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The connection failed: close the transport with ``code``."""

    code: int
    reason: str


Event = OpenRequested | OpenAccepted | DataReceived | SendReady | StreamEnded | ProtocolError


class MuxConnection:
    """The state of one tunnel connection, without I/O."""

    def __init__(
        self,
        role: Role,
        settings: MuxSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role = role
        self.settings = settings or MuxSettings()
        self.clock = clock
        self.stats = MuxStats()
        self.streams: dict[int, StreamState] = {}
        self.draining = False  # we asked to drain: refuse incoming OPEN
        self.peer_draining = False  # the peer asked to drain: open no more streams
        self.closed = False
        self.close_reason = ""
        self.failure: tuple[int, str] | None = None
        self._next_id = role.first_id
        self._peer_parity = 0 if role is Role.CONTROL_PLANE else 1
        self._peer_high = 0  # highest id the peer opened
        self._control: deque[bytes | str] = deque()
        self._ready: deque[StreamState] = deque()
        self._events: list[Event] = []
        self._peer_window = self.settings.peer_window or self.settings.window
        self._ack_threshold = max(1, self.settings.window // 2)

    # --- settings -----------------------------------------------------------------

    def update_peer_settings(self, *, window: int | None = None) -> None:
        """Apply the peer's advertised window to streams opened from now on."""
        if window is not None:
            if not 0 < window <= MAX_WINDOW:
                raise ValueError(f"window out of range: {window}")
            self._peer_window = window

    # --- outgoing -------------------------------------------------------------------

    @property
    def has_output(self) -> bool:
        return bool(self._control) or bool(self._ready)

    def next_frame(self) -> bytes | str | None:
        """The next message to send (str: a text control message), or None when idle."""
        if self._control:
            return self._control.popleft()
        ready = self._ready
        while ready:
            st = ready.popleft()
            st.in_ready = False
            if st.phase is not Phase.OPEN or not st.send_buffered or st.send_credit <= 0:
                continue
            return self._take_data(st)
        return None

    def _take_data(self, st: StreamState) -> bytes:
        n = min(self.settings.max_frame, st.send_credit, st.send_buffered)
        parts: list[bytes | memoryview] = [encode_data_header(st.id)]
        need = n
        buf = st.send_buf
        while need:
            head = buf[0]
            start = st.send_offset
            avail = len(head) - start
            if avail <= need:
                parts.append(memoryview(head)[start:] if start else head)
                buf.popleft()
                st.send_offset = 0
                need -= avail
            else:
                parts.append(memoryview(head)[start : start + need])
                st.send_offset = start + need
                need = 0
        frame = b"".join(parts)
        before = st.send_buffered
        st.send_buffered -= n
        st.send_credit -= n
        st.bytes_out += n
        self.stats.bytes_out += n
        if st.send_buffered:
            if st.send_credit > 0:
                st.in_ready = True
                self._ready.append(st)
            elif st.blocked_since is None:
                st.blocked_since = self.clock()
        elif st.local_fin and not st.fin_sent:
            self._queue_fin(st)
        limit = self.settings.write_limit
        if before >= limit > st.send_buffered:
            self._events.append(SendReady(st))
        return frame

    def send_text(self, text: str) -> None:
        """Queue a text (JSON control) message ahead of any DATA."""
        if self.closed:
            raise SessionClosed(self.close_reason or "connection closed")
        self._control.append(text)

    # --- stream operations ------------------------------------------------------------

    def open_stream(self, request: dict[str, Any]) -> StreamState:
        """Allocate an id and queue OPEN; the stream is open after :class:`OpenAccepted`."""
        if self.closed:
            raise SessionClosed(self.close_reason or "connection closed")
        if self.draining or self.peer_draining:
            raise SessionDraining("connection is draining")
        sid = self._next_id
        if sid > MAX_STREAM_ID:
            raise SessionDraining("stream ids exhausted on this connection")
        self._next_id = sid + 2
        frame = encode_json_frame(FrameType.OPEN, sid, request)
        st = StreamState(sid, True, request, self.settings.window, self._peer_window)
        self.streams[sid] = st
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
        n = len(data)
        if not n:
            return st.send_buffered
        st.send_buf.append(data if isinstance(data, bytes) else bytes(data))
        st.send_buffered += n
        if st.send_credit > 0:
            if not st.in_ready:
                st.in_ready = True
                self._ready.append(st)
        elif st.blocked_since is None:
            st.blocked_since = self.clock()
        return st.send_buffered

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

    def _queue_fin(self, st: StreamState) -> None:
        st.fin_sent = True
        self._control.append(encode_frame(FrameType.FIN, st.id))
        self._maybe_finished(st)

    def reset(self, st: StreamState, reason: str) -> None:
        """Abort the stream both ways (RST). No-op on a closed stream."""
        if st.phase is Phase.CLOSED:
            return
        self._send_rst(st.id, reason)
        # a late OPEN_OK/OPEN_FAIL or DATA for it will be ignored as a late frame
        self._close(st, CloseCause.RESET_LOCAL, reason)

    def read(self, st: StreamState, n: int = -1) -> bytes:
        """Up to ``n`` buffered bytes (all if n < 0), credit returned at once; b"" if none."""
        if st.reset:
            raise st.error()
        if not st.recv_buffered or n == 0:
            return b""
        buf = st.recv_buf
        if n < 0 or n >= st.recv_buffered:
            data = b"".join(buf) if len(buf) != 1 else bytes(buf[0])
            buf.clear()
        else:
            parts: list[memoryview] = []
            need = n
            while need:
                head = buf[0]
                if len(head) <= need:
                    parts.append(buf.popleft())
                    need -= len(head)
                else:
                    parts.append(head[:need])
                    buf[0] = head[need:]
                    need = 0
            data = b"".join(parts)
        st.recv_buffered -= len(data)
        self.release(st, len(data))
        return data

    def read_chunk(self, st: StreamState) -> memoryview | None:
        """The next received chunk as-is (zero copy), without returning credit: call
        :meth:`release` with its length once it was written out. None if nothing is buffered.
        """
        if st.reset:
            raise st.error()
        if not st.recv_buf:
            return None
        chunk = st.recv_buf.popleft()
        st.recv_buffered -= len(chunk)
        return chunk

    def release(self, st: StreamState, n: int) -> None:
        """Return ``n`` bytes of credit to the peer (batched into WINDOW frames)."""
        if n <= 0 or st.phase is not Phase.OPEN or st.remote_fin:
            return
        # never more than was handed out: credit + buffered + unacked stays <= the window
        n = min(n, self.settings.window - st.recv_credit - st.recv_buffered - st.recv_unacked)
        if n <= 0:
            return
        st.recv_unacked += n
        if st.recv_unacked >= self._ack_threshold:
            inc = st.recv_unacked
            st.recv_unacked = 0
            st.recv_credit += inc
            self._control.append(encode_window(st.id, inc))

    # --- incoming -------------------------------------------------------------------

    def take_events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Process one received binary message. Never raises for bad input."""
        if self.closed:
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
            if self._is_past(sid):
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
        elif ftype is FrameType.OPEN_OK:
            if not (st.local and st.phase is Phase.OPENING):
                self._violation(st, f"OPEN_OK on a stream that is {st.phase.value}")
            else:
                st.phase = Phase.OPEN
                st.opened = True
                self.stats.streams_opened += 1
                self._events.append(OpenAccepted(st))
        else:  # OPEN_FAIL
            assert frame.body is not None
            if not (st.local and st.phase is Phase.OPENING):
                self._violation(st, f"OPEN_FAIL on a stream that is {st.phase.value}")
            else:
                reason = str(frame.body.get("reason", "")) or "open refused"
                self._close(st, CloseCause.REFUSED, reason)

    def _on_open(self, sid: int, request: dict[str, Any]) -> None:
        if sid % 2 != self._peer_parity:
            reason = f"OPEN with id {sid} of the wrong parity"
        elif sid <= self._peer_high:
            reason = f"OPEN reuses stream id {sid}"
        else:
            reason = ""
        if reason:  # never a late frame: an OPEN starts a stream
            st = self.streams.get(sid)
            if st is not None:
                self._violation(st, reason)
            else:
                self.stats.protocol_errors += 1
                self._answer_stranger(sid, reason)
            return
        self._peer_high = sid
        st = StreamState(sid, False, request, self.settings.window, self._peer_window)
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
        st.recv_credit -= n
        st.recv_buf.append(payload)
        st.recv_buffered += n
        if st.recv_buffered > st.recv_peak:
            st.recv_peak = st.recv_buffered
        st.bytes_in += n
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

    def _is_past(self, sid: int) -> bool:
        """Was ``sid`` in use on this connection before (so frames for it are late)?"""
        if sid % 2 == self._peer_parity:
            return sid <= self._peer_high
        return sid < self._next_id

    def _bad_frame(self, sid: int, reason: str) -> None:
        st = self.streams.get(sid)
        if st is not None:
            self._violation(st, reason)
        elif self._is_past(sid):
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

    def _send_rst(self, sid: int, reason: str) -> None:
        self.stats.resets_sent += 1
        self._control.append(encode_json_frame(FrameType.RST, sid, {"reason": reason}))

    # --- closing ----------------------------------------------------------------------

    def _maybe_finished(self, st: StreamState) -> None:
        if st.fin_sent and st.remote_fin and st.phase is Phase.OPEN:
            self._close(st, CloseCause.FINISHED, "")

    def _close(self, st: StreamState, cause: CloseCause, reason: str) -> None:
        if st.phase is Phase.CLOSED:
            return
        st.phase = Phase.CLOSED
        st.cause = cause
        st.reason = reason
        self.streams.pop(st.id, None)
        if st.opened:
            self.stats.streams_closed += 1
        else:
            self.stats.open_failed += 1
        if st.blocked_since is not None:
            self.stats.window_blocked_seconds += self.clock() - st.blocked_since
            st.blocked_since = None
        if cause is not CloseCause.FINISHED:
            st.send_buf.clear()
            st.send_buffered = 0
            st.recv_buf.clear()
            st.recv_buffered = 0
        self._events.append(StreamEnded(st, cause, reason))

    def fail(self, code: int, reason: str) -> None:
        """The peer broke the protocol: end every stream and ask for a close with ``code``."""
        if self.closed:
            return
        self.stats.protocol_errors += 1
        self.failure = (code, reason)
        self._events.append(ProtocolError(code, reason))
        self.connection_lost(f"protocol error: {reason}")

    def connection_lost(self, reason: str) -> None:
        """The transport is gone: every stream ends with ``reason`` (as a local reset)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for st in list(self.streams.values()):
            self._close(st, CloseCause.CONNECTION, reason)
        self._control.clear()
        self._ready.clear()

    # --- introspection ---------------------------------------------------------------

    def stream_info(self) -> list[StreamInfo]:
        return [st.info() for st in self.streams.values()]
