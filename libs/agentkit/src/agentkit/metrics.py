"""Serve a service's Prometheus metrics on a localhost port.

The http-api collects them from each sibling; nothing outside the pod reaches these
ports. prometheus-client serves from its own thread, so the event loop never blocks.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server


class MetricsServer:
    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Listen; OSError naming the address when it cannot (a port in use)."""
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host)
        except OSError as exc:
            raise OSError(exc.errno, f"cannot serve metrics on {self.host}:{self.port}: "
                          f"{exc.strerror or exc}") from None
        self.port = self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
