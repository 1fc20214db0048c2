"""The http-api's own Prometheus metrics (names from the source documents).

``pipeops_http_requests_total{endpoint,code}`` counts every request by its route's path
template (``/api/runners/{runner_id}/command``, so a runner id never becomes a label
value; a path that matches no route counts as ``other``). The connection gauges are
moved by the realtime module as clients come and go.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HTTP_REQUESTS = Counter("pipeops_http_requests_total", "HTTP requests served",
                        ["endpoint", "code"])
SSE_CONNECTIONS = Gauge("pipeops_sse_connections", "Server-sent event streams open now")
WEBSOCKET_CONNECTIONS = Gauge("pipeops_websocket_connections", "WebSocket clients connected now")


class RequestCounter:
    """ASGI middleware: count each HTTP request once its status is known (streams too)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        status: dict[str, Any] = {"code": 0}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            elif message["type"] == "websocket.accept":
                status["code"] = 101
            elif message["type"] == "websocket.close" and not status["code"]:
                status["code"] = 403  # refused before the handshake completed
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status["code"] = status["code"] or 500
            raise
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "other"
            HTTP_REQUESTS.labels(endpoint, str(status["code"] or 499)).inc()
