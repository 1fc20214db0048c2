"""Fixtures for the registrar tests: one kubesim and one dev control plane per module.

A test that takes ``cluster`` runs in both worlds (kubesim and the real control plane,
tests/clusters.py), and its registrars talk to that world; any other test talks to this
module's kubesim. Each test gets its own namespace (so Secrets/ConfigMaps never
collide), its own state dir and its own registrar processes, all stopped at teardown;
faults are cleared before and after every test, so no test depends on another's order.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubesim.testing import Kubesim
from pipeops_controlplane.testing import ControlPlane
from tests.clusters import Cluster
from tests.registrar.harness import RegistrarRun, sa_token_file

_counter = itertools.count()


@pytest.fixture(scope="module")
def kubesim() -> Iterator[Kubesim]:
    with Kubesim(demo=True) as ks:
        yield ks


@pytest.fixture(scope="module")
def controlplane() -> Iterator[ControlPlane]:
    # two install tokens: two workspaces (``cp.token`` is the first)
    with ControlPlane(["pit_" + secrets.token_hex(12), "pit_other_" + secrets.token_hex(12)]
                      ) as cp:
        yield cp


@pytest.fixture
def world(request: pytest.FixtureRequest) -> Cluster:
    """The test's ``cluster`` when it takes one, else this module's kubesim."""
    if "cluster" in request.fixturenames:
        chosen: Cluster = request.getfixturevalue("cluster")
        return chosen
    return Cluster("kubesim", request.getfixturevalue("kubesim"))


@pytest.fixture
def namespace(world: Cluster) -> str:
    return world.create_namespace(f"pipeops-test-{next(_counter)}")


@pytest.fixture
def clean_faults(controlplane: ControlPlane) -> Iterator[None]:
    controlplane.clear_fault()
    yield
    controlplane.clear_fault()


StartRegistrar = Callable[..., RegistrarRun]


@pytest.fixture
def start_registrar(world: Cluster, controlplane: ControlPlane, namespace: str,
                    tmp_path: Path, clean_faults: None) -> Iterator[StartRegistrar]:
    """``start_registrar(state_dir=..., extra=[...], ...)``: a started registrar process."""
    runs: list[RegistrarRun] = []
    token_file = sa_token_file(tmp_path, world.token)

    def start(state_dir: Path | None = None, **kwargs: Any) -> RegistrarRun:
        kwargs.setdefault("namespace", namespace)
        kwargs.setdefault("kubeconfig", world.kubeconfig)
        run = RegistrarRun(controlplane, sa_token_file=token_file,
                           state_dir=state_dir or tmp_path / "state", **kwargs)
        runs.append(run)
        return run.start()

    yield start
    for run in runs:
        run.stop()
