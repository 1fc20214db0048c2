"""The asyncio adapter: a :class:`MuxSession` runs a :class:`~.protocol.MuxConnection` over
a message transport (a websockets connection) with a reader pump and a writer pump.

The reader pump feeds binary messages to the connection and never waits on a stream:
data goes to the stream's buffer (bounded by the window it granted), text goes to the
owner's ``on_control`` callback, incoming OPENs go to ``on_open`` handler tasks. The
writer pump sends what the connection schedules: control first, then DATA round-robin.
When either pump ends (transport closed or failed, protocol error, ``close()``), the other
is cancelled, every stream is reset locally with the reason, handler tasks are cancelled
and awaited, and the transport is closed (1002 after a protocol error).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from .errors import OpenFailed, OpenTimeout, SessionClosed, StreamError
from .protocol import (
    MAX_QUEUED_CONTROL,
    CloseCause,
    DataReceived,
    MuxConnection,
    MuxSettings,
    MuxStats,
    OpenAccepted,
    OpenRequested,
    Phase,
    Role,
    SendReady,
    StreamEnded,
    StreamInfo,
    StreamState,
)
from .stream import Stream

__all__ = ["ControlHandler", "MuxSession", "OpenHandler", "OpenRequest", "Transport"]

log = logging.getLogger("agentkit.mux")


class Transport(Protocol):
    """What the session needs of a message transport; websockets' asyncio
    ``ClientConnection`` and ``ServerConnection`` fit as they are."""

    async def send(self, message: bytes | str, /) -> None: ...

    async def recv(self) -> bytes | str: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


class OpenRequest:
    """An OPEN from the peer, handed to the owner's ``on_open`` handler, which decides:
    ``accept()`` (sends OPEN_OK, returns the :class:`Stream`) or ``refuse(reason)``
    (sends OPEN_FAIL). A handler that returns without deciding refuses it."""

    __slots__ = ("_session", "_state", "_stream")

    def __init__(self, session: MuxSession, state: StreamState) -> None:
        self._session = session
        self._state = state
        self._stream: Stream | None = None

    @property
    def stream_id(self) -> int:
        return self._state.id

    @property
    def payload(self) -> dict[str, Any]:
        return self._state.request

    @property
    def label(self) -> str:
        return self._state.label

    @property
    def decided(self) -> bool:
        return self._state.phase is not Phase.PENDING

    def accept(self) -> Stream:
        """OPEN_OK; raises :class:`~.errors.StreamReset` if the peer gave up meanwhile."""
        self._session._conn.accept(self._state)
        self._session._after()
        assert self._stream is not None
        return self._stream

    def refuse(self, reason: str) -> None:
        """OPEN_FAIL {reason}; no-op if the stream is already gone."""
        self._session._conn.refuse(self._state, reason)
        self._session._after()

    def __repr__(self) -> str:
        return f"<OpenRequest {self.stream_id} {self.payload!r}>"


OpenHandler = Callable[[OpenRequest], Awaitable[None]]
ControlHandler = Callable[[dict[str, Any]], None]


class MuxSession:
    """Streams over one transport. Start with :meth:`start` (or ``async with``), or
    ``await run()`` to start and wait for the end.

    ``on_open(request)``: coroutine run in its own task for each incoming OPEN; it accepts
    or refuses and may keep serving the stream (e.g. ``pipe``) for as long as it likes. When
    the session ends, its streams are reset first; handlers then get ``handler_grace``
    seconds to return before they are cancelled. Without one, incoming OPENs are refused.

    ``on_control(message)``: called synchronously from the reader pump with each text
    message decoded as a JSON object (``drain`` included, after the session noted it). It
    must not block; start a task for slow work. Text that is not a JSON object with a string
    ``type`` gets ``{"type": "error", "reason": ...}`` back and is not delivered.
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
    ) -> None:
        self._transport = transport
        self._conn = MuxConnection(role, settings)
        self._on_open = on_open
        self._on_control = on_control
        self.open_timeout = open_timeout
        self.close_timeout = close_timeout
        self.handler_grace = handler_grace
        self.name = name
        self._wake_writer = asyncio.Event()
        self._writer_idle = False  # the writer pump waits for output, no send in progress
        self._direct = _DirectWriter.wrap(transport)
        self._opening: dict[int, asyncio.Future[None]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
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
        """The sans-I/O core (for inspection; do not drive it directly)."""
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

    def streams(self) -> list[Stream]:
        """Streams currently in the table (opening, pending, open)."""
        out: list[Stream] = []
        for st in self._conn.streams.values():
            if isinstance(st.user, Stream):
                out.append(st.user)
        return out

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

    async def __aenter__(self) -> MuxSession:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def run(self) -> None:
        """Start if needed and wait until the session ended."""
        self.start()
        await self.wait_closed()

    async def wait_closed(self) -> None:
        await self._done.wait()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """End the session: reset every stream locally, close the transport. Idempotent;
        every caller returns once the session is fully torn down."""
        if self._close_request is None:
            self._close_request = (code, reason or "session closed")
        if self._supervisor is None:
            if not self._done.is_set():
                await self._teardown(code, self._close_request[1])
            return
        for task in self._pumps:
            task.cancel()
        if self._supervisor is not asyncio.current_task():
            await asyncio.shield(self._done.wait())

    # --- streams ----------------------------------------------------------------------

    async def open_stream(self, payload: dict[str, Any], *, timeout: float | None = None) -> Stream:
        """OPEN ``payload``; returns the stream after OPEN_OK. Raises
        :class:`~.errors.OpenFailed` (OPEN_FAIL, with the peer's reason),
        :class:`~.errors.OpenTimeout` (no answer within ``timeout``, default
        ``open_timeout``; the stream is reset), :class:`~.errors.SessionDraining` or
        :class:`~.errors.SessionClosed`."""
        if self._done.is_set() or self._close_request is not None:
            raise SessionClosed(self.close_reason or "session closed")
        st = self._conn.open_stream(payload)
        stream = Stream(self, self._conn, st)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[st.id] = fut
        self._after()
        try:
            async with asyncio.timeout(self.open_timeout if timeout is None else timeout):
                await fut
        except TimeoutError:
            self._conn.reset(st, "open timed out")
            self._after()
            raise OpenTimeout(f"no answer to OPEN {st.id} in time") from None
        except BaseException:
            self._conn.reset(st, "open abandoned")
            self._after()
            raise
        finally:
            self._opening.pop(st.id, None)
        return stream

    def send_control(self, message: dict[str, Any]) -> None:
        """Queue one text control message (JSON), sent ahead of any queued DATA."""
        if "type" not in message:
            raise ValueError("a control message needs a 'type'")
        self._conn.send_text(json.dumps(message, separators=(",", ":")))
        self._after()

    @property
    def queued_control(self) -> int:
        """Control messages queued and not yet handed to the transport."""
        return len(self._conn._control)

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

    # --- the pumps --------------------------------------------------------------------

    def _after(self) -> None:
        """Called after every operation on the core: deliver events, wake the writer."""
        if self._conn._events:
            self._dispatch()
        if self._conn.has_output:
            self._kick_writer()

    def _kick_writer(self) -> None:
        """Get queued output moving: written at once when the writer pump is idle and the
        transport can take it synchronously (saves a loop iteration per message, which is
        most of the tunnel's added latency), otherwise by waking the pump."""
        if self._writer_idle and self._direct is not None:
            if self._direct.flush(self._conn):
                if self._conn._events:
                    self._dispatch()
                if not self._conn.has_output:
                    return
        self._wake_writer.set()

    def _dispatch(self) -> None:
        for ev in self._conn.take_events():
            if isinstance(ev, DataReceived):
                user = ev.stream.user
                if user is not None:
                    user._wake_readers()
            elif isinstance(ev, SendReady):
                user = ev.stream.user
                if user is not None:
                    user._wake_writers()
            elif isinstance(ev, StreamEnded):
                self._ended(ev)
            elif isinstance(ev, OpenAccepted):
                fut = self._opening.get(ev.stream.id)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif isinstance(ev, OpenRequested):
                self._incoming(ev.stream)
            # ProtocolError: the reader pump sees conn.failure and ends the session

    def _ended(self, ev: StreamEnded) -> None:
        st = ev.stream
        user = st.user
        if user is not None:
            user._ended()
        fut = self._opening.get(st.id)
        if fut is not None and not fut.done():
            if ev.cause is CloseCause.CONNECTION:
                fut.set_exception(SessionClosed(ev.reason))
            else:
                fut.set_exception(OpenFailed(ev.reason))

    def _incoming(self, st: StreamState) -> None:
        request = OpenRequest(self, st)
        request._stream = Stream(self, self._conn, st)
        if self._on_open is None or self._close_request is not None:
            self._conn.refuse(st, "not accepting streams")
            return
        task = asyncio.create_task(self._handle(request), name=f"mux:{self.name}:open:{st.id}")
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)

    async def _handle(self, request: OpenRequest) -> None:
        assert self._on_open is not None
        try:
            await self._on_open(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("open handler failed for stream %s", request.stream_id)
            if not request.decided:
                request.refuse(f"internal error: {type(exc).__name__}")
            else:
                with contextlib.suppress(StreamError):
                    self._conn.reset(request._state, "handler failed")
                    self._after()
        finally:
            if not request.decided and not self._conn.closed:
                request.refuse("not accepted")

    def _on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            if len(self._conn._control) < MAX_QUEUED_CONTROL:  # a flood is not answered
                self._conn.send_text('{"type":"error","reason":"invalid control message"}')
            return
        if message["type"] == "drain":
            self._conn.peer_draining = True
        if self._on_control is not None:
            try:
                self._on_control(message)
            except Exception:
                log.exception("control handler failed for %r", message.get("type"))

    def _on_message(self, message: bytes | bytearray | memoryview | str) -> bool:
        """One received message; False once the connection failed (the reader stops)."""
        conn = self._conn
        if isinstance(message, str):
            self._on_text(message)
        else:
            conn.receive(message)
            if conn._events:
                self._dispatch()
            if conn.failure is not None:
                return False
        if conn.has_output:
            self._kick_writer()
        return True

    async def _read_loop(self) -> None:
        recv = self._transport.recv
        uninstall = _DirectReader.install(self._transport, self._on_message)
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
                try:
                    await wake.wait()
                finally:
                    self._writer_idle = False
                continue
            await send(message)
            if conn._events:
                self._dispatch()

    async def _supervise(self) -> None:
        reader = asyncio.create_task(self._read_loop(), name=f"mux:{self.name}:reader")
        writer = asyncio.create_task(self._write_loop(), name=f"mux:{self.name}:writer")
        self._pumps = [reader, writer]
        code, reason = 1000, ""
        cancelled = False
        try:
            done, pending = await asyncio.wait(self._pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            cancelled = True
            done, pending = set(), set(self._pumps)
            self._close_request = self._close_request or (1001, "session cancelled")
        for task in pending:
            task.cancel()
        try:
            await asyncio.gather(*pending, return_exceptions=True)
        except asyncio.CancelledError:  # cancelled again before teardown could start
            self._mark_closed(1001, "session cancelled")
            for task in self._handlers:
                task.cancel()
            self._done.set()
            raise
        failure = self._conn.failure
        if failure is not None:
            code, reason = failure
        elif self._close_request is not None:
            code, reason = self._close_request
        else:
            code, reason = 1011, "transport closed"
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    reason = f"transport closed: {exc!r}" if str(exc) else "transport closed"
                    break
        await self._teardown(code, reason)
        if cancelled:  # torn down cleanly; the canceller still sees the cancellation
            raise asyncio.CancelledError

    def _mark_closed(self, code: int, reason: str) -> None:
        """The part of teardown that needs no waiting: every stream reset locally, every
        pending open failed. Safe to call twice."""
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._conn.connection_lost(reason)
        self._dispatch()
        for fut in self._opening.values():
            if not fut.done():
                fut.set_exception(SessionClosed(reason))

    async def _teardown(self, code: int, reason: str) -> None:
        # Whatever interrupts it (the owner's own cancellation when its grace runs out),
        # the session ends marked closed: close() and wait_closed() never hang on it.
        try:
            self._mark_closed(code, reason)
            handlers = [t for t in self._handlers if t is not asyncio.current_task()]
            if handlers:  # they saw their streams reset: give them a moment to wind down
                _, pending = await asyncio.wait(handlers, timeout=self.handler_grace)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)
            try:
                async with asyncio.timeout(self.close_timeout):
                    await self._transport.close(code, _truncate(reason, 120))
            except Exception as exc:  # the transport may be dead already
                log.debug("closing the transport: %r", exc)
        finally:
            for task in self._handlers:
                if task is not asyncio.current_task():
                    task.cancel()
            self._done.set()
        log.debug("mux session %s closed: %s %s", self.name, code, reason)


class _DirectWriter:
    """Synchronous sends on a websockets asyncio connection, for when nothing else is
    being sent: what ``send()`` does before it awaits ``drain()``, without the await.
    Used only while the transport is open, not paused (its write buffer is under the
    high-water mark) and has no fragmented message in progress; otherwise the writer pump
    sends with ``await send()`` and so honours the transport's backpressure."""

    __slots__ = ("_ws",)

    def __init__(self, ws: Any) -> None:
        self._ws = ws

    @classmethod
    def wrap(cls, transport: object) -> _DirectWriter | None:
        """A direct writer for a websockets asyncio connection (websockets >= 14, as
        locked), else None: other transports always go through ``await send()``."""
        try:
            from websockets.asyncio.connection import Connection
        except ImportError:  # websockets is the services' dependency, not agentkit's
            return None
        needed = ("protocol", "paused", "send_in_progress", "send_data", "transport")
        if isinstance(transport, Connection) and all(hasattr(transport, a) for a in needed):
            return cls(transport)
        return None

    def flush(self, conn: MuxConnection) -> bool:
        """Send what ``conn`` has queued while the transport takes it without waiting;
        False if it could not be used at all."""
        from websockets.protocol import State

        ws = self._ws
        protocol = ws.protocol
        if (
            protocol.state is not State.OPEN
            or ws.paused
            or ws.send_in_progress is not None
            or ws.transport.is_closing()
        ):
            return False
        try:
            while not ws.paused:
                message = conn.next_frame()
                if message is None:
                    break
                if isinstance(message, str):
                    protocol.send_text(message.encode())
                else:
                    protocol.send_binary(message)
                ws.send_data()
        except Exception as exc:  # the connection is failing: the pumps will see it
            log.debug("direct send failed: %r", exc)
            return False
        return True


class _DirectReader:
    """Messages handled as websockets parses them, in the connection's ``data_received``,
    instead of queued for ``recv()`` and picked up by the reader pump a loop iteration
    later (a task switch per message, on each side of each direction: most of what the
    tunnel added to a round trip). Only complete unfragmented messages with nothing queued
    ahead of them go this way; everything else (fragments, the messages after them, text
    that is not UTF-8) takes websockets' own path to ``recv()``, in order. Nothing waits
    here: the session never waits on a stream, and its buffers are bounded by the windows.
    A protocol failure cancels the reader pump, which ends the session as ``recv()`` would.
    """

    @staticmethod
    def install(
        transport: object, handle: Callable[[bytes | str], bool]
    ) -> Callable[[], None] | None:
        """Hook ``handle`` into a websockets asyncio connection (returns the undo), or
        None for any other transport, which then goes through ``recv()`` alone."""
        if _DirectWriter.wrap(transport) is None:
            return None
        from websockets.frames import Opcode

        ws: Any = transport
        original = getattr(ws, "process_event", None)
        queue = getattr(getattr(ws, "recv_messages", None), "frames", None)
        if original is None or queue is None or "process_event" in vars(ws):
            return None
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
            message: bytes | str
            if opcode is text:
                try:
                    message = bytes(data).decode()
                except UnicodeDecodeError:  # recv() raises it, as it would have
                    original(event)
                    return
            else:
                message = data if type(data) is bytes else bytes(data)
            try:
                ok = handle(message)
            except Exception:  # not expected: the session's handlers catch their own
                log.exception("handling a message failed")
                ok = False
            if not ok:
                reader.cancel()

        ws.process_event = process_event

        def uninstall() -> None:
            vars(ws).pop("process_event", None)

        return uninstall


def _truncate(text: str, size: int) -> str:
    """At most ``size`` UTF-8 bytes (a WebSocket close reason is limited to 123)."""
    return text.encode()[:size].decode(errors="ignore")
