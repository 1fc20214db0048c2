"""Entry point of ``pipeops-dev-controlplane``: serve the app on loopback.

Prints one JSON line to stdout once it listens, ``{"event": "ready", "url": ...,
"tunnel_url": ..., "public_url": ..., "tunnel_ca_file": ...}`` (the CA is empty unless
``--tunnel-tls-dir`` makes the tunnel endpoint ``wss://``), so tests and ``make run``
find it with ``--port 0``; everything else is logged as JSON
lines (tokens masked).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from agentkit import logs
from agentkit.runner import run_loop
from pipeops_controlplane.app import asgi, create_app
from pipeops_controlplane.auth import InstallTokens
from pipeops_controlplane.gateway import PublicListener
from pipeops_controlplane.settings import Settings
from pipeops_controlplane.store import StateFileError
from pipeops_controlplane.tunnel import TunnelSettings

log = logging.getLogger("pipeops_controlplane")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="pipeops-dev-controlplane",
        description="A reference control plane (PROTOCOL.md) for make run and the tests.")
    parser.add_argument("--host", default="127.0.0.1", help="listen address (loopback)")
    parser.add_argument("--port", type=int, default=0, help="listen port (0: a free one)")
    parser.add_argument("--token", action="append", default=[], metavar="TOKEN",
                        help="an install token agents may register with (repeatable)")
    parser.add_argument("--tokens-file", type=Path, metavar="FILE",
                        help="install tokens, one per line (optionally 'TOKEN WORKSPACE_ID')")
    parser.add_argument("--state", type=Path, metavar="FILE",
                        help="keep the clusters in this JSON file across restarts")
    parser.add_argument("--tunnel-url", default="", help="tunnel_url handed out at registration")
    parser.add_argument("--gateway-url", default="",
                        help="gateway_url handed out at registration")
    parser.add_argument("--tunnel-port", type=int, default=0,
                        help="port of the tunnel's WebSocket endpoint (0: a free one)")
    parser.add_argument("--tunnel-public-host", default="", metavar="HOST[:PORT]",
                        help="host put in the tunnel_url handed to agents (default: the "
                             "bound address)")
    parser.add_argument("--tunnel-tls-dir", type=Path, metavar="DIR",
                        help="serve the tunnel endpoint as wss:// with a throwaway CA written "
                             "into DIR (ca.crt, server.crt, server.key); agents trust ca.crt "
                             "with pipeops.tls.ca_file")
    parser.add_argument("--tunnel-ping-interval", type=float, default=15.0, metavar="SECONDS",
                        help="WebSocket keepalive ping on tunnel connections")
    parser.add_argument("--tunnel-ping-timeout", type=float, default=20.0, metavar="SECONDS",
                        help="a tunnel connection whose pong is this late is dead")
    parser.add_argument("--tunnel-connect-wait", type=float, default=5.0, metavar="SECONDS",
                        help="a connection to a forward port waits this long for the tunnel")
    parser.add_argument("--public-port", type=int, default=0,
                        help="port of the public HTTP listener of the gateway routes "
                             "(0: a free one)")
    parser.add_argument("--log-level", default="info",
                        choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


class _Server(uvicorn.Server):
    """uvicorn's server, telling us when it listens and leaving signals to us."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = asyncio.Event()

    def install_signal_handlers(self) -> None:
        pass

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


async def serve(settings: Settings, tokens: InstallTokens, log_level: str,
                tunnel_settings: TunnelSettings | None = None, public_port: int = 0) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(128)
    host, port = sock.getsockname()[:2]
    app = create_app(settings, tokens, tunnel_settings=tunnel_settings)
    tunnel_url = await app.state.tunnels.start()
    if settings.tunnel_url:  # an explicit --tunnel-url wins everywhere
        tunnel_url = app.state.tunnels.url = settings.tunnel_url
    settings.tunnel_url = tunnel_url  # registration hands out the tunnel endpoint
    ts = app.state.tunnels.settings
    public = PublicListener(app.state.routes, app.state.tunnels, host=settings.host,
                            port=public_port, connect_wait=ts.connect_wait,
                            open_timeout=ts.open_timeout)
    public_url = await public.start()
    app.state.public_listener = public
    config = uvicorn.Config(asgi(app), log_level=log_level, access_log=False,
                            log_config=None, timeout_graceful_shutdown=1, lifespan="off")
    server = _Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    ready = asyncio.create_task(server.ready.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    ready.cancel()
    if server.started:
        url = f"http://{host}:{port}"
        tls = app.state.tunnels.tls
        print(json.dumps({"event": "ready", "url": url, "tunnel_url": tunnel_url,
                          "public_url": public_url,
                          "tunnel_ca_file": str(tls.ca_cert) if tls else ""}), flush=True)
        log.info("listening", extra={"url": url, "install_tokens": len(tokens)})
    try:
        await task
    finally:
        await public.stop()
        await app.state.tunnels.stop()
    with contextlib.suppress(OSError):
        sock.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logs.configure("controlplane", args.log_level)
    if args.log_level != "debug":  # uvicorn's start/stop chatter
        logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    tokens = InstallTokens()
    for token in args.token:
        tokens.add(token)
    if args.tokens_file:
        try:
            tokens.load_file(args.tokens_file)
        except OSError as exc:
            sys.exit(f"pipeops-dev-controlplane: --tokens-file {args.tokens_file}: "
                     f"{exc.strerror}")
    for token in tokens.values():
        logs.register_secret(token)
    if not len(tokens):
        log.warning("no install tokens: every registration will be refused "
                    "(give --token or --tokens-file)")
    settings = Settings(host=args.host, port=args.port, state=args.state,
                        tunnel_url=args.tunnel_url, gateway_url=args.gateway_url)
    tunnel_settings = TunnelSettings(
        bind_host=args.host, port=args.tunnel_port, public_host=args.tunnel_public_host,
        tls_dir=args.tunnel_tls_dir,
        ping_interval=args.tunnel_ping_interval, ping_timeout=args.tunnel_ping_timeout,
        connect_wait=args.tunnel_connect_wait)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(serve(settings, tokens, args.log_level, tunnel_settings,
                           args.public_port))
    except StateFileError as exc:
        sys.exit(f"pipeops-dev-controlplane: --state {exc}")


if __name__ == "__main__":
    main()
