"""List+watch of every kind the routes depend on, feeding the :class:`ClusterView`.

One task per kind runs ``Kube.follow`` (list, then watch from that resourceVersion with
bookmarks, list again on a 410: agentkit.kube handles it once for the pod). A list
replaces the kind in the view, so what was deleted while nobody watched is noticed; each
change marks the hosts it touches in the coalescing queue. A kind is *complete* once its
first list arrived: the syncer sends nothing before every kind is complete, so it never
deletes from a half-read cluster.

Failures: another ``KubeError`` ends the follow; the task waits (tenacity, full jitter)
and starts over with a fresh list, counted as a watch restart. ``relist`` compares a
fresh list with the view (the periodic repair): a difference means the watch missed
something (a watch that hangs without closing), so the view takes the list and that
kind's watch is started again. Gateway API kinds are found by discovery at start (v1,
else v1beta1); a cluster that serves none, or forbids them, simply has no HTTPRoutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from agentkit.config import ReconnectConfig
from agentkit.kube import Kube, KubeError, Listed, Resource
from agentkit.kube.resources import (
    GATEWAYS,
    HTTP_ROUTES,
    INGRESS_CLASSES,
    INGRESSES,
    SERVICES,
)
from agentkit.retry import FailureReport, full_jitter, retrying
from pipeops_gateway.coalesce import HostQueue
from pipeops_gateway.view import ClusterView

log = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]

GATEWAY_GROUP = "gateway.networking.k8s.io"
HTTP_ROUTE_VERSIONS = ("v1", "v1beta1")


@dataclass
class Watched:
    kind: str
    resource: Resource
    complete: bool = False
    restarts: int = 0
    task: asyncio.Task[None] | None = None


async def discover(kube: Kube, http_routes: bool) -> dict[str, Resource]:
    """The kinds to watch: Ingress, IngressClass, Service; HTTPRoute and Gateway at the
    first of v1, v1beta1 that the cluster serves (none: no HTTPRoutes, not an error)."""
    kinds = {"Ingress": INGRESSES, "IngressClass": INGRESS_CLASSES, "Service": SERVICES}
    if not http_routes:
        return kinds
    try:
        # (typed through a Sequence: ``Kube.list`` shadows ``list`` in its annotations)
        served: Sequence[str] = await kube.served_versions(GATEWAY_GROUP)
    except KubeError as exc:
        if exc.retryable:
            raise
        log.info("Gateway API discovery refused (%s): HTTPRoutes are not synced", exc)
        return kinds
    version = next((v for v in HTTP_ROUTE_VERSIONS if v in served), None)
    if version is None:
        log.info("the cluster serves no Gateway API (%s): HTTPRoutes are not synced",
                 ", ".join(served) or "no CRDs")
        return kinds
    kinds["HTTPRoute"] = HTTP_ROUTES.at(f"{GATEWAY_GROUP}/{version}")
    kinds["Gateway"] = GATEWAYS.at(f"{GATEWAY_GROUP}/{version}")
    return kinds


class Watchers:
    def __init__(self, kube: Kube, view: ClusterView, queue: HostQueue,
                 resources: dict[str, Resource], policy: ReconnectConfig, *,
                 watch_timeout: int = 300, on_change: Callable[[], None] | None = None,
                 page_size: int = 500, spawn: Spawn | None = None) -> None:
        self.kube = kube
        self.view = view
        self.queue = queue
        self.policy = policy
        self.watch_timeout = watch_timeout
        self.page_size = page_size
        self.on_change = on_change  # called after every change (the controller, status)
        # how a watch task is started: the service's root tasks (one that dies of a bug
        # stops the service instead of leaving a silent hole in the picture)
        self.spawn: Spawn = spawn or (lambda coro, name: asyncio.create_task(coro, name=name))
        self.kinds = {kind: Watched(kind, res) for kind, res in resources.items()}
        self._complete = asyncio.Event()

    @property
    def complete(self) -> bool:
        return all(w.complete for w in self.kinds.values())

    async def wait_complete(self) -> None:
        await self._complete.wait()

    def start(self) -> None:
        for watched in self.kinds.values():
            self._start(watched)

    def _start(self, watched: Watched) -> None:
        watched.task = self.spawn(self._run(watched), f"gateway:watch:{watched.kind}")

    async def stop(self) -> None:
        tasks = [w.task for w in self.kinds.values() if w.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def restart(self, kind: str) -> None:
        watched = self.kinds[kind]
        if watched.task is not None:
            watched.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watched.task
        watched.restarts += 1
        self._start(watched)

    def _listed(self, watched: Watched, items: list[dict[str, Any]]) -> None:
        touched = self.view.replace(watched.kind, items)
        if not watched.complete:
            watched.complete = True
            log.info("%s listed", watched.kind, extra={"items": len(items)})
            if self.complete:
                self._complete.set()
        self._changed(touched)

    def _changed(self, touched: set[str]) -> None:
        if touched:
            self.queue.mark(touched)
        if self.on_change is not None:
            self.on_change()

    async def _run(self, watched: Watched) -> None:
        report = FailureReport(log, f"watching {watched.kind}")
        # a KubeError ends a follow (the next lists afresh); anything else is a bug: it
        # ends the task, and the service with it (a root task's failure)
        async for attempt in retrying(self.policy, report=report,
                                      retry_on=lambda e: isinstance(e, KubeError)):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    watched.restarts += 1
                events = self.kube.follow(
                    watched.resource, None, timeout_seconds=self.watch_timeout,
                    page_size=self.page_size,
                    # watch requests that end at once: spaced out as every retry is
                    quick_wait=full_jitter(self.policy.backoff_base, self.policy.backoff_max))
                async with contextlib.aclosing(events):
                    async for item in events:
                        if isinstance(item, Listed):
                            self._listed(watched, item.items)
                            report.recovered()
                        else:
                            self._changed(self.view.apply(watched.kind, item.type, item.object))
                        del item  # a list of 10,000 objects is not kept until the next event

    async def relist(self) -> list[str]:
        """A fresh list of every kind against the view; the kinds whose watch missed
        something (their watch is started again). Their changes are marked."""
        missed: list[str] = []
        for kind, watched in self.kinds.items():
            if not watched.complete:
                continue
            listed = await self.kube.list_all(watched.resource, None, page_size=self.page_size)
            touched = self.view.replace(kind, listed["items"])
            if touched or self._differs(kind, listed["items"]):
                missed.append(kind)
                self._changed(touched)
                await self.restart(kind)
        return missed

    def _differs(self, kind: str, items: list[dict[str, Any]]) -> bool:
        return len(items) != len(self.view.objects[kind])
