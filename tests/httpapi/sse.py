"""A small SSE client for the tests: reads a stream in a thread, keeps every event and
comment, and lets the test wait for one with a timeout."""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
from typing import Any

from tests.helpers import wait_for


def close_now(conn: http.client.HTTPConnection) -> None:
    """Close a connection another thread is reading from. The socket is shut down first:
    closing the response alone waits for the reader's buffer lock, held by a read blocked
    until data or the connection's timeout (a quiet stream cost a test its whole timeout)."""
    if conn.sock is not None:
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()


class SseReader:
    def __init__(self, port: int, path: str, token: str,
                 headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}",
                                                **(headers or {})})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.events: list[dict[str, Any]] = []
        self.comments: list[str] = []
        self.ended = False
        self.error = ""  # why the stream broke off, when it did not end cleanly
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for raw in self.response:
                line = raw.decode().rstrip("\n")
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                elif line.startswith("id: "):
                    event["id"] = int(line[4:])
                elif line.startswith("event: "):
                    event["event"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif not line and event:
                    self.events.append(event)
                    event = {}
        except (OSError, ValueError, AttributeError, http.client.HTTPException) as exc:
            # AttributeError: http.client reading a connection that close() took away
            self.error = repr(exc)
        self.ended = True

    def wait(self, predicate: Any, timeout: float = 20, what: str = "an event"
             ) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            return next((e for e in list(self.events) if predicate(e)), None)

        return wait_for(find, timeout, what=what)

    def body(self) -> Any:
        return json.loads(self.response.read())

    def close(self) -> None:
        close_now(self.conn)

    def __enter__(self) -> SseReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
