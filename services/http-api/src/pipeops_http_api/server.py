"""Run uvicorn inside the service's own event loop and signal handling.

uvicorn normally captures SIGTERM itself; here the runner owns signals, so the server is
stopped by cancellation: ``should_exit`` is set and uvicorn closes its listeners and
connections within ``graceful_timeout`` (kept below the pod's grace period, so an open
SSE stream cannot hang shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator
from typing import Any

from starlette.types import ASGIApp

from agentkit.lean import bare_packages
from agentkit.runner import ServiceFailed

# uvicorn's package __init__ imports its command line (click) and, through it, the reload
# supervisor (watchfiles): ~2 MiB resident that a server run from code never uses.
bare_packages(["uvicorn"], version_of="uvicorn")
import uvicorn  # noqa: E402
from uvicorn.config import Config  # noqa: E402
from uvicorn.server import Server  # noqa: E402

# what uvicorn's own modules import from the package (uvicorn.lifespan: ``Config``)
uvicorn.Config = Config  # type: ignore[misc]
uvicorn.Server = Server  # type: ignore[misc]

log = logging.getLogger(__name__)


class _Server(Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the runner handles signals


def listen(host: str, port: int) -> socket.socket:
    """The HTTP socket, bound before uvicorn starts so that a port in use is one clear
    error line and exit 2, as for every port in use (uvicorn itself would ``sys.exit``
    from inside a task)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        log.error("cannot listen on %s:%s: %s", host, port, exc.strerror or exc)
        raise ServiceFailed(2, f"cannot listen on {host}:{port}") from exc
    sock.setblocking(False)
    return sock


def websocket_protocol(**kwargs: Any) -> asyncio.Protocol:
    """uvicorn's WebSocket protocol (websockets' sans-I/O one, what ``ws="auto"`` picks),
    imported with the first WebSocket upgrade instead of at start: 0.6 MiB resident that
    an http-api nobody opens a WebSocket to never loads (the import reads compiled modules
    once, a few milliseconds, on the loop like every import uvicorn makes at start)."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import (
        WebSocketsSansIOProtocol,
    )
    return WebSocketsSansIOProtocol(**kwargs)


async def serve(app: ASGIApp, sock: socket.socket, graceful_timeout: int = 2,
                tls: tuple[str, str] | None = None) -> None:
    """``tls``: (certificate file, key file) to serve HTTPS."""
    certfile, keyfile = tls or (None, None)
    config = Config(app, log_config=None, access_log=False,
                    timeout_graceful_shutdown=int(graceful_timeout), lifespan="off",
                    ws=websocket_protocol,  # type: ignore[arg-type]
                    ssl_certfile=certfile, ssl_keyfile=keyfile)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="uvicorn")
    try:
        await asyncio.shield(task)
    finally:
        server.should_exit = True
        await task
