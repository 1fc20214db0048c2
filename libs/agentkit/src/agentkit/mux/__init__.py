"""The tunnel's stream multiplexer, one library for both ends (PROTOCOL.md section 2).

Many byte streams share one WebSocket. Each stream has its own credit window, so a
stream whose consumer stops reading stalls itself and nothing else: the reader pump never
waits on a stream, credit goes back (WINDOW) only after the bytes were consumed, and the
writer serves streams round-robin with control frames first.

Layers, as in python-websockets, each module one noun (none imports a later one):

* :mod:`.frames`: the codec (pure functions). ``decode_frame`` raises ``HeaderError``
  (close the connection with 1002) or ``StreamFrameError`` (reset that stream).
* :mod:`.settings` (``Role``, ``MuxSettings``, ``MuxStats``), :mod:`.state` (one
  stream's state and buffers), :mod:`.ids` (id allocation: control plane odd, agent
  even, never reused), :mod:`.events` (what the core reports).
* :mod:`.table` + :mod:`.connection`: :class:`MuxConnection`, the sans-I/O core (no
  I/O, injectable clocks): stream table, credit, half-close, reset, scheduling,
  counters. Feed bytes in, take events and frames out.
* :mod:`.stream` (:class:`Stream`, which knows its multiplexer only as a ``StreamHost``),
  :mod:`.incoming` (``OpenRequest``, the handler tasks), :mod:`.multiplexer`
  (:class:`Multiplexer`, the asyncio adapter with its two pumps), :mod:`.splice`
  (:func:`pipe` to a TCP connection), :mod:`.fastpath` (the only code that touches
  websockets' internals, version-pinned), :mod:`.transport` / :mod:`.memory` (the
  transport interface; an in-process pair for tests).

Using it (either end; ``ws`` is a websockets ``ClientConnection``/``ServerConnection``
opened with ``compression=None`` and subprotocol ``pipeops.tunnel.v1``)::

    async def on_open(request: OpenRequest) -> None:      # one task per incoming OPEN
        if not allowed(request.payload):
            request.refuse("target not allowed")           # OPEN_FAIL {reason}
            return
        reader, writer = await asyncio.open_connection(host, port)
        stream = request.accept()                          # OPEN_OK
        await pipe(stream, reader, writer)                 # splice until both sides end

    mux = Multiplexer(ws, Role.AGENT, on_open=on_open, on_control=handle_message,
                    settings=MuxSettings(window=256 * 1024, max_frame=64 * 1024))
    mux.start()                           # or: async with mux: ... / await mux.run()
    mux.send_control({"type": "status", ...})              # text message, ahead of DATA
    stream = await mux.open_stream({"forward": "kubernetes-api"})  # OPEN -> OPEN_OK
    await stream.send(b"...")   # write() + drain();  data = await stream.read(65536)
    stream.write_eof()          # FIN (half-close);   stream.reset("why") -> RST
    await mux.flush()           # until what was queued was handed to the transport
    await mux.close()           # idempotent; every stream is reset locally

Owner hooks:

* ``on_open(request)``: a coroutine run in a task per incoming OPEN. It calls
  ``request.accept() -> Stream`` or ``request.refuse(reason)``; returning undecided
  refuses, raising refuses (or resets an accepted stream). It may go on serving the
  stream; when the multiplexer ends the stream is reset, and the handler is cancelled if it
  has not returned within ``handler_grace`` seconds. No ``on_open``: all OPENs refused.
* ``on_control(message: dict)``: called synchronously, from the reader pump, for each text
  message that is a JSON object with a string ``type``; it must not block. Other text gets
  ``{"type": "error", "reason": ...}``. Replying to unknown types is the owner's job (it
  alone knows them). ``{"type": "drain"}`` from the peer also sets ``peer_draining``.
* ``mux.drain()``: send ``drain``, refuse incoming OPENs, stop ``open_stream``.

Errors (:mod:`.errors`): ``StreamReset`` (reads, writes and drains of a reset stream; also
a ``ConnectionResetError``), ``OpenFailed(reason)`` and its kinds ``OpenTimeout``,
``MuxDraining``, ``MuxClosed``; ``StreamError`` for misuse (write after EOF).

Flow control: each side grants ``settings.window`` bytes per stream (default 256 KiB);
``settings.peer_window`` is the peer's (from its hello; ``update_peer_settings`` for
streams opened later). The receive buffer of a stream never exceeds its window (a peer
that sends past its credit gets RST). ``read()`` returns credit as it hands data out;
``read_chunk()`` + ``release(n)`` return it only when the caller says (``pipe`` does so
once its socket took the bytes). A stream's send buffer holds up to ``settings.write_limit``
before ``drain()`` waits; waiting for credit blocks only that stream's producer.

Hot path (no task switch per message, :mod:`.fastpath`): on a websockets connection the
multiplexer handles each complete message as websockets parses it (in ``data_received``;
fragmented messages and what follows them go through ``recv()``, in order) and writes
frames synchronously while its writer pump is idle and the connection is not paused
(otherwise the pump ``await``s ``send()``); ``pipe`` is the TCP connection's protocol
while it runs, so bytes move between socket and stream in callbacks. Every backpressure
rule is kept.

``pipe(stream, reader, writer)`` returns credit only once the socket took the bytes (its
write buffer under the high-water mark, what ``writer.drain()`` waits for); it ends as
soon as the stream is reset (even while both directions wait on an idle socket), and
when its task is cancelled it resets the stream (RST "cancelled") before re-raising.

Counters: ``mux.stats`` (:class:`MuxStats`: streams opened/closed/active, open_failed,
bytes in/out, window-blocked seconds, resets sent/received, late frames, protocol errors)
and ``mux.stream_info()`` (:class:`StreamInfo` per stream: id, label, state, bytes,
credit, buffered bytes and their peak, opened_at), plain attributes for the service to
export.

The WebSocket under it (websockets' asyncio ``connect``/``serve``): ``compression=None``,
``subprotocols=[SUBPROTOCOL]``, ``max_size`` at least ``max_frame + 8`` (one frame is one
message; 1 MiB leaves room for large control messages), ``max_queue`` bounded (the default
16 is fine: the reader pump never waits on a stream), ``write_limit`` 32 KiB to 256 KiB.

Keepalive is the transport's job, not the mux's: open the WebSocket with
``ping_interval``/``ping_timeout`` (PROTOCOL.md: 15 s / 20 s); a dead connection makes
``recv()`` fail, which ends the multiplexer and resets every stream locally.
"""

from __future__ import annotations

from .connection import MuxConnection
from .errors import (
    MuxClosed,
    MuxDraining,
    MuxError,
    OpenFailed,
    OpenTimeout,
    StreamError,
    StreamReset,
)
from .frames import (
    CLOSE_PROTOCOL_ERROR,
    DEFAULT_MAX_FRAME,
    DEFAULT_WINDOW,
    Frame,
    FrameError,
    FrameType,
    HeaderError,
    StreamFrameError,
    decode_frame,
)
from .incoming import OpenHandler, OpenRequest
from .multiplexer import ControlHandler, Multiplexer
from .settings import MuxSettings, MuxStats, Role
from .splice import pipe
from .state import StreamInfo
from .stream import Stream
from .transport import Transport

SUBPROTOCOL = "pipeops.tunnel.v1"
"""The WebSocket subprotocol of the tunnel."""

__all__ = [
    "CLOSE_PROTOCOL_ERROR",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_WINDOW",
    "SUBPROTOCOL",
    "ControlHandler",
    "Frame",
    "FrameError",
    "FrameType",
    "HeaderError",
    "Multiplexer",
    "MuxClosed",
    "MuxConnection",
    "MuxDraining",
    "MuxError",
    "MuxSettings",
    "MuxStats",
    "OpenFailed",
    "OpenHandler",
    "OpenRequest",
    "OpenTimeout",
    "Role",
    "Stream",
    "StreamError",
    "StreamFrameError",
    "StreamInfo",
    "StreamReset",
    "Transport",
    "decode_frame",
    "pipe",
]
