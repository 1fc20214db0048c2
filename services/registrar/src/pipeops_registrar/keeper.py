"""The current identity, kept in one place and written everywhere it must be.

``IdentityKeeper.update`` writes the state file (atomic, 0600) for the siblings, then
the Secret/ConfigMap when the cluster allows it, and wakes every ``WatchIdentity``
stream. ``load`` reads the stored identity: the file first, else the cluster.

The file is the siblings' only source and lives on a shared volume anyone in the pod can
write to: ``keep_file`` checks it every heartbeat interval and writes it again from the
registrar's own state when it is gone, corrupt (a sibling moved it aside) or different,
so a tunnel never waits for a registrar restart.

A write that fails (the volume full: ENOSPC, EFBIG, EIO, a read-only remount) changes
nothing on disk: the write is atomic, so the old file stays whole. The registrar goes on
with the identity it holds (registration and heartbeats do not depend on the file),
says so once per kind of failure (a warning, the ``identity_file`` check of Describe,
``pipeops_identity_file_write_failures_total`` and ``pipeops_identity_file_stale``) and
writes the file again at the next check, every heartbeat interval, until it goes through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from agentkit.identity import Identity, IdentityFile
from agentkit.kube import KubeError
from agentkit.retry import FailureReport
from agentkit.statefile import ABSENT
from agentkit.status import ServiceStatus
from pipeops_registrar import metrics
from pipeops_registrar.cluster import StateObjects

log = logging.getLogger(__name__)

# With the final heartbeat's 1 s after it, a stop stays within 2 s (the runner's grace
# is 3 s).
SAVE_ON_STOP = 1.0


class IdentityKeeper:
    def __init__(self, file: IdentityFile, objects: StateObjects | None,
                 status: ServiceStatus | None = None) -> None:
        self.file = file
        self.objects = objects
        self.status = status
        self.current = Identity()
        self._changed = asyncio.Condition()
        self._cluster_failing = False
        self._writing = asyncio.Lock()  # an update and a restore never interleave
        self._stored = False  # an identity of ours was written: there is one to restore
        self._file_report = FailureReport(log, "restoring the identity file")
        self._write_report = FailureReport(
            log, "writing the identity file",
            kind=lambda exc: getattr(exc, "strerror", None) or type(exc).__name__,
            message="cannot write the identity file (%s); the old file is kept and the "
                    "write is tried again every heartbeat interval")
        # why the file does not hold the current identity ("" when it does)
        self.file_problem = ""

    async def load_file(self) -> Identity | None:
        return await self.file.load()

    async def load_cluster(self) -> Identity | None:
        """The copy in the cluster; KubeError on a transient failure."""
        if self.objects is None:
            return None
        return await self.objects.load()

    async def update(self, identity: Identity) -> None:
        """Make ``identity`` current and persist it (file always; cluster if possible).

        A stop (cancellation) during the write lets it finish, within ``SAVE_ON_STOP``
        seconds: stopped half-way, the cluster copy would lag behind the file and a new pod
        would resume without the cluster id it was given.
        """
        persist = asyncio.ensure_future(self._persist(identity))
        try:
            await asyncio.shield(persist)
        except asyncio.CancelledError:
            if not persist.done():
                try:
                    await asyncio.wait_for(persist, SAVE_ON_STOP)
                except TimeoutError:
                    log.warning("stopping before the identity was saved everywhere")
                except Exception as exc:
                    log.warning("saving the identity while stopping failed: %s", exc)
            raise

    async def _persist(self, identity: Identity) -> None:
        async with self._writing:
            self._stored = True  # the file must hold it: restored until it does
            await self._save_file(identity)
            async with self._changed:
                self.current = identity
                self._changed.notify_all()
        await self.save_to_cluster()

    async def restore_file(self) -> bool:
        """Write the file again if it no longer holds the current identity (gone, corrupt
        and moved aside, changed by hand). True if it was written; a failure to read or
        write is reported once per kind (the next check tries again), never raised."""
        async with self._writing:
            if not self._stored:
                return False  # nothing of ours stored yet
            try:
                stored = await self.file.load()
                if stored == self.current:
                    self._file_report.recovered()
                    if self.file_problem:  # someone else wrote it meanwhile
                        self._file_written()
                    return False
                problem = self.file.file.problem or "holds another identity"
            except OSError as exc:
                self._file_report.failed(exc, path=str(self.file.path))
                return False
            if self.file_problem:
                problem = f"stale ({self.file_problem})"
            if not await self._save_file(self.current):
                return False
        log.warning("the identity file was %s; written again from the registrar's state",
                    "absent" if problem == ABSENT else problem,
                    extra={"path": str(self.file.path), "agent_id": self.current.agent_id,
                           "cluster_id": self.current.cluster_id})
        self._file_report.recovered()
        return True

    async def _save_file(self, identity: Identity) -> bool:
        """Write the file; a failure is reported (never raised) and False returned."""
        try:
            await self.file.save(identity)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            self._write_report.failed(exc, path=str(self.file.path),
                                      cluster_id=identity.cluster_id)
            metrics.IDENTITY_WRITE_FAILURES.labels(reason).inc()
            metrics.IDENTITY_FILE_STALE.set(1)
            self.file_problem = f"cannot write {self.file.path}: {reason}"
            if self.status is not None:
                self.status.check("identity_file", self.file_problem)
            return False
        self._file_written()
        return True

    def _file_written(self) -> None:
        """The file holds the current identity (again)."""
        if self.file_problem:
            self._write_report.recovered()
            self.file_problem = ""
        metrics.IDENTITY_FILE_STALE.set(0)
        if self.status is not None:
            self.status.check("identity_file", "ok")

    async def keep_file(self, interval: float) -> None:
        """``restore_file`` every ``interval`` seconds, until cancelled (a root task)."""
        while True:
            await asyncio.sleep(interval)
            await self.restore_file()

    async def save_to_cluster(self) -> bool:
        """Write the cluster copy; a transient failure is logged once and retried later.

        A copy that names a cluster is replaced only by an identity that names one too
        (a registration): an identity for a control plane that has not registered the
        cluster yet (a changed, maybe mistyped ``api_url``) leaves it as it is.
        """
        if self.objects is None or not self.objects.available:
            return False
        try:
            if not self.current.cluster_id:
                kept = await self.objects.load()
                if kept is not None and kept.cluster_id:
                    return False
            saved = await self.objects.save(self.current)
        except KubeError as exc:
            if not self._cluster_failing:
                log.warning("cannot save the identity in the cluster yet: %s", exc)
            self._cluster_failing = True
            return False
        if saved and self._cluster_failing:
            log.info("identity saved in the cluster again")
        self._cluster_failing = False
        return saved

    @property
    def cluster_copy_pending(self) -> bool:
        return self._cluster_failing

    async def watch(self) -> AsyncIterator[Identity]:
        """The current identity at once, then each new generation."""
        seen = -1

        def changed() -> bool:
            return self.current.generation != seen

        while True:
            async with self._changed:
                await self._changed.wait_for(changed)
                identity = self.current
            seen = identity.generation
            yield identity
