"""Container logs: what `pods/log` returns, and the followers of `follow=true`.

There is no kubelet, so lines come from the admin API (`POST /_kubesim/logs`) or from
the seed: a Pod annotated `kubesim.pipeops.dev/log` (all containers' first container)
or `kubesim.pipeops.dev/log.<container>` starts with those lines (newline-separated).
Each follower has a bounded queue; one that falls behind is cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

LogKey = tuple[str, str, str]  # namespace, pod, container
FOLLOW_QUEUE = 4096
MAX_LINES = 50_000


@dataclass
class _Buffer:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (timestamp, text)
    followers: set[asyncio.Queue[tuple[str, str] | None]] = field(default_factory=set)


class PodLogs:
    def __init__(self) -> None:
        self._buffers: dict[LogKey, _Buffer] = {}

    def append(self, key: LogKey, lines: list[str]) -> int:
        buf = self._buffers.setdefault(key, _Buffer())
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        for text in lines:
            entry = (stamp, text.rstrip("\n"))
            buf.lines.append(entry)
            for q in list(buf.followers):
                try:
                    q.put_nowait(entry)
                except asyncio.QueueFull:
                    self._cut(buf, q)
        del buf.lines[:-MAX_LINES]
        return len(buf.lines)

    @staticmethod
    def _cut(buf: _Buffer, q: asyncio.Queue[tuple[str, str] | None]) -> None:
        buf.followers.discard(q)
        while not q.empty():
            q.get_nowait()
        q.put_nowait(None)

    def forget_pod(self, namespace: str, pod: str) -> None:
        """The pod is gone: end its followers, drop its lines."""
        for key in [k for k in self._buffers if k[:2] == (namespace, pod)]:
            buf = self._buffers.pop(key)
            for q in list(buf.followers):
                self._cut(buf, q)

    def close_all(self) -> None:
        for buf in self._buffers.values():
            for q in list(buf.followers):
                self._cut(buf, q)

    def snapshot(self, key: LogKey, tail: int | None) -> list[tuple[str, str]]:
        lines = self._buffers.get(key, _Buffer()).lines
        if tail is None:
            return list(lines)
        return list(lines[-tail:]) if tail > 0 else []

    async def read(
        self, key: LogKey, tail: int | None, follow: bool, timestamps: bool
    ) -> AsyncIterator[bytes]:
        """The body of one pods/log response: existing lines, then (follow) new ones."""
        queue: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue(FOLLOW_QUEUE)
        buf = self._buffers.setdefault(key, _Buffer())
        existing = self.snapshot(key, tail)
        if follow:
            buf.followers.add(queue)
        try:
            for entry in existing:
                yield _format(entry, timestamps)
            while follow:
                item = await queue.get()
                if item is None:
                    return
                yield _format(item, timestamps)
        finally:
            buf.followers.discard(queue)


def _format(entry: tuple[str, str], timestamps: bool) -> bytes:
    stamp, text = entry
    return (f"{stamp} {text}\n" if timestamps else f"{text}\n").encode()
