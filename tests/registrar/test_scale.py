"""A heartbeat costs the same on 10 pods or 10,000: kubesim counts every byte it sends.

This module's kubesim holds 10,000 pods (and 3 nodes); the registrar must count them
with ``limit=1`` pages and ``remainingItemCount``, never by listing them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubesim.testing import Kubesim
from pipeops_controlplane.testing import ControlPlane
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import beats, cluster_with_beats

PODS = 10_000
NODES = 3
BUDGET = 5 * 1024  # bytes read from the API per heartbeat
MEASURED_BEATS = 4


def _manifests() -> dict[str, Any]:
    items: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"node-{n}"}}
        for n in range(NODES)]
    items += [{"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": f"load-{i:05d}", "namespace": f"load-{i % 20}",
                            "labels": {"app": "load", "index": str(i)}},
               "spec": {"nodeName": f"node-{i % NODES}",
                        "containers": [{"name": "app", "image": "example.test/app:1"}]}}
              for i in range(PODS)]
    return {"apiVersion": "v1", "kind": "List", "items": items}


@pytest.fixture(scope="module")
def kubesim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubesim]:
    """Overrides conftest's demo cluster for this module: a big one."""
    seed = tmp_path_factory.mktemp("seed") / "pods.json"
    seed.write_text(json.dumps(_manifests()))
    with Kubesim(seeds=[seed]) as ks:
        yield ks


def test_heartbeats_on_10000_pods_read_under_5kb_each(
        start_registrar: StartRegistrar, controlplane: ControlPlane, kubesim: Kubesim,
        tmp_path: Path) -> None:
    registrar = start_registrar()
    cluster_id = registrar.wait_registered()["cluster_id"]
    first = cluster_with_beats(controlplane, cluster_id, 1)
    assert first["last_heartbeat"]["metadata"]["pod_count"] == PODS
    assert first["last_heartbeat"]["metadata"]["node_count"] == NODES

    kubesim.reset_stats()
    start = beats(controlplane, cluster_id)
    cluster_with_beats(controlplane, cluster_id, start + MEASURED_BEATS)
    stats = kubesim.stats()
    sent = beats(controlplane, cluster_id) - start
    # The reads counted may include those of the beat in flight: dividing by the beats
    # the control plane received overestimates the cost, never underestimates it.
    per_beat = stats["total"]["bytes"] / sent
    assert per_beat < BUDGET, json.dumps(stats, indent=1)
    pod_lists = {path: c for path, c in stats["paths"].items()
                 if path.startswith("/api/v1/pods")}
    assert pod_lists, "the pods were not counted at all"
    assert all("limit=1" in path.split("?", 1)[-1].split("&") for path in pod_lists), pod_lists
    assert sum(c["requests"] for c in pod_lists.values()) >= sent
    view = controlplane.cluster(cluster_id)
    assert view is not None and view["last_heartbeat"]["metadata"]["pod_count"] == PODS
