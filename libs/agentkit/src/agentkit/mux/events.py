"""What the sans-I/O core tells its adapter: one small immutable event per thing that
happened, taken in order with :meth:`~.connection.MuxConnection.take_events`. The adapter
(:class:`~.multiplexer.Multiplexer`) turns them into woken readers, writers and tasks."""

from __future__ import annotations

from dataclasses import dataclass

from .state import CloseCause, StreamState

__all__ = [
    "DataReceived",
    "Event",
    "OpenAccepted",
    "OpenRequested",
    "ProtocolError",
    "SendReady",
    "StreamEnded",
]


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
