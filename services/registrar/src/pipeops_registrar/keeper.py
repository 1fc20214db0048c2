"""The current identity, kept in one place and written everywhere it must be.

``IdentityKeeper.update`` writes the state file (atomic, 0600) for the siblings, then
the Secret/ConfigMap when the cluster allows it, and wakes every ``WatchIdentity``
stream. ``load`` reads the stored identity: the file first, else the cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from agentkit import logs
from agentkit.statefile import StateFile
from pipeops_registrar.identity import Identity
from pipeops_registrar.kube import KubeError, StateObjects

log = logging.getLogger(__name__)

# Of the runner's 3 s shutdown grace; the final heartbeat after it takes at most 1 s.
SAVE_ON_STOP = 1.5


class IdentityKeeper:
    def __init__(self, file: StateFile, objects: StateObjects | None) -> None:
        self.file = file
        self.objects = objects
        self.current = Identity()
        self._changed = asyncio.Condition()
        self._cluster_failing = False

    async def load_file(self) -> Identity | None:
        record = await asyncio.to_thread(self.file.read)
        return Identity.from_record(record) if record else None

    async def load_cluster(self) -> Identity | None:
        """The copy in the cluster; KubeError on a transient failure."""
        if self.objects is None:
            return None
        return await self.objects.load()

    async def update(self, identity: Identity, *, to_cluster: bool = True) -> None:
        """Make ``identity`` current and persist it (file always; cluster if possible and
        ``to_cluster``: False keeps the cluster copy as it is).

        A stop (cancellation) during the write lets it finish, within ``SAVE_ON_STOP``
        seconds: stopped half-way, the cluster copy would lag behind the file and a new pod
        would resume without the cluster id it was given.
        """
        persist = asyncio.ensure_future(self._persist(identity, to_cluster))
        try:
            await asyncio.shield(persist)
        except asyncio.CancelledError:
            if not persist.done():
                with contextlib.suppress(Exception):  # TimeoutError: stop without it
                    await asyncio.wait_for(persist, SAVE_ON_STOP)
            raise

    async def _persist(self, identity: Identity, to_cluster: bool) -> None:
        if identity.cluster_token:
            logs.register_secret(identity.cluster_token)
        await asyncio.to_thread(self.file.write, identity.to_record())
        async with self._changed:
            self.current = identity
            self._changed.notify_all()
        if to_cluster:
            await self.save_to_cluster()

    async def save_to_cluster(self) -> bool:
        """Write the cluster copy; a transient failure is logged once and retried later."""
        if self.objects is None or not self.objects.available:
            return False
        try:
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
