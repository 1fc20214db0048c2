"""One tunnel connection: the WebSocket handshake, hello/hello_ack, the multiplexer.

``Connection.run`` returns only by raising: :class:`HandshakeRefused` when the handshake was
refused in a way that means the allocation or the credentials are stale (ask for the
allocation again), :class:`ConnectionLost` when an established connection ended (with how
long it was up, so the caller can reset its backoff), or the transport's own error when
the connection never came up. Cancelling it (SIGTERM) drains: ``drain`` is sent, open
streams get ``DRAIN_GRACE`` seconds to finish, then the multiplexer closes with 1001. The whole
shutdown (drain wait, flush, handler grace, close handshake) stays under
``SHUTDOWN_BUDGET`` seconds, well inside the runner's default ``--shutdown-grace`` (3 s).
A ``drain`` from the control plane ends ``run`` with :class:`Drained` at once (the caller
connects again); the old multiplexer is handed to ``retiring``, which closes it once its
streams finished or after ``RETIRE_GRACE`` seconds.

hello_ack is handled synchronously in the control handler, before any frame after it is
read: the granted window applies to every stream the control plane opens from then on, and
command outcomes (the outbox first) are sent only from then on.

WebSocket settings, chosen on purpose: permessage-deflate off (tunnel bytes are often TLS,
compression only costs CPU and leaks lengths); ``max_size`` 1 MiB: a control message or a
DATA frame (the protocol's fixed 64 KiB max frame plus its header) is never bigger;
``max_queue`` 32 received frames (the mux reader never blocks, so this is only a burst
cushion; past it TCP pushes back); ``write_limit`` 128 KiB before ``send`` waits for the
socket; ping every ``tunnel.ping_interval`` and a dead connection after
``tunnel.ping_timeout`` without a pong.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Subprotocol

from agentkit.config import Config
from agentkit.controlplane import TunnelStatus
from agentkit.identity import Identity
from agentkit.mux import (
    DEFAULT_MAX_FRAME,
    SUBPROTOCOL,
    Multiplexer,
    MuxSettings,
    OpenHandler,
    Role,
)
from agentkit.peerlog import PeerLog
from agentkit.tasks import first_completed, settle
from pipeops_tunnel.commands import CommandRunner

log = logging.getLogger(__name__)
peer_log = PeerLog(log)  # lines the control plane's messages cause: rate-limited

MAX_MESSAGE = 1024 * 1024
MAX_QUEUE = 32
WRITE_LIMIT = 128 * 1024
HELLO_TIMEOUT = 10.0
# shutdown: DRAIN_GRACE + FLUSH_GRACE + HANDLER_GRACE + SHUTDOWN_CLOSE_TIMEOUT <= 1.5 s
DRAIN_GRACE = 0.5  # open streams finishing after drain
FLUSH_GRACE = 0.25  # queued control messages (drain, outcomes) going out
HANDLER_GRACE = 0.25  # stream handlers winding down after their streams were reset
CLOSE_TIMEOUT = 2.0  # the WebSocket close handshake, normally
SHUTDOWN_CLOSE_TIMEOUT = 0.5  # ... and when shutting down
SHUTDOWN_BUDGET = DRAIN_GRACE + FLUSH_GRACE + HANDLER_GRACE + SHUTDOWN_CLOSE_TIMEOUT
RETIRE_GRACE = 30.0  # streams of a connection the control plane drained may finish
STALE_ALLOCATION = {401, 403, 404, 409, 410}
KNOWN_TYPES = {"hello_ack", "command", "drain", "error"}


class HandshakeRefused(Exception):
    """Ask for the allocation again: the handshake was refused (401/403/404/409/410), or
    the allocation is stale for another reason (the caller's)."""


class ConnectionLost(Exception):
    """An established connection ended; ``connected_for`` seconds after hello_ack."""

    def __init__(self, reason: str, connected_for: float) -> None:
        super().__init__(reason)
        self.connected_for = connected_for


class Drained(ConnectionLost):
    """The control plane sent ``drain``: connect again; the old multiplexer is retiring."""


class HelloAck:
    """The control plane's answer to hello: allocated forward ports, optional window. What
    is not of the right type or range is ignored, never raised on."""

    def __init__(self, message: dict[str, Any]) -> None:
        self.remote_ports: dict[str, int] = {}
        forwards = message.get("forwards")
        for item in forwards if isinstance(forwards, list) else []:
            port = item.get("remote_port") if isinstance(item, dict) else None
            if isinstance(item, dict) and isinstance(item.get("name"), str) \
                    and isinstance(port, int) and not isinstance(port, bool) \
                    and 0 <= port < 65536:
                self.remote_ports[item["name"]] = port
        window = message.get("window")
        self.window = window if isinstance(window, int) and not isinstance(window, bool) \
            and 0 < window <= 2**31 - 1 else None


class Connection:
    def __init__(self, config: Config, identity: Identity, allocation: TunnelStatus, *,
                 forwards: list[str], on_open: OpenHandler, commands: CommandRunner,
                 version: str,
                 on_mux: Callable[[Multiplexer | None, HelloAck | None], None],
                 tls: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.identity = identity
        self.allocation = allocation
        self.forwards = forwards
        self.on_open = on_open
        self.commands = commands
        self.version = version
        self.on_mux = on_mux
        self.tls = tls
        self.mux: Multiplexer | None = None
        self._ws: ClientConnection | None = None
        self._hello_ack: asyncio.Future[HelloAck] | None = None
        self._peer_drained = asyncio.Event()
        self._abandoned = ""
        self.retiring: asyncio.Task[None] | None = None  # the drained multiplexer, closing

    async def ping(self) -> float:
        """A WebSocket ping to the control plane now: seconds until its pong.
        ConnectionError when this connection is not up."""
        ws = self._ws
        if ws is None or self.mux is None:
            raise ConnectionError("the tunnel is not connected")
        started = time.perf_counter()  # not the pong's own latency: uvloop's clock is in ms
        await (await ws.ping())
        return time.perf_counter() - started

    async def abandon(self, reason: str) -> None:
        """End this connection (or make its handshake end it) with close code 1000."""
        self._abandoned = reason
        if self.mux is not None:
            await self.mux.close(1000, reason)

    async def _handshake(self) -> ClientConnection:
        cfg = self.config.tunnel
        url = self.allocation.tunnel_url
        extra: dict[str, Any] = {}
        if url.startswith("wss://") and self.tls is not None:
            extra["ssl"] = self.tls
        try:
            ws = await connect(
                url,
                subprotocols=[Subprotocol(SUBPROTOCOL)],
                additional_headers=self.identity.headers(),
                user_agent_header=f"pipeops-tunnel/{self.version}",
                compression=None,
                max_size=MAX_MESSAGE,
                max_queue=MAX_QUEUE,
                write_limit=WRITE_LIMIT,
                ping_interval=cfg.ping_interval,
                ping_timeout=cfg.ping_timeout,
                open_timeout=min(self.config.pipeops.timeout, 30.0) or 10.0,
                close_timeout=CLOSE_TIMEOUT,
                **extra,
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code in STALE_ALLOCATION:
                raise HandshakeRefused(f"tunnel handshake refused with HTTP {code}") from None
            raise
        if ws.subprotocol != SUBPROTOCOL:
            await ws.close(1002, "subprotocol not negotiated")
            raise ConnectionError(f"the server did not accept subprotocol {SUBPROTOCOL}")
        return ws

    def _on_control(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "hello_ack":
            if self._hello_ack is not None and not self._hello_ack.done() \
                    and self.mux is not None:
                # here, not after the waiter wakes: the control plane may open streams
                # right behind hello_ack, and they must start with the granted credit
                ack = HelloAck(message)
                if ack.window is not None:
                    self.mux.update_peer_settings(window=ack.window)
                self.commands.attach(self.mux.send_control, self.mux.reply_control)
                self._hello_ack.set_result(ack)
        elif kind == "command":
            self.commands.handle(message)
        elif kind == "drain":
            peer_log.info("drain", "the control plane asked to drain this connection; "
                          "connecting again")
            self._peer_drained.set()
        elif kind == "error":
            peer_log.warning("peer error", "the control plane reported an error",
                             extra={"reason": str(message.get("reason", ""))[:200]})
        elif kind not in KNOWN_TYPES and self.mux is not None:
            with contextlib.suppress(Exception):
                self.mux.reply_control({"type": "error",
                                        "reason": f"unknown message type {kind[:40]!r}"})

    async def run(self) -> None:
        cfg = self.config.tunnel
        ws = await self._handshake()
        if self._abandoned:
            await ws.close(1000, self._abandoned)
            raise ConnectionError(f"connection abandoned: {self._abandoned}")
        # the max frame is the protocol's (both ends send and accept 64 KiB DATA frames)
        mux = Multiplexer(ws, Role.AGENT, on_open=self.on_open, on_control=self._on_control,
                         settings=MuxSettings(window=cfg.window, max_frame=DEFAULT_MAX_FRAME),
                         open_timeout=cfg.dial_timeout, handler_grace=HANDLER_GRACE,
                         name="tunnel")
        self.mux = mux
        self._ws = ws
        self._hello_ack = asyncio.get_running_loop().create_future()
        connected_at: float | None = None
        try:
            mux.start()
            mux.send_control({
                "type": "hello", "agent_id": self.identity.agent_id,
                "cluster_id": self.identity.cluster_id, "version": self.version,
                "forwards": [{"name": name} for name in self.forwards], "window": cfg.window,
            })
            closed = asyncio.ensure_future(mux.wait_closed())
            hello = self._hello_ack
            try:  # hello stays as it is (it is read below); every outcome is read
                await first_completed({hello, closed}, timeout=HELLO_TIMEOUT,
                                      cancel_pending=False)
            finally:
                await settle([closed])
            if not hello.done():
                reason = mux.close_reason if mux.closed else "no hello_ack in time"
                raise ConnectionError(f"tunnel hello failed: {reason}")
            ack = hello.result()  # the window and the commands were applied on arrival
            connected_at = time.monotonic()
            self.on_mux(mux, ack)
            ending: set[asyncio.Future[Any]] = {
                asyncio.ensure_future(mux.wait_closed()),
                asyncio.ensure_future(self._peer_drained.wait())}
            await first_completed(ending)
            if self._peer_drained.is_set() and not mux.closed:
                self.commands.detach()
                self.retiring = asyncio.create_task(self._retire(mux),
                                                    name="tunnel:retiring")
                raise Drained("the control plane drained the tunnel connection",
                              time.monotonic() - connected_at)
            raise ConnectionLost(f"tunnel connection lost: {mux.close_code} "
                                 f"{mux.close_reason}", time.monotonic() - connected_at)
        except asyncio.CancelledError:
            # shutting down: running commands report ``failed`` on this connection, then
            # the connection drains
            await asyncio.shield(self.commands.close())
            await asyncio.shield(self.drain())
            raise
        finally:
            self.commands.detach()
            if not mux.closed and self.retiring is None:
                await asyncio.shield(mux.close(1001, "agent closing the connection"))
            if connected_at is not None:
                self.on_mux(None, None)
            self.mux = None

    async def drain(self) -> None:
        """Send drain, give open streams ``DRAIN_GRACE`` seconds, close with 1001."""
        mux = self.mux
        if mux is None or mux.closed:
            return
        log.info("draining the tunnel connection",
                 extra={"streams_active": mux.stats.streams_active})
        mux.drain()
        await wait_streams(mux, DRAIN_GRACE)
        await flush(mux, FLUSH_GRACE)
        if self._ws is not None:
            self._ws.close_timeout = SHUTDOWN_CLOSE_TIMEOUT
        await mux.close(1001, "agent shutting down")

    async def _retire(self, mux: Multiplexer) -> None:
        """The control plane drained ``mux``: let its streams finish (at most
        ``RETIRE_GRACE`` seconds), then close it. Cancelled (shutdown): close at once."""
        try:
            await wait_streams(mux, RETIRE_GRACE)
        finally:
            if self._ws is not None:
                self._ws.close_timeout = SHUTDOWN_CLOSE_TIMEOUT
            await asyncio.shield(mux.close(1000, "drained by the control plane"))


async def wait_streams(mux: Multiplexer, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) until the multiplexer's open streams have closed."""
    waits = [asyncio.ensure_future(stream.wait_closed()) for stream in mux.streams()]
    if waits:
        await asyncio.wait(waits, timeout=timeout)
        for waiting in waits:
            waiting.cancel()


async def flush(mux: Multiplexer, timeout: float) -> None:
    """Wait (at most ``timeout`` seconds) until the multiplexer has sent what it queued.
    ``Multiplexer.close`` drops queued control messages (``drain``, command outcomes), so
    the last words would otherwise be lost."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await mux.flush()
