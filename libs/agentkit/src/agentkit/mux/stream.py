"""Stream objects with asyncio reader/writer semantics, and ``pipe`` to a TCP connection.

A :class:`Stream` is a thin view over a :class:`~.protocol.StreamState` owned by the
session's connection. Reading and writing never block the session: a reader waits only
for its own stream's data, a writer's ``drain()`` waits only for its own stream's send
buffer to fall under the write limit (which needs credit from the peer).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, cast

from .errors import StreamReset
from .protocol import MuxConnection, Phase, StreamInfo, StreamState

if TYPE_CHECKING:
    from .session import MuxSession

__all__ = ["Stream", "pipe"]


class _Signal:
    """``asyncio.Event`` semantics at a fraction of its size: a stream holds three of
    these, and an idle tunnel may hold thousands of streams (an Event carries a deque of
    ~600 bytes even with nobody waiting). Waiters get their own future, created on wait."""

    __slots__ = ("_is_set", "_waiters")

    def __init__(self) -> None:
        self._is_set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._is_set

    def set(self) -> None:
        if self._is_set:
            return
        self._is_set = True
        waiters, self._waiters = self._waiters, None
        for fut in waiters or ():
            if not fut.done():
                fut.set_result(None)

    def clear(self) -> None:
        self._is_set = False

    async def wait(self) -> None:
        if self._is_set:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if self._waiters is not None and fut in self._waiters:
                self._waiters.remove(fut)


class Stream:
    """One multiplexed byte stream.

    Reading: ``await read(n)`` (b"" at EOF, i.e. after the peer's FIN), ``readexactly(n)``,
    or the zero-copy pair ``read_chunk()`` + ``release(n)`` that returns credit only when
    the caller says the bytes were written out. ``read`` returns credit as it returns data.

    Writing: ``write(data)`` buffers (never blocks), ``await drain()`` waits while the send
    buffer is over the write limit; ``await send(data)`` does both. ``write_eof()`` sends FIN
    after the buffered data (half-close); ``reset(reason)`` aborts both ways (RST).

    Once the stream was reset (by either side, or because the session ended) every read,
    write and drain raises :class:`~.errors.StreamReset`. ``await wait_closed()`` returns
    when the stream is finished (FIN both ways) or reset.
    """

    __slots__ = (
        "_closed",
        "_conn",
        "_pipe",
        "_readable",
        "_session",
        "_state",
        "_writable",
    )

    def __init__(self, session: MuxSession, conn: MuxConnection, state: StreamState) -> None:
        self._session = session
        self._conn = conn
        self._state = state
        self._readable = _Signal()
        self._writable = _Signal()
        self._closed = _Signal()
        self._pipe: _Splice | None = None  # set while pipe() runs: it is told directly
        state.user = self

    # --- identity -----------------------------------------------------------------------

    @property
    def id(self) -> int:
        return self._state.id

    @property
    def request(self) -> dict[str, Any]:
        """The OPEN payload (``{forward}`` or ``{service, namespace, port}``)."""
        return self._state.request

    @property
    def label(self) -> str:
        return self._state.label

    @property
    def local(self) -> bool:
        """True when this side opened the stream."""
        return self._state.local

    @property
    def max_frame(self) -> int:
        return self._conn.settings.max_frame

    @property
    def closed(self) -> bool:
        return self._state.phase is Phase.CLOSED

    @property
    def reset_reason(self) -> str | None:
        """Why the stream was reset, or None while it is not."""
        return self._state.reason if self._state.reset else None

    def at_eof(self) -> bool:
        return self._state.at_eof

    def info(self) -> StreamInfo:
        return self._state.info()

    def __repr__(self) -> str:
        return f"<Stream {self.id} {self.label!r} {self._state.phase.value}>"

    # --- reading ------------------------------------------------------------------------

    async def _wait_readable(self) -> bool:
        """Wait for data or EOF; True when data is buffered, False at EOF."""
        st = self._state
        while True:
            if st.reset:
                raise st.error()
            if st.recv_buffered:
                return True
            if st.remote_fin:
                return False
            self._readable.clear()
            await self._readable.wait()

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (at least one), b"" at EOF; ``n < 0`` reads until EOF."""
        if n < 0:
            parts: list[bytes] = []
            while await self._wait_readable():
                parts.append(self._conn.read(self._state))
                self._session._after()
            return b"".join(parts)
        if n == 0 or not await self._wait_readable():
            return b""
        data = self._conn.read(self._state, n)
        self._session._after()
        return data

    async def readexactly(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or :class:`asyncio.IncompleteReadError` at EOF."""
        parts: list[bytes] = []
        need = n
        while need:
            if not await self._wait_readable():
                got = b"".join(parts)
                raise asyncio.IncompleteReadError(got, n)
            chunk = self._conn.read(self._state, need)
            self._session._after()
            parts.append(chunk)
            need -= len(chunk)
        return b"".join(parts)

    async def read_chunk(self) -> bytes | memoryview:
        """The next received chunk without copying it (b"" at EOF); credit for it is
        returned only by :meth:`release` (call it after the bytes were written out)."""
        if not await self._wait_readable():
            return b""
        chunk = self._conn.read_chunk(self._state)
        return b"" if chunk is None else chunk

    def release(self, n: int) -> None:
        """Return ``n`` bytes of credit for data taken with :meth:`read_chunk`."""
        self._conn.release(self._state, n)
        self._session._after()

    # --- writing ------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` for sending (bytes are kept without copying)."""
        self._conn.send_data(self._state, data)
        self._session._after()

    async def drain(self) -> None:
        """Wait until the send buffer is under the write limit (needs the peer's credit)."""
        st = self._state
        limit = self._conn.settings.write_limit
        while True:
            if st.reset:
                raise st.error()
            if st.send_buffered < limit:
                return
            self._writable.clear()
            await self._writable.wait()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        self.write(data)
        await self.drain()

    def write_eof(self) -> None:
        """Half-close: FIN after the buffered data. Idempotent."""
        self._conn.send_eof(self._state)
        self._session._after()

    def can_write_eof(self) -> bool:
        return True

    def reset(self, reason: str = "reset") -> None:
        """Abort the stream both ways (RST {reason}). No-op once closed."""
        self._conn.reset(self._state, reason)
        self._session._after()

    async def wait_closed(self) -> None:
        """Wait until the stream is finished (FIN both ways) or reset; never raises."""
        await self._closed.wait()

    # --- called by the session --------------------------------------------------------

    def _wake_readers(self) -> None:
        if self._pipe is not None:
            self._pipe.deliver()
        self._readable.set()

    def _wake_writers(self) -> None:
        if self._pipe is not None:
            self._pipe.check_reading()
        self._writable.set()

    def _ended(self) -> None:
        if self._pipe is not None:
            self._pipe.stream_ended()
        self._readable.set()
        self._writable.set()
        self._closed.set()


class _Splice(asyncio.Protocol):
    """``pipe``'s engine: the TCP connection's protocol while the pipe runs, so bytes move
    in the transport's and the session's callbacks, with no task switch on the way.

    TCP -> stream: ``data_received`` writes to the stream; reading pauses while the
    stream's send buffer is at its write limit (waiting for the peer's credit) and resumes
    on ``SendReady``, so the buffer holds at most the limit plus one socket read. EOF ->
    FIN. Stream -> TCP: received chunks go to the socket as they arrive; credit for a
    chunk goes back at once unless writing it took the socket's buffer over its high-water
    mark (``pause_writing``), then only at ``resume_writing`` (what ``await
    writer.drain()`` before ``release()`` meant). FIN -> ``write_eof()``.
    ``connection_lost`` is passed on to the StreamReader's protocol (``wait_closed()``).
    """

    def __init__(self, stream: Stream, transport: asyncio.Transport, original: Any) -> None:
        self.stream = stream
        self.state = stream._state
        self.conn = stream._conn
        self.transport = transport
        self.original = original
        self.limit = self.conn.settings.write_limit
        self.reading_paused = False
        self.writing_paused = bool(getattr(original, "_paused", False))  # FlowControlMixin
        self.held = 0  # credit of bytes written into a full socket buffer
        self.up_done = False  # EOF from TCP, FIN queued
        self.down_done = False  # FIN from the peer, write_eof() done
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def check_done(self) -> None:
        if self.up_done and self.down_done and self.stream.closed and not self.done.done():
            self.done.set_result(None)

    # TCP -> stream

    def data_received(self, data: bytes) -> None:
        try:
            self.stream.write(data)
        except Exception as exc:  # reset meanwhile
            self.fail(exc)
            return
        self.check_reading()

    def check_reading(self) -> None:
        over = self.state.send_buffered >= self.limit
        if over is not self.reading_paused and not self.up_done:
            if self.transport.is_closing():
                return
            self.reading_paused = over
            if over:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def eof_received(self) -> bool:
        self.up_done = True
        try:
            self.stream.write_eof()
        except Exception as exc:
            self.fail(exc)
        self.check_done()
        return True  # keep the connection open for writing: a half-close

    def connection_lost(self, exc: Exception | None) -> None:
        self.original.connection_lost(exc)
        if not (self.up_done and self.down_done):
            self.fail(exc or ConnectionResetError("local connection lost"))

    # stream -> TCP

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.held:
            self.conn.release(self.state, self.held)
            self.held = 0
        self.deliver()

    def deliver(self) -> None:
        """Move received chunks to the socket until it pushes back."""
        st = self.state
        if self.down_done or self.writing_paused or self.transport.is_closing():
            return
        if st.reset:
            self.fail(st.error())
            return
        write = self.transport.write
        released = 0
        moved = False
        while (chunk := self.conn.read_chunk(st)) is not None:
            moved = True
            write(chunk)
            if self.writing_paused:  # over the high-water mark: credit at resume_writing
                self.held = len(chunk)
                break
            released += len(chunk)
        if released:
            self.conn.release(st, released)
        if not self.writing_paused and st.at_eof:
            moved = True
            self.down_done = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
        if moved:
            self.stream._session._after()  # a WINDOW may be due
            self.check_done()

    def stream_ended(self) -> None:
        if self.state.reset:
            self.fail(self.state.error())
        else:
            self.check_done()


async def pipe(
    stream: Stream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
) -> None:
    """Splice ``stream`` and a TCP connection both ways until both directions ended.

    Half-closes travel both ways (EOF from TCP -> FIN; FIN -> ``write_eof()``). Credit
    for received data is returned only once the local socket took it (its write buffer is
    under the high-water mark), so a slow local reader stalls this stream alone. While it
    runs, the pipe is the connection's protocol (bytes move in callbacks, no task per
    direction); what ``reader`` had buffered goes first. The TCP connection is always
    closed on return.

    Raises :class:`~.errors.StreamReset` if the stream was reset (the TCP connection is
    aborted), or the ``OSError`` of the local connection (the stream is reset first). A
    reset is noticed at once, even while both directions wait on the TCP side.
    """
    transport = cast(asyncio.Transport, writer.transport)  # uvloop's is not a subclass
    splice = _Splice(stream, transport, transport.get_protocol())
    failure: BaseException | None = None
    try:
        error = reader.exception()
        if error is not None:
            raise error
        if transport.is_closing():
            raise ConnectionResetError("local connection lost")
        transport.set_protocol(splice)
        stream._pipe = splice
        # The StreamReader may have paused reading (a no-op if not). Resume before the
        # bytes it held are fed in, so that a pause they cause is the last word: resuming
        # after them would undo it and leave reading on with no bound.
        transport.resume_reading()
        buffered: bytearray = getattr(reader, "_buffer", bytearray())
        if buffered:  # read before the pipe started: it goes first
            data = bytes(buffered)
            buffered.clear()
            splice.data_received(data)
        if reader.at_eof():
            splice.eof_received()
        splice.check_reading()
        splice.deliver()
        await splice.done
    except BaseException as exc:
        failure = exc
    finally:
        stream._pipe = None
        if not splice.done.done():  # what the connection does from now on is not news
            splice.done.cancel()
        if isinstance(failure, asyncio.CancelledError):
            stream.reset("cancelled")
        elif failure is not None and not isinstance(failure, StreamReset):
            stream.reset(f"local connection error: {failure!r}")
        if failure is not None or stream.reset_reason is not None:
            transport.abort()
        else:
            transport.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if failure is not None:
        raise failure
    if stream.reset_reason is not None:
        raise stream._state.error()
