"""The shared state volume: one JSON document written atomically, read safely.

The registrar writes the identity file; the siblings read it and wait for it to change.
A write goes to a temp file in the same folder, is fsynced, given mode 0600 and renamed
over the old one, so a crash at any point leaves either the old or the new content. The
document carries a checksum of its payload: a truncated or tampered file is detected,
moved aside (``NAME.corrupt-<time>``) and reported, and the reader sees "no state".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
IDENTITY_FILE = "identity.json"


class StateCorrupt(Exception):
    """The file exists but cannot be trusted; it has been moved aside."""


def _checksum(data: dict[str, Any]) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


ABSENT = "absent"


class StateFile:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        # Why the last read found no usable content: "" (it did), ABSENT, or what was
        # wrong with it ("corrupt (...); moved aside to ..."), kept while the file stays
        # absent after being moved aside, so a waiting reader can say what it waits for.
        self.problem = ""

    def write(self, data: dict[str, Any]) -> None:
        """Replace the content atomically (blocking: small file, local disk)."""
        document = {"version": FORMAT_VERSION, "sha256": _checksum(data), "data": data}
        write_atomically(self.path, json.dumps(document, sort_keys=True, indent=1).encode())

    def read(self) -> dict[str, Any] | None:
        """The content, or None if absent. A corrupt file is moved aside and reported."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._absent()
            return None
        try:
            document = json.loads(raw)
            data = document["data"]
            if document.get("version") != FORMAT_VERSION or not isinstance(data, dict):
                raise ValueError("unknown format")
            if document.get("sha256") != _checksum(data):
                raise ValueError("checksum mismatch")
        except (ValueError, KeyError, TypeError) as exc:
            aside = self._move_aside()
            log.error(
                "state file is corrupt; moved aside and ignored",
                extra={"path": str(self.path), "moved_to": str(aside), "reason": str(exc)},
            )
            self.problem = f"corrupt ({str(exc)[:80]}); moved aside to {aside.name}"
            return None
        self.problem = ""
        return data

    def _absent(self) -> None:
        if not self.problem.startswith("corrupt"):
            self.problem = ABSENT

    def _move_aside(self) -> Path:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time() * 1000)}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        return aside

    def _signature(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def wait(
        self,
        *,
        changed_from: dict[str, Any] | None = None,
        timeout: float | None = None,
        poll: float = 0.2,
        on_problem: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Wait until the file holds valid content different from ``changed_from``.

        With ``changed_from=None`` this returns as soon as any valid content exists.
        Raises TimeoutError after ``timeout`` seconds. ``on_problem`` is told each new
        ``problem`` met while waiting (absent, corrupt).
        """

        async def _poll() -> dict[str, Any]:
            seen: tuple[int, int, int] | None = None
            said = ""
            while True:
                signature = self._signature()
                if signature is None:
                    self._absent()
                if on_problem is not None and self.problem and self.problem != said:
                    said = self.problem
                    on_problem(said)
                if signature is not None and signature != seen:
                    seen = signature
                    data = await asyncio.to_thread(self.read)
                    if data is not None and data != changed_from:
                        return data
                await asyncio.sleep(poll)

        return await asyncio.wait_for(_poll(), timeout)


def write_atomically(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload``, mode 0600, all or nothing (blocking).

    A temp file in the same folder, fsynced, renamed over the old one, the folder
    fsynced. A write that fails (ENOSPC, EFBIG, EIO...) removes the temp file and raises
    OSError: the old file stays as it was, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def identity_file(state_dir: str | os.PathLike[str]) -> StateFile:
    return StateFile(Path(state_dir) / IDENTITY_FILE)
