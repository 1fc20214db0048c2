"""The fault tests' pod: a fresh one per test (a fault must not leak into the next)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.pod import FaultPod


@pytest.fixture
def pod(tmp_path: Path) -> Iterator[FaultPod]:
    started = FaultPod(tmp_path).start()
    try:
        yield started
    finally:
        started.stop()
