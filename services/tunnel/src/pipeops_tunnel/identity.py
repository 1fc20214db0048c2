"""Who the tunnel connects as: the registrar's identity file on the shared volume.

The registrar writes ``identity.json`` atomically once it has registered; the tunnel
waits for a registered identity (saying so in its status) and keeps following the file,
so a re-registration (new cluster token) is used by the next connection attempt without
a restart. The cluster token is registered with the log masker the moment it is read.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from agentkit import logs
from agentkit.statefile import StateFile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunnelIdentity:
    agent_id: str
    cluster_id: str
    cluster_token: str  # credential: never logged

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TunnelIdentity | None:
        """The identity if the record says registered and has every field, else None."""
        if record.get("state") != "registered":
            return None
        values = {k: record.get(k) for k in ("agent_id", "cluster_id", "cluster_token")}
        if not all(isinstance(v, str) and v for v in values.values()):
            return None
        return cls(**values)  # type: ignore[arg-type]

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.cluster_token}",
                "X-PipeOps-Cluster-ID": self.cluster_id,
                "X-PipeOps-Agent-ID": self.agent_id}


class IdentityWatch:
    """Follows the identity file; ``current`` is the latest registered identity."""

    def __init__(self, file: StateFile, poll: float = 0.2) -> None:
        self.file = file
        self.poll = poll
        self.current: TunnelIdentity | None = None
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Watch the file forever (a task owned by the agent)."""
        seen: dict[str, Any] | None = None
        unreadable = ""  # the error last logged, so an outage is one line, not one a poll
        while True:
            try:
                seen = await self.file.wait(changed_from=seen, poll=self.poll)
            except OSError as exc:  # not absent (that is waited for): unreadable
                if str(exc) != unreadable:
                    unreadable = str(exc)
                    log.warning("cannot read the identity file; trying again",
                                extra={"path": str(self.file.path), "error": unreadable})
                await asyncio.sleep(self.poll)
                continue
            if unreadable:
                log.info("the identity file is readable again")
                unreadable = ""
            identity = TunnelIdentity.from_record(seen)
            if identity is None:
                if self.current is not None:
                    log.info("the identity file no longer holds a registered identity; "
                             "keeping the last one", extra={"state": seen.get("state")})
                continue
            logs.register_secret(identity.cluster_token)
            if identity != self.current:
                log.info("identity read", extra={"agent_id": identity.agent_id,
                                                 "cluster_id": identity.cluster_id})
                self.current = identity
                self._changed.set()
                self._changed = asyncio.Event()
            self._ready.set()

    async def wait_ready(self) -> TunnelIdentity:
        await self._ready.wait()
        assert self.current is not None
        return self.current

    async def wait_changed(self, identity: TunnelIdentity) -> TunnelIdentity:
        """Wait until the current identity is no longer ``identity``; return the new one."""
        while self.current == identity:
            await self._changed.wait()
        assert self.current is not None
        return self.current

    def require(self) -> TunnelIdentity:
        if self.current is None:
            raise RuntimeError("no identity yet")
        return self.current

