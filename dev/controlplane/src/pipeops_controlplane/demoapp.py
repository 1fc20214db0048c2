"""A small real HTTP app to stand behind a demo Ingress (``make run``) and the tests of the
public listener: plain answers, a slow streamed download, an upload, SSE and WebSocket.

* ``GET /stream?chunks=N&size=B&delay=S``: N chunks of B bytes, S seconds apart.
* ``POST /upload``: reads the body as it streams in; answers its length and SHA-256.
* ``GET /events?n=N&delay=S``: N server-sent events.
* ``WS /ws``: echoes every message.
* anything else: JSON saying who answered (``--name``), the Host it saw, the path.

``python -m pipeops_controlplane.demoapp --port P --name demo`` serves it on 127.0.0.1
and prints ``{"event": "ready", "url": ...}`` once it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import signal
import socket
from collections.abc import AsyncIterator, Sequence

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

MAX_CHUNKS = 100_000  # a bound on what one download may ask for


def create_demo_app(name: str = "demo") -> Starlette:
    async def hello(request: Request) -> Response:
        return JSONResponse({"app": name, "host": request.headers.get("host", ""),
                             "path": request.url.path, "method": request.method,
                             "forwarded_for": request.headers.get("x-forwarded-for", "")})

    async def stream(request: Request) -> Response:
        chunks = min(int(request.query_params.get("chunks", "10")), MAX_CHUNKS)
        size = min(int(request.query_params.get("size", "1024")), 1024 * 1024)
        delay = float(request.query_params.get("delay", "0"))

        async def body() -> AsyncIterator[bytes]:
            for i in range(chunks):
                yield bytes([i % 256]) * size
                if delay:
                    await asyncio.sleep(delay)

        return StreamingResponse(body(), media_type="application/octet-stream")

    async def upload(request: Request) -> Response:
        digest = hashlib.sha256()
        total = 0
        async for chunk in request.stream():
            digest.update(chunk)
            total += len(chunk)
        return JSONResponse({"app": name, "bytes": total, "sha256": digest.hexdigest()})

    async def events(request: Request) -> Response:
        count = min(int(request.query_params.get("n", "3")), MAX_CHUNKS)
        delay = float(request.query_params.get("delay", "0.05"))

        async def body() -> AsyncIterator[bytes]:
            for i in range(count):
                yield f"id: {i}\nevent: tick\ndata: {json.dumps({'n': i})}\n\n".encode()
                await asyncio.sleep(delay)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache"})

    async def ws_echo(websocket: WebSocket) -> None:
        await websocket.accept()
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await websocket.send_bytes(message["bytes"])
                else:
                    await websocket.send_text(message.get("text") or "")

    return Starlette(routes=[
        Route("/stream", stream), Route("/upload", upload, methods=["POST"]),
        Route("/events", events), WebSocketRoute("/ws", ws_echo),
        Route("/{path:path}", hello, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
    ])


class DemoServer(uvicorn.Server):
    """uvicorn on a socket we bound, with a ``ready`` event and signals left to us."""

    def __init__(self, name: str = "demo", host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(uvicorn.Config(create_demo_app(name), log_level="warning",
                                        access_log=False, lifespan="off", log_config=None,
                                        timeout_graceful_shutdown=1,
                                        # the sans-I/O implementation: the legacy one
                                        # warns that it is deprecated
                                        ws="websockets-sansio"))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port: int = self.sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def install_signal_handlers(self) -> None:
        pass

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def start(self) -> DemoServer:
        self._task = asyncio.create_task(self.serve(sockets=[self.sock]), name="demoapp")
        ready = asyncio.create_task(self.ready.wait())
        await asyncio.wait({self._task, ready}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if self._task.done():
            self.sock.close()
            await self._task  # raises what stopped it
        return self

    async def wait(self) -> None:
        """Until the server stops (a signal sets ``should_exit``)."""
        if self._task is not None:
            await self._task

    async def stop(self) -> None:
        self.should_exit = True
        if self._task is not None:
            await self._task
        self.sock.close()


async def _main(name: str, host: str, port: int) -> None:
    server = await DemoServer(name, host, port).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    print(json.dumps({"event": "ready", "url": server.url}), flush=True)
    await server.wait()
    server.sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeops_controlplane.demoapp",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="demo", help="said in every plain answer")
    args = parser.parse_args(argv)
    asyncio.run(_main(args.name, args.host, args.port))


if __name__ == "__main__":
    main()
