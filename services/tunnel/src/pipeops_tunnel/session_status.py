"""Session state reported to the control plane: ``status`` messages (PROTOCOL.md section 3).

The session Deployments (label ``app=pipeops-session``) in ``kubernetes.session_namespace``
are listed, then watched; each change of a session's state is sent as

    {"type": "status", "sessionId": ..., "state": "starting" | "running" | "hibernated"
     | "stopped", "replicas": n, "readyReplicas": n}

The latest state per session wins: what could not be sent yet (no connection, or the
control plane not reading) waits as one message per session and goes out on the next
change or tick. Status messages never fill more than ``MAX_QUEUED`` places of the
connection's control queue, so command acks and outcomes always find room. Each new
connection gets every live session's state again (the control plane starts its picture
afresh there), so a control plane that restarted or missed messages (a ``stopped`` lost
with a dying connection) catches up. Both maps are bounded (``MAX_SESSIONS``).

While the last list or change showed live sessions, the file ``MARKER`` exists in the state
volume; the tunnel starts the watch at once when it finds it (``agent``), and otherwise
only with the first session command, so an agent without sessions never loads
``kubernetes``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agentkit.config import ReconnectConfig
from agentkit.kube import Kube, KubeError, LazyKube, Listed
from agentkit.kube import resources as r
from agentkit.retry import FailureReport, policy_wait, retrying
from pipeops_tunnel.sessions import APP_LABEL

log = logging.getLogger(__name__)

MAX_SESSIONS = 4096  # sessions whose state is kept; more are not reported (said once)
RETRY_TICK = 1.0  # seconds between attempts to send what the control plane did not take
MAX_QUEUED = 256  # control messages queued on the connection above which none is added
WATCH_SECONDS = 300  # one watch request, then another from where it ended
MARKER = "tunnel-sessions-live"  # in the state dir while live sessions are known

Send = Callable[[dict[str, Any]], bool]
Queued = Callable[[], int]


def status_of(deployment: dict[str, Any]) -> dict[str, Any] | None:
    """The ``status`` message for a session Deployment (None: not a session's).

    ``running`` only once the controller has seen the latest spec and that many replicas
    of it are updated and ready: a status left from before a wake or an update says
    ``starting``."""
    metadata = deployment.get("metadata") or {}
    session_id = (metadata.get("labels") or {}).get("session")
    if not session_id:
        return None
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    status = deployment.get("status") or {}
    ready = status.get("readyReplicas") or 0
    current = (status.get("observedGeneration") or 0) >= (metadata.get("generation") or 0)
    settled = current and (status.get("updatedReplicas") or 0) >= wanted and ready >= wanted
    state = "hibernated" if wanted == 0 else "running" if settled else "starting"
    return {"type": "status", "sessionId": str(session_id), "state": state,
            "replicas": wanted, "readyReplicas": ready}


def stopped(session_id: str) -> dict[str, Any]:
    return {"type": "status", "sessionId": session_id, "state": "stopped",
            "replicas": 0, "readyReplicas": 0}


class SessionStatus:
    def __init__(self, kube: LazyKube, namespace: str, policy: ReconnectConfig, *,
                 max_sessions: int = MAX_SESSIONS, marker: Path | None = None) -> None:
        self.kube = kube
        self.marker = marker
        self._marked: bool | None = None  # what the marker file says, once we know
        self.namespace = namespace
        self.policy = policy
        self.max_sessions = max_sessions
        self.latest: dict[str, dict[str, Any]] = {}  # live sessions' states
        self._unsent: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._send: Send | None = None
        self._queued: Queued = lambda: 0
        self._lists = 0  # successful lists, ever: progress that starts the backoff over
        self._over_limit_said = False

    # --- the connection -----------------------------------------------------------------

    def attach(self, send: Send, queued: Queued | None = None) -> None:
        """A connection is up: every live session's state again, then the changes.
        ``queued``: how many control messages wait on the connection."""
        self._send = send
        self._queued = queued or (lambda: 0)
        for session_id, message in self.latest.items():
            self._queue(session_id, message)
        self.flush()

    def detach(self) -> None:
        self._send = None

    def flush(self) -> None:
        """Send what waits, oldest first, while the connection takes it."""
        while self._unsent and self._send is not None and self._queued() < MAX_QUEUED:
            session_id, message = next(iter(self._unsent.items()))
            try:
                if self._send(message) is False:
                    return  # the control plane is not reading: the next tick tries again
            except Exception as exc:  # the session closed under us
                log.debug("cannot send a session status now: %s", exc)
                return
            del self._unsent[session_id]

    @property
    def unsent(self) -> int:
        return len(self._unsent)

    def _queue(self, session_id: str, message: dict[str, Any]) -> None:
        self._unsent.pop(session_id, None)
        self._unsent[session_id] = message  # latest wins, at the back
        while len(self._unsent) > 2 * self.max_sessions:  # stopped ones piled up offline
            self._unsent.popitem(last=False)

    # --- the marker -------------------------------------------------------------------

    def marked(self) -> bool:
        """Blocking: whether the marker says live sessions were known (call off the loop)."""
        return self.marker is not None and self.marker.exists()

    def _write_marker(self, live: bool) -> None:
        assert self.marker is not None
        if live:
            self.marker.touch()
        else:
            self.marker.unlink(missing_ok=True)

    async def _mark(self) -> None:
        """Keep the marker in step with whether live sessions are known."""
        live = bool(self.latest)
        if self.marker is None or live == self._marked:
            return
        try:
            await asyncio.to_thread(self._write_marker, live)
        except OSError as exc:  # the state volume: the watch still works without it
            log.warning("cannot update %s: %s", self.marker, exc)
            return
        self._marked = live

    # --- the sessions -------------------------------------------------------------------

    def _seen(self, message: dict[str, Any]) -> None:
        session_id = message["sessionId"]
        if message["state"] == "stopped":
            if self.latest.pop(session_id, None) is None:
                return
        elif self.latest.get(session_id) == message:
            return
        elif session_id not in self.latest and len(self.latest) >= self.max_sessions:
            if not self._over_limit_said:
                log.warning("more than %d sessions: the states of the others are not "
                            "reported", self.max_sessions)
                self._over_limit_said = True
            return
        else:
            self.latest[session_id] = message
        self._queue(session_id, message)
        self.flush()

    def _listed(self, items: list[dict[str, Any]]) -> None:
        """A full list: what is gone since the last one stopped."""
        now = {m["sessionId"]: m for m in map(status_of, items) if m is not None}
        for session_id in [s for s in self.latest if s not in now]:
            self._seen(stopped(session_id))
        for message in now.values():
            self._seen(message)

    async def run(self) -> None:
        """List and watch until cancelled; failures are retried with backoff (tenacity,
        full jitter), which starts over after a successful list."""
        ticker = asyncio.create_task(self._tick(), name="tunnel:session-status-tick")
        report = FailureReport(log, "watching the session Deployments")
        try:
            while True:  # a fresh backoff after each successful list
                async for attempt in retrying(self.policy, report=report):
                    with attempt:
                        listed = self._lists
                        try:
                            client = await self.kube.get()
                            if client is None:
                                raise KubeError("watch deployments", 0, self.kube.problem)
                            await self._follow(client, report)
                        except Exception as exc:
                            if self._lists == listed:
                                raise  # no list since the last failure: back off more
                            # the first wait of a fresh backoff, then list again
                            wait = random.uniform(0, self.policy.backoff_base)
                            report.failed(exc, retry_in=round(wait, 2))
                            await asyncio.sleep(wait)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(RETRY_TICK)
            self.flush()

    async def _follow(self, client: Kube, report: FailureReport) -> None:
        """List, then watch (the layer lists again by itself after a 410); watches that
        end at once back off with the reconnect policy."""
        changes = client.follow(r.DEPLOYMENTS, self.namespace,
                                label_selector=f"app={APP_LABEL}",
                                timeout_seconds=WATCH_SECONDS,
                                quick_wait=policy_wait(self.policy))
        async with contextlib.aclosing(changes):
            async for change in changes:
                if isinstance(change, Listed):
                    self._listed(change.items)
                    report.recovered()
                    self._lists += 1
                    await self._mark()
                    continue
                message = status_of(change.object)
                if message is not None:
                    self._seen(stopped(message["sessionId"]) if change.type == "DELETED"
                               else message)
                    await self._mark()
