"""One stream's protocol state and its two buffers, as the core keeps them.

:class:`StreamState` is plain data plus the buffer arithmetic (cutting a DATA frame out of
the send buffer, handing received bytes out); the rules about when each may happen are the
connection's (:mod:`.connection`). The adapter's :class:`~.stream.Stream` is a view over it,
and :class:`StreamInfo` is the snapshot the tunnel reports (ListStreams).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import Any

from .errors import StreamReset
from .frames import encode_data_header

__all__ = ["CloseCause", "Phase", "StreamInfo", "StreamState", "stream_label"]


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
    opened_at: float  # wall clock (time.time())
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
        self,
        stream_id: int,
        local: bool,
        request: dict[str, Any],
        window: int,
        credit: int,
        opened_at: float,
    ) -> None:
        self.id = stream_id
        self.local = local
        self.request = request
        self.label = stream_label(request)
        self.phase = Phase.OPENING if local else Phase.PENDING
        self.opened = False  # counted in stats.streams_opened
        self.opened_at = opened_at
        self.local_fin = False  # write_eof() called: no more send_data
        self.fin_sent = False  # FIN queued (after the last DATA)
        self.remote_fin = False
        self.cause: CloseCause | None = None
        self.reason = ""
        self.send_buf: deque[bytes] = deque()
        self.send_offset = 0  # consumed bytes of send_buf[0]
        self.send_buffered = 0
        self.send_credit = credit
        self.in_ready = False  # queued in the connection's round-robin
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

    # --- buffers ----------------------------------------------------------------------

    def buffer(self, data: bytes | bytearray | memoryview) -> None:
        """Keep ``data`` for sending (bytes without a copy)."""
        self.send_buf.append(data if isinstance(data, bytes) else bytes(data))
        self.send_buffered += len(data)

    def take_frame(self, n: int) -> bytes:
        """A DATA frame with the next ``n`` buffered bytes; spends ``n`` of credit."""
        parts: list[bytes | memoryview] = [encode_data_header(self.id)]
        need = n
        buf = self.send_buf
        while need:
            head = buf[0]
            start = self.send_offset
            avail = len(head) - start
            if avail <= need:
                parts.append(memoryview(head)[start:] if start else head)
                buf.popleft()
                self.send_offset = 0
                need -= avail
            else:
                parts.append(memoryview(head)[start : start + need])
                self.send_offset = start + need
                need = 0
        self.send_buffered -= n
        self.send_credit -= n
        self.bytes_out += n
        return b"".join(parts)

    def received(self, payload: memoryview) -> None:
        """Keep received DATA (its credit was checked and spent by the connection)."""
        n = len(payload)
        self.recv_credit -= n
        self.recv_buf.append(payload)
        self.recv_buffered += n
        if self.recv_buffered > self.recv_peak:
            self.recv_peak = self.recv_buffered
        self.bytes_in += n

    def take_received(self, n: int) -> bytes:
        """Up to ``n`` received bytes (all if n < 0), copied out of the buffer."""
        buf = self.recv_buf
        if n < 0 or n >= self.recv_buffered:
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
        self.recv_buffered -= len(data)
        return data

    def take_chunk(self) -> memoryview | None:
        """The next received chunk as it arrived (zero copy), or None."""
        if not self.recv_buf:
            return None
        chunk = self.recv_buf.popleft()
        self.recv_buffered -= len(chunk)
        return chunk

    def take_chunks(self) -> list[memoryview]:
        """Every received chunk as it arrived (zero copy), oldest first; [] if none."""
        buf = self.recv_buf
        if not buf:
            return []
        chunks = list(buf)
        buf.clear()
        self.recv_buffered = 0
        return chunks

    def drop_buffers(self) -> None:
        self.send_buf.clear()
        self.send_buffered = 0
        self.recv_buf.clear()
        self.recv_buffered = 0

    # --- reporting --------------------------------------------------------------------

    def info(self) -> StreamInfo:
        state = self.phase.value
        if self.phase is Phase.OPEN:
            state += _half(self.local_fin, self.remote_fin)
        return StreamInfo(
            stream_id=self.id,
            label=self.label,
            state=state,
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
