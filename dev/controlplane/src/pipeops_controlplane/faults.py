"""Fault switches for tests: make the agent-facing API misbehave on purpose.

One mode at a time, set with ``POST /debug/faults``, applied by an ASGI middleware to
requests under ``/api/`` (optionally only to register calls, heartbeats, or the gateway
routes of PROTOCOL.md section 4 with ``target: routes``); the
``/debug`` endpoints are never affected, so a test can always switch a fault off.

* ``5xx``: answer 503 with a JSON error.
* ``hang``: read the request, then answer nothing until the client gives up.
* ``close``: drop the TCP connection without a reply.
* ``malformed``: answer 200 with a body that is not JSON.
* ``no_cluster_id``: answer registration 200 with a valid reply that lacks
  ``cluster_id`` (other calls pass through).
* ``401``, ``403``, ``404``: answer that status with a JSON error, as a control plane
  that refuses the token or forgot the cluster would; with ``target: heartbeat`` the
  heartbeats keep being refused while registration keeps working.
* ``echo_headers``: answer 502 with a plain-text body that echoes the request's headers,
  ``Authorization`` first, as a misconfigured proxy might (tests that no token leaks).
* ``429``: answer 429 with ``Retry-After: <retry_after>`` (seconds, default 1), as a
  control plane shedding load would; ``5xx`` carries the same header when
  ``retry_after`` is set.

``times`` limits a fault to that many requests (then it switches itself off), so a test
can see a client retry through it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Mode = Literal["5xx", "hang", "close", "malformed", "no_cluster_id", "401", "403", "404",
               "echo_headers", "429"]
Target = Literal["all", "register", "heartbeat", "routes"]
MODES: tuple[str, ...] = ("5xx", "hang", "close", "malformed", "no_cluster_id", "401", "403",
                          "404", "echo_headers", "429")
ROUTES_PREFIX = "/api/v1/gateway/"
REFUSALS = {"401": b'{"detail": "invalid token (fault injected)"}',
            "403": b'{"detail": "forbidden (fault injected)"}',
            "404": b'{"detail": "cluster not found (fault injected)"}'}


@dataclass
class FaultSwitch:
    mode: Mode | None = None
    target: Target = "all"
    hits: int = 0
    times: int | None = None  # requests left to fault; None: until switched off
    retry_after: int | None = None

    def set(self, mode: Mode | None, target: Target = "all", times: int | None = None,
            retry_after: int | None = None) -> None:
        self.mode, self.target, self.hits = mode, target, 0
        self.times, self.retry_after = times, retry_after

    def applies(self, path: str) -> bool:
        if self.mode is None or not path.startswith("/api/"):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        if self.target == "routes":
            return path.startswith(ROUTES_PREFIX)
        if self.target == "register":
            return path.endswith("/register") and not path.startswith(ROUTES_PREFIX)
        if self.target == "heartbeat":
            return path.endswith("/heartbeat")
        return True

    def view(self) -> dict[str, Any]:
        return {"mode": self.mode, "target": self.target, "hits": self.hits,
                "times": self.times, "retry_after": self.retry_after}


async def _respond(send: Send, status: int, body: bytes,
                   content_type: bytes = b"application/json",
                   retry_after: int | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive) -> Message:
    """Read the request body; returns the last message received."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return message


class FaultMiddleware:
    def __init__(self, app: ASGIApp, switch: FaultSwitch) -> None:
        self.app = app
        self.switch = switch

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.switch.applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        mode = self.switch.mode
        path = scope["path"]
        if mode == "no_cluster_id" and (not path.endswith("/register")
                                        or path.startswith(ROUTES_PREFIX)):
            await self.app(scope, receive, send)
            return
        self.switch.hits += 1
        last = await _drain(receive)
        if mode == "5xx":
            await _respond(send, 503, b'{"error": "service unavailable (fault injected)"}',
                           retry_after=self.switch.retry_after)
        elif mode == "429":
            await _respond(send, 429, b'{"error": "too many requests (fault injected)"}',
                           retry_after=1 if self.switch.retry_after is None
                           else self.switch.retry_after)
        elif mode in REFUSALS:
            await _respond(send, int(mode), REFUSALS[mode])
        elif mode == "echo_headers":
            # the credentials first, so that even a short excerpt of the body holds them
            headers = sorted(scope["headers"], key=lambda h: h[0] != b"authorization")
            lines = [f"{name.decode(errors='replace')}: {value.decode(errors='replace')}"
                     for name, value in headers]
            text = "bad gateway; " + "\n".join(lines) + f"\n{scope['method']} {scope['path']}"
            await _respond(send, 502, text.encode(), b"text/plain")
        elif mode == "malformed":
            await _respond(send, 200, b'{"cluster_id": "oops, this is not json')
        elif mode == "no_cluster_id":
            body = {"name": "x", "status": "active", "workspace_id": "", "token": "",
                    "tunnel_url": "", "gateway_url": ""}
            await _respond(send, 200, json.dumps(body).encode())
        elif mode == "hang":
            while last["type"] != "http.disconnect":
                last = await receive()
        elif mode == "close":
            await _abort(send)


async def _abort(send: Send) -> None:
    """Drop the connection with no reply at all.

    uvicorn's ``send`` is a bound method of the request cycle, which holds the transport;
    aborting it resets the TCP connection. Should that ever change, fall back to starting
    a reply and never finishing it, which closes the connection mid-reply.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is not None and hasattr(transport, "abort"):
        transport.abort()
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"1000")]})
    raise ConnectionAbortedError("fault: connection closed mid-reply")
