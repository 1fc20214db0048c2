"""Watch streams: one bounded queue per watcher, fed synchronously by the store.

A watcher sees an object enter or leave its selector as ADDED/DELETED, like the real
watch cache. A watcher whose queue fills is dropped (its stream ends and the client
re-watches), which is what a real apiserver does to a slow consumer. BOOKMARK events
carry only a resourceVersion; one is sent periodically and when `timeoutSeconds` ends.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from kubesim.errors import status_object
from kubesim.selectors import Predicate
from kubesim.store import Event, Obj, StorageKey, Store

WatchItem = tuple[str, Obj]
Renderer = Callable[[str, Obj], Obj]

QUEUE_SIZE = 1024


class Watcher:
    def __init__(
        self,
        skey: StorageKey,
        namespace: str | None,
        predicate: Predicate | None,
        maxsize: int = QUEUE_SIZE,
    ) -> None:
        self.skey = skey
        self.namespace = namespace
        self.predicate = predicate
        self.queue: asyncio.Queue[WatchItem | None] = asyncio.Queue(maxsize)
        self.closed = False

    def matches(self, obj: Obj | None) -> bool:
        if obj is None:
            return False
        if self.namespace is not None and obj["metadata"].get("namespace", "") != self.namespace:
            return False
        return self.predicate is None or self.predicate(obj)

    def translate(self, event: Event) -> WatchItem | None:
        """The event as this watcher sees it, given its namespace and selectors."""
        now = self.matches(event.obj)
        if event.type == "MODIFIED":
            before = self.matches(event.old)
            if before and now:
                return ("MODIFIED", event.obj)
            if before:
                return ("DELETED", event.obj)
            if now:
                return ("ADDED", event.obj)
            return None
        return (event.type, event.obj) if now else None

    def offer(self, event: Event) -> None:
        if self.closed:
            return
        item = self.translate(event)
        if item is None:
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.close()

    def close(self, expired: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        while not self.queue.empty():
            self.queue.get_nowait()
        if expired:
            status = status_object(410, "Expired", "The resourceVersion for the provided watch "
                                   "is too old.")
            self.queue.put_nowait(("ERROR", status))
        self.queue.put_nowait(None)


def encode(event_type: str, obj: Obj) -> bytes:
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


async def stream(
    store: Store,
    watcher: Watcher,
    backlog: list[WatchItem],
    render: Renderer,
    bookmark: Callable[[int, bool], Obj] | None,
    timeout: float | None,
    bookmark_interval: float,
    initial_end_bookmark: bool = False,
) -> AsyncIterator[bytes]:
    """The response body of one watch; unsubscribes however it ends."""
    loop_time = time.monotonic
    deadline = None if timeout is None else loop_time() + timeout
    try:
        for event_type, obj in backlog:
            yield encode(event_type, render(event_type, obj))
        if initial_end_bookmark and bookmark is not None:
            yield encode("BOOKMARK", bookmark(store.rv, True))
        next_bookmark = loop_time() + bookmark_interval
        while True:
            now = loop_time()
            waits = [next_bookmark - now] if bookmark is not None else []
            if deadline is not None:
                waits.append(deadline - now)
            wait = max(0.0, min(waits)) if waits else None
            try:
                item = await asyncio.wait_for(watcher.queue.get(), wait)
            except TimeoutError:
                if deadline is not None and loop_time() >= deadline:
                    if bookmark is not None:
                        yield encode("BOOKMARK", bookmark(store.rv, False))
                    return
                if bookmark is not None and watcher.queue.empty():
                    yield encode("BOOKMARK", bookmark(store.rv, False))
                next_bookmark = loop_time() + bookmark_interval
                continue
            if item is None:
                return
            yield encode(item[0], render(*item) if item[0] != "ERROR" else item[1])
    finally:
        watcher.closed = True
        store.unsubscribe(watcher)


def bookmark_object(api_version: str, kind: str) -> Callable[[int, bool], dict[str, Any]]:
    def make(rv: int, initial_end: bool) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": kind, "apiVersion": api_version, "metadata": meta}

    return make
