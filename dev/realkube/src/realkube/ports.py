"""Free loopback ports and the kubectl to drive a cluster with, found the way the tests
find them (one port never handed out twice in a process)."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

_handed_out: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def find_kubectl() -> str:
    """$KUBECTL, else the project's `.tools/bin/kubectl`, else `kubectl` on PATH."""
    if os.environ.get("KUBECTL"):
        return os.environ["KUBECTL"]
    for folder in Path(__file__).resolve().parents:
        candidate = folder / ".tools" / "bin" / "kubectl"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("kubectl") or "/usr/bin/kubectl"
