"""The tunnel endpoint: a ``websockets`` server that accepts one agent connection per
cluster, runs a :class:`~agentkit.mux.Multiplexer` (``Role.CONTROL_PLANE``) over it, and
routes the agent's control messages (hello, command replies, status, errors).

The handshake is checked before the upgrade: subprotocol ``pipeops.tunnel.v1`` (else 400),
``Authorization: Bearer <cluster token>`` (401), ``X-PipeOps-Cluster-ID`` naming a known
cluster (404) and ``X-PipeOps-Agent-ID`` naming its agent (409); a disabled tunnel is 403
and a pending one 503. Compression is off. After the upgrade the agent must send a valid
``hello`` within ``hello_timeout``; we answer ``hello_ack`` with its forwards' ports.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from agentkit.mux import SUBPROTOCOL, Multiplexer, MuxSettings, Role, Stream
from agentkit.mux.frames import MAX_WINDOW
from agentkit.tasks import first_completed, settle
from pipeops_controlplane.store import Cluster, ClusterStore
from pipeops_controlplane.tunnel.cluster import (
    MAX_FORWARD_NAME,
    ClusterTunnel,
    TooManyListeners,
    requested_forwards,
)
from pipeops_controlplane.tunnel.commands import CommandRecord
from pipeops_controlplane.tunnel.settings import TUNNEL_PATH, TunnelSettings
from pipeops_controlplane.tunnel.tls import TunnelTls, write_tunnel_tls

log = logging.getLogger("pipeops_controlplane.tunnel")

REPLY_TYPES = ("ack", "complete", "failed")


class NotConnected(RuntimeError):
    pass


class HelloError(ValueError):
    pass


def _bearer(headers: Headers) -> str:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


class TunnelHub:
    """Every cluster's tunnel, and the WebSocket server they connect to."""

    def __init__(self, settings: TunnelSettings, store: ClusterStore) -> None:
        self.settings = settings
        self.store = store
        self.tunnels: dict[str, ClusterTunnel] = {}
        self.url = ""  # the tunnel_url handed to agents, once the server listens
        self._server: Server | None = None
        self.tls: TunnelTls | None = None  # the throwaway CA's files, serving wss://
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sockets: dict[str, ServerConnection] = {}  # the live connection per cluster

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> str:
        """Start the WebSocket server; returns its URL."""
        s = self.settings
        context = None
        if s.tls_dir is not None:
            hosts = [s.bind_host, s.public_host.rpartition(":")[0] or s.public_host]
            self.tls = await asyncio.to_thread(write_tunnel_tls, s.tls_dir, hosts)
            context = await asyncio.to_thread(self.tls.server_context)
        self._server = await serve(
            self._connection, s.bind_host, s.port, process_request=self._check_request,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            compression=None, ping_interval=s.ping_interval, ping_timeout=s.ping_timeout,
            max_size=s.max_message, max_queue=s.max_queue, write_limit=s.write_limit,
            # A peer whose pong is late is dead: do not wait the default 10 s for the
            # close handshake it will never answer.
            close_timeout=2.0, server_header=None, ssl=context,
        )
        port = next(iter(self._server.sockets)).getsockname()[1]
        public = s.public_host or f"{s.bind_host}:{port}"
        self.url = f"{'wss' if context else 'ws'}://{public}{TUNNEL_PATH}"
        log.info("tunnel endpoint listening", extra={"url": self.url})
        return self.url

    async def stop(self) -> None:
        """Close the server, every session (1001) and every listener."""
        if self._server is not None:
            self._server.close(close_connections=False)
        for tunnel in list(self.tunnels.values()):
            await tunnel.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- tunnels and allocation -------------------------------------------------------

    def tunnel(self, cluster: Cluster) -> ClusterTunnel:
        found = self.tunnels.get(cluster.cluster_id)
        if found is None:
            found = ClusterTunnel(cluster.cluster_id, cluster.agent_id, self.settings)
            self.tunnels[cluster.cluster_id] = found
        found.agent_id = cluster.agent_id
        return found

    def status_of(self, cluster: Cluster) -> str:
        features = cluster.registration.get("features") or {}
        tunnel = self.tunnels.get(cluster.cluster_id)
        mode = tunnel.mode if tunnel is not None else None
        if not self.settings.enabled or features.get("tunnel") is False or mode == "disabled":
            return "disabled"
        if not self.url or mode == "pending":
            return "pending"
        return "ready"

    async def status(self, cluster: Cluster) -> dict[str, Any]:
        """The reply of ``GET /api/v1/tunnel/status``: allocates on the first ready call."""
        state = self.status_of(cluster)
        if state != "ready":
            return {"status": state, "tunnel_url": self.url if state == "pending" else "",
                    "forwards": []}
        tunnel = self.tunnel(cluster)
        await tunnel.allocate(requested_forwards(cluster))
        return {"status": "ready", "tunnel_url": self.url, "forwards": tunnel.forwards()}

    # --- the handshake ----------------------------------------------------------------

    def _check_request(self, ws: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if path != TUNNEL_PATH:
            return ws.respond(404, "not found\n")
        headers = request.headers
        protocols = ",".join(headers.get_all("Sec-WebSocket-Protocol"))
        if SUBPROTOCOL not in [p.strip() for p in protocols.split(",")]:
            return ws.respond(400, f"subprotocol {SUBPROTOCOL} required\n")
        token = _bearer(headers)
        if not token:
            return ws.respond(401, "missing bearer token\n")
        cluster = self.store.get(headers.get("X-PipeOps-Cluster-ID", ""))
        if cluster is None:
            return ws.respond(404, "cluster not found\n")
        if token != cluster.token:
            return ws.respond(401, "invalid cluster token\n")
        if headers.get("X-PipeOps-Agent-ID", "") != cluster.agent_id:
            return ws.respond(409, "agent id does not match the registered agent\n")
        state = self.status_of(cluster)
        if state == "disabled":
            return ws.respond(403, "the tunnel is disabled for this cluster\n")
        if state == "pending":
            return ws.respond(503, "the tunnel is not ready yet\n")
        return None

    # --- one connection ---------------------------------------------------------------

    async def _connection(self, ws: ServerConnection) -> None:
        cluster = self.store.get(ws.request.headers["X-PipeOps-Cluster-ID"])  # type: ignore[union-attr]
        if cluster is None:  # forgotten between the check and now
            await ws.close(1008, "cluster not found")
            return
        tunnel = self.tunnel(cluster)
        hello: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        session: Multiplexer | None = None

        def on_control(message: dict[str, Any]) -> None:
            assert session is not None
            self._on_control(tunnel, session, hello, message)

        session = Multiplexer(
            ws, Role.CONTROL_PLANE, on_control=on_control,
            settings=MuxSettings(window=self.settings.window, max_frame=self.settings.max_frame),
            open_timeout=self.settings.open_timeout, name=f"cp:{cluster.cluster_id[:8]}")
        session.start()
        try:
            closed = asyncio.create_task(session.wait_closed())
            try:  # hello stays as it is (read below); every outcome is read
                await first_completed({hello, closed}, timeout=self.settings.hello_timeout,
                                      cancel_pending=False)
            finally:
                await settle([closed])
            if not hello.done():
                if not session.closed:
                    await session.close(1008, "no hello")
                return
            try:
                ack = await self._hello_ack(tunnel, session, hello.result())
            except HelloError as exc:
                # straight on the socket: closing the session would drop a queued message
                with contextlib.suppress(ConnectionClosed):
                    await ws.send(json.dumps({"type": "error", "reason": str(exc)}))
                await session.close(1008, f"bad hello: {exc}")
                return
            previous = tunnel.session
            if previous is not None and not previous.closed:
                log.info("a new connection replaces the old one",
                         extra={"cluster_id": tunnel.cluster_id})
                self._spawn(previous.close(1000, "replaced by a new connection"),
                            f"tunnel:replace:{tunnel.cluster_id[:8]}")
            session.send_control(ack)
            tunnel.attach(session, hello.result())
            self._sockets[tunnel.cluster_id] = ws
            log.info("tunnel connected", extra={"cluster_id": tunnel.cluster_id,
                                                "agent_id": tunnel.agent_id,
                                                "forwards": ack["forwards"]})
            await session.wait_closed()
            log.info("tunnel disconnected", extra={"cluster_id": tunnel.cluster_id,
                                                   "code": session.close_code,
                                                   "reason": session.close_reason})
        finally:
            await session.close()
            tunnel.detach(session)
            if self._sockets.get(tunnel.cluster_id) is ws:
                del self._sockets[tunnel.cluster_id]

    def _on_control(self, tunnel: ClusterTunnel, session: Multiplexer,
                    hello: asyncio.Future[dict[str, Any]], message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "hello":
            if hello.done():
                session.reply_control({"type": "error", "reason": "duplicate hello"})
            else:
                hello.set_result(message)
        elif kind in REPLY_TYPES:
            if not tunnel.commands.on_reply(message):
                log.warning("reply for an unknown command",
                            extra={"cluster_id": tunnel.cluster_id, "type": kind,
                                   "id": str(message.get("id"))[:64]})
        elif kind == "status":
            tunnel.on_status(message)
        elif kind == "drain":
            log.info("the agent drains this connection", extra={"cluster_id": tunnel.cluster_id})
            tunnel.notify()
        elif kind == "error":
            tunnel.errors.append(message)
            log.warning("the agent reported an error",
                        extra={"cluster_id": tunnel.cluster_id,
                               "reason": str(message.get("reason"))[:200]})
        else:
            session.reply_control({"type": "error",
                                   "reason": f"unknown message type {kind[:64]!r}"})

    async def _hello_ack(self, tunnel: ClusterTunnel, session: Multiplexer,
                         greeting: dict[str, Any]) -> dict[str, Any]:
        if greeting.get("cluster_id") != tunnel.cluster_id:
            raise HelloError("hello cluster_id does not match the connection")
        if greeting.get("agent_id") != tunnel.agent_id:
            raise HelloError("hello agent_id does not match the connection")
        forwards = greeting.get("forwards")
        if not isinstance(forwards, list) or not all(
                isinstance(f, dict) and isinstance(f.get("name"), str)
                and 0 < len(f["name"]) <= MAX_FORWARD_NAME for f in forwards):
            raise HelloError("hello forwards must be a list of {name} "
                             f"(names of 1 to {MAX_FORWARD_NAME} characters)")
        window = greeting.get("window")
        if window is not None:
            if isinstance(window, bool) or not isinstance(window, int) \
                    or not 0 < window <= MAX_WINDOW:
                raise HelloError(f"hello window out of range: {window!r}")
            session.update_peer_settings(window=window)
        names = [f["name"] for f in forwards]
        try:
            ports = await tunnel.allocate(dict.fromkeys(names, 0))
        except TooManyListeners as exc:
            raise HelloError(str(exc)) from None
        # ``window``: the credit we grant per stream (the agent may send that much)
        return {"type": "hello_ack", "window": self.settings.window,
                "forwards": [{"name": n, "remote_port": ports[n]} for n in names]}

    # --- commands and streams ---------------------------------------------------------

    def send_command(self, cluster: Cluster, action: str, payload: dict[str, Any],
                     command_id: str | None = None) -> CommandRecord:
        tunnel = self.tunnels.get(cluster.cluster_id)
        session = tunnel.usable_session() if tunnel is not None else None
        if tunnel is None or session is None:
            raise NotConnected("the agent's tunnel is not connected")
        command_id = command_id or str(uuid.uuid4())
        # sent first: a session closing under us raises MuxClosed and records nothing
        session.send_control({"type": "command", "id": command_id, "action": action,
                              "payload": payload})
        record = tunnel.commands.sending(command_id, action, payload)
        log.info("command sent", extra={"cluster_id": cluster.cluster_id, "id": command_id,
                                        "action": action})
        return record

    async def open_stream(self, cluster_id: str, target: dict[str, Any]) -> Stream:
        """Open one stream to ``target`` (``{forward}`` or ``{service, namespace, port}``)
        on the cluster's live tunnel, waiting ``connect_wait`` for one. Raises
        :class:`NotConnected` or :class:`~agentkit.mux.OpenFailed`."""
        tunnel = self.tunnels.get(cluster_id)
        session = (await tunnel.wait_session(self.settings.connect_wait)
                   if tunnel is not None else None)
        if session is None:
            raise NotConnected("the agent's tunnel is not connected")
        return await session.open_stream(target)

    async def forget(self, cluster_id: str) -> bool:
        """The cluster is gone: close its session and listeners and drop its record."""
        tunnel = self.tunnels.pop(cluster_id, None)
        if tunnel is None:
            return False
        await tunnel.close("cluster forgotten")
        return True

    def drop(self, cluster_id: str) -> bool:
        """Kill the cluster's WebSocket without a close frame (a dead network, for tests)."""
        ws = self._sockets.get(cluster_id)
        if ws is None:
            return False
        ws.transport.abort()
        return True
