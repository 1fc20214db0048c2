"""Commands sent to an agent over its tunnel and what became of them (PROTOCOL.md section 3).

The control plane sends ``command {id, action, payload}``; the agent answers ``ack {id}``
at once, then ``complete {id, result}`` or ``failed {id, error}``. A :class:`CommandBook`
keeps one record per command id for a cluster (bounded, oldest forgotten first) so an
outcome can be awaited by the caller that sent it or read later. Sending an id again is
allowed on purpose: the agent must not execute it twice, and tests check exactly that.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from pipeops_controlplane.store import now_rfc3339

log = logging.getLogger("pipeops_controlplane.tunnel")

TERMINAL = ("complete", "failed", "lost")
_HISTORY = 20  # messages kept per command


@dataclass
class CommandRecord:
    id: str
    action: str
    payload: dict[str, Any]
    # sent | acked | complete | failed | lost (the tunnel ended first; a reply that still
    # arrives, e.g. delivered by the agent on its next connection, updates the record)
    state: str = "sent"
    result: Any = None
    error: str | None = None
    sends: int = 0
    sent_at: str = ""
    acked_at: str | None = None
    finished_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    def view(self) -> dict[str, Any]:
        return {"id": self.id, "action": self.action, "payload": self.payload,
                "state": self.state, "result": self.result, "error": self.error,
                "sends": self.sends, "sent_at": self.sent_at, "acked_at": self.acked_at,
                "finished_at": self.finished_at, "history": list(self.history)}

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for an outcome; True if there is one."""
        if self.finished:
            return True
        try:
            async with asyncio.timeout(timeout):
                await self.done.wait()
        except TimeoutError:
            return False
        return True


class CommandBook:
    """The commands of one cluster."""

    def __init__(self, limit: int = 500) -> None:
        self.limit = limit
        self._records: OrderedDict[str, CommandRecord] = OrderedDict()

    def get(self, command_id: str) -> CommandRecord | None:
        return self._records.get(command_id)

    def all(self) -> list[CommandRecord]:
        return list(self._records.values())

    def in_flight(self) -> int:
        return sum(1 for r in self._records.values() if not r.finished)

    def sending(self, command_id: str, action: str, payload: dict[str, Any]) -> CommandRecord:
        """Record that ``command_id`` is being sent (again): it waits for a new outcome."""
        record = self._records.get(command_id)
        if record is None:
            record = CommandRecord(command_id, action, payload)
            self._records[command_id] = record
            while len(self._records) > self.limit:
                self._records.popitem(last=False)
        record.action, record.payload = action, payload
        record.state, record.result, record.error = "sent", None, None
        record.acked_at = record.finished_at = None
        record.sends += 1
        record.sent_at = now_rfc3339()
        record.done.clear()  # the same event: a caller still waiting hears the new outcome
        return record

    def on_reply(self, message: dict[str, Any]) -> bool:
        """An ``ack``/``complete``/``failed`` from the agent; False if it names no command
        we know (or carries no id)."""
        command_id = message.get("id")
        record = self._records.get(command_id) if isinstance(command_id, str) else None
        if record is None:
            return False
        kind = message["type"]
        record.history.append(message)
        del record.history[:-_HISTORY]
        if kind == "ack":
            if not record.finished:
                record.state = "acked"
            record.acked_at = now_rfc3339()
            return True
        record.state = kind
        if kind == "complete":
            record.result = message.get("result")
            record.error = None
        else:
            error = message.get("error")
            record.error = error if isinstance(error, str) else repr(error)
        record.finished_at = now_rfc3339()
        record.done.set()
        return True

    def connection_lost(self, reason: str) -> None:
        """The tunnel ended: commands still waiting will never hear back on it."""
        for record in self._records.values():
            if not record.finished:
                record.state = "lost"
                record.error = f"the tunnel closed before the outcome: {reason}"
                record.finished_at = now_rfc3339()
                record.done.set()
