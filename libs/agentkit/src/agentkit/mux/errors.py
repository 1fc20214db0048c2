"""Exceptions raised by the mux to its users (both the sans-I/O core and the adapters)."""

from __future__ import annotations

__all__ = [
    "MuxClosed",
    "MuxDraining",
    "MuxError",
    "OpenFailed",
    "OpenTimeout",
    "StreamError",
    "StreamReset",
]


class MuxError(Exception):
    """Base of every error the mux raises on purpose."""


class StreamError(MuxError):
    """A stream operation that is not allowed in the stream's state (write after EOF)."""


class StreamReset(StreamError, ConnectionResetError):
    """The stream was aborted: by the peer (RST), locally, or because the multiplexer ended.

    ``by_peer`` is True when the peer sent RST; ``reason`` is the human-readable cause.
    """

    def __init__(self, reason: str, *, by_peer: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.by_peer = by_peer


class OpenFailed(MuxError):
    """``open_stream`` did not produce a stream: OPEN_FAIL from the peer, or no connection."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OpenTimeout(OpenFailed, TimeoutError):
    """The peer answered neither OPEN_OK nor OPEN_FAIL in time (the stream is reset)."""


class MuxDraining(OpenFailed):
    """This side or the peer asked to drain: no new streams on this connection."""


class MuxClosed(OpenFailed):
    """The multiplexer is closed (or closing): no new streams."""
