"""The chisel-style ``R:port`` end: a TCP listener per forward on the control plane.

Each accepted connection waits (briefly) for a live tunnel, opens one mux stream with the
listener's target (``{forward: name}`` or ``{service, namespace, port}``) and splices the
bytes both ways with :func:`agentkit.mux.pipe` until both sides are done. Nothing here
parses the bytes: TLS to the API server stays end to end, so watches, ``logs -f`` and
upgrades pass unchanged, and no idle timeout exists on this side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from agentkit.mux import Multiplexer, MuxClosed, MuxError, OpenFailed, Stream, pipe

log = logging.getLogger("pipeops_controlplane.tunnel")

SessionWaiter = Callable[[float], Awaitable[Multiplexer | None]]


class Listener:
    """One loopback TCP port whose connections become streams to ``target``."""

    def __init__(self, name: str, target: dict[str, Any], wait_session: SessionWaiter,
                 *, connect_wait: float, open_timeout: float, requested_port: int = 0) -> None:
        self.name = name
        self.target = target
        self.requested_port = requested_port
        self.port = 0
        self.connections_total = 0
        self.connections_active = 0
        self.open_failures = 0
        self.last_error = ""
        self._wait_session = wait_session
        self._connect_wait = connect_wait
        self._open_timeout = open_timeout
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str) -> None:
        """Bind the requested port, or a free one if it is 0 or taken."""
        port = self.requested_port
        try:
            self._server = await asyncio.start_server(self._serve, host, port)
        except OSError as exc:
            if not port:
                raise
            log.warning("requested forward port is taken; allocating another",
                        extra={"forward": self.name, "port": port, "error": str(exc)})
            self._server = await asyncio.start_server(self._serve, host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "remote_port": self.port,
                "requested_port": self.requested_port,
                "connections_active": self.connections_active,
                "connections_total": self.connections_total,
                "open_failures": self.open_failures, "last_error": self.last_error}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections_total += 1
        try:
            await self._splice(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception as exc:  # never let a connection's failure escape into asyncio
            log.warning("forward connection failed",
                        extra={"forward": self.name, "error": repr(exc)})
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _open(self) -> Stream | None:
        """A stream to the target; a session that closes under us (a reconnect replacing
        it) is waited out once more. None when refused (the reason is noted)."""
        for _ in range(2):
            session = await self._wait_session(self._connect_wait)
            if session is None:
                self._refused("no tunnel connected")
                return None
            try:
                return await session.open_stream(dict(self.target), timeout=self._open_timeout)
            except MuxClosed:
                continue
            except OpenFailed as exc:
                self._refused(f"open failed: {exc}")
                return None
        self._refused("the tunnel closed while opening")
        return None

    async def _splice(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream = await self._open()
        if stream is None:
            writer.close()
            return
        self.connections_active += 1
        try:
            await pipe(stream, reader, writer)
        except (MuxError, OSError) as exc:  # reset by the agent, or the local side broke
            log.debug("forward stream ended with an error",
                      extra={"forward": self.name, "stream": stream.id, "error": repr(exc)})
        finally:
            self.connections_active -= 1
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _refused(self, reason: str) -> None:
        self.open_failures += 1
        self.last_error = reason
        log.info("forward connection refused", extra={"forward": self.name, "reason": reason})
