"""The asyncio adapter: a :class:`Multiplexer` runs a :class:`~.connection.MuxConnection`
over a message transport (a websockets connection) with a reader pump and a writer pump.

The reader pump feeds binary messages to the connection and never waits on a stream:
data goes to the stream's buffer (bounded by the window it granted), text goes to the
owner's ``on_control`` callback, incoming OPENs go to ``on_open`` handler tasks
(:mod:`.incoming`). The writer pump sends what the connection schedules: control first,
then DATA round-robin. When either pump ends (transport closed or failed, protocol error,
``close()``), the other is cancelled, every stream is reset locally with the reason,
handler tasks are cancelled and awaited, and the transport is closed (1002 after a
protocol error). On a websockets connection :mod:`.fastpath` saves the task switches.

(Named for what it does, not "session": in this project a session is a user's workload.)
Over 400 lines because the pumps, the dispatch and the teardown share one state machine
that is easier to follow in one place than split across modules.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from agentkit.peerinput import PeerInputError, parse_object
from agentkit.peerlog import PeerLog
from agentkit.tasks import errors_of

from .connection import MuxConnection
from .errors import MuxClosed, OpenTimeout
from .events import DataReceived, OpenAccepted, OpenRequested, SendReady, StreamEnded
from .fastpath import FastPath, fast_path_for
from .incoming import Handlers, OpenHandler, OpenRequest
from .settings import MAX_QUEUED_CONTROL, MuxSettings, MuxStats, Role
from .state import StreamInfo, StreamState
from .stream import Stream
from .transport import Transport, close_reason

__all__ = ["ControlHandler", "Multiplexer"]

log = logging.getLogger("agentkit.mux")
peer_log = PeerLog(log)

ControlHandler = Callable[[dict[str, Any]], None]


class Multiplexer:
    """Streams over one transport. Start with :meth:`start` (or ``async with``), or
    ``await run()`` to start and wait for the end. The owner's hooks (``on_open``: a task
    per incoming OPEN; ``on_control``: each text message, synchronously) are described in
    the package docstring. ``fast_path=False`` keeps to the transport's ``send``/``recv``.
    """

    def __init__(
        self,
        transport: Transport,
        role: Role,
        *,
        on_open: OpenHandler | None = None,
        on_control: ControlHandler | None = None,
        settings: MuxSettings | None = None,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
        handler_grace: float = 1.0,
        name: str = "mux",
        fast_path: bool = True,
    ) -> None:
        self._transport = transport
        self._conn = MuxConnection(role, settings)
        self._handlers = Handlers(on_open, name) if on_open is not None else None
        self._on_control = on_control
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.handler_grace = handler_grace
        self.name = name
        self.fast_path: FastPath | None = fast_path_for(transport) if fast_path else None
        """The websockets fast path in use, or None (the public path)."""
        self._wake_writer = asyncio.Event()
        self._writer_idle = False  # the writer pump waits for output, no send in progress
        self._batching = False  # inside one transport read of the fast path's reader
        self._flushed = asyncio.Event()  # idle with nothing queued, or ended
        self._supervisor: asyncio.Task[None] | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._close_request: tuple[int, str] | None = None
        self._done = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""

    # --- state ------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        return self._conn.role

    @property
    def settings(self) -> MuxSettings:
        return self._conn.settings

    @property
    def stats(self) -> MuxStats:
        return self._conn.stats

    @property
    def connection(self) -> MuxConnection:
        """The sans-I/O core (for inspection and for :class:`Stream`; do not drive it)."""
        return self._conn

    @property
    def closed(self) -> bool:
        return self._done.is_set()

    @property
    def draining(self) -> bool:
        return self._conn.draining

    @property
    def peer_draining(self) -> bool:
        return self._conn.peer_draining

    @property
    def queued_control(self) -> int:
        """Control messages queued and not yet handed to the transport."""
        return self._conn.queued_control

    def streams(self) -> list[Stream]:
        """Streams currently in the table (opening, pending, open)."""
        return [st.user for st in self._conn.streams.values() if isinstance(st.user, Stream)]

    def stream_info(self) -> list[StreamInfo]:
        return self._conn.stream_info()

    def update_peer_settings(self, *, window: int | None = None) -> None:
        """Apply the window the peer advertised (hello) to streams opened from now on."""
        self._conn.update_peer_settings(window=window)

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the pumps (needs a running loop). Idempotent."""
        if self._supervisor is None and not self._done.is_set():
            self._supervisor = asyncio.create_task(
                self._supervise(), name=f"mux:{self.name}:supervisor"
            )

    async def __aenter__(self) -> Multiplexer:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def run(self) -> None:
        """Start if needed and wait until the multiplexer ended."""
        self.start()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def flush(self) -> None:
        """Wait until everything queued so far (control messages, DATA with credit) was
        handed to the transport, or the multiplexer ended. ``close()`` drops what is still
        queued, so last words (``drain``, final answers) go out with ``flush()`` first."""
        await self._flushed.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """End it: reset every stream locally, close the transport. Idempotent; every
        caller returns once it is fully torn down."""
        if self._close_request is None:
            self._close_request = (code, reason or "multiplexer closed")
        if self._supervisor is None:
            if not self._done.is_set():
                await self._teardown(code, self._close_request[1])
            return
        for task in self._pumps:
            task.cancel()
        if self._supervisor is not asyncio.current_task():
            await asyncio.shield(self._done.wait())

    # --- streams and control messages -------------------------------------------------

    async def open_stream(self, payload: dict[str, Any], *, timeout: float | None = None) -> Stream:
        """OPEN ``payload``; returns the stream after OPEN_OK. Raises
        :class:`~.errors.OpenFailed` (OPEN_FAIL, with the peer's reason),
        :class:`~.errors.OpenTimeout` (no answer within ``timeout``, default
        ``open_timeout``; the stream is reset), :class:`~.errors.MuxDraining` or
        :class:`~.errors.MuxClosed`."""
        if self._done.is_set() or self._close_request is not None:
            raise MuxClosed(self.close_reason or "multiplexer closed")
        st = self._conn.open_stream(payload)
        stream = Stream(self, st)
        self.after_operation()
        try:
            async with asyncio.timeout(self.open_timeout if timeout is None else timeout):
                await stream.wait_opened()
        except TimeoutError:
            stream.reset("open timed out")
            raise OpenTimeout(f"no answer to OPEN {st.id} in time") from None
        except BaseException:
            stream.reset("open abandoned")
            raise
        return stream

    def send_control(self, message: dict[str, Any]) -> None:
        """Queue one text control message (JSON), sent ahead of any queued DATA."""
        if "type" not in message:
            raise ValueError("a control message needs a 'type'")
        self._conn.send_text(json.dumps(message, separators=(",", ":")))
        self.after_operation()

    def reply_control(self, message: dict[str, Any]) -> bool:
        """Like :meth:`send_control`, for answers to the peer's own messages (acks, errors):
        dropped, returning False, while ``MAX_QUEUED_CONTROL`` messages wait to be sent, so
        a peer that floods us without reading cannot grow the queue without limit."""
        if self.queued_control >= MAX_QUEUED_CONTROL:
            return False
        self.send_control(message)
        return True

    def drain(self) -> None:
        """Stop opening and accepting streams here, and tell the peer (``{"type": "drain"}``)
        to open no more. Existing streams carry on."""
        if not self._conn.draining:
            self._conn.draining = True
            if not self._conn.closed:
                self.send_control({"type": "drain"})

    # --- driving the core (StreamHost) ------------------------------------------------

    def send_data(self, st: StreamState, data: bytes | bytearray | memoryview) -> None:
        """A stream's write: sent at once as one DATA frame when the writer pump is idle
        and the fast path and the core allow it (:meth:`.FastPath.send_now`: the common
        case of a request or an answer, no queue, event or wake-up on the way), otherwise
        buffered in the core and sent by the usual path."""
        fast = self.fast_path
        if fast is not None and self._writer_idle and fast.send_now(self._conn, st, data):
            return
        self._conn.send_data(st, data)
        self.after_operation()

    def after_operation(self) -> None:
        """Called after every operation on the core: deliver events, get output moving."""
        if self._conn.has_events:
            self._dispatch()
        if self._conn.has_output:
            self._kick_writer()

    def _kick_writer(self) -> None:
        """Get queued output moving: written at once when the writer pump is idle and the
        fast path can take it synchronously (saves a loop iteration per message, which is
        most of the tunnel's added latency), otherwise by waking the pump."""
        if self._writer_idle and self.fast_path is not None:
            if self.fast_path.write(self._conn):
                if self._conn.has_events:
                    self._dispatch()
                if not self._conn.has_output:
                    return
        self._flushed.clear()
        self._wake_writer.set()

    def _dispatch(self) -> None:
        for ev in self._conn.take_events():
            if type(ev) is DataReceived:  # the common case first, without isinstance
                user = ev.stream.user
                if user is not None:
                    user.notify_readable()
            elif isinstance(ev, SendReady):
                if ev.stream.user is not None:
                    ev.stream.user.notify_writable()
            elif isinstance(ev, StreamEnded):
                if ev.stream.user is not None:
                    ev.stream.user.notify_ended()
            elif isinstance(ev, OpenAccepted):
                if ev.stream.user is not None:
                    ev.stream.user.notify_opened()
            elif isinstance(ev, OpenRequested):
                self._incoming(ev.stream)
            # ProtocolError: the reader pump sees conn.failure and ends the multiplexer

    def _incoming(self, st: StreamState) -> None:
        request = OpenRequest(self, st)
        if self._handlers is None or self._close_request is not None:
            self._conn.refuse(st, "not accepting streams")
            return
        self._handlers.start(request)

    def _on_text(self, text: str) -> None:
        """One text message: parsed safely (any failure is answered with an ``error``
        naming the reason, never a dropped connection), then the owner's handler."""
        try:
            message = parse_object(text, what="control message")
            if not isinstance(message.get("type"), str):
                raise PeerInputError("control message has no string 'type'")
        except PeerInputError as exc:
            reason = json.dumps({"type": "error", "reason": f"invalid control message: {exc}"},
                                separators=(",", ":"))
            self._conn.reply_text(reason)
            peer_log.warning("invalid control message", "refused an invalid control "
                             "message: %s", exc, extra={"mux": self.name})
            return
        if message["type"] == "drain":
            self._conn.peer_draining = True
        if self._on_control is not None:
            try:
                self._on_control(message)
            except Exception as exc:
                peer_log.log("control handler failed", logging.ERROR,
                             "control handler failed for %r", message["type"][:40],
                             extra={"mux": self.name, "error": repr(exc)[:200]})

    def _on_message(self, message: bytes | bytearray | memoryview | str) -> bool:
        """One received message; False once the connection failed (the reader stops).
        Inside a read batch (:meth:`_begin_batch`) the events and output of a binary
        message wait for the batch's end (a text message is handled at once, after the
        events before it were delivered)."""
        conn = self._conn
        if isinstance(message, str):
            if conn.has_events:  # the streams hear of what came before it first
                self._dispatch()
            self._on_text(message)
        else:
            conn.receive(message)
            if not self._batching and conn.has_events:
                self._dispatch()
            if conn.failure is not None:
                return False
        if not self._batching and conn.has_output:
            self._kick_writer()
        return True

    def _begin_batch(self) -> None:
        """The fast path is about to parse one transport read (up to 256 KiB, several
        messages): their events are delivered and their output (WINDOW credit, replies)
        written once, at :meth:`_end_batch`, so a stream gets one ``readable`` (one
        vectored send to its socket) and the peer one TLS record of credit per read,
        not one per message."""
        self._batching = True

    def _end_batch(self) -> None:
        self._batching = False
        self.after_operation()

    # --- the pumps --------------------------------------------------------------------

    async def _read_loop(self) -> None:
        recv = self._transport.recv
        fast = self.fast_path
        uninstall = (
            fast.install_reader(self._on_message, self._begin_batch, self._end_batch)
            if fast is not None
            else None
        )
        try:
            while self._on_message(await recv()):
                pass
        finally:
            if uninstall is not None:
                uninstall()

    async def _write_loop(self) -> None:
        send = self._transport.send
        conn = self._conn
        wake = self._wake_writer
        while True:
            message = conn.next_frame()
            if message is None:
                wake.clear()
                self._writer_idle = True
                self._flushed.set()
                try:
                    await wake.wait()
                finally:
                    self._writer_idle = False
                continue
            await send(message)
            if conn.has_events:
                self._dispatch()

    async def _supervise(self) -> None:
        reader = asyncio.create_task(self._read_loop(), name=f"mux:{self.name}:reader")
        writer = asyncio.create_task(self._write_loop(), name=f"mux:{self.name}:writer")
        self._pumps = [reader, writer]
        cancelled = False
        try:
            done, pending = await asyncio.wait(self._pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            cancelled = True
            done, pending = set(), set(self._pumps)
            self._close_request = self._close_request or (1001, "multiplexer cancelled")
        for task in pending:
            task.cancel()
        try:
            await asyncio.gather(*pending, return_exceptions=True)
        except asyncio.CancelledError:  # cancelled again before teardown could start
            self._mark_closed(1001, "multiplexer cancelled")
            if self._handlers is not None:
                self._handlers.cancel()
            self._done.set()
            self._flushed.set()
            raise
        # every finished pump's error is read (both fail when the transport closes with
        # 1009 or 1007): one left unread is "Task exception was never retrieved" later
        errors = errors_of(done)
        await self._teardown(*self._end_reason(errors))
        if cancelled:  # torn down cleanly; the canceller still sees the cancellation
            raise asyncio.CancelledError

    def _end_reason(self, errors: list[BaseException]) -> tuple[int, str]:
        if self._conn.failure is not None:
            return self._conn.failure
        if self._close_request is not None:
            return self._close_request
        for exc in errors:
            return 1011, f"transport closed: {exc!r}" if str(exc) else "transport closed"
        return 1011, "transport closed"

    def _mark_closed(self, code: int, reason: str) -> None:
        """The part of teardown that needs no waiting: every stream (pending opens too)
        reset locally. Safe to call twice."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._conn.connection_lost(reason)
        self._dispatch()
        self._flushed.set()  # nothing more will be sent

    async def _teardown(self, code: int, reason: str) -> None:
        # Whatever interrupts it (the owner's own cancellation when its grace runs out),
        # it ends marked closed: close() and wait_closed() never hang on it.
        try:
            self._mark_closed(code, reason)
            if self._handlers is not None:  # their streams were reset: a moment to wind down
                await self._handlers.finish(self.handler_grace)
            try:
                async with asyncio.timeout(self.close_timeout):
                    await self._transport.close(code, close_reason(reason))
            except Exception as exc:  # the transport may be dead already
                log.debug("closing the transport: %r", exc)
        finally:
            if self._handlers is not None:
                self._handlers.cancel()
            self._done.set()
            self._flushed.set()
        log.debug("multiplexer %s closed: %s %s", self.name, code, reason)

