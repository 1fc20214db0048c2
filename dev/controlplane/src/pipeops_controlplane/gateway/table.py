"""The routes the control plane holds for every cluster (PROTOCOL.md section 4), in memory.

A route is keyed by ``(cluster_id, hostname, path)``; a hostname belongs to the first
cluster that holds a route for it (another cluster asking for it is a conflict, 409).
Every route carries counters that let tests prove the agent's behaviour:

* ``registrations``: how many times a register call or a sync batch created or changed it;
* ``duplicates``: register calls that named exactly what was held (a wasted call: the
  agent should have known);
* ``confirmations``: sync batches that named it unchanged (a full sync re-states the set).

A full sync arrives in batches (``sync_id, batch, last``); the routes a finished sync did
not name are dropped only when the batch marked ``last`` arrives and every batch before it
was seen, so a sync cut off half-way deletes nothing. Pure logic: no I/O, no clock but
the one given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

RouteKey = tuple[str, str, str]  # cluster_id, hostname, path

# what a route says; the counters and times are the table's own
CONTENT_FIELDS = ("namespace", "ingress_name", "path_type", "service_name", "service_port",
                  "tls", "routing_mode", "public_endpoint")
MAX_PENDING_SYNCS = 64  # per table: a sync that never sends its last batch is forgotten


class HostConflict(Exception):
    """The hostname is held by another cluster."""

    def __init__(self, hostname: str, owner: str) -> None:
        super().__init__(f"host {hostname} belongs to another cluster")
        self.hostname = hostname
        self.owner = owner


class SyncIncomplete(Exception):
    """The batch marked ``last`` arrived but earlier batches of the sync are missing."""


@dataclass
class Route:
    cluster_id: str
    hostname: str
    path: str
    namespace: str
    ingress_name: str
    path_type: str
    service_name: str
    service_port: int
    tls: bool
    routing_mode: str
    public_endpoint: str
    registrations: int = 0
    duplicates: int = 0
    confirmations: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def key(self) -> RouteKey:
        return (self.cluster_id, self.hostname, self.path)

    def content(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in CONTENT_FIELDS}

    def view(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _PendingSync:
    cluster_id: str
    batches: set[int] = field(default_factory=set)
    named: set[RouteKey] = field(default_factory=set)


@dataclass
class Upsert:
    route: Route
    created: bool
    changed: bool


class RouteTable:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._routes: dict[RouteKey, Route] = {}
        self._host_owner: dict[str, str] = {}  # hostname -> cluster_id
        self._host_paths: dict[str, set[str]] = {}  # hostname -> paths held
        self._syncs: dict[tuple[str, str], _PendingSync] = {}  # (cluster, sync_id)
        self._clock = clock

    # --- reads ------------------------------------------------------------------------

    def get(self, key: RouteKey) -> Route | None:
        return self._routes.get(key)

    def routes(self, cluster_id: str | None = None) -> list[Route]:
        found = [r for r in self._routes.values()
                 if cluster_id is None or r.cluster_id == cluster_id]
        return sorted(found, key=lambda r: r.key)

    def page(self, cluster_id: str, limit: int, after: RouteKey | None
             ) -> tuple[list[Route], RouteKey | None]:
        """Up to ``limit`` routes of the cluster after ``after``, and the key to go on
        from (None: that was the end). Keys are sorted, so routes added or removed while a
        client pages are seen at most once."""
        held = [r for r in self.routes(cluster_id) if after is None or r.key > after]
        chunk = held[:limit]
        more = len(held) > limit
        return chunk, (chunk[-1].key if more and chunk else None)

    def host_routes(self, hostname: str) -> list[Route]:
        """The routes of a hostname (one cluster owns it), longest path first."""
        owner = self._host_owner.get(hostname)
        if owner is None:
            return []
        paths = self._host_paths.get(hostname, set())
        found = [self._routes[(owner, hostname, p)] for p in paths]
        return sorted(found, key=lambda r: (-len(r.path), r.path))

    def hostnames(self) -> list[str]:
        return sorted(self._host_owner)

    def owner(self, hostname: str) -> str | None:
        return self._host_owner.get(hostname)

    def __len__(self) -> int:
        return len(self._routes)

    # --- writes -----------------------------------------------------------------------

    def upsert(self, cluster_id: str, hostname: str, path: str, content: dict[str, Any],
               *, from_sync: bool = False) -> Upsert:
        """Create or update one route. Raises :class:`HostConflict` when another cluster
        holds the hostname."""
        owner = self._host_owner.get(hostname)
        if owner is not None and owner != cluster_id:
            raise HostConflict(hostname, owner)
        key = (cluster_id, hostname, path)
        now = self._clock()
        route = self._routes.get(key)
        if route is None:
            route = Route(cluster_id, hostname, path, **content, registrations=1,
                          created_at=now, updated_at=now)
            self._routes[key] = route
            self._host_owner[hostname] = cluster_id
            self._host_paths.setdefault(hostname, set()).add(path)
            return Upsert(route, created=True, changed=True)
        if route.content() == content:
            if from_sync:
                route.confirmations += 1
            else:
                route.duplicates += 1
            return Upsert(route, created=False, changed=False)
        for name, value in content.items():
            setattr(route, name, value)
        route.registrations += 1
        route.updated_at = now
        return Upsert(route, created=False, changed=True)

    def remove(self, cluster_id: str, hostname: str, path: str | None = None) -> int:
        """Drop a route, or every path of the host (``path`` None); returns how many.
        Unknown routes are no error (0)."""
        if self._host_owner.get(hostname) != cluster_id:
            return 0
        paths = [path] if path is not None else list(self._host_paths.get(hostname, ()))
        removed = 0
        for p in paths:
            if self._routes.pop((cluster_id, hostname, p), None) is not None:
                removed += 1
                held = self._host_paths.get(hostname)
                if held is not None:
                    held.discard(p)
        if not self._host_paths.get(hostname):
            self._host_paths.pop(hostname, None)
            self._host_owner.pop(hostname, None)
        return removed

    def forget_cluster(self, cluster_id: str) -> int:
        keys = [r.key for r in self.routes(cluster_id)]
        for _, hostname, path in keys:
            self.remove(cluster_id, hostname, path)
        for pending in [k for k in self._syncs if k[0] == cluster_id]:
            del self._syncs[pending]
        return len(keys)

    # --- full sync in batches ---------------------------------------------------------

    def sync_batch(self, cluster_id: str, sync_id: str, batch: int, last: bool,
                   named: Iterable[RouteKey]) -> int | None:
        """Note the routes one batch named (they were upserted by the caller). On the
        ``last`` batch, with batches 0..batch all seen, drop the cluster's routes that no
        batch named and return how many; before that, None. Raises
        :class:`SyncIncomplete` when the last batch comes with earlier ones missing (the
        sync deletes nothing; the agent starts a new one)."""
        pending = self._syncs.get((cluster_id, sync_id))
        if pending is None:
            if len(self._syncs) >= MAX_PENDING_SYNCS:
                self._syncs.pop(next(iter(self._syncs)))
            pending = self._syncs[(cluster_id, sync_id)] = _PendingSync(cluster_id)
        pending.batches.add(batch)
        pending.named.update(named)
        if not last:
            return None
        del self._syncs[(cluster_id, sync_id)]
        missing = sorted(set(range(batch + 1)) - pending.batches)
        if missing:
            raise SyncIncomplete(f"sync {sync_id}: batches {missing[:10]} never arrived; "
                                 "nothing was removed")
        stale = [r.key for r in self.routes(cluster_id) if r.key not in pending.named]
        for _, hostname, path in stale:
            self.remove(cluster_id, hostname, path)
        return len(stale)
