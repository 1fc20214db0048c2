"""Fixtures of the tunnel tests: one dev control plane per module, with short keepalives,
and a local echo service.

The control plane is the real process (``pipeops-dev-controlplane``); each test
registers its own cluster, so no test depends on another's order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pipeops_controlplane.testing import ControlPlane
from tests.clusters import WORLDS, Cluster
from tests.tunnel.agent_helpers import TcpServer, echo
from tests.tunnel.e2e_helpers import E2EStack, register

CP_ARGS = ["--tunnel-ping-interval", "0.5", "--tunnel-ping-timeout", "2"]


@pytest.fixture(scope="module")
def controlplane() -> Iterator[ControlPlane]:
    with ControlPlane(extra_args=CP_ARGS) as cp:
        yield cp


@pytest.fixture
def reg(controlplane: ControlPlane) -> dict[str, Any]:
    """A freshly registered cluster (reply + agent_id)."""
    return register(controlplane)


@pytest.fixture(scope="module", params=WORLDS)
def e2e(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[E2EStack]:
    """The real processes: a cluster, control plane, registrar and tunnel (one per module
    and world: a kubesim of the stack's own, or the session's real control plane)."""
    world = Cluster("real", request.getfixturevalue("real_kube")) \
        if request.param == "real" else None
    stack = E2EStack(tmp_path_factory.mktemp("e2e"), world).start()
    yield stack
    stack.stop()


@pytest.fixture
async def echo_server() -> AsyncIterator[TcpServer]:
    """A local TCP echo service: the target behind a forward."""
    server = await TcpServer(echo).start()
    yield server
    await server.stop()
