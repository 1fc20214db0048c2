"""One cluster's tunnel as the control plane sees it: allocation, connection, commands.

The allocation (a forward name -> a loopback port with a listener) is made the first time
the agent asks for its status and outlives connections: an agent that reconnects gets the
same ports, and a connection to a forward port while the agent is away waits a little
for it to come back. At most one WebSocket is live per cluster; a new one replaces it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import asdict
from typing import Any

from agentkit.mux import Multiplexer, MuxStats
from pipeops_controlplane.store import Cluster, now_rfc3339
from pipeops_controlplane.tunnel.commands import CommandBook
from pipeops_controlplane.tunnel.listeners import Listener
from pipeops_controlplane.tunnel.settings import TunnelSettings

log = logging.getLogger("pipeops_controlplane.tunnel")

# registration's tunnel_port_config key -> the forward's name (PROTOCOL.md section 2)
PORT_CONFIG_FORWARDS = {"kubernetes_api": "kubernetes-api", "kubelet": "kubelet",
                        "agent_http": "agent-http"}
MAX_LISTENERS = 64  # per cluster: forwards from the hello plus Service listeners
MAX_FORWARD_NAME = 63
MAX_SESSIONS = 4096  # session states kept per cluster (the agent reports as many)
MAX_HISTORY = 16  # distinct states in a row kept per session (tests see short-lived ones)
SESSION_STATES = ("starting", "running", "hibernated", "stopped")


class TooManyListeners(ValueError):
    """A cluster asked for more listeners than ``MAX_LISTENERS``."""


_STAT_FIELDS = ("streams_opened", "streams_closed", "open_failed", "bytes_in", "bytes_out",
                "window_blocked_seconds", "resets_sent", "resets_received", "late_frames",
                "protocol_errors")


def requested_forwards(cluster: Cluster) -> dict[str, int]:
    """The forwards and ports asked for at registration (``tunnel_port_config``)."""
    config = cluster.registration.get("tunnel_port_config") or {}
    out: dict[str, int] = {}
    for key, name in PORT_CONFIG_FORWARDS.items():
        port = config.get(key, 0)
        out[name] = port if isinstance(port, int) and 0 <= port <= 65535 else 0
    return out


def stats_view(stats: MuxStats) -> dict[str, Any]:
    out = {name: getattr(stats, name) for name in _STAT_FIELDS}
    out["streams_active"] = stats.streams_active
    return out


class ClusterTunnel:
    def __init__(self, cluster_id: str, agent_id: str, settings: TunnelSettings) -> None:
        self.cluster_id = cluster_id
        self.agent_id = agent_id
        self.settings = settings
        self.listeners: dict[str, Listener] = {}  # forwards by name, then extra listeners
        self.commands = CommandBook(settings.command_history)
        self.mode: str | None = None  # debug override: "pending" | "disabled"
        self.session: Multiplexer | None = None
        self.hello: dict[str, Any] | None = None
        self.connects = 0
        self.connected_at: str | None = None
        self.disconnected_at: str | None = None
        self.last_close: dict[str, Any] | None = None
        self.last_status: dict[str, Any] | None = None
        # the agent's ``status`` per session (a stopped one is dropped), at most MAX_SESSIONS
        self.sessions: dict[str, dict[str, Any]] = {}
        self.errors: deque[dict[str, Any]] = deque(maxlen=20)  # error messages from the agent
        self._totals = MuxStats()  # summed over the sessions that ended
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    # --- allocation -------------------------------------------------------------------

    async def allocate(self, names: dict[str, int]) -> dict[str, int]:
        """Listeners for these forwards (name -> requested port, 0: any); returns name ->
        allocated port for each. Existing allocations are kept as they are (a reconnecting
        agent finds its ports again). Raises :class:`TooManyListeners` past
        ``MAX_LISTENERS`` for the cluster, allocating none of them."""
        async with self._lock:
            new = [name for name in names if name not in self.listeners]
            self._check_room(len(new))
            for name in new:
                await self._add(name, {"forward": name}, names[name])
            return {name: self.listeners[name].port for name in names}

    async def add_listener(self, target: dict[str, Any]) -> Listener:
        """An extra listener (e.g. a Service target) on a free port."""
        async with self._lock:
            label = f"{target['namespace']}/{target['service']}:{target['port']}"
            name = f"service:{label}"
            if name not in self.listeners:
                self._check_room(1)
                await self._add(name, target, 0)
            return self.listeners[name]

    def _check_room(self, more: int) -> None:
        if len(self.listeners) + more > MAX_LISTENERS:
            raise TooManyListeners(
                f"cluster {self.cluster_id} would have more than {MAX_LISTENERS} listeners "
                f"({len(self.listeners)} open, {more} more asked for)")

    async def remove_listener(self, name: str) -> bool:
        async with self._lock:
            listener = self.listeners.pop(name, None)
        if listener is None:
            return False
        await listener.stop()
        return True

    async def _add(self, name: str, target: dict[str, Any], port: int) -> None:
        listener = Listener(name, target, self.wait_session, requested_port=port,
                            connect_wait=self.settings.connect_wait,
                            open_timeout=self.settings.open_timeout)
        await listener.start(self.settings.bind_host)
        self.listeners[name] = listener
        log.info("forward allocated", extra={"cluster_id": self.cluster_id, "forward": name,
                                             "port": listener.port})

    def forwards(self) -> list[dict[str, Any]]:
        return [{"name": n, "remote_port": f.port} for n, f in sorted(self.listeners.items())
                if "forward" in f.target]

    # --- the connection ---------------------------------------------------------------

    def usable_session(self) -> Multiplexer | None:
        s = self.session
        # ``connection.closed``: the session is being torn down (it refuses to send)
        if s is None or s.closed or s.connection.closed or s.draining or s.peer_draining:
            return None
        return s

    async def wait_session(self, timeout: float) -> Multiplexer | None:
        """The live session, waiting up to ``timeout`` for one; None if there is none."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    session = self.usable_session()
                    if session is not None:
                        return session
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            return None

    def notify(self) -> None:
        """Something about the connection changed (drain, close): wake waiters."""
        self._changed.set()

    def attach(self, session: Multiplexer, hello: dict[str, Any]) -> None:
        if self.session is not None and self.session is not session:  # replaced
            self.commands.connection_lost("replaced by a new connection")
        self.session = session
        self.hello = hello
        self.sessions.clear()  # the agent sends every live session's state again
        self.connects += 1
        self.connected_at = now_rfc3339()
        self.notify()

    def detach(self, session: Multiplexer) -> None:
        """``session`` ended: fold its counters into the totals."""
        for name in _STAT_FIELDS:
            setattr(self._totals, name, getattr(self._totals, name)
                    + getattr(session.stats, name))
        if self.session is session:
            self.session = None
            self.disconnected_at = now_rfc3339()
            self.last_close = {"code": session.close_code, "reason": session.close_reason}
            self.commands.connection_lost(session.close_reason or "closed")
        self.notify()

    def on_status(self, message: dict[str, Any]) -> None:
        """A ``status`` message: the latest one, and a session's state if it names one."""
        self.last_status = message
        session_id = message.get("sessionId")
        if not isinstance(session_id, str) or not 0 < len(session_id) <= 63 \
                or message.get("state") not in SESSION_STATES:
            return
        if message.get("state") == "stopped":
            self.sessions.pop(session_id, None)
        elif session_id in self.sessions or len(self.sessions) < MAX_SESSIONS:
            history = self.sessions.get(session_id, {}).get("history", [])
            if not history or history[-1] != message["state"]:
                history = [*history, message["state"]][-MAX_HISTORY:]
            self.sessions[session_id] = {
                "state": message["state"],
                "history": history,
                **{k: v if isinstance(v := message.get(k), int) else None
                   for k in ("replicas", "readyReplicas")}}
        self.notify()

    # --- views ------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        session = self.session
        current = stats_view(session.stats) if session is not None else None
        totals = stats_view(self._totals)
        if session is not None:
            totals = {k: totals[k] + v for k, v in stats_view(session.stats).items()}
        streams = ([asdict(info) for info in session.stream_info()]
                   if session is not None else [])
        return {
            "cluster_id": self.cluster_id, "agent_id": self.agent_id,
            "connected": session is not None and not session.closed,
            "draining": bool(session and (session.draining or session.peer_draining)),
            "mode": self.mode, "connects": self.connects, "connected_at": self.connected_at,
            "disconnected_at": self.disconnected_at, "last_close": self.last_close,
            "hello": self.hello, "last_status": self.last_status,
            "sessions": dict(sorted(self.sessions.items())),
            "forwards": [f.view() for _, f in sorted(self.listeners.items())
                         if "forward" in f.target],
            "listeners": [f.view() for _, f in sorted(self.listeners.items())
                          if "forward" not in f.target],
            "stats": current, "stats_total": totals, "streams": streams,
            "errors": list(self.errors),
            "commands": {"total": len(self.commands.all()),
                         "in_flight": self.commands.in_flight()},
        }

    async def close(self, reason: str = "control plane shutting down") -> None:
        """Close the session (1001) and every listener."""
        session = self.session
        if session is not None:
            await session.close(1001, reason)
        for listener in list(self.listeners.values()):
            await listener.stop()
        self.listeners.clear()
