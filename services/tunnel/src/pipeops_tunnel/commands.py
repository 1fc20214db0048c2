"""Commands from the control plane over the tunnel (PROTOCOL.md section 3).

``command {id, action, payload}`` gets ``ack {id}`` at once, then ``complete {id, result}``
or ``failed {id, error}``. The payload is validated before anything is done; a command id
seen before is never executed again: the agent acks it and repeats the stored outcome (or,
while it still runs, lets the one outcome follow), so a control plane that resends after a
reconnect gets its answer without a second execution. Recent ids are kept in a bounded
memory (``MEMORY`` entries, oldest finished first out).

The runner has two doors: ``handle`` (a ``command`` message from the tunnel) and ``run``
(``Tunnel.RunCommand`` over gRPC, from the http-api's ``POST /api/runners/{id}/command``).
Both share the validation, the id memory and the limit of commands in flight; an outcome
goes back through the door its command came in by (the caller of ``run`` gets it as the
return value; it is not sent to the control plane, which did not ask).

A refusal that says nothing about the command itself (too many in flight, no Kubernetes
client yet) is answered ``failed`` and the id forgotten, so the control plane may resend it.

The runner outlives connections: an outcome whose connection died is kept in a bounded
outbox and sent first on the next connection, once that one got hello_ack. (An outcome
sent into a connection that then dies before it went out is lost: outcomes are not kept
until acknowledged.) Every message the runner sends answers one the control plane sent,
so all of them take the bounded reply path: a control plane that keeps sending commands
but never reads cannot grow the queue; an outcome dropped there is still remembered, and
resending the id repeats it.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from agentkit.peerlog import PeerLog
from pipeops_tunnel import metrics
from pipeops_tunnel.sessions import CommandFailed, Sessions, validate

log = logging.getLogger(__name__)
# Every line a command causes is the peer's doing: rate-limited per kind, with a count.
peer_log = PeerLog(log)

MEMORY = 1024  # command ids remembered for deduplication
OUTBOX = 256  # outcomes kept while no connection is up
MAX_RUNNING = 16  # commands carried out at once; more are failed, not queued
MAX_ID = 256
MAX_ACTION = 40  # characters of an action name kept for logs and metric labels

Send = Callable[[dict[str, Any]], object]


class CommandRunner:
    def __init__(self, sessions: Callable[[], Awaitable[Sessions | None]], *,
                 memory: int = MEMORY, max_running: int = MAX_RUNNING) -> None:
        self._sessions = sessions
        self._memory_size = memory
        self._max_running = max_running
        self._seen: collections.OrderedDict[str, dict[str, Any] | None] = \
            collections.OrderedDict()
        self._outbox: collections.deque[dict[str, Any]] = collections.deque(maxlen=OUTBOX)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._reply: Send | None = None  # None: no connection (outcomes wait in the outbox)
        # the gRPC door: callers waiting for an id's outcome; ids whose outcome is theirs only
        self._waiters: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._local: set[str] = set()

    # --- the connection -----------------------------------------------------------------

    def attach(self, send: Send, reply: Send | None = None) -> None:
        """A connection is up: send through it, starting with what waited. ``reply`` sends
        answers to the peer's messages (acks, errors, outcomes), which a flooding peer must
        not be able to pile up: it may drop them, returning False."""
        self._reply = reply or send
        while self._outbox:
            message = self._outbox.popleft()
            if not self._deliver(message):
                self._outbox.appendleft(message)
                break

    def detach(self) -> None:
        self._reply = None

    def _answer(self, message: dict[str, Any]) -> None:
        """An ack or error: best effort, never stored for a later connection."""
        if self._reply is not None:
            try:
                self._reply(message)
            except Exception as exc:  # the session closed under us
                log.debug("cannot send %s now: %s", message.get("type"), exc)

    def _deliver(self, message: dict[str, Any]) -> bool:
        """False if there is no connection to send it through (it waits in the outbox)."""
        if self._reply is None:
            return False
        try:
            if self._reply(message) is False:
                log.debug("%s %s dropped: the control plane is not reading (a resend of "
                          "the id repeats it)", message.get("type"), message.get("id"))
        except Exception as exc:  # the session closed under us
            log.debug("cannot send %s now: %s", message.get("type"), exc)
            return False
        return True

    def _outcome(self, message: dict[str, Any]) -> None:
        if not self._deliver(message):
            self._outbox.append(message)

    # --- commands -----------------------------------------------------------------------

    @property
    def running(self) -> int:
        return len(self._tasks)

    def handle(self, message: dict[str, Any]) -> None:
        """A ``command`` message (called from the mux reader: never blocks)."""
        command_id = message.get("id")
        if not isinstance(command_id, str) or not command_id or len(command_id) > MAX_ID:
            self._answer({"type": "error", "reason": "command without a valid id"})
            return
        action = message.get("action")
        # the peer's string, cut to what a log line or a metric label may carry
        action_name = action[:MAX_ACTION] if isinstance(action, str) else ""
        if command_id in self._seen:
            metrics.COMMANDS.labels(action_name, "duplicate").inc()
            peer_log.info("duplicate command", "duplicate command not executed again",
                          extra={"command_id": command_id, "action": action_name})
            self._answer({"type": "ack", "id": command_id})
            outcome = self._seen[command_id]
            if outcome is not None:
                self._outcome(outcome)
            else:
                self._local.discard(command_id)  # the control plane now waits for it too
            return
        self._remember(command_id, None)
        self._answer({"type": "ack", "id": command_id})
        self._admit(command_id, action_name, message.get("payload"), door="tunnel")

    async def run(self, command_id: str, action: str, payload: Any) -> dict[str, Any]:
        """The gRPC door: carry out a command and return its outcome (``complete`` or
        ``failed``, as the tunnel would send it). An empty id gets a fresh one; an id seen
        before is not run again (its outcome, or the running one's, is returned).
        ValueError for an id that is too long. Cancelling the caller does not cancel the
        command: the runner owns it, as it owns the tunnel's."""
        command_id = command_id or f"local-{uuid.uuid4().hex[:16]}"
        if len(command_id) > MAX_ID:
            raise ValueError(f"command id longer than {MAX_ID} characters")
        waiter: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        if command_id in self._seen:
            metrics.COMMANDS.labels(action[:40], "duplicate").inc()
            peer_log.info("duplicate command", "duplicate command not executed again",
                          extra={"command_id": command_id, "action": action, "door": "grpc"})
            outcome = self._seen[command_id]
            if outcome is not None:
                return outcome
        else:
            self._local.add(command_id)
            self._remember(command_id, None)
        self._waiters.setdefault(command_id, []).append(waiter)
        try:
            if command_id in self._local and command_id not in self._tasks:
                self._admit(command_id, action, payload, door="grpc")
            return await waiter
        finally:
            waiting = self._waiters.get(command_id)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[command_id]

    def _admit(self, command_id: str, action_name: str, raw: Any, *, door: str) -> None:
        """Validate and start a new command (its id already remembered as running)."""
        try:
            payload = validate(action_name, raw)
        except ValueError as exc:
            self._finish(command_id, action_name, None, str(exc), refused=True)
            return
        if len(self._tasks) >= self._max_running:
            self._finish(command_id, action_name, None,
                         f"too many commands in flight ({self._max_running})", transient=True)
            return
        peer_log.info("command received", "command received",
                      extra={"command_id": command_id, "action": action_name, "door": door})
        task = asyncio.create_task(self._execute(command_id, action_name, payload),
                                   name=f"command:{command_id}")
        self._tasks[command_id] = task
        task.add_done_callback(functools.partial(self._done, command_id))

    def _done(self, command_id: str, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(command_id, None)

    async def _execute(self, command_id: str, action: str, payload: Any) -> None:
        try:
            try:
                sessions = await self._sessions()
                if sessions is None:
                    raise CommandFailed("no Kubernetes API client: check the kubernetes config")
            except CommandFailed as exc:  # nothing was tried: a resend may run it
                self._finish(command_id, action, None, str(exc), transient=True)
                return
            result = await sessions.run(action, payload)
        except CommandFailed as exc:
            self._finish(command_id, action, None, str(exc))
        except asyncio.CancelledError:
            self._finish(command_id, action, None, "the agent stopped before it finished")
            raise
        except Exception as exc:
            log.exception("command failed unexpectedly", extra={"command_id": command_id})
            self._finish(command_id, action, None, f"internal error: {type(exc).__name__}")
        else:
            self._finish(command_id, action, result, None)

    def _finish(self, command_id: str, action: str, result: dict[str, Any] | None,
                error: str | None, *, transient: bool = False, refused: bool = False) -> None:
        """Send the outcome and remember it; ``transient``: forget the id instead (the
        command was not tried, so the same id sent again runs); ``refused``: its payload
        was invalid (said under its own rate limit, apart from real failures)."""
        if error is None:
            outcome: dict[str, Any] = {"type": "complete", "id": command_id,
                                       "result": result or {}}
            peer_log.info("command complete", "command complete",
                          extra={"command_id": command_id, "action": action})
        else:
            outcome = {"type": "failed", "id": command_id, "error": error}
            peer_log.warning("command refused" if refused else "command failed",
                             "command refused: %s" if refused else "command failed: %s",
                             error[:300], extra={"command_id": command_id, "action": action})
        metrics.COMMANDS.labels(action or "none", outcome["type"]).inc()
        if transient:
            self._seen.pop(command_id, None)
        else:
            self._remember(command_id, outcome)
        for waiter in self._waiters.get(command_id, []):
            if not waiter.done():
                waiter.set_result(outcome)
        if command_id in self._local:
            self._local.discard(command_id)  # came in through gRPC: answered there
        else:
            self._outcome(outcome)

    def _remember(self, command_id: str, outcome: dict[str, Any] | None) -> None:
        self._seen[command_id] = outcome
        self._seen.move_to_end(command_id)
        while len(self._seen) > self._memory_size:
            # the oldest finished id goes; a running one is never forgotten
            victim = next((cid for cid in self._seen
                           if cid not in self._tasks and cid != command_id), None)
            if victim is None:
                break
            del self._seen[victim]

    async def close(self) -> None:
        """Cancel running commands (each reports ``failed``) and wait for them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
