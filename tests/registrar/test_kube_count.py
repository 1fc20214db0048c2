"""Counting against an API server that gives no ``remainingItemCount``.

kubesim always gives it on unselected lists, so ``Unnumbered`` drops it from each reply
(the one fake here); the requests still go to the real server, which pages for real: in
both worlds (``cluster``: kubesim and the real control plane).
"""

from __future__ import annotations

from typing import Any

import pytest

from agentkit.config import KubernetesConfig
from agentkit.kube import Kube, Resource
from pipeops_registrar import cluster as kube
from tests.clusters import Cluster


class Unnumbered(kube.Cluster):
    """A Cluster whose API server never says how many items remain; counts its lists."""

    def __init__(self, client: Kube) -> None:
        super().__init__(client)
        self.lists = 0

    async def page(self, operation: str, resource: Resource, limit: int,
                   continue_: str = "") -> dict[str, Any]:
        doc = await super().page(operation, resource, limit, continue_)
        if operation == "list_pods":
            self.lists += 1
            (doc.get("metadata") or {}).pop("remainingItemCount", None)
        return doc


def _pods(ks: Cluster) -> int:
    return len(ks.request("GET", "/api/v1/pods")[1]["items"])


def _add_pod(ks: Cluster, name: str) -> None:
    status, body = ks.request("POST", "/api/v1/namespaces/default/pods", {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    assert status == 201, body


async def test_a_paged_count_is_reused_then_recounted_after_the_ttl(
        cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    counter = Unnumbered(await Kube.connect(
        KubernetesConfig(in_cluster=False, kubeconfig=cluster.kubeconfig)))
    total = _pods(cluster)
    assert total >= 2, "the demo cluster needs more than one page of limit=1"

    assert await counter.count_pods() == total
    paged = counter.lists
    assert paged >= 2, "a limit=1 page, then the pages of the rest"

    _add_pod(cluster, "counted-later")
    for _ in range(3):  # within the TTL: only the limit=1 page, and the kept count
        assert await counter.count_pods() == total
    assert counter.lists == paged + 3

    monkeypatch.setattr(kube, "PAGED_COUNT_TTL", 0.0)  # the TTL has passed
    assert await counter.count_pods() == total + 1
    assert counter.lists > paged + 4
