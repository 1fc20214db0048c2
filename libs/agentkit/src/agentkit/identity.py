"""The identity record, defined once: who this agent is at the control plane.

The registrar owns it: it writes ``identity.json`` on the shared state volume (atomically,
0600, checksummed: ``agentkit.statefile``) whenever it changes. Every sibling follows the
file the same way, with ``follow`` (an async iterator of each new registered identity) or
``IdentityFollower`` on top of it (the current identity, wait until there is one, wait
until it changes). The file is the siblings' source, not the registrar's gRPC
``WatchIdentity`` stream: the file carries the cluster token the siblings authenticate
with (gRPC never does), and it is there while the registrar restarts. ``WatchIdentity``
stays for operators (grpcurl) and says the same without the token.

A file that cannot be read (permissions, a directory in its place) is said once and waited
out; a corrupt one is moved aside by the state file and reads as "no identity" (the
registrar writes it again from its own state within a heartbeat); a record that is not
registered (yet, or any more) keeps the last registered identity in use. Whoever waits
is told why, in a sentence (``on_waiting``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from agentkit import logs
from agentkit.statefile import ABSENT, StateFile, identity_file

log = logging.getLogger(__name__)

# Fields that make up the identity; ``generation`` counts changes to them.
_TRACKED = ("agent_id", "cluster_id", "cluster_name", "cluster_token", "workspace_id",
            "api_url", "tunnel_url", "gateway_url", "registered_at", "state")


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Identity:
    agent_id: str = ""
    cluster_id: str = ""
    cluster_name: str = ""
    cluster_token: str = ""  # credential: never logged, never sent over gRPC
    workspace_id: str = ""
    api_url: str = ""
    tunnel_url: str = ""
    gateway_url: str = ""
    registered_at: str = ""  # RFC 3339, empty until registered
    state: str = "unregistered"  # unregistered | registered | rejected
    generation: int = 0

    def __repr__(self) -> str:  # the token stays out of tracebacks and debug output
        shown = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cluster_token"}
        return f"Identity({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Identity:
        """Build from a stored record, ignoring unknown keys and wrong types."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in record.items():
            if key == "generation":
                if isinstance(value, int) and not isinstance(value, bool):
                    values[key] = value
            elif key in known and isinstance(value, str):
                values[key] = value
        return cls(**values)

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    def evolve(self, **changes: Any) -> Identity:
        """A copy with ``changes``; the generation bumps when a tracked field changed."""
        updated = replace(self, **changes)
        if any(getattr(updated, name) != getattr(self, name) for name in _TRACKED):
            updated = replace(updated, generation=self.generation + 1)
        return updated

    @property
    def registered(self) -> bool:
        return self.state == "registered" and bool(
            self.agent_id and self.cluster_id and self.cluster_token)

    @property
    def credentials(self) -> tuple[str, str, str]:
        """What a sibling connects with: a change here means "reconnect"."""
        return (self.agent_id, self.cluster_id, self.cluster_token)

    def headers(self) -> dict[str, str]:
        """The headers a sibling authenticates with (the tunnel's handshake)."""
        return {"Authorization": f"Bearer {self.cluster_token}",
                "X-PipeOps-Cluster-ID": self.cluster_id,
                "X-PipeOps-Agent-ID": self.agent_id}


class IdentityFile:
    """``identity.json`` in the state directory: read, write, follow."""

    def __init__(self, state: StateFile | str | os.PathLike[str]) -> None:
        self.file = state if isinstance(state, StateFile) else identity_file(state)

    @property
    def path(self) -> Path:
        return self.file.path

    def read(self) -> Identity | None:
        """The stored identity, or None (absent or corrupt). Blocking: small local file."""
        record = self.file.read()
        return Identity.from_record(record) if record else None

    def write(self, identity: Identity) -> None:
        """Replace the file atomically. Blocking: small local file."""
        if identity.cluster_token:
            logs.register_secret(identity.cluster_token)
        self.file.write(identity.to_record())

    async def load(self) -> Identity | None:
        return await asyncio.to_thread(self.read)

    async def save(self, identity: Identity) -> None:
        await asyncio.to_thread(self.write, identity)

    async def follow(self, poll: float = 0.2,
                     on_waiting: Callable[[str], None] | None = None
                     ) -> AsyncIterator[Identity]:
        """Each new registered identity the file holds, the first as soon as there is one.

        Records that are not registered are skipped (the last registered one stays in
        use); an unreadable file is said once, then waited out. ``on_waiting`` is told,
        in a sentence, each new reason there is no (new) identity to use: no file yet,
        a corrupt one moved aside, an unreadable one, one not registered (yet).
        """
        seen: dict[str, Any] | None = None
        last: Identity | None = None
        unreadable = ""  # the error last logged, so an outage is one line, not one a poll
        path = self.file.path

        def waiting(reason: str) -> None:
            if on_waiting is not None:
                on_waiting(reason)

        def problem(found: str) -> None:
            if found == ABSENT:
                waiting(f"waiting for the registrar to write the identity file {path} "
                        "(there is none)")
            else:
                waiting(f"waiting for the registrar to write the identity file {path} "
                        f"again: it was {found}")

        while True:
            try:
                seen = await self.file.wait(changed_from=seen, poll=poll, on_problem=problem)
            except OSError as exc:  # not absent (that is waited for): unreadable
                if str(exc) != unreadable:
                    unreadable = str(exc)
                    log.warning("cannot read the identity file; trying again",
                                extra={"path": str(self.file.path), "error": unreadable})
                    waiting(f"waiting for the identity file {path} to be readable: "
                            f"{unreadable}")
                await asyncio.sleep(poll)
                continue
            if unreadable:
                log.info("the identity file is readable again")
                unreadable = ""
            identity = Identity.from_record(seen)
            if not identity.registered:
                if last is not None:
                    log.info("the identity file no longer holds a registered identity; "
                             "keeping the last one", extra={"state": identity.state})
                waiting(f"waiting for the registrar to register: the identity file {path} "
                        f"holds state {identity.state!r}")
                continue
            logs.register_secret(identity.cluster_token)
            if identity != last:
                last = identity
                yield identity


class IdentityFollower:
    """The latest registered identity of the file, for a sibling's tasks to share.

    ``run`` is a task its owner starts and cancels; ``current`` changes only when the
    credentials (agent id, cluster id, token) do. ``on_waiting`` is told, in a sentence,
    each new reason the file gives no (new) identity (see ``IdentityFile.follow``), so a
    sibling waiting for one can say what it waits for.
    """

    def __init__(self, file: IdentityFile, poll: float = 0.2,
                 on_waiting: Callable[[str], None] | None = None) -> None:
        self.file = file
        self.poll = poll
        self.on_waiting = on_waiting
        self.current: Identity | None = None
        self._changed = asyncio.Condition()

    def _waiting(self, reason: str) -> None:
        if self.on_waiting is not None:
            self.on_waiting(reason)

    async def run(self) -> None:
        async for identity in self.file.follow(self.poll, self._waiting):
            if self.current is not None and identity.credentials == self.current.credentials:
                continue
            log.info("identity read", extra={"agent_id": identity.agent_id,
                                             "cluster_id": identity.cluster_id})
            async with self._changed:
                self.current = identity
                self._changed.notify_all()

    async def wait_ready(self) -> Identity:
        """The current identity, once there is one."""
        return await self.wait_changed(None)

    async def wait_changed(self, identity: Identity | None) -> Identity:
        """Wait until the current identity is no longer ``identity``; return the new one."""
        async with self._changed:
            await self._changed.wait_for(
                lambda: self.current is not None and self.current != identity)
            assert self.current is not None
            return self.current

    def require(self) -> Identity:
        if self.current is None:
            raise RuntimeError("no identity yet")
        return self.current
