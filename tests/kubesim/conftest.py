"""Shared fixtures for the kubesim tests: one server per module, clients, line readers."""

from __future__ import annotations

import os
import select
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client, config

from kubesim.testing import Kubesim


@pytest.fixture(scope="module")
def ks() -> Iterator[Kubesim]:
    """A kubesim shared by one module; tests keep to their own namespaces."""
    with Kubesim() as server:
        yield server


@pytest.fixture
def namespace(ks: Kubesim) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:10]}"
    status, body = ks.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    yield name
    ks.request("DELETE", f"/api/v1/namespaces/{name}")


def _make_client(ks: Kubesim, token: str | None = None) -> client.ApiClient:
    """The official client configured from the kubeconfig kubesim wrote.

    token=None keeps the kubeconfig's admin token, "" removes it, anything else replaces it.
    """
    cfg = client.Configuration()
    config.load_kube_config(config_file=ks.kubeconfig, client_configuration=cfg)
    if token is not None:
        # The kubeconfig loader installs a hook that puts its own token back before every
        # request; drop it, or the replacement below would silently never be sent.
        cfg.refresh_api_key_hook = None
        cfg.api_key = {"BearerToken": f"Bearer {token}"} if token else {}
    return client.ApiClient(cfg)


@pytest.fixture
def new_client(ks: Kubesim) -> Iterator[Callable[..., client.ApiClient]]:
    """Factory for official clients (see _make_client); all are closed afterwards."""
    made: list[client.ApiClient] = []

    def make(token: str | None = None, server: Kubesim | None = None) -> client.ApiClient:
        made.append(_make_client(server or ks, token))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def api(new_client: Callable[..., client.ApiClient]) -> client.ApiClient:
    return new_client()


KubectlRun = Callable[..., "subprocess.CompletedProcess[str]"]


@pytest.fixture
def kubectl(ks: Kubesim) -> KubectlRun:
    """Run kubectl against the module's kubesim; fails the test on a non-zero exit."""

    def run(*args: str, check: bool = True, stdin: str | None = None,
            server: Kubesim | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([*(server or ks).kubectl_args, *args], capture_output=True,
                              text=True, input=stdin, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    return run


class LineReader:
    """Reads a child's stdout line by line with deadlines (no fixed sleeps)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.proc = proc
        self.fd = proc.stdout.fileno()
        self.buf = b""
        self.lines: list[str] = []

    def next_line(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no line within {timeout}s; so far: {self.lines!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise EOFError(f"stream ended; lines so far: {self.lines!r}")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        text = line.decode()
        self.lines.append(text)
        return text

    def until(self, predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            line = self.next_line(max(0.01, deadline - time.monotonic()))
            if predicate(line):
                return line


@pytest.fixture
def spawn(ks: Kubesim) -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], LineReader]]]:
    """Start long-running kubectl commands (watch, logs -f); all are killed afterwards."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> tuple[subprocess.Popen[bytes], LineReader]:
        proc = subprocess.Popen([*ks.kubectl_args, *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        procs.append(proc)
        return proc, LineReader(proc)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    """Poll a condition until it holds (returns its value) or the deadline passes."""

    def wait(predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError("condition not met in time")
            time.sleep(0.02)

    return wait
