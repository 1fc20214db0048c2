"""Run uvicorn inside the service's own event loop and signal handling.

uvicorn normally captures SIGTERM itself; here the runner owns signals, so the server is
stopped by cancellation: ``should_exit`` is set and uvicorn closes its listeners and
connections within ``graceful_timeout`` (kept below the pod's grace period, so an open
SSE stream cannot hang shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the runner handles signals


async def serve(app: FastAPI, host: str, port: int, graceful_timeout: float = 2.0) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False,
                            timeout_graceful_shutdown=graceful_timeout, lifespan="off")
    server = _Server(config)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    try:
        await asyncio.shield(task)
    finally:
        server.should_exit = True
        await task
