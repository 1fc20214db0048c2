"""An outbound HTTP client built on first use, not at start.

The http-api calls out over HTTP only when asked: the siblings' metrics for ``/metrics``,
the control plane for ``/api/status/connectivity`` (the Kubernetes API proxy has its own,
``k8sproxy.Upstream``). An idle http-api (probes, the event hub) calls neither, and an
``httpx.AsyncClient`` built at start imports httpx's transport (httpcore, h11) and makes
a connection pool: 1.0 MiB resident for nothing (bench/memory_notes.md). The first call
imports the transport in a thread (reading modules is blocking file I/O), then builds the
client, once, however many callers ask at the same moment.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import httpx

TRANSPORT = "httpcore"  # what httpx.AsyncClient imports when it builds its transport


class LazyClient:
    """``await client()``: the ``httpx.AsyncClient(**options)``, built the first time."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self._client: httpx.AsyncClient | None = None

    @property
    def built(self) -> bool:
        return self._client is not None

    async def __call__(self) -> httpx.AsyncClient:
        if self._client is None:
            await asyncio.to_thread(importlib.import_module, TRANSPORT)
            if self._client is None:  # another caller may have built it meanwhile
                self._client = httpx.AsyncClient(**self.options)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
