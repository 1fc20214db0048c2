"""Who this end is, what it agreed with the peer, and what it counts: the plain data every
other mux module reads (kept apart so the core, the streams and the service share it
without importing each other)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from .frames import DEFAULT_MAX_FRAME, DEFAULT_WINDOW, MAX_WINDOW

__all__ = ["MAX_QUEUED_CONTROL", "MuxSettings", "MuxStats", "Role"]

MAX_QUEUED_CONTROL = 4096
"""Queued control messages past which answers to the peer (RSTs for unknown streams,
replies to its messages) are dropped instead of queued."""


class Role(Enum):
    """Which end of the tunnel: decides the parity of the ids this side allocates."""

    CONTROL_PLANE = "controlplane"  # opens odd ids
    AGENT = "agent"  # opens even ids

    @property
    def first_id(self) -> int:
        return 1 if self is Role.CONTROL_PLANE else 2


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
