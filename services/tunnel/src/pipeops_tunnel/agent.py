"""The tunnel's main coroutine: identity -> allocation -> connection, reconnecting forever.

    start -> wait for the registrar's identity file (status: degraded; the detail and a
             log line say what it waits for: no file, a corrupt one, not registered)
          -> GET /api/v1/tunnel/status until ready (tenacity on faults, poll on pending)
          -> connect; on loss: backoff with full jitter (base 0.5 s, cap 30 s), reset
             after RESET_AFTER seconds connected; a handshake refused with
             401/403/404/409/410, STALE_AFTER attempts in a row that fail before
             hello_ack (a stale tunnel_url), or a new identity from the registrar, asks
             for the allocation again (with backoff); a drain from the control plane
             connects again at once (the old connection closes when its streams end)
    SIGTERM -> running commands report failed, the live connection drains, exit 0

Both backoffs are tenacity's (``agentkit.retry.retrying``): a run of failures is one
``retrying`` whose ``attempt_number`` counts them, and progress (hello_ack for the
allocation's, a connection that lasted RESET_AFTER seconds or was drained for the
connection's) ends it, so the next failure starts a fresh one.

The identity and the allocation survive a reconnect; streams do not (the mux resets them
when the connection ends). Commands and their outcomes outlive connections, and so does
the watch of the session Deployments whose state changes go out as ``status`` messages
(``session_status``; every live session's state again on each new connection).

Session management (``tunnel.sessions.enabled``, on by default) costs nothing until it is
used: the Kubernetes client (``kubernetes``, ~13 MiB of a ~55 MiB process) and the status
watch start with the first session command, or at start when the state volume's marker
(``session_status.MARKER``) says the last watch saw live sessions, so a restarted tunnel
reports them again at once. Off, session commands fail with the reason and nothing loads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl

from tenacity import RetryCallState

from agentkit.controlplane import ControlPlaneClient, TunnelStatus
from agentkit.events import KIND_EVENT
from agentkit.identity import Identity, IdentityFile, IdentityFollower
from agentkit.kube import LazyKube
from agentkit.mux import Multiplexer
from agentkit.retry import FailureReport, retrying
from agentkit.runner import ServiceContext
from agentkit.tls import control_plane_context
from pipeops.agent.v1 import gateway_pb2
from pipeops_tunnel.allocation import AllocationClient
from pipeops_tunnel.commands import CommandRunner
from pipeops_tunnel.connection import (
    Connection,
    ConnectionLost,
    Drained,
    HandshakeRefused,
    HelloAck,
)
from pipeops_tunnel.session_status import MARKER, SessionStatus
from pipeops_tunnel.sessions import CommandFailed, Sessions
from pipeops_tunnel.state import CONNECTED, CONNECTING, DISABLED, DISCONNECTED, TunnelState
from pipeops_tunnel.targets import Checked, Dialer, TargetPolicy, out_of_cluster_api

log = logging.getLogger(__name__)

RESET_AFTER = 60.0  # seconds connected after which the backoff starts over
STALE_AFTER = 3  # attempts in a row failing before hello_ack: ask for the allocation again


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, HandshakeRefused)


class TunnelAgent:
    def __init__(self, ctx: ServiceContext, state: TunnelState,
                 forwards: dict[str, str]) -> None:
        self.ctx = ctx
        self.config = ctx.config
        self.state = state
        self.forwards = forwards
        self.identity = IdentityFollower(IdentityFile(ctx.config.agent.state_dir),
                                         on_waiting=self._identity_waiting)
        self.kube = LazyKube(ctx.config.kubernetes, ctx.status)
        self.commands = CommandRunner(self._sessions)
        self.session_status = SessionStatus(self.kube, ctx.config.kubernetes.session_namespace,
                                            ctx.config.pipeops.reconnect,
                                            marker=ctx.config.agent.state_dir / MARKER)
        self._statuses: asyncio.Task[None] | None = None  # the status watch, once started
        policy = TargetPolicy(forwards, self._check_target)
        self.dialer = Dialer(policy, ctx.config.tunnel.dial_timeout)
        self.connection: Connection | None = None
        self._acks = 0  # hello_acks received, ever
        self._retiring: set[asyncio.Task[None]] = set()  # drained connections, closing
        self._allocated_for: Identity | None = None  # the identity that got it
        self.tls: ssl.SSLContext | None = None

    async def _sessions(self) -> Sessions:
        if not self.config.tunnel.sessions.enabled:
            raise CommandFailed("session management is disabled on this agent "
                                "(tunnel.sessions.enabled is false)")
        client = await self.kube.get()
        if client is None:
            raise CommandFailed(self.kube.problem)
        self._watch_sessions()
        return Sessions(client, self.config.kubernetes.session_namespace)

    def _watch_sessions(self) -> None:
        """Start the session status watch once (a root task: it dies, the service stops)."""
        if self._statuses is None and self.config.tunnel.sessions.enabled:
            self._statuses = self.ctx.spawn(self.session_status.run(),
                                            name="tunnel:session-status")

    async def _check_target(self, namespace: str, service: str, port: int) -> Checked:
        """The gateway allows the target and resolves it from its watch of Services: the
        tunnel never needs the Kubernetes client for a route."""
        reply = await self.ctx.siblings.call("gateway", "Gateway/CheckTarget",
                                             gateway_pb2.CheckTargetRequest(
                                                 namespace=namespace, service=service,
                                                 port=port))
        if reply is None:  # down, or an error (logged and shown in Describe by siblings)
            return Checked(False, "the gateway cannot be asked")
        return Checked(reply.allowed, reply.reason, reply.cluster_ip, reply.unresolved)

    # --- the main coroutine -------------------------------------------------------------

    async def run(self) -> None:
        if not self.config.tunnel.enabled:
            self.state.set_state(DISABLED, "the tunnel is disabled (tunnel.enabled is false)")
            await asyncio.Event().wait()
        await out_of_cluster_api(self.config, self.forwards)
        for fwd in self.state.forwards:
            fwd.local_addr = self.forwards[fwd.name]
        self.tls = await asyncio.to_thread(control_plane_context, self.config.pipeops.tls)
        plane = ControlPlaneClient(self.config.pipeops.api_url,
                                   timeout=self.config.pipeops.timeout, verify=self.tls,
                                   user_agent=f"pipeops-tunnel/{self.version}")
        # root tasks: if one dies, the runner stops the service (exit 1, one error line)
        self.state.set_state(DISCONNECTED, "waiting for the registrar's identity file at "
                             f"{self.identity.file.path}")
        watcher = self.ctx.spawn(self.identity.run(), name="tunnel:identity")
        if await asyncio.to_thread(self.session_status.marked):
            self._watch_sessions()  # live sessions when we last looked: report them again
        try:
            await self.identity.wait_ready()
            allocations = AllocationClient(self.config, plane)
            while True:  # a fresh backoff once a connection got its hello_ack
                async for attempt in retrying(self.config.pipeops.reconnect,
                                              before_sleep=self._refused,
                                              retry_on=lambda e: isinstance(e, HandshakeRefused)):
                    with attempt:
                        acks = self._acks
                        try:
                            await self._allocate_and_connect(allocations)
                        except HandshakeRefused as exc:
                            if self._acks == acks:
                                raise  # refused in a row: ask again after a backoff
                            log.warning("%s; asking for the allocation again now", exc)
                            self.state.set_state(DISCONNECTED, str(exc), error=str(exc))
        finally:
            await asyncio.shield(self._shutdown(watcher, plane))

    async def _allocate_and_connect(self, allocations: AllocationClient) -> None:
        """Ask for the allocation, then stay connected; HandshakeRefused ends it."""
        self.state.set_state(DISCONNECTED, "asking the control plane for the tunnel")
        allocation = await allocations.wait_ready(self.identity.require, self._waiting)
        self._allocated_for = self.identity.require()
        self.state.set_allocation(allocation.tunnel_url, allocation.remote_ports)
        await self._keep_connected(allocation)

    def _refused(self, retry: RetryCallState) -> None:
        exc = retry.outcome.exception() if retry.outcome else None
        wait = retry.next_action.sleep if retry.next_action else 0.0
        log.warning("%s; asking for the allocation again in %.1fs", exc, wait,
                    extra={"attempt": retry.attempt_number})
        self.state.set_state(DISCONNECTED, str(exc), error=str(exc))

    def _identity_waiting(self, reason: str) -> None:
        """The identity file gives no (new) identity, and says why: before the first
        identity that is what the tunnel waits for (its status detail and a log line);
        after it, the identity in use stays and the reason is only logged."""
        if self.identity.current is None:
            log.info("%s", reason, extra={"path": str(self.identity.file.path)})
            self.state.set_state(DISCONNECTED, reason)
        else:
            log.info("%s; the identity read before stays in use", reason)

    async def ping(self) -> float:
        """A round trip over the live connection (``Tunnel.Ping``); ConnectionError when
        the tunnel is not connected."""
        connection = self.connection
        if connection is None or self.state.state != CONNECTED:
            raise ConnectionError(f"the tunnel is not connected: {self.ctx.status.detail}")
        return await connection.ping()

    @property
    def version(self) -> str:
        return self.ctx.status.version

    def _waiting(self, allocation: TunnelStatus | None, detail: str) -> None:
        if allocation is not None and allocation.status == "disabled":
            self.state.set_state(DISABLED, detail)
        else:
            self.state.set_state(DISCONNECTED, detail,
                                 error=detail if allocation is None else None)

    async def _keep_connected(self, allocation: TunnelStatus) -> None:
        """Connect and reconnect until cancelled; HandshakeRefused goes to the caller."""
        report = FailureReport(log, "the tunnel connection")

        def before_sleep(retry: RetryCallState) -> None:
            exc = retry.outcome.exception() if retry.outcome else None
            wait = retry.next_action.sleep if retry.next_action else 0.0
            self.state.set_state(DISCONNECTED, f"reconnecting in {wait:.1f}s after: {exc}",
                                 error=str(exc))

        while True:
            acked_at = 0  # the last attempt of this run that got its hello_ack
            async for attempt in retrying(self.config.pipeops.reconnect, report=report,
                                          retry_on=_retryable, before_sleep=before_sleep):
                with attempt:
                    number = attempt.retry_state.attempt_number
                    acks = self._acks
                    try:
                        await self._connect_once(allocation)
                    except ConnectionLost as exc:
                        if exc.connected_for < RESET_AFTER and not isinstance(exc, Drained):
                            raise
                        log.warning("%s after %.0fs; reconnecting", exc, exc.connected_for)
                        self.state.set_state(DISCONNECTED, str(exc), error=str(exc))
                    except HandshakeRefused:
                        raise
                    except Exception as exc:
                        # never got to hello_ack: after a few in a row the tunnel_url may
                        # be stale, so the allocation is asked for again
                        if self._acks == acks and number - acked_at >= STALE_AFTER:
                            raise HandshakeRefused(
                                f"{STALE_AFTER} connection attempts in a row failed, the "
                                f"last with: {exc}") from exc
                        raise
                    finally:
                        if self._acks != acks:
                            acked_at = number
            report.recovered()
            # A long-lived connection ended: start the backoff over, but never all agents
            # at the same instant (jitter up to the base delay).
            await asyncio.sleep(random.uniform(0, self.config.pipeops.reconnect.backoff_base))

    async def _connect_once(self, allocation: TunnelStatus) -> None:
        identity = self.identity.require()
        if identity != self._allocated_for:
            raise HandshakeRefused("the identity changed since the allocation")
        self.state.set_state(CONNECTING, f"connecting to {allocation.tunnel_url}")
        connection = Connection(
            self.config, identity, allocation, forwards=list(self.forwards),
            on_open=self.dialer.on_open, commands=self.commands, version=self.version,
            on_mux=self._mux_changed, tls=self.tls)
        self.connection = connection
        follow = asyncio.create_task(self._close_on_new_identity(connection, identity),
                                     name="tunnel:identity-change")
        try:
            await connection.run()
        finally:
            follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follow
            self.connection = None
            if connection.retiring is not None:
                self._retiring.add(connection.retiring)
                connection.retiring.add_done_callback(self._retiring.discard)

    async def _close_on_new_identity(self, connection: Connection,
                                     identity: Identity) -> None:
        """A re-registration (new token or cluster id) ends the connection made with the
        old identity; the next attempt asks for the allocation with the new one."""
        await self.identity.wait_changed(identity)
        log.info("the identity changed; reconnecting with the new one")
        await connection.abandon("agent identity changed")

    def _mux_changed(self, mux: Multiplexer | None, ack: HelloAck | None) -> None:
        if mux is not None and ack is not None:
            if self._acks:
                self.state.reconnects += 1
            self._acks += 1
            self.state.attach(mux)
            self.session_status.attach(mux.reply_control,
                                       lambda: mux.queued_control)
            self.state.set_allocation(self.state.tunnel_url, ack.remote_ports)
            self.state.set_state(CONNECTED, f"connected to {self.state.tunnel_url}", error="")
            self.ctx.bus.publish(KIND_EVENT, "tunnel connected",
                                 attributes={"reconnects": self.state.reconnects})
            log.info("tunnel connected", extra={"tunnel_url": self.state.tunnel_url,
                                                "reconnects": self.state.reconnects})
        else:
            self.session_status.detach()
            self.state.detach()
            self.state.set_state(DISCONNECTED, "the tunnel connection was lost")
            self.ctx.bus.publish(KIND_EVENT, "tunnel disconnected", level="warning")

    async def _shutdown(self, watcher: asyncio.Task[None], plane: ControlPlaneClient) -> None:
        await self.commands.close()
        if self._statuses is not None:
            self._statuses.cancel()
            await asyncio.gather(self._statuses, return_exceptions=True)
        for task in self._retiring:
            task.cancel()
        await asyncio.gather(*self._retiring, return_exceptions=True)
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await plane.aclose()
        await self.kube.aclose()
