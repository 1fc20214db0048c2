"""One tunnel connection: the WebSocket handshake, hello/hello_ack, the mux session.

``Connection.run`` returns only by raising: :class:`Rejected` when the handshake was
refused in a way that means the allocation or the credentials are stale (ask for the
allocation again), :class:`ConnectionLost` when an established session ended (with how
long it was up, so the caller can reset its backoff), or the transport's own error when
the connection never came up. Cancelling it (SIGTERM) drains: ``drain`` is sent, open
streams get ``DRAIN_GRACE`` seconds to finish, then the session closes with 1001.

WebSocket settings, chosen on purpose: permessage-deflate off (tunnel bytes are often TLS,
compression only costs CPU and leaks lengths); ``max_size`` 1 MiB (or a DATA frame of
``tunnel.max_frame`` plus its header, if larger): a control message is never bigger;
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
from agentkit.mux import SUBPROTOCOL, MuxSession, MuxSettings, OpenHandler, Role
from pipeops_tunnel.allocation import Allocation
from pipeops_tunnel.commands import CommandRunner
from pipeops_tunnel.identity import TunnelIdentity

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024 * 1024
MAX_QUEUE = 32
WRITE_LIMIT = 128 * 1024
HELLO_TIMEOUT = 10.0
DRAIN_GRACE = 1.0
FLUSH_GRACE = 0.5
STALE_ALLOCATION = {401, 403, 404, 409, 410}
KNOWN_TYPES = {"hello_ack", "command", "drain", "error"}


class Rejected(Exception):
    """The handshake was refused (401/403/404/409/410): ask for the allocation again."""


class ConnectionLost(Exception):
    """An established session ended; ``connected_for`` seconds after hello_ack."""

    def __init__(self, reason: str, connected_for: float) -> None:
        super().__init__(reason)
        self.connected_for = connected_for


class HelloAck:
    """The control plane's answer to hello: allocated forward ports, optional window."""

    def __init__(self, message: dict[str, Any]) -> None:
        self.remote_ports: dict[str, int] = {}
        for item in message.get("forwards") or []:
            if isinstance(item, dict) and isinstance(item.get("name"), str) \
                    and isinstance(item.get("remote_port"), int):
                self.remote_ports[item["name"]] = item["remote_port"]
        window = message.get("window")
        self.window = window if isinstance(window, int) and 0 < window <= 2**31 - 1 else None


class Connection:
    def __init__(self, config: Config, identity: TunnelIdentity, allocation: Allocation, *,
                 forwards: list[str], on_open: OpenHandler, commands: CommandRunner,
                 version: str,
                 on_session: Callable[[MuxSession | None, HelloAck | None], None],
                 tls: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.identity = identity
        self.allocation = allocation
        self.forwards = forwards
        self.on_open = on_open
        self.commands = commands
        self.version = version
        self.on_session = on_session
        self.tls = tls
        self.session: MuxSession | None = None
        self._hello_ack: asyncio.Future[dict[str, Any]] | None = None
        self._abandoned = ""

    async def abandon(self, reason: str) -> None:
        """End this connection (or make its handshake end it) with close code 1000."""
        self._abandoned = reason
        if self.session is not None:
            await self.session.close(1000, reason)

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
                max_size=max(MAX_MESSAGE, cfg.max_frame + 8),
                max_queue=MAX_QUEUE,
                write_limit=WRITE_LIMIT,
                ping_interval=cfg.ping_interval,
                ping_timeout=cfg.ping_timeout,
                open_timeout=min(self.config.pipeops.timeout, 30.0) or 10.0,
                close_timeout=2.0,
                **extra,
            )
        except InvalidStatus as exc:
            code = exc.response.status_code
            if code in STALE_ALLOCATION:
                raise Rejected(f"tunnel handshake refused with HTTP {code}") from None
            raise
        if ws.subprotocol != SUBPROTOCOL:
            await ws.close(1002, "subprotocol not negotiated")
            raise ConnectionError(f"the server did not accept subprotocol {SUBPROTOCOL}")
        return ws

    def _on_control(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "hello_ack":
            if self._hello_ack is not None and not self._hello_ack.done():
                self._hello_ack.set_result(message)
        elif kind == "command":
            self.commands.handle(message)
        elif kind == "drain":
            log.info("the control plane asked to drain this connection")
        elif kind == "error":
            log.warning("the control plane reported an error",
                        extra={"reason": str(message.get("reason", ""))[:200]})
        elif kind not in KNOWN_TYPES and self.session is not None:
            with contextlib.suppress(Exception):
                self.session.send_control({"type": "error",
                                           "reason": f"unknown message type {kind[:40]!r}"})

    async def run(self) -> None:
        cfg = self.config.tunnel
        ws = await self._handshake()
        if self._abandoned:
            await ws.close(1000, self._abandoned)
            raise ConnectionError(f"connection abandoned: {self._abandoned}")
        session = MuxSession(ws, Role.AGENT, on_open=self.on_open, on_control=self._on_control,
                             settings=MuxSettings(window=cfg.window, max_frame=cfg.max_frame),
                             open_timeout=cfg.dial_timeout, handler_grace=DRAIN_GRACE,
                             name="tunnel")
        self.session = session
        self._hello_ack = asyncio.get_running_loop().create_future()
        connected_at: float | None = None
        try:
            session.start()
            session.send_control({
                "type": "hello", "agent_id": self.identity.agent_id,
                "cluster_id": self.identity.cluster_id, "version": self.version,
                "forwards": [{"name": name} for name in self.forwards], "window": cfg.window,
            })
            # after hello (the first message), before hello_ack: commands may precede it
            self.commands.attach(session.send_control)
            closed = asyncio.ensure_future(session.wait_closed())
            hello: asyncio.Future[Any] = self._hello_ack
            try:
                await asyncio.wait({hello, closed}, timeout=HELLO_TIMEOUT,
                                   return_when=asyncio.FIRST_COMPLETED)
            finally:
                closed.cancel()
            if not hello.done():
                reason = session.close_reason if session.closed else "no hello_ack in time"
                raise ConnectionError(f"tunnel hello failed: {reason}")
            ack = HelloAck(self._hello_ack.result())
            if ack.window is not None:
                session.update_peer_settings(window=ack.window)
            connected_at = time.monotonic()
            self.on_session(session, ack)
            await session.wait_closed()
            raise ConnectionLost(f"tunnel connection lost: {session.close_code} "
                                 f"{session.close_reason}", time.monotonic() - connected_at)
        except asyncio.CancelledError:
            # shutting down: running commands report ``failed`` on this connection, then
            # the connection drains
            await asyncio.shield(self.commands.close())
            await asyncio.shield(self.drain())
            raise
        finally:
            self.commands.detach()
            if not session.closed:
                await asyncio.shield(session.close(1001, "agent closing the connection"))
            if connected_at is not None:
                self.on_session(None, None)
            self.session = None

    async def drain(self) -> None:
        """Send drain, give open streams ``DRAIN_GRACE`` seconds, close with 1001."""
        session = self.session
        if session is None or session.closed:
            return
        log.info("draining the tunnel connection",
                 extra={"streams_active": session.stats.streams_active})
        session.drain()
        waits = [asyncio.ensure_future(stream.wait_closed()) for stream in session.streams()]
        if waits:
            await asyncio.wait(waits, timeout=DRAIN_GRACE)
            for waiting in waits:
                waiting.cancel()
        await flush(session, FLUSH_GRACE)
        await session.close(1001, "agent shutting down")


async def flush(session: MuxSession, timeout: float) -> None:
    """Wait (bounded) until the session has sent what it queued. ``MuxSession.close``
    drops queued control messages (``drain``, command outcomes) and has no flush of its
    own, so the last words would otherwise be lost."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while session.connection.has_output and not session.closed and loop.time() < deadline:  # noqa: ASYNC110 - the mux offers no flush event
        await asyncio.sleep(0.01)
