"""An outbound HTTP client built on first use, not at start, with its TLS context.

The http-api calls out over HTTP only when asked: the siblings' metrics for ``/metrics``,
the control plane for ``/api/status/connectivity`` (the Kubernetes API proxy has its own,
``k8sproxy.Upstream``). An idle http-api (probes, the event hub) calls neither, and a
client built at start cost 1.8 MiB resident for nothing (bench/memory_notes.md): httpx's
transport (httpcore, h11), a connection pool, and a TLS context, the process's first,
which initialises OpenSSL (0.9 MiB that stays however many contexts follow; nothing else
in the http-api uses OpenSSL unless it serves HTTPS).

The first call imports the transport and builds the TLS context in a thread (module files
and CA files are blocking reads), then builds the client, once, however many callers ask
at the same moment. A CA bundle that cannot be loaded (``pipeops.tls.ca_file``) raises
its ``ConfigError`` to that caller, and again to the next: nothing is remembered of a
failed build. (The registrar and the tunnel, which call the control plane from their
start, refuse the same bundle at start with exit 2.)
"""

from __future__ import annotations

import asyncio
import importlib
import ssl
from collections.abc import Callable
from typing import Any

import httpx

TRANSPORT = "httpcore"  # what httpx.AsyncClient imports when it builds its transport


class LazyClient:
    """``await client()``: ``httpx.AsyncClient(verify=tls(), **options)``, built the
    first time; ``tls`` is blocking (it reads CA files)."""

    def __init__(self, tls: Callable[[], ssl.SSLContext], **options: Any) -> None:
        self.tls = tls
        self.options = options
        self._client: httpx.AsyncClient | None = None

    @property
    def built(self) -> bool:
        return self._client is not None

    def _prepare(self) -> ssl.SSLContext:
        importlib.import_module(TRANSPORT)
        return self.tls()

    async def __call__(self) -> httpx.AsyncClient:
        if self._client is None:
            context = await asyncio.to_thread(self._prepare)
            if self._client is None:  # another caller may have built it meanwhile
                self._client = httpx.AsyncClient(verify=context, **self.options)
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
