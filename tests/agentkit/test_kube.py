"""agentkit.kube against a real server, in both worlds (``cluster``: kubesim and the real
control plane): pages, metadata-only lists, watches with bookmarks, errors, server-side
apply, Events, and no thread left by a watch. The 410 in both forms is kubesim-only here
(its drop_watches/expire_history); the real 410 after etcd compaction is proven in
tests/realkube/test_watches_real.py, on a cluster without the watch cache."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from tenacity import wait_fixed

from agentkit.config import KubernetesConfig
from agentkit.kube import Kube, KubeError, Listed, Resource, Watched
from agentkit.kube import resources as r
from kubesim.testing import Kubesim
from tests.clusters import Cluster
from tests.tunnel.agent_helpers import until

PAGED = 7  # configmaps made in each test namespace


@pytest.fixture(scope="module")
def demo_kubesim() -> Iterator[Kubesim]:
    """This module's kubesim world: its own, with bookmarks every 0.2 s and counters
    no other module touches."""
    with Kubesim(demo=True, extra_args=["--bookmark-interval", "0.2"]) as server:
        yield server


@pytest.fixture
def ks(demo_kubesim: Kubesim) -> Kubesim:
    """The kubesim world alone, for the tests that need one of its fault controls."""
    return demo_kubesim


def _make_namespace(server: Cluster | Kubesim) -> Iterator[str]:
    name = f"k-{uuid.uuid4().hex[:8]}"
    status, body = server.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    for i in range(PAGED):
        status, body = server.request(
            "POST", f"/api/v1/namespaces/{name}/configmaps",
            {"metadata": {"name": f"cm-{i}", "labels": {"n": str(i)}}, "data": {"k": "v" * 100}})
        assert status == 201, body
    if isinstance(server, Cluster) and server.real:  # the controller publishes its CA
        server.wait_for(lambda: server.request(
            "GET", f"/api/v1/namespaces/{name}/configmaps/kube-root-ca.crt")[0] == 200)
    yield name
    server.request("DELETE", f"/api/v1/namespaces/{name}")


def configmap_names(cluster: Cluster, ns: str) -> list[str]:
    """Every ConfigMap in `ns`: ours, and on the real one kube-root-ca.crt too."""
    status, body = cluster.request("GET", f"/api/v1/namespaces/{ns}/configmaps")
    assert status == 200, body
    return sorted(i["metadata"]["name"] for i in body["items"])


@pytest.fixture
def ns(cluster: Cluster) -> Iterator[str]:
    yield from _make_namespace(cluster)


@pytest.fixture
def ks_ns(ks: Kubesim) -> Iterator[str]:
    yield from _make_namespace(ks)


async def _connect(kubeconfig: str) -> Kube:
    calls: list[tuple[str, str]] = []
    client = await Kube.connect(KubernetesConfig(in_cluster=False, kubeconfig=kubeconfig),
                                on_call=lambda op, code: calls.append((op, code)))
    client.calls = calls  # type: ignore[attr-defined]
    return client


@pytest.fixture
async def kube(cluster: Cluster) -> AsyncIterator[Kube]:
    client = await _connect(cluster.kubeconfig)
    yield client
    await client.aclose()


@pytest.fixture
async def ks_kube(ks: Kubesim) -> AsyncIterator[Kube]:
    client = await _connect(ks.kubeconfig)
    yield client
    await client.aclose()


def kube_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("kube-")]


async def until_no_kube_threads(timeout: float = 5.0) -> None:
    await until(lambda: not kube_threads(), timeout, "the kube threads to end")


async def test_pages_follow_continue_and_count_every_call(kube: Kube, ns: str,
                                                          cluster: Cluster) -> None:
    names = configmap_names(cluster, ns)
    assert names[:PAGED] == [f"cm-{i}" for i in range(PAGED)] and len(names) in (7, 8)
    lists = cluster.list_requests("configmaps")
    pages = [p async for p in kube.pages(r.CONFIGMAPS, ns, page_size=3)]
    assert [len(p["items"]) for p in pages] == [3, 3, len(names) - 6]
    assert pages[0]["metadata"]["remainingItemCount"] == len(names) - 3
    everything = await kube.list_all(r.CONFIGMAPS, ns, page_size=2)
    assert sorted(i["metadata"]["name"] for i in everything["items"]) == names
    assert everything["metadata"]["resourceVersion"]
    assert cluster.list_requests("configmaps") - lists == 3 + 4
    assert kube.calls.count(("list configmaps " + ns, "200")) == 3 + 4  # type: ignore[attr-defined]


async def test_a_metadata_only_list_carries_no_data(kube: Kube, ns: str,
                                                   cluster: Cluster) -> None:
    page = await kube.list(r.CONFIGMAPS, ns, limit=1, metadata_only=True)
    assert page["kind"] == "PartialObjectMetadataList"
    assert page["metadata"]["remainingItemCount"] == len(configmap_names(cluster, ns)) - 1
    assert "data" not in page["items"][0] and page["items"][0]["metadata"]["name"]
    full = await kube.list(r.CONFIGMAPS, ns, limit=1)
    assert full["items"][0]["data"]["k"] == "v" * 100


async def test_selectors_reach_the_server(kube: Kube, ns: str) -> None:
    page = await kube.list(r.CONFIGMAPS, ns, label_selector="n in (1,2)")
    assert sorted(i["metadata"]["name"] for i in page["items"]) == ["cm-1", "cm-2"]


async def test_create_get_replace_patch_apply_delete(kube: Kube, ns: str) -> None:
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}}}
    made = await kube.create(r.SERVICES, body, ns)
    assert made["spec"]["clusterIP"]
    got = await kube.get(r.SERVICES, "web", ns)
    got["metadata"]["labels"] = {"a": "b"}
    replaced = await kube.replace(r.SERVICES, got, ns)
    assert replaced["metadata"]["labels"] == {"a": "b"}
    patched = await kube.patch(r.SERVICES, "web", {"metadata": {"labels": {"c": "d"}}}, ns)
    assert patched["metadata"]["labels"] == {"a": "b", "c": "d"}
    applied = await kube.apply(r.CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ours"},
        "data": {"x": "1", "y": "2"}}, ns, field_manager="pipeops-test")
    assert applied["data"] == {"x": "1", "y": "2"}
    again = await kube.apply(r.CONFIGMAPS, {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ours"},
        "data": {"x": "3"}}, ns, field_manager="pipeops-test")
    assert again["data"] == {"x": "3"}, "what the manager no longer applies is removed"
    await kube.delete(r.SERVICES, "web", ns)
    with pytest.raises(KubeError) as info:
        await kube.get(r.SERVICES, "web", ns)
    assert info.value.not_found and info.value.reason == "NotFound"


async def test_status_subresource_scale_and_events(kube: Kube, ns: str,
                                                   cluster: Cluster) -> None:
    ingress = await kube.create(r.INGRESSES, {
        "apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"},
        "spec": {"rules": [{"host": "a.example.test"}]}}, ns)
    lb = {"loadBalancer": {"ingress": [{"ip": "192.0.2.7"}]}}
    await kube.patch_status(r.INGRESSES, "i", lb, ns)
    assert (await kube.get(r.INGRESSES, "i", ns))["status"] == lb
    event = await kube.create_event(ingress, reason="InvalidHost", message="x" * 5000,
                                    component="pipeops-gateway", warning=True)
    assert event["involvedObject"]["kind"] == "Ingress"
    assert event["involvedObject"]["uid"] == ingress["metadata"]["uid"]
    assert event["type"] == "Warning" and len(event["message"]) == 1024
    _, listed = cluster.request("GET", f"/api/v1/namespaces/{ns}/events")
    assert [e["reason"] for e in listed["items"]] == ["InvalidHost"]


async def test_discovery_and_version(kube: Kube) -> None:
    assert await kube.served_versions("apps") == ["v1"]
    assert (await kube.served_versions("networking.k8s.io"))[0] == "v1"
    assert await kube.served_versions("no.such.group.example") == []
    assert (await kube.version())["gitVersion"].startswith("v1.")


async def test_discovery_of_a_group_with_two_versions(ks_kube: Kube) -> None:
    # kubesim-only: the real control plane has no Gateway API CRDs, and installing
    # cluster-scoped CRDs in the session-shared cluster would change what others see
    versions = await ks_kube.served_versions("gateway.networking.k8s.io")
    assert versions[0] == "v1" and "v1beta1" in versions
    routes = r.HTTP_ROUTES.at("gateway.networking.k8s.io/v1beta1")
    assert (await ks_kube.list(routes, "default"))["items"] == []


@pytest.mark.parametrize(("case", "status", "reason", "retryable"), [
    ("unauthorized", 401, "Unauthorized", False),
    ("forbidden", 403, "Forbidden", False),
    ("missing", 404, "NotFound", False),
    ("exists", 409, "AlreadyExists", False),
    ("conflict", 409, "Conflict", True),
    ("invalid", 422, "Invalid", False),
])
async def test_errors_say_whether_to_retry(kube: Kube, ns: str, cluster: Cluster, case: str,
                                           status: int, reason: str, retryable: bool) -> None:
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm-0"}}
    with pytest.raises(KubeError) as info:
        if case in ("unauthorized", "forbidden"):
            token = f"t-{uuid.uuid4().hex[:8]}"  # no such token: 401
            if case == "forbidden":  # a ServiceAccount nothing is bound to: 403
                token = await asyncio.to_thread(cluster.service_account_token, ns, "x")
            kube.api_client.configuration.refresh_api_key_hook = None
            kube.api_client.configuration.api_key = {"BearerToken": f"Bearer {token}"}
            await kube.list(r.CONFIGMAPS, ns)
        elif case == "missing":
            await kube.get(r.CONFIGMAPS, "nope", ns)
        elif case == "exists":
            await kube.create(r.CONFIGMAPS, cm, ns)
        elif case == "conflict":
            stale = await kube.get(r.CONFIGMAPS, "cm-0", ns)
            await kube.patch(r.CONFIGMAPS, "cm-0", {"data": {"k": "changed"}}, ns)
            await kube.replace(r.CONFIGMAPS, stale, ns)
        else:
            await kube.create(r.CONFIGMAPS, {**cm, "metadata": {"name": "Not_Valid"}}, ns)
    error = info.value
    assert (error.status, error.reason, error.retryable) == (status, reason, retryable)
    assert error.message and "Bearer" not in str(error)


async def test_no_reply_is_retryable() -> None:
    from kubernetes.client import Configuration

    from agentkit.kube.transport import Transport

    configuration = Configuration(host="https://127.0.0.1:9")  # nothing listens
    configuration.retries = False
    kube = Kube(Transport(configuration))
    with pytest.raises(KubeError) as info:
        await kube.version()
    assert info.value.status == 0 and info.value.retryable


async def test_a_watch_gets_changes_and_bookmarks(kube: Kube, ns: str,
                                                  cluster: Cluster) -> None:
    listed = await kube.list(r.CONFIGMAPS, ns)
    version = listed["metadata"]["resourceVersion"]
    seen: list[tuple[str, str]] = []
    # the real API server bookmarks 2 s before the watch's deadline; kubesim every 0.2 s
    events = kube.watch(r.CONFIGMAPS, ns, resource_version=version, timeout_seconds=5)
    async with contextlib.aclosing(events):
        await asyncio.to_thread(cluster.request, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                                {"metadata": {"name": "new"}})
        async with asyncio.timeout(10):
            async for event in events:
                seen.append((event["type"], event["object"]["metadata"].get("name", "")))
                if event["type"] == "BOOKMARK" and ("ADDED", "new") in seen:
                    break
    assert seen[0] == ("ADDED", "new")
    await until_no_kube_threads()


async def test_follow_relists_after_an_error_event_410(ks_kube: Kube, ks_ns: str,
                                                         ks: Kubesim) -> None:
    # kubesim-only: ends the open watch with an ERROR 410 (drop_watches); the real API
    # server's watch cache does not (see tests/realkube/test_watches_real.py)
    kube, ns = ks_kube, ks_ns
    got: asyncio.Queue[Listed | Watched] = asyncio.Queue()

    async def consume() -> None:
        async for item in kube.follow(r.CONFIGMAPS, ns, quick_wait=wait_fixed(0.05)):
            await got.put(item)

    async def next_of(kind: type[Any]) -> Any:
        async with asyncio.timeout(10):
            while True:
                item = await got.get()
                if isinstance(item, kind):
                    return item

    task = asyncio.create_task(consume())
    try:
        first = await next_of(Listed)
        assert len(first.items) == PAGED
        await asyncio.to_thread(ks.request, "POST", f"/api/v1/namespaces/{ns}/configmaps",
                                {"metadata": {"name": "after-list"}})
        assert (await next_of(Watched)).object["metadata"]["name"] == "after-list"
        lists = ks.stats_for(f"/api/v1/namespaces/{ns}/configmaps?limit")["requests"]
        await asyncio.to_thread(ks.drop_watches, expired=True)  # ERROR event, code 410
        again = await next_of(Listed)
        assert len(again.items) == PAGED + 1
        assert ks.stats_for(f"/api/v1/namespaces/{ns}/configmaps?limit")["requests"] > lists
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await until_no_kube_threads()


async def test_follow_relists_after_a_410_reply(ks_kube: Kube, ks_ns: str,
                                                ks: Kubesim) -> None:
    """The history gone before the watch starts: the watch request itself is refused
    with 410, and follow lists again. (The generator runs only when asked, so the
    history is expired between the list and the watch.) kubesim-only: expire_history;
    the real 410 reply after compaction is in tests/realkube/test_watches_real.py."""
    kube, ns = ks_kube, ks_ns
    items = kube.follow(r.CONFIGMAPS, ns, quick_wait=wait_fixed(0.05))
    async with contextlib.aclosing(items):
        first = await anext(items)
        assert isinstance(first, Listed) and len(first.items) == PAGED
        status, body = ks.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                  {"metadata": {"name": "while-away"}})
        assert status == 201, body
        await asyncio.to_thread(ks.expire_history)
        ks.reset_stats()
        async with asyncio.timeout(10):
            again = await anext(items)
        assert isinstance(again, Listed) and len(again.items) == PAGED + 1
        watches = ks.stats_for(f"/api/v1/namespaces/{ns}/configmaps?watch=true")
        assert watches["requests"] == 1, ks.stats()
    with pytest.raises(KubeError) as info:  # the same 410, seen by a bare watch
        events = kube.watch(r.CONFIGMAPS, ns, resource_version=first.resource_version)
        async with contextlib.aclosing(events):
            await anext(events)
    assert info.value.expired and info.value.retryable
    await until_no_kube_threads()


async def test_other_watch_errors_end_follow(kube: Kube) -> None:
    missing = Resource("v1", "nosuchthings", "NoSuchThing")
    with pytest.raises(KubeError) as info:
        async for _ in kube.follow(missing, "default", quick_wait=wait_fixed(0.05)):
            pass
    assert info.value.status == 404 and not info.value.retryable


async def test_cancelling_a_watch_leaves_no_thread(kube: Kube, ns: str) -> None:
    before = len(kube_threads())
    assert before == 0
    listed = await kube.list(r.CONFIGMAPS, ns)

    async def hang() -> None:
        events = kube.watch(r.CONFIGMAPS, ns, timeout_seconds=300,
                            resource_version=listed["metadata"]["resourceVersion"])
        async with contextlib.aclosing(events):
            async for _ in events:
                pass

    task = asyncio.create_task(hang())
    await until(lambda: any(t.name == "kube-watch" for t in kube_threads()), 5,
                "the watch's reading thread")
    await asyncio.sleep(0.3)  # blocked in the read of the open stream
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert not kube_threads(), "the reading thread was waited for"


def test_importing_the_layer_does_not_import_kubernetes() -> None:
    code = ("import sys, agentkit.kube, pipeops_tunnel.agent; "
            "assert 'kubernetes' not in sys.modules, sorted(m for m in sys.modules "
            "if m.startswith('kubernetes'))")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
