"""A :class:`Stream`: one multiplexed byte stream with asyncio reader/writer semantics.

A stream is a thin view over a :class:`~.state.StreamState` owned by the sans-I/O core.
Reading and writing never block the multiplexer: a reader waits only for its own stream's
data, a writer's ``drain()`` waits only for its own stream's send buffer to fall under the
write limit (which needs credit from the peer). A stream knows its multiplexer only as a
:class:`StreamHost` (the core, and a call after each operation), so this module imports no
adapter; a :class:`StreamListener` (``pipe``'s splice) may follow it by callbacks.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from .connection import MuxConnection
from .errors import MuxClosed, OpenFailed, StreamReset
from .state import CloseCause, Phase, StreamInfo, StreamState

__all__ = ["Stream", "StreamHost", "StreamListener"]


class StreamHost(Protocol):
    """What a stream needs of its multiplexer (:class:`~.multiplexer.Multiplexer`)."""

    @property
    def connection(self) -> MuxConnection:
        """The sans-I/O core the stream's operations go to."""
        ...

    def after_operation(self) -> None:
        """Called after each operation on the core: deliver the events it caused and get
        the output it queued moving."""
        ...

    def send_data(self, state: StreamState, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` for sending, or send it at once (the core's ``send_data``
        followed by :meth:`after_operation`, or the same effect sooner)."""
        ...


class StreamListener(Protocol):
    """Told synchronously, from the multiplexer's callbacks, what happened to a stream."""

    def readable(self) -> None:
        """Data or EOF arrived."""
        ...

    def writable(self) -> None:
        """The send buffer fell under the write limit."""
        ...

    def ended(self) -> None:
        """The stream closed (finished or reset)."""
        ...


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

    Once the stream was reset (by either side, or because the multiplexer ended) every read,
    write and drain raises :class:`~.errors.StreamReset`. ``await wait_closed()`` returns
    when the stream is finished (FIN both ways) or reset.
    """

    __slots__ = (
        "_closed",
        "_conn",
        "_host",
        "_listener",
        "_readable",
        "_state",
        "_writable",
    )

    def __init__(self, host: StreamHost, state: StreamState) -> None:
        self._host = host
        self._conn = host.connection
        self._state = state
        self._readable = _Signal()
        self._writable = _Signal()
        self._closed = _Signal()
        self._listener: StreamListener | None = None
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
        st = self._state
        return st.remote_fin and not st.recv_buffered

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
                self._host.after_operation()
            return b"".join(parts)
        if n == 0 or not await self._wait_readable():
            return b""
        data = self._conn.read(self._state, n)
        self._host.after_operation()
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
            self._host.after_operation()
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
        if self._conn.release(self._state, n):  # a WINDOW was queued
            self._host.after_operation()

    # --- writing ------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer ``data`` for sending (bytes are kept without copying), or send it at once
        when nothing is queued ahead of it."""
        self._host.send_data(self._state, data)

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
        self._host.after_operation()

    def can_write_eof(self) -> bool:
        return True

    def reset(self, reason: str = "reset") -> None:
        """Abort the stream both ways (RST {reason}). No-op once closed."""
        self._conn.reset(self._state, reason)
        self._host.after_operation()

    async def wait_opened(self) -> None:
        """Wait for the peer's OPEN_OK to our OPEN. Raises :class:`~.errors.OpenFailed`
        (OPEN_FAIL with the peer's reason, or reset) or :class:`~.errors.MuxClosed` (the
        connection ended first)."""
        st = self._state
        while not st.opened:
            if st.phase is Phase.CLOSED:
                if st.cause is CloseCause.CONNECTION:
                    raise MuxClosed(st.reason)
                raise OpenFailed(st.reason)
            self._readable.clear()  # set by OPEN_OK and by the end
            await self._readable.wait()

    async def wait_closed(self) -> None:
        """Wait until the stream is finished (FIN both ways) or reset; never raises."""
        await self._closed.wait()

    # --- for code that follows the stream by callbacks (pipe's splice) ----------------

    @property
    def send_buffered(self) -> int:
        """Bytes written and not yet sent (waiting for credit or for the connection)."""
        return self._state.send_buffered

    @property
    def write_limit(self) -> int:
        """Send-buffer size at which :meth:`drain` starts to wait."""
        return self._conn.settings.write_limit

    def exception(self) -> StreamReset | None:
        """The error every operation raises once the stream was reset, else None."""
        return self._state.error() if self._state.reset else None

    def take_chunk(self) -> memoryview | None:
        """The next received chunk without waiting (None if none is buffered); like
        :meth:`read_chunk`, its credit goes back only with :meth:`release`."""
        return self._conn.read_chunk(self._state)

    def take_chunks(self) -> list[memoryview]:
        """Every chunk buffered, without waiting ([] if none); raises
        :class:`~.errors.StreamReset` once reset. Credit only with :meth:`release`."""
        return self._conn.read_chunks(self._state)

    def set_listener(self, listener: StreamListener | None) -> None:
        """Have ``listener`` told of data, send room and the end (one at a time)."""
        self._listener = listener

    # --- called by the multiplexer when the core reports an event -----------------------

    def notify_readable(self) -> None:
        if self._listener is not None:
            self._listener.readable()
        self._readable.set()

    def notify_writable(self) -> None:
        if self._listener is not None:
            self._listener.writable()
        self._writable.set()

    def notify_opened(self) -> None:
        self._readable.set()

    def notify_ended(self) -> None:
        if self._listener is not None:
            self._listener.ended()
        self._readable.set()
        self._writable.set()
        self._closed.set()
