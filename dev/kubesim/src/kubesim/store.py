"""The object store: objects, the global resourceVersion, ordered indexes and history.

One counter stamps every write, as etcd's revision does. Each resource keeps a sorted
list of (namespace, name) keys so that `limit`/`continue` pages and
`remainingItemCount` cost O(log n + page) rather than touching every object. The
bounded history of write events is what watches resume from; an event that fell off
the end makes older resourceVersions "too old" (410), exactly like etcd compaction.

All mutation happens on the event loop thread without awaiting, so no locks are needed
and a watch can take its backlog and subscribe in one atomic step.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from kubesim.selectors import Predicate

Obj = dict[str, Any]
StorageKey = tuple[str, str]  # (group, plural)
ObjKey = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped


@dataclass(frozen=True)
class Event:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    skey: StorageKey
    obj: Obj
    old: Obj | None = None


class Subscriber(Protocol):
    skey: StorageKey

    def offer(self, event: Event) -> None: ...

    def close(self, expired: bool = False) -> None: ...


class TooOld(Exception):
    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")
        self.requested = requested
        self.oldest = oldest


def obj_key(obj: Obj) -> ObjKey:
    meta = obj["metadata"]
    return (meta.get("namespace", ""), meta["name"])


class Store:
    """Objects are never mutated in place: every write stores a fresh dict."""

    def __init__(self, history: int = 10_000) -> None:
        self.rv = 0
        # Highest resourceVersion whose event is no longer retained.
        self.compacted = 0
        self.history_limit = max(1, history)
        self._objects: dict[StorageKey, dict[ObjKey, Obj]] = {}
        self._index: dict[StorageKey, list[ObjKey]] = {}
        self._history: deque[Event] = deque()
        self._subscribers: dict[StorageKey, set[Subscriber]] = {}
        self._hung: set[Subscriber] = set()  # open watches that get no more events

    # ---- reads ------------------------------------------------------------------------

    def get(self, skey: StorageKey, namespace: str, name: str) -> Obj | None:
        return self._objects.get(skey, {}).get((namespace, name))

    def count(self, skey: StorageKey) -> int:
        return len(self._index.get(skey, ()))

    def _bounds(self, skey: StorageKey, namespace: str | None) -> tuple[list[ObjKey], int, int]:
        keys = self._index.get(skey, [])
        if namespace is None:
            return keys, 0, len(keys)
        lo = bisect.bisect_left(keys, (namespace, ""))
        hi = bisect.bisect_left(keys, (namespace + "\x00", ""))
        return keys, lo, hi

    def iterate(self, skey: StorageKey, namespace: str | None) -> Iterator[Obj]:
        keys, lo, hi = self._bounds(skey, namespace)
        objs = self._objects.get(skey, {})
        for i in range(lo, hi):
            yield objs[keys[i]]

    def page(
        self,
        skey: StorageKey,
        namespace: str | None,
        predicate: Predicate | None,
        after: ObjKey | None,
        limit: int | None,
    ) -> tuple[list[Obj], ObjKey | None, int | None]:
        """Returns (items, last key if more remain, remaining count when known cheaply)."""
        keys, lo, hi = self._bounds(skey, namespace)
        objs = self._objects.get(skey, {})
        start = lo if after is None else max(lo, bisect.bisect_right(keys, after))
        items: list[Obj] = []
        i = start
        while i < hi and (limit is None or len(items) < limit):
            obj = objs[keys[i]]
            if predicate is None or predicate(obj):
                items.append(obj)
            i += 1
        if i >= hi or limit is None:
            return items, None, None
        if predicate is None:
            return items, keys[i - 1], hi - i
        # With a selector the real server does not count what remains either; only say
        # whether anything matching does.
        for j in range(i, hi):
            if predicate(objs[keys[j]]):
                return items, keys[i - 1], None
        return items, None, None

    # ---- writes -----------------------------------------------------------------------

    def _stamp(self, obj: Obj) -> tuple[Obj, int]:
        self.rv += 1
        meta = dict(obj["metadata"])
        meta["resourceVersion"] = str(self.rv)
        return {**obj, "metadata": meta}, self.rv

    def put(self, skey: StorageKey, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Create or replace; the caller has already decided which and validated."""
        key = obj_key(obj)
        objs = self._objects.setdefault(skey, {})
        old = objs.get(key)
        if dry_run:
            return obj
        stored, rv = self._stamp(obj)
        objs[key] = stored
        if old is None:
            keys = self._index.setdefault(skey, [])
            bisect.insort(keys, key)
        self._record(Event(rv, "ADDED" if old is None else "MODIFIED", skey, stored, old))
        return stored

    def delete(self, skey: StorageKey, namespace: str, name: str, *, dry_run: bool = False) -> Obj:
        objs = self._objects.get(skey, {})
        old = objs[(namespace, name)]
        if dry_run:
            return old
        del objs[(namespace, name)]
        keys = self._index[skey]
        del keys[bisect.bisect_left(keys, (namespace, name))]
        # The real server reports a deletion at a new resourceVersion.
        stored, rv = self._stamp(old)
        self._record(Event(rv, "DELETED", skey, stored, old))
        return stored

    def _record(self, event: Event) -> None:
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self.compacted = self._history.popleft().rv
        for sub in list(self._subscribers.get(event.skey, ())):
            sub.offer(event)

    # ---- history and subscribers ------------------------------------------------------

    def check_not_too_old(self, rv: int) -> None:
        if rv < self.compacted:
            raise TooOld(rv, self.compacted + 1)

    def events_since(self, skey: StorageKey, rv: int) -> list[Event]:
        """Events after `rv` for one resource, or TooOld if some were discarded."""
        self.check_not_too_old(rv)
        if self._history and self._history[-1].rv <= rv:
            return []
        return [e for e in self._history if e.rv > rv and e.skey == skey]

    def subscribe(self, sub: Subscriber) -> None:
        self._subscribers.setdefault(sub.skey, set()).add(sub)

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.get(sub.skey, set()).discard(sub)

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscribers.values())

    def drop_watches(self, expired: bool = False) -> int:
        subs = [s for group in self._subscribers.values() for s in group] + list(self._hung)
        for s in subs:
            s.close(expired=expired)
        self._subscribers.clear()
        self._hung.clear()
        return len(subs)

    def hang_watches(self) -> int:
        """Every open watch stays open but gets no more events (a watch that hangs
        without closing, as a stuck proxy makes one); new watches work. Returns how many."""
        subs = [s for group in self._subscribers.values() for s in group]
        self._hung.update(subs)
        self._subscribers.clear()
        return len(subs)

    def expire_history(self) -> int:
        """Forget every retained event: any resourceVersion older than now is too old."""
        dropped = len(self._history)
        self._history.clear()
        self.compacted = self.rv
        return dropped
