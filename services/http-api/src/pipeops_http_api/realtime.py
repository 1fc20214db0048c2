"""Real time: ``/api/realtime/events`` and ``/api/realtime/logs`` (SSE) and ``/ws``.

Each client is a :class:`~pipeops_http_api.hub.Client` with a bounded queue. Its stream
is written by one task; a second watches for the client going away, a third for the hub
dropping it (too far behind), an SSE stream's fourth for the hub closing (the server
shutting down). Whichever ends first ends the others. A dropped client's connection is
aborted at once (its unsent bytes discarded), so a reader that stopped reading holds
neither a task nor memory; the others never wait for it because the hub only ever puts
into queues without waiting. On shutdown an SSE response ends cleanly at once (the
client resumes with ``Last-Event-ID``) instead of holding uvicorn's graceful shutdown
until its timeout; a WebSocket is closed by uvicorn itself (1012, service restart).

SSE: ``id:`` is the hub's event id; a reconnecting client's ``Last-Event-ID`` resumes
from the ring (an ``event: reset`` says how many were lost when the ring no longer has
them); ``?history=N`` starts with the last N; a ``: keep-alive`` comment goes out after
``realtime.keepalive`` seconds of silence. Over the limit of clients: 503 with a reason.

The connection is aborted through the server's transport, which the outermost ASGI
wrapper (``app.with_transport``) puts in the scope as ``pipeops.abort``; the kernel's
send buffer of each realtime connection is fixed at ``SEND_BUFFER``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from pipeops_http_api.httpmetrics import SSE_CONNECTIONS, WEBSOCKET_CONNECTIONS
from pipeops_http_api.hub import Client, Filter, Full, Hub, Item

log = logging.getLogger(__name__)

BATCH = 256  # events written to one client in one write at most
ABORT = "pipeops.abort"
SOCKET = "pipeops.socket"
# The kernel's send buffer of a realtime connection: fixed (no autotuning up to MiBs), so
# a client that stopped reading fills it, then the server's write buffer, then its queue,
# and is dropped after a few hundred events instead of some thousands.
SEND_BUFFER = 64 * 1024


def _bound_send_buffer(scope: Scope) -> None:
    sock = scope.get(SOCKET)
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def _abort(scope: Scope) -> None:
    abort = scope.get(ABORT)
    if callable(abort):
        abort()


async def _first(scope: Scope, *jobs: Coroutine[Any, Any, Any]) -> None:
    """Run ``jobs`` until the first one ends; cancel and await the rest."""
    tasks = [asyncio.create_task(job) for job in jobs]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            log.debug("realtime client ended", extra={"reason": repr(result)})


def last_event_id(raw: str | None) -> int | None:
    try:
        value = int(raw or "")
    except ValueError:
        return None
    return value if value >= 0 else None


class EventStream(Response):
    """An ASGI response: one SSE client of the hub."""

    media_type = "text/event-stream"

    def __init__(self, hub: Hub, wants: Filter, *, after: int | None, history: int,
                 keepalive: float) -> None:
        # not Response.__init__: there is no body to render; the stream is written below
        self.status_code = 200
        self.background = None
        self.hub = hub
        self.wants = wants
        self.after = after
        self.history = history
        self.keepalive = keepalive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            client = self.hub.join(self.wants)
        except Full as exc:
            await JSONResponse({"detail": str(exc)}, status_code=503,
                               headers={"Retry-After": "5"})(scope, receive, send)
            return
        SSE_CONNECTIONS.inc()
        _bound_send_buffer(scope)
        try:
            # no await between connecting and reading the ring: nothing is missed or doubled
            lost = 0
            if self.after is not None:
                backlog, lost = self.hub.replay(self.after, self.wants)
            else:
                backlog = self.hub.recent(self.history, self.wants)
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]})
            head = b": connected\n\n"
            if lost:
                head += (f"event: reset\ndata: {json.dumps({'lost': lost})}\n\n").encode()
            await send({"type": "http.response.body", "body": head, "more_body": True})
            disconnected = asyncio.Event()
            await _first(scope, self._write(send, client, backlog),
                         _disconnected(receive, disconnected), client.dropped.wait(),
                         self.hub.closing.wait())
            if client.dropped.is_set():
                _abort(scope)
            elif not disconnected.is_set():  # the server stops: the response ends cleanly
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            SSE_CONNECTIONS.dec()
            self.hub.leave(client)

    async def _write(self, send: Send, client: Client, backlog: list[Item]) -> None:
        for start in range(0, len(backlog), BATCH):
            body = b"".join(i.frame for i in backlog[start:start + BATCH])
            await send({"type": "http.response.body", "body": body, "more_body": True})
        while True:
            try:
                async with asyncio.timeout(self.keepalive):
                    items = [await client.queue.get()]
            except TimeoutError:
                await send({"type": "http.response.body", "body": b": keep-alive\n\n",
                            "more_body": True})
                continue
            while len(items) < BATCH and not client.queue.empty():
                items.append(client.queue.get_nowait())
            await send({"type": "http.response.body",
                        "body": b"".join(i.frame for i in items), "more_body": True})


async def _disconnected(receive: Receive, seen: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    seen.set()


async def refuse(websocket: WebSocket, status: int, reason: str) -> None:
    """An HTTP answer instead of the handshake (a plain close when the server cannot)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse({"detail": reason}, status,
                                                          headers=WWW if status == 401 else None))
    else:
        await websocket.close(1008, reason[:120])


WWW = {"WWW-Authenticate": 'Bearer realm="pipeops-agent"'}


Handler = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


async def websocket_session(websocket: WebSocket, hub: Hub, wants: Filter,
                            handlers: dict[str, Handler]) -> None:
    """``/ws`` after authentication: the hub's events out, requests answered.

    Server to client: ``{"type": "event", "event": {...}}`` for each event;
    ``{"type": "<request>_response", "request_id": ..., "data": {...}}`` for each request
    ``{"type": "get_status"|"get_metrics"|"ping", "request_id"?: ...}``; an unknown or
    malformed request gets ``{"type": "error", "error": ...}``.
    """
    try:
        client = hub.join(wants)
    except Full as exc:
        await refuse(websocket, 503, str(exc))
        return
    WEBSOCKET_CONNECTIONS.inc()
    _bound_send_buffer(websocket.scope)
    replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue(16)
    try:
        await websocket.accept()

        async def write() -> None:
            while True:
                getters = {asyncio.ensure_future(client.queue.get()),
                           asyncio.ensure_future(replies.get())}
                try:
                    await asyncio.wait(getters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for getter in getters:
                        if not getter.done():
                            getter.cancel()
                for getter in getters:
                    if getter.done() and not getter.cancelled():
                        got = getter.result()
                        if isinstance(got, Item):
                            await websocket.send_text(got.message)
                        else:
                            await websocket.send_text(json.dumps(got))

        async def read() -> None:
            while True:
                try:
                    message = await websocket.receive_json()
                except (ValueError, KeyError):
                    await replies.put({"type": "error", "error": "a request is a JSON object"})
                    continue
                if not isinstance(message, dict):
                    await replies.put({"type": "error", "error": "a request is a JSON object"})
                    continue
                kind = message.get("type")
                handler = handlers.get(kind) if isinstance(kind, str) else None
                if handler is None:
                    await replies.put({"type": "error", "request_id": message.get("request_id"),
                                       "error": f"unknown request type {str(kind)[:40]!r}; "
                                       f"expected one of {', '.join(handlers)}"})
                    continue
                data = await handler(message)
                await replies.put({"type": f"{kind}_response",
                                   "request_id": message.get("request_id"), "data": data})

        with contextlib.suppress(WebSocketDisconnect):
            await _first(websocket.scope, write(), read(), client.dropped.wait())
        if client.dropped.is_set():
            _abort(websocket.scope)
        else:
            with contextlib.suppress(Exception):
                await websocket.close()
    finally:
        WEBSOCKET_CONNECTIONS.dec()
        hub.leave(client)
