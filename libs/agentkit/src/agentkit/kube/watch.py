"""Watches: one watch request as an async iterator, and list-then-watch that lists again
by itself when the history is gone (410). The only place the pod handles a 410.

The official client's ``iter_resp_lines`` splits the stream into lines, each a JSON
event; an ERROR event is a ``KubeError`` with its code and reason. (Not its ``Watch``
class: it makes an ``ApiClient``, whose module imports pydantic in kubernetes 37.x, +9
MiB, to deserialise into models the pod never builds.) Reading is synchronous, so it runs
in a daemon thread that hands each event to the event loop through a bounded
``asyncio.Queue`` (``QUEUE_SIZE``): a slow consumer slows the reading down instead of
growing memory. Closing or cancelling the iterator stops the thread: the watch's socket
is shut down (a response not yet read included), the queue drained so a waiting
hand-over returns, and the thread waited for (``STOP_GRACE``), so nothing is left
running. Requests ask for bookmarks (``allowWatchBookmarks``) and end after
``timeoutSeconds``; :func:`follow` goes on from the last resourceVersion seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential
from tenacity.wait import wait_base

from agentkit.kube.errors import KubeError, from_event, from_status
from agentkit.kube.resources import Resource

log = logging.getLogger(__name__)

QUEUE_SIZE = 64  # events read ahead of the consumer
WATCH_SECONDS = 300  # one watch request, then another from where it ended
READ_MARGIN = 30.0  # the read timeout is the watch's timeout plus this
STOP_GRACE = 2.0  # seconds to wait for the reading thread when the watch is closed
QUICK_WATCH = 1.0  # a watch request that ends sooner than this counts as quick


class Kube(Protocol):
    """What a watch needs of :class:`agentkit.kube.client.Kube` (named here so this module
    does not import the client, which imports it)."""

    def open(self, method: str, template: str, path_params: dict[str, str],
             query: list[tuple[str, Any]], body: Any, content_type: str, accept: str,
             timeout: tuple[float, float]) -> Any: ...

    def counted(self, operation: str, code: str) -> None: ...

    async def list_all(self, resource: Resource, namespace: str | None = None, *,
                       page_size: int = ..., **options: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Listed:
    """The whole current set (the first list, and each list after a 410): whatever the
    consumer knew and is not in ``items`` is gone."""

    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class Watched:
    """One change: ``type`` is ADDED, MODIFIED or DELETED (bookmarks are not passed on)."""

    type: str
    object: dict[str, Any]


class _Stopped(Exception):
    """The watch was closed before its response arrived."""


class _EndedEarly(Exception):
    """A watch request ended sooner than ``QUICK_WATCH``: the next one waits first."""


class _Reader:
    """The thread side of one watch request."""

    def __init__(self, kube: Kube, operation: str, open_args: tuple[Any, ...],
                 loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[str, Any]]
                 ) -> None:
        self.kube = kube
        self.operation = operation
        self.open_args = open_args
        self.loop = loop
        self.queue = queue
        self.lock = threading.Lock()
        self.response: Any = None
        self.stopped = False
        self.done = threading.Event()

    def _open(self) -> Any:
        """The streaming response (urllib3's), unread."""
        response = self.kube.open(*self.open_args)
        status = int(response.status)
        self.kube.counted(self.operation, str(status))
        if not 200 <= status < 300:
            raise from_status(self.operation, status, str(response.reason or ""),
                              response.read())
        raw = response.response  # urllib3's response, which Watch streams
        with self.lock:
            if self.stopped:
                raw.close()
                raise _Stopped
            self.response = raw
        return raw

    def _hand(self, item: tuple[str, Any]) -> bool:
        """Put ``item`` on the loop's queue, waiting while it is full; False if closed."""
        while not self.stopped:
            try:
                future = asyncio.run_coroutine_threadsafe(self.queue.put(item), self.loop)
            except RuntimeError:  # the loop is closed
                return False
            try:
                future.result(timeout=1.0)
                return True
            except TimeoutError:
                future.cancel()
        return False

    def run(self) -> None:
        from kubernetes.watch.watch import iter_resp_lines

        try:
            raw = self._open()
            try:
                for line in iter_resp_lines(raw):  # type: ignore[no-untyped-call]
                    event = _event(line)
                    if event is None:  # a line that is not a JSON object: skipped
                        continue
                    if event.get("type") == "ERROR":
                        raise from_event(self.operation, event.get("object"))
                    if self.stopped or not self._hand(("event", event)):
                        return
                self._hand(("end", None))
            finally:
                raw.close()
                raw.release_conn()
        except _Stopped:
            pass
        except KubeError as exc:
            self._hand(("error", exc))
        except Exception as exc:  # the connection broke (or was shut down by stop())
            if not self.stopped:
                self.kube.counted(self.operation, "error")
                self._hand(("error", KubeError(self.operation, 0,
                                               f"{type(exc).__name__}: {exc}")))
        finally:
            self.done.set()

    def stop(self) -> None:
        """Make the thread return soon: shut the socket down under a blocked read."""
        with self.lock:
            self.stopped = True
            response = self.response
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _event(line: str) -> dict[str, Any] | None:
    """One watch line as ``{"type", "object"}``; None for a blank or garbled line."""
    try:
        event = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    return {"type": event.get("type"), "object": event.get("object")}


async def watch(kube: Kube, resource: Resource, namespace: str | None = None, *,
                resource_version: str, label_selector: str = "", field_selector: str = "",
                timeout_seconds: int = WATCH_SECONDS, operation: str = ""
                ) -> AsyncGenerator[dict[str, Any], None]:
    """The events of one watch request from ``resource_version`` (``{"type", "object"}``
    dicts, BOOKMARKs included) until the server ends it after ``timeout_seconds``.
    KubeError for a refused request, a broken stream or an ERROR event (``expired`` for a
    410 in either form). Close it (``contextlib.aclosing``) or cancel its consumer to
    stop it; the reading thread is gone when that returns."""
    operation = operation or f"watch {resource.plural} {namespace or ''}"
    query: list[tuple[str, Any]] = [("watch", "true"), ("allowWatchBookmarks", "true"),
                                    ("timeoutSeconds", timeout_seconds)]
    if resource_version:
        query.append(("resourceVersion", resource_version))
    for key, value in (("labelSelector", label_selector), ("fieldSelector", field_selector)):
        if value:
            query.append((key, value))
    open_args = (
        "GET", resource.template(namespace, False), {"namespace": namespace or ""}, query,
        None, "", "application/json", (5.0, timeout_seconds + READ_MARGIN))
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue(maxsize=QUEUE_SIZE)
    reader = await asyncio.to_thread(_Reader, kube, operation, open_args, loop, queue)
    thread = threading.Thread(target=reader.run, name="kube-watch", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = await queue.get()
            if kind == "event":
                yield item
            elif kind == "error":
                raise item
            else:
                return
    finally:
        reader.stop()
        deadline = loop.time() + STOP_GRACE
        while not reader.done.is_set() and loop.time() < deadline:
            while not queue.empty():  # a hand-over waiting for room returns
                queue.get_nowait()
            await asyncio.sleep(0.01)
        if not reader.done.is_set():
            log.warning("a watch's reading thread did not stop in %gs", STOP_GRACE,
                        extra={"operation": operation})


def _version_of(obj: Any, default: str) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    version = meta.get("resourceVersion") if isinstance(meta, dict) else None
    return str(version) if version else default


async def follow(kube: Kube, resource: Resource, namespace: str | None = None, *,
                 quick_wait: wait_base | None = None, label_selector: str = "",
                 field_selector: str = "", timeout_seconds: int = WATCH_SECONDS,
                 page_size: int = 500) -> AsyncGenerator[Listed | Watched, None]:
    """List (paginated), then watch from the list's resourceVersion, request after
    request, each resuming from the last resourceVersion seen (bookmarks keep it fresh).
    When the history is gone (410, as the reply or as an ERROR event) it lists again and
    yields a new :class:`Listed`. Watch requests that end at once (a proxy cutting them)
    are spaced by tenacity with ``quick_wait`` (default: full jitter from 0.5 s to 30 s),
    which starts over after a watch that lasted. Any other KubeError ends it: the caller
    retries (the next call lists afresh)."""
    selectors = {"label_selector": label_selector, "field_selector": field_selector}
    pacing = AsyncRetrying(wait=quick_wait or wait_random_exponential(multiplier=0.5, max=30),
                           retry=retry_if_exception_type(_EndedEarly), reraise=True)
    loop = asyncio.get_running_loop()
    while True:
        listed = await kube.list_all(resource, namespace, page_size=page_size, **selectors)
        version = str(listed["metadata"]["resourceVersion"])
        items = listed["items"]
        del listed  # the list is the consumer's now: not kept here while the watch runs
        yield Listed(items, version)
        del items  # (10,000 Ingresses held for the watch's life cost the gateway 4 MiB RSS)
        try:
            while True:  # a fresh pacing after each watch that lasted
                async for attempt in pacing:  # waits after a quick one
                    began = loop.time()
                    events = watch(kube, resource, namespace, resource_version=version,
                                   timeout_seconds=timeout_seconds, **selectors)
                    async with contextlib.aclosing(events):
                        async for event in events:
                            obj = event.get("object") or {}
                            version = _version_of(obj, version)
                            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                                yield Watched(str(event["type"]), obj)
                    with attempt:
                        if loop.time() - began < QUICK_WATCH:
                            raise _EndedEarly
        except KubeError as exc:
            if not exc.expired:
                raise
            log.debug("watch of %s expired at %s; listing again", resource.plural, version)
