"""Start the real dev control plane for a test: ``with ControlPlane() as cp: cp.url``.

The process runs on a free loopback port; its output is drained in a thread (kept in
``cp.lines``) so it never blocks on a full pipe. Helper calls wrap the ``/debug`` API:
``clusters()``, ``cluster(id)``, ``set_fault(mode, target)``, ``clear_fault()``,
``forget(id)``, ``routes()``. Standard library only, so any test can use it.

``restart()`` stops the process and starts a new one on the same ports (API, tunnel,
public listener), as a control plane that was redeployed: without ``--state`` in
``extra_args`` it comes back with its memory lost (no cluster, no route, no tunnel), with
it the clusters survive. ``pause()`` / ``resume()`` freeze the process (SIGSTOP/SIGCONT):
down for its clients (connections hang) with its memory kept.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

_BIN = Path(sys.executable).parent / "pipeops-dev-controlplane"


class ControlPlaneError(RuntimeError):
    pass


class ControlPlane:
    def __init__(self, tokens: list[str] | None = None, *, extra_args: list[str] | None = None,
                 start_timeout: float = 20.0) -> None:
        self.tokens = tokens if tokens is not None else ["pit_" + secrets.token_hex(12)]
        self.extra_args = list(extra_args or [])
        self.start_timeout = start_timeout
        self.url = ""
        self.public_url = ""  # the public listener of the gateway routes
        self.tunnel_url = ""  # from the ready line: ws:// or, with --tunnel-tls-dir, wss://
        self.tunnel_ca_file = ""  # the CA agents trust for wss:// ("" without TLS)
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._pump_thread: threading.Thread | None = None

    @property
    def token(self) -> str:
        """The first install token."""
        return self.tokens[0]

    def start(self) -> ControlPlane:
        command = [str(_BIN) if _BIN.exists() else "pipeops-dev-controlplane", "--port", "0"]
        for token in self.tokens:
            command += ["--token", token]
        command += self._same_ports
        self._ready.clear()
        self.url = self.public_url = self.tunnel_url = ""
        self.proc = subprocess.Popen(
            [*command, *self.extra_args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        self._pump_thread = threading.Thread(target=self._pump, args=(self.proc.stdout,),
                                             daemon=True)
        self._pump_thread.start()
        if not self._ready.wait(self.start_timeout) or not self.url:
            self.stop()
            raise ControlPlaneError("the dev control plane did not start:\n"
                                    + "\n".join(self.lines[-20:]))
        return self

    @property
    def _same_ports(self) -> list[str]:
        """After a first start: the ports it had (a restart comes back where it was)."""
        if not self.url:
            return []
        ports = ["--port", self.url.rpartition(":")[2]]
        if self.tunnel_url:
            ports += ["--tunnel-port", self.tunnel_url.split("/")[2].rpartition(":")[2]]
        if self.public_url:
            ports += ["--public-port", self.public_url.rpartition(":")[2]]
        return ports

    def restart(self) -> ControlPlane:
        """Stop, then start again on the same ports (memory lost unless ``--state``)."""
        self.stop()
        return self.start()

    def pause(self) -> None:
        """Freeze the process: its sockets stay open, nothing answers."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            self.lines.append(line)
            if not self._ready.is_set() and line.startswith('{"event": "ready"'):
                ready = json.loads(line)
                self.url = ready["url"]
                self.public_url = ready.get("public_url", "")
                self.tunnel_url = ready.get("tunnel_url", "")
                self.tunnel_ca_file = ready.get("tunnel_ca_file", "")
                self._ready.set()
        self._ready.set()

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code (None if never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process would not stop
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._pump_thread is not None:
            self._pump_thread.join(timeout)  # the output ends with the process
            self._pump_thread = None
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.stdout.close()
        return self.proc.returncode

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the /debug API --------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None, timeout: float = 10.0
                ) -> tuple[int, Any]:
        """Any call: (status, decoded JSON body or text)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"content-type": "application/json",
                                              **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as err:
            status, raw = err.code, err.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def _ok(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.request(method, path, body)
        if status != 200:
            raise ControlPlaneError(f"{method} {path}: {status} {payload}")
        return payload

    def clusters(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._ok("GET", "/debug/clusters")
        return result

    def cluster(self, cluster_id: str) -> dict[str, Any] | None:
        if not cluster_id:  # "/debug/clusters/" would answer with the whole list
            raise ValueError("cluster_id is empty")
        status, payload = self.request("GET", f"/debug/clusters/{cluster_id}")
        return payload if status == 200 else None

    def set_fault(self, mode: str | None, target: str = "all", *, times: int | None = None,
                  retry_after: int | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._ok("POST", "/debug/faults", {
            "mode": mode, "target": target, "times": times, "retry_after": retry_after})
        return result

    def clear_fault(self) -> None:
        self.set_fault(None)

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._ok("GET", "/debug/faults")
        return result

    def routes(self, cluster_id: str | None = None) -> list[dict[str, Any]]:
        """The route table of ``/debug/routes`` (with its counters)."""
        query = f"?cluster_id={cluster_id}" if cluster_id else ""
        result: list[dict[str, Any]] = self._ok("GET", f"/debug/routes{query}")["routes"]
        return result

    def route_requests(self) -> dict[str, int]:
        """Calls per route endpoint (list, register, unregister, sync) so far."""
        result: dict[str, int] = self._ok("GET", "/debug/routes")["requests"]
        return result

    def forget(self, cluster_id: str) -> None:
        self._ok("POST", f"/debug/clusters/{cluster_id}/forget")

    def wait_for(self, condition: Any, timeout: float = 10.0, what: str = "condition") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            result = condition()
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)
