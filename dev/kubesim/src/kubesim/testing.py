"""Start a real `pipeops-kubesim` process from tests, and drive its admin API.

Usage (sync, or `async with` in async tests; both start a fresh process on a free port in
a temporary directory and stop it on exit):

    from kubesim.testing import Kubesim

    with Kubesim(demo=True) as ks:             # or: Kubesim(seeds=[path], history=50,
        ks.url, ks.kubeconfig, ks.ca, ks.token, ks.port     rbac=path, token="t")
        subprocess.run(ks.kubectl_args + ["get", "pods", "-A"])
        ks.append_log("demo", "demo-7d4b9c-abcde", ["hello"])   # for `logs -f`
        ks.drop_watches()                      # every open watch stream ends
        ks.drop_watches(expired=True)          # ... after an ERROR event with code 410
        ks.hang_watches()                      # open watches stay open, get no events
        ks.expire_history()                    # watch/list from any older RV -> 410
        ks.set_delay(0.5)                      # delay every API answer; 0 turns it off
        ks.restart(downtime=0.2)               # watches end, history expires, 503s a while
        ks.add_token("t2", service_account="default/reader",
                     rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}])
        ks.reset_stats(); ...; ks.stats()      # {"total": {"requests", "bytes"},
                                               #  "paths": {"/api/v1/pods?limit=1": {...}}}
        ks.stats_for("/api/v1/pods")           # {"requests", "bytes"} summed by path prefix
        ks.request("GET", "/api/v1/pods")      # (status, parsed JSON) with the admin token

    Kubesim(pods=10_000)                       # preload pods pod-00000... in namespace
                                               # "load" (pods_namespace=...) for scale tests

Bytes are response-body bytes as kubesim sent them (streams counted as they go, headers
and chunk framing not counted; admin calls never counted); see dev/kubesim/README.md.
`kubectl_args` use the project's `.tools/bin/kubectl` when it exists (or $KUBECTL).

The admin methods are quick blocking calls to loopback; in async tests wrap them in
`asyncio.to_thread` if the event loop must not pause. The process's stderr is in
`ks.log_path`. `Kubesim.env()` gives an environment with KUBECONFIG set.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any


def _find_kubectl() -> str:
    """$KUBECTL, else the project's `.tools/bin/kubectl` (what `make setup` installs and
    `make` puts first on PATH), else `kubectl` on PATH."""
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    for folder in Path(__file__).resolve().parents:
        candidate = folder / ".tools" / "bin" / "kubectl"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("kubectl") or "/usr/bin/kubectl"


KUBECTL = _find_kubectl()


class KubesimError(RuntimeError):
    pass


class Kubesim:
    def __init__(
        self,
        *,
        seeds: Sequence[str | os.PathLike[str]] = (),
        history: int | None = None,
        rbac: str | os.PathLike[str] | None = None,
        demo: bool = False,
        token: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout: float = 20.0,
        pods: int = 0,
        pods_namespace: str = "load",
    ) -> None:
        self._args: list[str] = []
        if pods:
            self._args += ["--pods", str(pods), "--pods-namespace", pods_namespace]
        for s in seeds:
            self._args += ["--seed", str(s)]
        if history is not None:
            self._args += ["--history", str(history)]
        if rbac is not None:
            self._args += ["--rbac", str(rbac)]
        if demo:
            self._args.append("--demo")
        if token:
            self._args += ["--token", token]
        self._args += list(extra_args)
        self._timeout = startup_timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready: dict[str, Any] = {}
        self._ssl: ssl.SSLContext | None = None

    # ---- lifecycle ----------------------------------------------------------------------

    def start(self) -> Kubesim:
        self._tmp = tempfile.TemporaryDirectory(prefix="kubesim-")
        data = Path(self._tmp.name)
        self.log_path = data / "kubesim.log"
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "kubesim", "--host", "127.0.0.1", "--port", "0",
                 "--data-dir", str(data), *self._args],
                stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
            )
        try:
            self._ready = self._read_ready()
        except BaseException:
            self.stop()
            raise
        self._ssl = ssl.create_default_context(cafile=self.ca)
        return self

    def _read_ready(self) -> dict[str, Any]:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self._timeout
        buf = b""
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KubesimError(f"kubesim not ready in {self._timeout}s; log:\n"
                                   + self.log_path.read_text())
            readable, _, _ = select.select([fd], [], [], min(left, 0.5))
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    self._proc.wait(5)
                    raise KubesimError(f"kubesim exited ({self._proc.returncode}); log:\n"
                                       + self.log_path.read_text())
                buf += chunk
        ready: dict[str, Any] = json.loads(buf.split(b"\n", 1)[0])
        if ready.get("event") != "ready":
            raise KubesimError(f"unexpected first line from kubesim: {ready!r}")
        return ready

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        code = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            code = self._proc.returncode
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return code

    @property
    def pid(self) -> int:
        assert self._proc is not None
        return self._proc.pid

    def __enter__(self) -> Kubesim:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Kubesim:
        import asyncio

        return await asyncio.to_thread(self.start)

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    # ---- where it is --------------------------------------------------------------------

    @property
    def url(self) -> str:
        return str(self._ready["url"])

    @property
    def kubeconfig(self) -> str:
        return str(self._ready["kubeconfig"])

    @property
    def ca(self) -> str:
        return str(self._ready["ca"])

    @property
    def token(self) -> str:
        return str(self._ready["token"])

    @property
    def port(self) -> int:
        return int(self._ready["port"])

    @property
    def kubectl_args(self) -> list[str]:
        """`kubectl` with this server's kubeconfig and a private discovery cache."""
        assert self._tmp is not None
        return [KUBECTL, "--kubeconfig", self.kubeconfig, "--cache-dir",
                str(Path(self._tmp.name) / "kube-cache")]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": self.kubeconfig}

    def ssl_context(self) -> ssl.SSLContext:
        assert self._ssl is not None
        return self._ssl

    # ---- HTTP -----------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One API call (admin token unless `token` is given; "" sends none)."""
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ssl_context(),
                                           timeout=30)
        hdrs = {"Accept": "application/json", **(headers or {})}
        tok = self.token if token is None else token
        if tok:
            hdrs["Authorization"] = f"Bearer {tok}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if data is not None:
            hdrs["Content-Type"] = content_type
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            payload = resp.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(payload) if payload else None
        except ValueError:
            parsed = payload.decode(errors="replace")
        return resp.status, parsed

    def admin(self, action: str, body: dict[str, Any] | None = None,
              method: str = "POST") -> Any:
        status, parsed = self.request(method, f"/_kubesim/{action}",
                                      body if method == "POST" else None)
        if status != 200:
            raise KubesimError(f"admin {action} failed: {status} {parsed}")
        return parsed

    # ---- admin API ------------------------------------------------------------------------

    def drop_watches(self, expired: bool = False) -> int:
        return int(self.admin("watches/drop", {"expired": expired})["dropped"])

    def hang_watches(self) -> int:
        """Open watches stay open but get no more events; returns how many."""
        return int(self.admin("watches/hang")["hung"])

    def expire_history(self) -> None:
        self.admin("history/expire", {})

    def set_delay(self, seconds: float) -> None:
        self.admin("delay", {"seconds": seconds})

    def restart(self, downtime: float = 0.0) -> None:
        self.admin("restart", {"downtime": downtime})

    def append_log(self, namespace: str, pod: str, lines: Iterable[str],
                   container: str | None = None) -> None:
        body: dict[str, Any] = {"namespace": namespace, "pod": pod, "lines": list(lines)}
        if container:
            body["container"] = container
        self.admin("logs", body)

    def add_token(self, token: str, *, service_account: str | None = None,
                  user: str | None = None, rules: Iterable[dict[str, Any]] = ()) -> str:
        """Bind `token` to a ServiceAccount ("ns/name") or user with RBAC rules."""
        body: dict[str, Any] = {"token": token, "rules": list(rules)}
        if service_account:
            body["serviceAccount"] = service_account
        if user:
            body["user"] = user
        return str(self.admin("tokens", body)["user"])

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("stats", method="GET")
        return result

    def reset_stats(self) -> None:
        self.admin("stats/reset", {})

    def stats_for(self, path_prefix: str) -> dict[str, int]:
        """Requests and response-body bytes summed over every counted `path?query` that
        starts with `path_prefix` (e.g. "/api/v1/pods"), since the last reset."""
        total = {"requests": 0, "bytes": 0}
        for key, counter in self.stats()["paths"].items():
            if key.startswith(path_prefix):
                total["requests"] += int(counter["requests"])
                total["bytes"] += int(counter["bytes"])
        return total

    def info(self) -> dict[str, Any]:
        result: dict[str, Any] = self.admin("info", method="GET")
        return result

    def wait_for(self, predicate: Any, timeout: float = 10.0, interval: float = 0.02) -> Any:
        """Poll `predicate()` until truthy (returned) or raise after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                value = predicate()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)
