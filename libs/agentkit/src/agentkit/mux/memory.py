"""An in-process message transport pair, for tests of code built on the mux.

``a, b = memory_transport_pair()``: what ``a.send()`` sends, ``b.recv()`` returns, and the
other way round. ``close()`` on either end makes both ends' ``recv()`` raise
:class:`TransportClosed` (like a websockets ``ConnectionClosed``). Queues are bounded
(``max_queue`` messages), so a slow receiver pushes back on the sender like a socket does.
"""

from __future__ import annotations

import asyncio

__all__ = ["MemoryTransport", "TransportClosed", "memory_transport_pair"]


class TransportClosed(ConnectionError):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class MemoryTransport:
    def __init__(self, max_queue: int = 64) -> None:
        self._inbox: asyncio.Queue[bytes | str | TransportClosed] = asyncio.Queue(max_queue)
        self.peer: MemoryTransport | None = None
        self.closed: TransportClosed | None = None
        self.sent: list[bytes | str] | None = None  # set to [] to record what was sent

    async def send(self, message: bytes | str, /) -> None:
        if self.closed is not None:
            raise self.closed
        assert self.peer is not None
        if self.sent is not None:
            self.sent.append(message)
        await self.peer._inbox.put(bytes(message) if isinstance(message, bytearray) else message)

    async def recv(self) -> bytes | str:
        if self.closed is not None and self._inbox.empty():
            raise self.closed
        item = await self._inbox.get()
        if isinstance(item, TransportClosed):
            self.closed = item
            self._inbox.put_nowait(item)  # every later recv() raises too
            raise item
        return item

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is not None:
            return
        self.closed = TransportClosed(code, reason)
        for end in (self, self.peer):
            if end is None:
                continue
            while end._inbox.full():  # make room: a closed transport drops pending data
                end._inbox.get_nowait()
            end._inbox.put_nowait(self.closed)
        if self.peer is not None and self.peer.closed is None:
            self.peer.closed = self.closed


def memory_transport_pair(max_queue: int = 64) -> tuple[MemoryTransport, MemoryTransport]:
    a, b = MemoryTransport(max_queue), MemoryTransport(max_queue)
    a.peer, b.peer = b, a
    return a, b
