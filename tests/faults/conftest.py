"""One pod for every fault test (a pod costs ~10 s to start on a loaded machine, and the
fault tests' budget is 150 s): each test breaks something, proves nothing was lost, and
leaves the pod settled again; each starts by waiting for the pod to be settled, so none
depends on another having run, or on the order."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.pod import FaultPod


@pytest.fixture(scope="package")
def shared_pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultPod]:
    started = FaultPod(tmp_path_factory.mktemp("faultpod")).start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def pod(shared_pod: FaultPod) -> FaultPod:
    shared_pod.wait_settled(60)
    return shared_pod
