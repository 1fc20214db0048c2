"""How the control plane's end of the tunnel is set up (flags of ``pipeops-dev-controlplane``).

The WebSocket endpoint runs on its own port, served by the ``websockets`` library rather
than through uvicorn/Starlette: the mux needs a transport with ``send``/``recv``/``close``
of whole messages, and serving it directly lets us set compression, frame size, queue and
write limits deliberately (Starlette would hand us ASGI message dicts and uvicorn's own
limits). Every timeout on the path of a stream is here, so tests can shorten them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agentkit.mux import DEFAULT_MAX_FRAME, DEFAULT_WINDOW

TUNNEL_PATH = "/api/v1/tunnel/connect"


@dataclass
class TunnelSettings:
    enabled: bool = True
    """False: every cluster's tunnel status is ``disabled`` and connections are refused."""
    bind_host: str = "127.0.0.1"
    """Where the WebSocket server and the forward listeners bind (loopback)."""
    port: int = 0
    """Port of the WebSocket server; 0 picks a free one."""
    public_host: str = ""
    """``host[:port]`` put in ``tunnel_url``; empty: the bound address."""
    tls_dir: Path | None = None
    """Serve ``wss://`` with a throwaway CA written here (``tls.py``); None: ``ws://``."""
    ping_interval: float = 15.0
    """WebSocket keepalive ping (PROTOCOL.md: 15 s) ..."""
    ping_timeout: float = 20.0
    """... and how long to wait for its pong before the connection counts as dead."""
    hello_timeout: float = 10.0
    """A connection that sends no valid ``hello`` within this is closed (1008)."""
    connect_wait: float = 5.0
    """A connection to a forward port waits this long for a live tunnel, then is closed."""
    open_timeout: float = 10.0
    """How long an OPEN waits for OPEN_OK/OPEN_FAIL (the agent's dial timeout is 10 s)."""
    window: int = DEFAULT_WINDOW
    """Per-stream receive credit we grant the agent."""
    max_frame: int = DEFAULT_MAX_FRAME
    """Largest DATA payload."""
    max_message: int = 1024 * 1024
    """Largest WebSocket message accepted (a DATA frame is max_frame + 8 bytes)."""
    max_queue: int = 32
    """Received messages buffered by the WebSocket before it stops reading the socket."""
    write_limit: int = 128 * 1024
    """WebSocket send buffer high-water mark."""
    command_history: int = 500
    """Commands remembered per cluster (oldest forgotten first)."""
