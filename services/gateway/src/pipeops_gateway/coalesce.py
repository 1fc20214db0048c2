"""The per-host coalescing queue between watch events and registration.

Watch events name objects; what changes at the control plane is hosts. Each event marks
the hosts it touches (before and after the change) as dirty; marks of the same host
collapse into one, so a burst of edits costs one reconcile of that host, and nothing is
lost: a host whose reconcile failed is marked again. The queue holds at most
``max_hosts`` hosts; past that it forgets them and asks for a full pass instead (which
covers every host), so it is bounded and still loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class Batch:
    hosts: list[str]
    full: bool  # a full pass was asked for (overflow, relist, reconnect)


class HostQueue:
    def __init__(self, max_hosts: int = 10_000) -> None:
        self.max_hosts = max_hosts
        self._hosts: dict[str, None] = {}  # insertion-ordered set
        self._full = False
        self._event = asyncio.Event()

    def mark(self, hosts: Iterable[str]) -> None:
        for host in hosts:
            if host:
                self._hosts[host] = None
        if len(self._hosts) > self.max_hosts:
            self.mark_full()
        elif self._hosts:
            self._event.set()

    def mark_full(self) -> None:
        self._hosts.clear()
        self._full = True
        self._event.set()

    def __len__(self) -> int:
        return len(self._hosts)

    @property
    def full_pending(self) -> bool:
        return self._full

    async def take(self, debounce: float) -> Batch:
        """Wait for a mark, then ``debounce`` seconds more for the burst to settle; every
        host marked by then, once."""
        await self._event.wait()
        if debounce > 0 and not self._full:
            await asyncio.sleep(debounce)
        self._event.clear()
        batch = Batch(list(self._hosts), self._full)
        self._hosts.clear()
        self._full = False
        return batch
