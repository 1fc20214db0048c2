"""`pipeops-kubesim`: start the local Kubernetes API and say where it is.

    pipeops-kubesim --host 127.0.0.1 --port 0 --data-dir DIR [--seed FILE ...]
                    [--history N] [--rbac FILE] [--demo] [--token T] [--pods N]

Writes DIR/ca.crt and DIR/kubeconfig, then prints exactly one JSON line on stdout once
the server answers: {"event": "ready", "url", "kubeconfig", "ca", "token", "port",
"admin"} ("admin" is the base URL of the admin API, see admin.py). Everything else goes to
stderr. SIGTERM/SIGINT end open watches and log follows at once and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import yaml

from kubesim import seed
from kubesim.api import Cluster
from kubesim.app import build_app
from kubesim.auth import Authenticator
from kubesim.errors import ApiError
from kubesim.resources import Registry
from kubesim.stats import ADMIN_PREFIX
from kubesim.store import Store
from kubesim.tls import TlsFiles, write_tls


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="pipeops-kubesim", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=0, help="port to bind; 0 picks a free one")
    p.add_argument("--data-dir", type=Path, required=True,
                   help="where ca.crt, server.crt/key and kubeconfig are written")
    p.add_argument("--seed", type=Path, action="append", default=[],
                   help="YAML/JSON manifests to preload (repeatable)")
    p.add_argument("--history", type=int, default=10_000,
                   help="write events retained for watch resumption (older RVs get 410)")
    p.add_argument("--rbac", type=Path, help="YAML file of extra tokens and their rules")
    p.add_argument("--demo", action="store_true", help="seed a small demo cluster")
    p.add_argument("--token", help="admin bearer token (default: random)")
    p.add_argument("--pods", type=int, default=0, metavar="N",
                   help="preload N generated pods (pod-00000 ...), e.g. for scale tests")
    p.add_argument("--pods-namespace", default="load",
                   help="namespace of the --pods pods (created if missing)")
    p.add_argument("--bookmark-interval", type=float, default=10.0,
                   help="seconds between BOOKMARK events on watches that allow them")
    return p.parse_args(argv)


def kubeconfig(url: str, ca_pem: bytes, token: str) -> str:
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubesim", "cluster": {
            "server": url,
            "certificate-authority-data": base64.b64encode(ca_pem).decode(),
        }}],
        "users": [{"name": "kubesim-admin", "user": {"token": token}}],
        "contexts": [{"name": "kubesim", "context": {
            "cluster": "kubesim", "user": "kubesim-admin", "namespace": "default"}}],
        "current-context": "kubesim",
    }
    return yaml.safe_dump(doc, sort_keys=False)


class _Server(uvicorn.Server):
    """uvicorn, minus its signal handling (we want a plain exit 0), plus a ready callback."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_started = on_started

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self._on_started()


@dataclass
class Prepared:
    """Everything that touches the disk or binds, done before the event loop starts."""

    cluster: Cluster
    sock: socket.socket
    tls: TlsFiles
    ready: dict[str, Any]


def prepare(args: argparse.Namespace) -> Prepared:
    data_dir: Path = args.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    token = args.token or secrets.token_urlsafe(24)
    auth = Authenticator(token)
    if args.rbac:
        auth.load_file(args.rbac)
    cluster = Cluster(Registry.default(), Store(args.history), auth,
                      bookmark_interval=args.bookmark_interval)
    seed.builtins(cluster)
    if args.demo:
        seed.load(cluster, seed.demo_cluster())
    for path in args.seed:
        seed.load(cluster, seed.read_manifests(path))
    if args.pods:
        seed.load(cluster, seed.many_pods(args.pods, args.pods_namespace))

    tls = write_tls(data_dir, [args.host])
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when the
    # protocol says TCP, and without it every small answer waits ~40 ms for delayed ACKs.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    sock.setblocking(False)
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    url = f"https://{host}:{port}"

    # Written before the server answers; nobody reads it before the ready line.
    kubeconfig_path = data_dir / "kubeconfig"
    tmp = kubeconfig_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(kubeconfig(url, tls.ca_cert.read_bytes(), token))
    tmp.replace(kubeconfig_path)
    ready = {"event": "ready", "url": url, "kubeconfig": str(kubeconfig_path),
             "ca": str(tls.ca_cert), "token": token, "port": port,
             "admin": f"{url}{ADMIN_PREFIX}"}
    return Prepared(cluster, sock, tls, ready)


async def serve(prepared: Prepared) -> None:
    cluster = prepared.cluster
    config = uvicorn.Config(
        build_app(cluster), ssl_certfile=str(prepared.tls.cert),
        ssl_keyfile=str(prepared.tls.key), lifespan="off", log_level="warning",
        access_log=False, timeout_graceful_shutdown=1, timeout_keep_alive=30,
    )

    def announce() -> None:
        sys.stdout.write(json.dumps(prepared.ready) + "\n")
        sys.stdout.flush()

    server = _Server(config, announce)

    def stop() -> None:
        server.should_exit = True
        cluster.store.drop_watches()
        cluster.logs.close_all()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    await server.serve(sockets=[prepared.sock])
    if not server.started:
        raise SystemExit("kubesim: server failed to start")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        prepared = prepare(args)
    except ApiError as e:  # a seed object the API itself would refuse
        print(f"kubesim: seed rejected: {e.code} {e.reason}: {e.message}", file=sys.stderr)
        raise SystemExit(2) from e
    except (OSError, ValueError, yaml.YAMLError) as e:
        print(f"kubesim: {e}", file=sys.stderr)
        raise SystemExit(2) from e
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(prepared))


if __name__ == "__main__":
    main()
