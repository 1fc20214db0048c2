"""One process ``make run`` started (scripts/run.py): its output parsed for JSON lines,
teed to ``.run/logs/NAME.log`` (mode 0600) and, unless quiet, to the terminal, with every
token masked first.

The masker is shared by every child: a ready line that hands out a token (kubesim's admin
token) registers it before the line is written anywhere, so no log holds it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from agentkit.logs import SecretMasker

masker = SecretMasker()


class Child:
    """One started process: stdout parsed for JSON lines, everything teed to a log."""

    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str],
                 echo: TextIO | None, echo_lock: threading.Lock) -> None:
        self.name = name
        self.records: list[dict[str, Any]] = []
        self.log_path = log_dir / f"{name}.log"
        # 0600 like the kubeconfig: a log is the process's, not everyone's on the machine
        self.log_path.unlink(missing_ok=True)
        self._log = os.fdopen(os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                      0o600), "w")
        self._echo = echo
        self._echo_lock = echo_lock
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, **env}, start_new_session=True,
        )
        self._pump = threading.Thread(target=self._read, name=f"pump-{name}", daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                record = None
                with contextlib.suppress(json.JSONDecodeError):
                    record = json.loads(line)
                if isinstance(record, dict):
                    # a ready line hands out a token (kubesim's admin token): it is read
                    # from the record, never written to a log or the terminal
                    for key, value in record.items():
                        if "token" in key.lower() and isinstance(value, str):
                            masker.register(value)
                line = masker.mask(line)
                self._log.write(line)
                self._log.flush()
                if self._echo:
                    with self._echo_lock:
                        self._echo.write(f"{self.name:>12} | {line}")
                        self._echo.flush()
                if isinstance(record, dict):
                    self.records.append(record)  # after the log: a waiter sees both

    def find(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        for record in list(self.records):
            if predicate(record):
                return record
        return None

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float,
                 stop: threading.Event | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            found = self.find(predicate)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise RuntimeError(f"{self.name} did not start; see {self.log_path}")

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (unless :meth:`terminate` sent it), SIGKILL after ``timeout``; then the
        pump drains and the log closes."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._pump.join(timeout=2)
        self._log.close()
