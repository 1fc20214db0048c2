"""Stream objects with asyncio reader/writer semantics, and ``pipe`` to a TCP connection.

A :class:`Stream` is a thin view over a :class:`~.protocol.StreamState` owned by the
session's connection. Reading and writing never block the session: a reader waits only
for its own stream's data, a writer's ``drain()`` waits only for its own stream's send
buffer to fall under the write limit (which needs credit from the peer).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

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
        "_end_futures",
        "_readable",
        "_session",
        "_sink",
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
        self._end_futures: list[asyncio.Future[None]] | None = None
        # pipe's shortcut: takes arrived data at once; True when no reader need wake
        self._sink: Callable[[], bool] | None = None
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
        if self._sink is not None and self._sink():
            return
        self._readable.set()

    def _wake_writers(self) -> None:
        self._writable.set()

    def _ended(self) -> None:
        self._readable.set()
        self._writable.set()
        self._closed.set()
        futures, self._end_futures = self._end_futures, None
        for fut in futures or ():
            if not fut.done():
                fut.set_result(None)

    def _end_future(self) -> asyncio.Future[None]:
        """A future done when the stream closes (cheaper to hold than a task per pipe)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.closed:
            fut.set_result(None)
        else:
            if self._end_futures is None:
                self._end_futures = []
            self._end_futures.append(fut)
        return fut


async def pipe(
    stream: Stream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    read_size: int | None = None,
) -> None:
    """Splice ``stream`` and a TCP connection both ways until both directions ended.

    Half-closes travel both ways (EOF from TCP -> FIN; FIN -> ``writer.write_eof()``).
    Credit for received data is returned only after ``writer.drain()``, so a slow local
    reader stalls this stream alone. The TCP connection is always closed on return.

    Raises :class:`~.errors.StreamReset` if the stream was reset (the TCP connection is
    aborted), or the ``OSError`` of the local connection (the stream is reset first). A
    reset is noticed at once, even while both directions wait on the TCP side.
    """
    size = read_size or stream.max_frame

    async def upstream() -> None:  # TCP -> stream
        while True:
            data = await reader.read(size)
            if not data:
                stream.write_eof()
                return
            stream.write(data)
            await stream.drain()

    transport = writer.transport
    state = stream._state
    conn = stream._conn
    parked = False  # downstream waits in read_chunk() with nothing buffered

    def write_through() -> bool:
        """Data just arrived (called by the session's reader pump): while downstream is
        parked and the socket's write buffer is empty, hand chunks straight to the socket,
        saving a task switch per chunk. A chunk (<= max frame <= the buffer's high-water
        mark) written to an empty buffer leaves drain() nothing to wait for, so credit goes
        back at once, as downstream would after its drain(). True: nothing left to do."""
        if not parked or transport.is_closing():
            return False
        moved = 0
        while state.recv_buf and not transport.get_write_buffer_size():
            chunk = conn.read_chunk(state)
            if chunk is None:
                break
            writer.write(chunk)
            conn.release(state, len(chunk))
            moved += 1
        if moved:
            stream._session._after()  # a WINDOW may be due
        return not state.recv_buf and not state.remote_fin

    async def downstream() -> None:  # stream -> TCP
        nonlocal parked
        while True:
            parked = True
            try:
                chunk = await stream.read_chunk()
            finally:
                parked = False
            if not chunk:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()  # credit goes back only once the local socket took it
            stream.release(len(chunk))

    try:
        if stream.max_frame <= transport.get_write_buffer_limits()[1]:
            stream._sink = write_through
    except (AttributeError, NotImplementedError):  # a transport without buffer limits
        pass
    up = asyncio.create_task(upstream(), name=f"mux:pipe-up:{stream.id}")
    down = asyncio.create_task(downstream(), name=f"mux:pipe-down:{stream.id}")
    ended = stream._end_future()
    pending: set[asyncio.Future[None]] = {up, down, ended}
    failure: BaseException | None = None
    try:
        while failure is None and (up in pending or down in pending):
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and failure is None:
                    failure = exc
            if ended in done and stream.reset_reason is not None and failure is None:
                failure = stream._state.error()
        if failure is None:
            await ended  # both directions done: FIN both ways closes the stream
    except BaseException as exc:  # cancelled: the peer must hear of it
        failure = failure or exc
        raise
    finally:
        stream._sink = None
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if isinstance(failure, asyncio.CancelledError):
            stream.reset("cancelled")
        elif failure is not None and not isinstance(failure, StreamReset):
            stream.reset(f"local connection error: {failure!r}")
        if failure is not None or stream.reset_reason is not None:
            writer.transport.abort()
        else:
            writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if failure is not None:
        raise failure
    if stream.reset_reason is not None:
        raise stream._state.error()
