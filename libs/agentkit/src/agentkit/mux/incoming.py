"""Incoming OPENs: the :class:`OpenRequest` the owner's ``on_open`` handler decides on,
and :class:`Handlers`, the owner of the one task per incoming OPEN that runs it.

A handler accepts (OPEN_OK, it gets the :class:`~.stream.Stream`) or refuses (OPEN_FAIL);
returning undecided refuses, raising refuses (or resets an accepted stream). It may go on
serving the stream; when the multiplexer ends, its stream is reset and the handler gets
a grace period to return before it is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agentkit.peerlog import PeerLog

from .errors import StreamError
from .state import Phase, StreamState
from .stream import Stream, StreamHost

__all__ = ["Handlers", "OpenHandler", "OpenRequest"]

log = logging.getLogger("agentkit.mux")
peer_log = PeerLog(log)


class OpenRequest:
    """An OPEN from the peer, handed to the owner's ``on_open`` handler, which decides:
    ``accept()`` (sends OPEN_OK, returns the :class:`Stream`) or ``refuse(reason)``
    (sends OPEN_FAIL). A handler that returns without deciding refuses it."""

    __slots__ = ("_host", "_state", "_stream")

    def __init__(self, host: StreamHost, state: StreamState) -> None:
        self._host = host
        self._state = state
        self._stream = Stream(host, state)

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
        self._host.connection.accept(self._state)
        self._host.after_operation()
        return self._stream

    def refuse(self, reason: str) -> None:
        """OPEN_FAIL {reason}; no-op if the stream is already gone."""
        self._host.connection.refuse(self._state, reason)
        self._host.after_operation()

    def reset(self, reason: str) -> None:
        """RST an accepted stream (no-op once closed)."""
        with contextlib.suppress(StreamError):
            self._stream.reset(reason)

    def __repr__(self) -> str:
        return f"<OpenRequest {self.stream_id} {self.payload!r}>"


OpenHandler = Callable[[OpenRequest], Awaitable[None]]


class Handlers:
    """The running ``on_open`` handler tasks of one multiplexer (their only owner)."""

    def __init__(self, on_open: OpenHandler, name: str) -> None:
        self.on_open = on_open
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, request: OpenRequest) -> None:
        task = asyncio.create_task(
            self._run(request), name=f"mux:{self._name}:open:{request.stream_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, request: OpenRequest) -> None:
        try:
            await self.on_open(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # a peer can provoke it with every OPEN: rate-limited, one traceback a period
            peer_log.log("open handler failed", logging.ERROR,
                         "open handler failed for stream %s", request.stream_id,
                         exc_info=exc)
            if not request.decided:
                request.refuse(f"internal error: {type(exc).__name__}")
            else:
                request.reset("handler failed")
        finally:
            if not request.decided and not request._host.connection.closed:
                request.refuse("not accepted")

    async def finish(self, grace: float) -> None:
        """Give the handlers (their streams were reset) ``grace`` seconds to return, then
        cancel the rest; returns once all are done. Never waits on the calling task."""
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def cancel(self) -> None:
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
