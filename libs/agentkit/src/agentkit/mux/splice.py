"""``pipe``: splice a :class:`~.stream.Stream` and a local TCP connection both ways.

While it runs, the pipe is the TCP transport's protocol (:class:`_Splice`), so bytes move
in the transport's and the multiplexer's callbacks with no task switch on the way, and
every backpressure rule is kept: reading pauses while the stream's send buffer is at its
write limit, and credit for received bytes goes back only once the socket took them.
Only public asyncio APIs: the pipe waits for ``writer.drain()`` before it takes the
protocol over (so the socket is not pushing back), and what the ``StreamReader`` had
buffered is read out with ``reader.read()``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import cast

from .errors import StreamReset
from .stream import Stream

__all__ = ["pipe"]

_ALL = 1 << 30  # "everything buffered" for StreamReader.read


class _Splice(asyncio.Protocol):
    """The TCP connection's protocol while a pipe runs, and the stream's listener.

    TCP -> stream: ``data_received`` writes to the stream; reading pauses while the
    stream's send buffer is at its write limit (waiting for the peer's credit) and resumes
    when it has room, so the buffer holds at most the limit plus one socket read. EOF ->
    FIN. Stream -> TCP: the received chunks go to the socket in one ``writelines`` each time
    the stream reports data; credit for them goes back at once unless writing them took the
    socket's buffer over its high-water mark (``pause_writing``), then only at
    ``resume_writing``. FIN -> ``write_eof()``.
    ``connection_lost`` is passed on to the StreamReader's protocol (``wait_closed()``).

    Until :meth:`start` it only holds what arrives (the StreamReader's bytes go first).
    """

    def __init__(
        self, stream: Stream, transport: asyncio.Transport, original: asyncio.BaseProtocol
    ) -> None:
        self.stream = stream
        self.transport = transport
        self.original = original
        self.limit = stream.write_limit
        self.started = False
        self.early: list[bytes] = []  # arrived before start()
        self.early_eof = False
        self.reading_paused = False
        self.writing_paused = False  # pipe() waited for writer.drain() before taking over
        self.held = 0  # credit of bytes written into a full socket buffer
        self.up_done = False  # EOF from TCP, FIN queued
        self.down_done = False  # FIN from the peer, write_eof() done
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self, buffered: bytes, eof: bool) -> None:
        """Go live: ``buffered`` (what the StreamReader held) first, then what arrived."""
        self.started = True
        # Resume before the held bytes are fed in, so that a pause they cause is the last
        # word: resuming after them would undo it and leave reading on with no bound.
        self.transport.resume_reading()
        self.reading_paused = False
        for data in (buffered, *self.early):
            if data:
                self.data_received(data)
        self.early.clear()
        if eof or self.early_eof:
            self.eof_received()
        self.check_reading()
        self.readable()

    def fail(self, exc: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(exc)

    def check_done(self) -> None:
        if self.up_done and self.down_done and self.stream.closed and not self.done.done():
            self.done.set_result(None)

    # TCP -> stream

    def data_received(self, data: bytes) -> None:
        if not self.started:
            self.early.append(data)
            self.transport.pause_reading()  # one read at most, until start()
            return
        try:
            self.stream.write(data)
        except Exception as exc:  # reset meanwhile
            self.fail(exc)
            return
        self.check_reading()

    def check_reading(self) -> None:
        over = self.stream.send_buffered >= self.limit
        if over is not self.reading_paused and not self.up_done:
            if self.transport.is_closing():
                return
            self.reading_paused = over
            if over:
                self.transport.pause_reading()
            else:
                self.transport.resume_reading()

    def eof_received(self) -> bool:
        if not self.started:
            self.early_eof = True
            return True
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
            held, self.held = self.held, 0
            self.stream.release(held)
        self.readable()

    # the stream's listener

    def readable(self) -> None:
        """Move received chunks to the socket until it pushes back."""
        if not self.started or self.down_done or self.writing_paused:
            return
        if self.transport.is_closing():
            return
        stream = self.stream
        try:
            chunks = stream.take_chunks()
        except StreamReset as exc:
            self.fail(exc)
            return
        # Every chunk buffered goes out in one writelines (one vectored send for the frames
        # of one transport read); the stream's window bounds how much that can be.
        if chunks:
            if len(chunks) == 1:
                size = len(chunks[0])
                self.transport.write(chunks[0])
            else:
                size = sum(map(len, chunks))
                self.transport.writelines(chunks)
            if self.writing_paused:  # over the high-water mark: credit at resume_writing
                self.held = size
            else:
                stream.release(size)  # a WINDOW may be due
        if not self.writing_paused and stream.at_eof():
            self.down_done = True
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.check_done()  # (moving chunks alone cannot finish the pipe: down_done)

    def writable(self) -> None:
        if self.started:
            self.check_reading()

    def ended(self) -> None:
        error = self.stream.exception()
        if error is not None:
            self.fail(error)
        else:
            self.check_done()


async def _read_buffered(reader: asyncio.StreamReader) -> tuple[bytes, bool]:
    """What ``reader`` holds, and whether it saw EOF, once nothing feeds it any more.

    ``StreamReader.read`` returns without waiting when it holds bytes or EOF: a read that
    is not done after its first step would wait for data that now goes to the pipe, so
    it is cancelled and the reader had nothing (more) and no EOF.
    """
    parts: list[bytes] = []
    while not reader.at_eof():
        probe = asyncio.ensure_future(reader.read(_ALL))
        await asyncio.sleep(0)  # the probe's first step runs before we resume
        if not probe.done():
            probe.cancel()
            await asyncio.wait([probe])
            return b"".join(parts), False
        parts.append(probe.result())
    return b"".join(parts), True


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
    reset is noticed at once, even while both directions wait on the TCP side. Cancelled,
    it resets the stream (RST "cancelled") before re-raising.
    """
    transport = cast(asyncio.Transport, writer.transport)  # uvloop's is not a subclass
    splice: _Splice | None = None
    failure: BaseException | None = None
    try:
        error = reader.exception()
        if error is not None:
            raise error
        if transport.is_closing():
            raise ConnectionResetError("local connection lost")
        await writer.drain()  # the socket is not pushing back when the splice takes over
        splice = _Splice(stream, transport, transport.get_protocol())
        transport.set_protocol(splice)
        stream.set_listener(splice)
        buffered, eof = await _read_buffered(reader)  # read before the pipe started
        splice.start(buffered, eof)
        await splice.done
    except BaseException as exc:
        failure = exc
    finally:
        stream.set_listener(None)
        if splice is not None and not splice.done.done():
            splice.done.cancel()  # what the connection does from now on is not news
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
    error = stream.exception()
    if error is not None:
        raise error

