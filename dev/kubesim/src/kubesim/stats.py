"""Traffic accounting: requests and response-body bytes, per path+query and in total.

Tests assert budgets such as "a heartbeat reads under 5 KB from the API", so the count
is exact: every byte of every response body the API sends (streams included, as they
are sent), excluding HTTP headers and chunk framing. Admin calls under `/_kubesim/` are
not counted, so reading the stats does not move them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ADMIN_PREFIX = "/_kubesim/"


@dataclass
class Counter:
    requests: int = 0
    bytes: int = 0


@dataclass
class TrafficStats:
    total: Counter = field(default_factory=Counter)
    paths: dict[str, Counter] = field(default_factory=dict)

    def reset(self) -> None:
        self.total = Counter()
        self.paths = {}

    def snapshot(self) -> dict[str, Any]:
        return {
            "total": {"requests": self.total.requests, "bytes": self.total.bytes},
            "paths": {k: {"requests": c.requests, "bytes": c.bytes}
                      for k, c in sorted(self.paths.items())},
        }


class StatsMiddleware:
    def __init__(self, app: ASGIApp, stats: TrafficStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        key = scope["path"] + (f"?{query}" if query else "")
        stats = self.stats
        counter = stats.paths.setdefault(key, Counter())
        counter.requests += 1
        stats.total.requests += 1

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.body":
                n = len(message.get("body", b""))
                # Look the counter up again: a reset may have replaced it mid-stream.
                stats.paths.setdefault(key, Counter()).bytes += n
                stats.total.bytes += n
            await send(message)

        await self.app(scope, receive, counting_send)
