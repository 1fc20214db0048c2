"""Kubernetes Events on the objects the gateway skipped or lost, each said once.

An invalid Ingress, a host-conflict loser, a route the control plane refused and a
refused mass delete get a ``Warning`` Event (``kubectl describe`` shows it). The same
(object, reason, message) is not said again while it stands: the last ``MAX_REMEMBERED``
said are remembered. Creating an Event is best effort: a failure is logged once per
reason and never stops a sync.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from agentkit.kube import Kube, KubeError
from pipeops_gateway.routes import Problem

log = logging.getLogger(__name__)

COMPONENT = "pipeops-gateway"
MAX_REMEMBERED = 4096
MAX_PENDING = 256  # Events waiting to be created; more are dropped (and counted)

API_VERSIONS = {"Ingress": "networking.k8s.io/v1",
                "HTTPRoute": "gateway.networking.k8s.io/v1", "Pod": "v1"}


class EventSink:
    def __init__(self) -> None:
        self._said: OrderedDict[tuple[str, ...], None] = OrderedDict()
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str]] = asyncio.Queue(
            MAX_PENDING)
        self._failed: set[str] = set()
        self.dropped = 0
        self.created = 0

    def say(self, regarding: dict[str, Any], reason: str, message: str) -> bool:
        """Queue an Event unless the same was said already; True if queued."""
        meta = regarding.get("metadata") or {}
        key = (str(regarding.get("kind")), str(meta.get("namespace")), str(meta.get("name")),
               str(meta.get("uid")), reason, message)
        if key in self._said:
            self._said.move_to_end(key)
            return False
        self._said[key] = None
        while len(self._said) > MAX_REMEMBERED:
            self._said.popitem(last=False)
        try:
            self._queue.put_nowait((regarding, reason, message))
        except asyncio.QueueFull:
            self.dropped += 1
            del self._said[key]  # not said: may be said later
            return False
        return True

    def problem(self, obj: dict[str, Any] | None, problem: Problem) -> bool:
        if obj is None:
            return False
        regarding = {"apiVersion": API_VERSIONS.get(problem.kind, ""),
                     "kind": problem.kind, "metadata": obj.get("metadata") or {}}
        return self.say(regarding, problem.reason, problem.message)

    async def run(self, kube: Kube) -> None:
        """Create the queued Events, one at a time, for ever (the owner cancels it)."""
        while True:
            regarding, reason, message = await self._queue.get()
            try:
                await kube.create_event(regarding, reason=reason, message=message,
                                        component=COMPONENT, warning=True)
                self.created += 1
            except KubeError as exc:
                level = logging.DEBUG if reason in self._failed else logging.WARNING
                self._failed.add(reason)
                log.log(level, "could not create an Event: %s", exc,
                        extra={"reason": reason})
