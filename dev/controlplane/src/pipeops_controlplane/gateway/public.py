"""The public HTTP listener: a request's ``Host`` picks a held route, whose Service is
reached through the cluster's tunnel (``routing_mode: tunnel``) or whose
``public_endpoint`` is dialled (``direct``).

It reads only the request head (at most ``MAX_HEAD`` bytes, within ``head_timeout``),
then splices bytes both ways: a slow download, a large upload, a WebSocket upgrade or an
SSE stream pass as they are, with the tunnel's per-stream credit as the only buffer
bound. One request per connection: a request that is not an upgrade is forwarded with
``Connection: close``, so a keep-alive client's next request (maybe for another host) is
never sent down the first one's stream. The head gains ``X-Forwarded-For``,
``X-Forwarded-Host`` and ``X-Forwarded-Proto``. Answers of its own: 400 (no Host or an
unreadable head), 404 (no route), 408 (head too slow), 431 (head too large), 502 (no
tunnel, the agent refused the stream, the direct endpoint cannot be dialled).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Any

from agentkit.mux import MuxClosed, MuxError, OpenFailed, pipe
from pipeops_controlplane.gateway.matching import pick
from pipeops_controlplane.gateway.table import Route, RouteTable
from pipeops_controlplane.tunnel.hub import TunnelHub

log = logging.getLogger("pipeops_controlplane.gateway")

MAX_HEAD = 64 * 1024  # request line and headers; nginx's large_client_header_buffers is 32 KiB
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "x-forwarded-for",
              "x-forwarded-host", "x-forwarded-proto"}
REASONS = {400: "Bad Request", 404: "Not Found", 408: "Request Timeout",
           431: "Request Header Fields Too Large", 502: "Bad Gateway"}


class BadHead(ValueError):
    pass


def parse_head(head: bytes) -> tuple[str, str, str, list[tuple[str, str]]]:
    """(method, target, version, headers) of a request head ending in CRLF CRLF."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError as exc:  # pragma: no cover - latin-1 decodes anything
        raise BadHead(str(exc)) from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise BadHead("not an HTTP/1.x request line")
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise BadHead(f"malformed header line {line[:60]!r}")
        headers.append((name, value.strip()))
    return parts[0], parts[1], parts[2], headers


def rewrite_head(method: str, target: str, version: str, headers: list[tuple[str, str]],
                 client: str) -> bytes:
    """The head to forward: hop-by-hop connection headers replaced (``Connection: close``,
    or kept as ``Upgrade`` for an upgrade), ``X-Forwarded-*`` set."""
    connection = [t.strip().lower() for n, v in headers if n.lower() == "connection"
                  for t in v.split(",")]
    upgrade = "upgrade" in connection and any(n.lower() == "upgrade" for n, _ in headers)
    host = next((v for n, v in headers if n.lower() == "host"), "")
    kept = [(n, v) for n, v in headers if n.lower() not in HOP_BY_HOP]
    kept.append(("Connection", "Upgrade" if upgrade else "close"))
    kept += [("X-Forwarded-For", client), ("X-Forwarded-Host", host),
             ("X-Forwarded-Proto", "http")]
    lines = [f"{method} {target} {version}", *(f"{n}: {v}" for n, v in kept), "", ""]
    return "\r\n".join(lines).encode("latin-1")


class PublicListener:
    def __init__(self, table: RouteTable, hub: TunnelHub, *, host: str = "127.0.0.1",
                 port: int = 0, head_timeout: float = 10.0, connect_wait: float = 5.0,
                 open_timeout: float = 10.0, dial_timeout: float = 10.0) -> None:
        self.table = table
        self.hub = hub
        self.host = host
        self.requested_port = port
        self.head_timeout = head_timeout
        self.connect_wait = connect_wait
        self.open_timeout = open_timeout
        self.dial_timeout = dial_timeout
        self.url = ""
        self.counts: Counter[str] = Counter()  # outcomes, shown in /debug/routes
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, self.host, self.requested_port,
                                                  limit=MAX_HEAD)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://{self.host}:{port}"
        log.info("public listener", extra={"url": self.url})
        return self.url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except asyncio.CancelledError:
            writer.transport.abort()
            raise
        except Exception as exc:  # one connection's failure never escapes into asyncio
            self.counts["error"] += 1
            log.warning("public request failed", extra={"error": repr(exc)})
            writer.transport.abort()
        finally:
            self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self.head_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            await self._answer(writer, 408, "request head not received in time")
            return
        except asyncio.LimitOverrunError:
            await self._answer(writer, 431, f"request head over {MAX_HEAD} bytes")
            return
        except asyncio.IncompleteReadError:
            writer.close()
            return
        try:
            method, target, version, headers = parse_head(head)
        except BadHead as exc:
            await self._answer(writer, 400, str(exc))
            return
        host = next((v for n, v in headers if n.lower() == "host"), "")
        if not host:
            await self._answer(writer, 400, "no Host header")
            return
        route = pick(self.table.host_routes, host, target)
        if route is None:
            await self._answer(writer, 404, f"no route for {host}{target.split('?')[0]}")
            return
        peer = writer.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else ""
        forwarded = rewrite_head(method, target, version, headers, client)
        if route.routing_mode == "direct":
            await self._direct(route, forwarded, reader, writer)
        else:
            await self._tunnel(route, forwarded, reader, writer)

    async def _tunnel(self, route: Route, head: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        tunnel = self.hub.tunnels.get(route.cluster_id)
        session = await tunnel.wait_session(self.connect_wait) if tunnel is not None else None
        if session is None:
            await self._answer(writer, 502, "the cluster's tunnel is not connected")
            return
        target = {"service": route.service_name, "namespace": route.namespace,
                  "port": route.service_port}
        try:
            stream = await session.open_stream(target, timeout=self.open_timeout)
        except (OpenFailed, MuxClosed) as exc:
            await self._answer(writer, 502, f"the agent refused the stream: {exc}")
            return
        self.counts["proxied"] += 1
        try:
            await stream.send(head)
            await pipe(stream, reader, writer)
        except (MuxError, OSError) as exc:
            log.debug("public stream ended with an error",
                      extra={"hostname": route.hostname, "error": repr(exc)})

    async def _direct(self, route: Route, head: bytes, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        host, _, port = route.public_endpoint.rpartition(":")
        if not host or not port.isdigit():
            host, port = route.public_endpoint, "80"
        try:
            async with asyncio.timeout(self.dial_timeout):
                up_reader, up_writer = await asyncio.open_connection(host.strip("[]"),
                                                                     int(port))
        except (OSError, TimeoutError) as exc:
            await self._answer(writer, 502, f"cannot reach {route.public_endpoint}: {exc!r}")
            return
        self.counts["proxied_direct"] += 1
        up_writer.write(head)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_copy(reader, up_writer))
                group.create_task(_copy(up_reader, writer))
        except* OSError as exc:
            log.debug("direct connection ended with an error", extra={"error": repr(exc)})
        finally:
            up_writer.transport.abort()
            writer.close()

    async def _answer(self, writer: asyncio.StreamWriter, status: int, text: str) -> None:
        self.counts[str(status)] += 1
        body = (text + "\n").encode()
        writer.write(
            f"HTTP/1.1 {status} {REASONS[status]}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes one way until EOF, then half-close; the writer's drain bounds the buffer."""
    while chunk := await reader.read(64 * 1024):
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()
