"""Fixtures of the gateway tests: one dev control plane per module (the real process),
and a freshly registered cluster per test, so no test depends on another's order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from pipeops_controlplane.testing import ControlPlane
from tests.tunnel.e2e_helpers import register


@pytest.fixture(scope="module")
def controlplane() -> Iterator[ControlPlane]:
    with ControlPlane(extra_args=["--tunnel-ping-interval", "0.5",
                                  "--tunnel-ping-timeout", "2"]) as cp:
        yield cp


@pytest.fixture
def reg(controlplane: ControlPlane) -> dict[str, Any]:
    """A freshly registered cluster (reply + agent_id)."""
    return register(controlplane)
