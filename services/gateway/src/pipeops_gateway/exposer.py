"""Keeping the cluster's exposure objects equal to the settings (:mod:`.exposure`).

A pass: each described object is read; one of that name that is not ours (without our
labels) is never touched: it is reported (an error line once, a ``Warning`` Event on it,
the ``exposure`` check in ``Service.Describe``) and skipped. Ours, or absent, it is
server-side applied under one field manager (fields we applied before and no longer
apply are removed; ``force`` takes over fields another manager set on our object). Then
every object of the exposure kinds carrying our owner label that the settings no longer
describe is deleted: settings removed from config (``gateway.enabled`` off included)
mean objects removed from the cluster. A kind the cluster does not serve, or that we may
not read (RBAC grants exposure kinds only when enabled), has nothing of ours to delete.

It runs at start and again every ``gateway.resync_interval`` (an object edited or
deleted by hand comes back); a failed pass is retried with tenacity.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from agentkit.config import Config
from agentkit.kube import Kube, KubeError
from agentkit.retry import FailureReport, retrying
from agentkit.status import ServiceStatus
from pipeops_gateway import exposure
from pipeops_gateway.kube_events import EventSink

log = logging.getLogger(__name__)


@dataclass
class ExposureReport:
    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    not_ours: list[str] = field(default_factory=list)


class Exposer:
    def __init__(self, config: Config, status: ServiceStatus, events: EventSink) -> None:
        self.config = config
        self.status = status
        self.events = events
        self.last: ExposureReport | None = None
        self._said: set[str] = set()

    async def cleanup_once(self, kube: Kube) -> None:
        """With exposure off: delete what earlier settings made, once, best effort (a pod
        that was never given the rights has nothing of ours to find)."""
        try:
            self.last = await self.reconcile(kube)
        except KubeError as exc:
            log.debug("looking for exposure objects to delete failed: %s", exc)

    async def run(self, kube: Kube) -> None:
        """Reconcile now, then every resync interval, for ever (the owner cancels it)."""
        while True:
            report = FailureReport(log, "applying the exposure objects")
            async for attempt in retrying(self.config.pipeops.reconnect, report=report,
                                          retry_on=lambda e: isinstance(e, KubeError)
                                          and e.retryable):
                with attempt:
                    self.last = await self.reconcile(kube)
            report.recovered()
            await asyncio.sleep(self.config.gateway.resync_interval)

    async def reconcile(self, kube: Kube) -> ExposureReport:
        out = ExposureReport()
        wanted = exposure.desired(self.config)
        for item in wanted:
            try:
                existing = await kube.get(item.resource, item.name, item.namespace)
            except KubeError as exc:
                if not exc.not_found:
                    raise
                existing = None
            if existing is not None and not exposure.ours(existing, self.config):
                out.not_ours.append(item.label)
                self._not_ours(existing, item)
                continue
            await kube.apply(item.resource, item.body, item.namespace,
                             field_manager=exposure.FIELD_MANAGER)
            out.applied.append(item.label)
        keep = {(d.resource, d.namespace, d.name) for d in wanted}
        for resource in exposure.KINDS:
            try:
                listed = await kube.list(resource, None,
                                         label_selector=exposure.selector(self.config))
            except KubeError as exc:
                if exc.status in (403, 404):  # not served, or not ours to read: none to delete
                    continue
                raise
            for obj in listed.get("items") or []:
                meta = obj.get("metadata") or {}
                key = (resource, str(meta.get("namespace") or ""), str(meta.get("name")))
                if key in keep or not exposure.ours(obj, self.config):
                    continue
                try:
                    await kube.delete(resource, key[2], key[1])
                except KubeError as exc:
                    if not exc.not_found:
                        raise
                out.deleted.append(f"{resource.kind} {key[1]}/{key[2]}")
        self._report(out)
        return out

    def _not_ours(self, existing: dict[str, object], item: exposure.Desired) -> None:
        message = (f"{item.label} exists and is not ours (no {exposure.OWNER}="
                   f"{self.config.agent.name} label): left untouched")
        if item.label not in self._said:
            self._said.add(item.label)
            log.error("%s", message)
        regarding = {"apiVersion": item.resource.api_version, "kind": item.resource.kind,
                     "metadata": existing.get("metadata") or {}}
        self.events.say(regarding, "NotOwnedByAgent", message)

    def _report(self, out: ExposureReport) -> None:
        if out.not_ours:
            self.status.check("exposure", f"not ours, left untouched: {', '.join(out.not_ours)}")
        else:
            self.status.check("exposure", f"ok: {len(out.applied)} objects applied")
        if out.applied or out.deleted:
            first = self.last is None or bool(out.deleted)
            log.log(logging.INFO if first else logging.DEBUG, "exposure objects reconciled",
                    extra={
                        "applied": len(out.applied), "deleted": out.deleted or None,
                        "not_ours": out.not_ours or None})
