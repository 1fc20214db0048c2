"""The part of the sans-I/O core that everything else builds on: the stream table, the
output queues and the event list of one connection, and how a stream leaves the table.

:class:`StreamTable` schedules output (control messages first, then DATA round-robin from
streams with buffered bytes and credit, one max-size frame per turn), closes streams
(finished, reset, refused, lost with the connection) and counts. The rules for what the
peer may send and what the owner may do are its subclass :class:`~.connection.MuxConnection`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .errors import MuxClosed
from .events import Event, ProtocolError, SendReady, StreamEnded
from .frames import FrameType, encode_frame, encode_json_frame
from .ids import StreamIds
from .settings import MAX_QUEUED_CONTROL, MuxSettings, MuxStats, Role
from .state import CloseCause, Phase, StreamInfo, StreamState

__all__ = ["StreamTable"]


class StreamTable:
    """Streams, output and events of one connection, without I/O. ``clock`` (monotonic)
    times the window-blocked counter; ``wall_clock`` stamps ``opened_at`` for reports."""

    def __init__(
        self,
        role: Role,
        settings: MuxSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.role = role
        self.settings = settings or MuxSettings()
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = MuxStats()
        self.streams: dict[int, StreamState] = {}
        self.draining = False  # we asked to drain: refuse incoming OPEN
        self.peer_draining = False  # the peer asked to drain: open no more streams
        self.closed = False
        self.close_reason = ""
        self.failure: tuple[int, str] | None = None
        self._ids = StreamIds(role)
        self._control: deque[bytes | str] = deque()
        self._ready: deque[StreamState] = deque()
        self._events: list[Event] = []
        self._peer_window = self.settings.peer_window or self.settings.window
        self._ack_threshold = max(1, self.settings.window // 2)

    def _new_state(self, sid: int, local: bool, request: dict[str, Any]) -> StreamState:
        window, credit = self.settings.window, self._peer_window
        return StreamState(sid, local, request, window, credit, self.wall_clock())

    def stream_info(self) -> list[StreamInfo]:
        return [st.info() for st in self.streams.values()]

    def take_events(self) -> list[Event]:
        events = self._events
        self._events = []
        return events

    # --- outgoing -------------------------------------------------------------------

    @property
    def has_output(self) -> bool:
        return bool(self._control) or bool(self._ready)

    @property
    def queued_control(self) -> int:
        """Control messages queued and not yet taken by :meth:`next_frame`."""
        return len(self._control)

    @property
    def has_events(self) -> bool:
        return bool(self._events)

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
        before = st.send_buffered
        n = min(self.settings.max_frame, st.send_credit, before)
        frame = st.take_frame(n)
        self.stats.bytes_out += n
        if st.send_buffered:
            if st.send_credit > 0:
                st.in_ready = True
                self._ready.append(st)
            elif st.blocked_since is None:
                st.blocked_since = self.clock()
        elif st.local_fin and not st.fin_sent:
            self._queue_fin(st)
        if before >= self.settings.write_limit > st.send_buffered:
            self._events.append(SendReady(st))
        return frame

    def send_text(self, text: str) -> None:
        """Queue a text (JSON control) message ahead of any DATA."""
        if self.closed:
            raise MuxClosed(self.close_reason or "connection closed")
        self._control.append(text)

    def reply_text(self, text: str) -> bool:
        """Like :meth:`send_text` for answers to the peer (acks, errors): dropped, returning
        False, while ``MAX_QUEUED_CONTROL`` messages wait, so a peer that floods us without
        reading cannot grow the queue without limit."""
        if len(self._control) >= MAX_QUEUED_CONTROL:
            return False
        self.send_text(text)
        return True

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
            st.drop_buffers()
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

