"""10,000 preloaded pods: `limit=1` pages count the rest, and kubesim counts the bytes.

Behaviour only; how fast that is lives in bench/kubesim_list.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from kubernetes import client

from kubesim.testing import Kubesim

PODS = 10_000
META = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io,application/json"


@pytest.fixture(scope="module")
def big() -> Iterator[Kubesim]:
    with Kubesim(pods=PODS) as server:
        yield server


def test_limit_one_reports_remaining_item_count(
    big: Kubesim, new_client: Callable[..., client.ApiClient]
) -> None:
    core = client.CoreV1Api(new_client(server=big))
    everywhere = core.list_pod_for_all_namespaces(limit=1)
    assert len(everywhere.items) == 1
    assert everywhere.items[0].metadata.name == "pod-00000"
    assert everywhere.metadata.remaining_item_count == PODS - 1
    in_ns = core.list_namespaced_pod("load", limit=1)
    assert in_ns.metadata.remaining_item_count == PODS - 1
    # The continue token walks on from where the page ended.
    nxt = core.list_namespaced_pod("load", limit=2, _continue=in_ns.metadata._continue)
    assert [p.metadata.name for p in nxt.items] == ["pod-00001", "pod-00002"]
    assert nxt.metadata.remaining_item_count == PODS - 3
    # Other namespaces do not see them.
    assert core.list_namespaced_pod("default", limit=1).items == []


def test_metadata_only_page_is_small_and_counted_by_kubesim(big: Kubesim) -> None:
    """The registrar's heartbeat budget is asserted on these counters (see README)."""
    big.reset_stats()
    status, body = big.request("GET", "/api/v1/pods?limit=1", headers={"Accept": META})
    assert status == 200
    assert body["kind"] == "PartialObjectMetadataList"
    assert body["metadata"]["remainingItemCount"] == PODS - 1
    assert [i["kind"] for i in body["items"]] == ["PartialObjectMetadata"]
    stats = big.stats()
    counted = stats["paths"]["/api/v1/pods?limit=1"]
    assert counted["requests"] == 1
    # Exactly the body kubesim sent (compact JSON, which is how it answers).
    assert counted["bytes"] == len(json.dumps(body, separators=(",", ":")).encode())
    assert counted["bytes"] < 5000
    assert stats["total"] == counted

    # A full list is counted the same way, and is what a heartbeat must not do.
    status, full = big.request("GET", "/api/v1/namespaces/load/pods")
    assert status == 200 and len(full["items"]) == PODS
    after = big.stats()
    assert after["total"]["requests"] == 2
    assert after["paths"]["/api/v1/namespaces/load/pods"]["bytes"] > 1_000_000
    # Admin calls (reading the stats) are never counted.
    assert big.stats()["total"] == after["total"]
    assert big.stats_for("/api/v1/pods") == counted
    assert big.stats_for("/api/v1/") == after["total"]
    assert big.stats_for("/apis/") == {"requests": 0, "bytes": 0}
    big.reset_stats()
    assert big.stats()["total"] == {"requests": 0, "bytes": 0}
