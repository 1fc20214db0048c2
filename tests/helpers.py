"""Test helpers shared by every test folder: real processes, free ports, polling.

``ServiceProcess`` starts one of the agent's console scripts as a real process, reads
its JSON log lines from stdout in a background thread, and finds the bound gRPC
address from the ``started`` line. ``wait_for`` polls a condition with a deadline: no
test sleeps a fixed time. ``Lines`` is a running command (``kubectl get -w``, ``logs -f``)
whose output lines a test waits for. ``child_pids``, ``alive`` and ``listening_ports`` read
/proc: what a process started and what it listens on, to show a stopped one left nothing
behind.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")


def tool(name: str) -> str:
    """Path of a command: the venv's, the project's .tools/bin, or PATH."""
    for folder in (BIN, ROOT / ".tools" / "bin"):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} is not installed: run `make setup`")
    return found


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before in this test run.

    The caller's process binds it later; never giving the same port twice keeps the many
    ports of one test (a whole pod's worth) from colliding with each other.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def wait_for(
    condition: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll until ``condition()`` returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# How the images run the four services (docker/base.Dockerfile's runtime ENV; make run
# sets the same, and tests/images/test_images.py holds the three together): the tests run
# them so too, docstrings and asserts stripped as in production.
IMAGE_ENV = {"MALLOC_ARENA_MAX": "1", "PYTHONOPTIMIZE": "2"}
SERVICE_SCRIPTS = {f"pipeops-{name}" for name in ("registrar", "tunnel", "gateway", "http-api")}


class ServiceProcess:
    """A service's real process, its stdout parsed as JSON lines. The agent's four services
    run with ``IMAGE_ENV`` unless ``env`` says otherwise."""

    def __init__(self, argv: Sequence[str], env: dict[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None) -> None:
        self.argv = list(argv)
        image = IMAGE_ENV if Path(self.argv[0]).name in SERVICE_SCRIPTS else {}
        self.env = {**os.environ, **image, **(env or {})}
        self.cwd = cwd
        self.lines: list[str] = []
        self.stderr_lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self._pumps: list[threading.Thread] = []

    def start(self) -> ServiceProcess:
        # imported here: conftest imports this module before pytest loads the plugin
        from tests import secretscan  # its tokens remembered, its output scanned at the end

        secretscan.watch_process(self.argv, self.env, self)
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=self.env, cwd=self.cwd,
        )
        self._pumps = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr_lines),
                             daemon=True),
        ]
        for pump in self._pumps:
            pump.start()
        return self

    def _pump(self, stream: Any, sink: list[str]) -> None:
        with stream:
            for line in stream:
                sink.append(line.rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def stop_seconds(self) -> float:
        """How long the service took from "stopping on signal" to "stopped", by its own log.

        The service's own clock: a loaded test machine's signal delivery and interpreter
        exit are not part of what the service controls.
        """
        said = {r.get("msg"): r["time"] for r in self.records()
                if r.get("msg") in ("stopping on signal", "stopped")}
        assert len(said) == 2, f"no complete stop in the log: {said}"
        stopping, stopped = (dt.datetime.fromisoformat(said[m].replace("Z", "+00:00"))
                             for m in ("stopping on signal", "stopped"))
        return (stopped - stopping).total_seconds()

    def wait_record(self, predicate: Callable[[dict[str, Any]], bool],
                    timeout: float = 15.0, what: str = "a log record") -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for record in self.records():
                if predicate(record):
                    return record
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"{self.argv[0]} exited {self.proc.returncode} before {what}:\n"
                    + "\n".join(self.lines[-20:] + self.stderr_lines[-20:]))
            return None

        return wait_for(find, timeout, what=what)

    def wait_started(self, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_record(lambda r: r.get("msg") == "started", timeout, "the started line")

    @property
    def grpc_address(self) -> str:
        return str(self.wait_started()["grpc"])

    def terminate(self, timeout: float = 5.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise
        finally:
            self._join()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join()

    def _join(self) -> None:
        """Read the pipes to their end (the process has exited) and close them."""
        for pump in self._pumps:
            pump.join(timeout=5)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def grpcurl(*args: str, timeout: float = 20.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("grpcurl"), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


class Lines:
    """A running command whose stdout and stderr lines are collected in threads."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._pump, args=(s, sink), daemon=True)
                         for s, sink in ((self.proc.stdout, self.lines),
                                         (self.proc.stderr, self.errors))]
        for thread in self._threads:
            thread.start()

    def _pump(self, stream: IO[str], sink: list[str]) -> None:
        with stream:
            for line in stream:
                sink.append(line.rstrip("\n"))

    def wait_line(self, text: str, timeout: float = 15.0) -> None:
        def seen() -> bool:
            if any(text in line for line in self.lines):
                return True
            assert self.proc.poll() is None, f"ended: {self.lines} {self.errors}"
            return False

        wait_for(seen, timeout, what=f"{text!r} from {Path(self.proc.args[0]).name}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        for thread in self._threads:
            thread.join(5)


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...]; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` now."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat_fields(int(entry.name))) \
                and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _listening() -> dict[str, int]:
    """Socket inode -> port of every TCP socket listening on this machine."""
    out = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    out[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return out


def listening_ports(pid: int | None = None) -> set[int]:
    """The TCP ports ``pid`` listens on (every listening port on the machine if None)."""
    listening = _listening()
    if pid is None:
        return set(listening.values())
    mine = _socket_inodes(pid)
    return {port for inode, port in listening.items() if inode in mine}
