"""Acceptance: the official Python client against kubesim (pages, watch, 410, 401, 403)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, watch

from kubesim.testing import Kubesim


def _cm(name: str, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"kind": "test"}}, "data": data}


def test_list_with_limit_and_continue(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    for i in range(7):
        core.create_namespaced_config_map(namespace, _cm(f"cm-{i}"))
    names: list[str] = []
    remaining: list[int | None] = []
    token = None
    while True:
        page = core.list_namespaced_config_map(namespace, limit=3, _continue=token)
        names += [i.metadata.name for i in page.items]
        remaining.append(page.metadata.remaining_item_count)
        token = page.metadata._continue
        if not token:
            break
    assert names == [f"cm-{i}" for i in range(7)]
    assert remaining == [4, 1, None]
    # A selector pages too (the real server does not count what remains then).
    page = core.list_namespaced_config_map(namespace, limit=2, label_selector="kind=test")
    assert len(page.items) == 2 and page.metadata._continue
    assert page.metadata.remaining_item_count is None
    nothing = core.list_namespaced_config_map(namespace, label_selector="kind notin (test)")
    assert nothing.items == []


def test_watch_from_listed_version_sees_exactly_later_events(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, _cm("before"))
    listed = core.list_namespaced_config_map(namespace)
    assert [i.metadata.name for i in listed.items] == ["before"]
    core.create_namespaced_config_map(namespace, _cm("a", v="1"))
    core.patch_namespaced_config_map("a", namespace, {"data": {"v": "2"}})
    core.create_namespaced_config_map(namespace, _cm("b"))
    core.delete_namespaced_config_map("a", namespace)

    w = watch.Watch()
    seen = []
    for event in w.stream(core.list_namespaced_config_map, namespace,
                          resource_version=listed.metadata.resource_version, timeout_seconds=10):
        obj = event["object"]
        seen.append((event["type"], obj.metadata.name, (obj.data or {}).get("v")))
        if len(seen) == 4:
            w.stop()
    assert seen == [("ADDED", "a", "1"), ("MODIFIED", "a", "2"), ("ADDED", "b", None),
                    ("DELETED", "a", "2")]


def test_watch_stream_delivers_live_events_in_order(
    ks: Kubesim, api: client.ApiClient, namespace: str
) -> None:
    """Events made while a raw watch is open arrive in resourceVersion order."""
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    resp = core.list_namespaced_config_map(namespace, resource_version=rv, watch=True,
                                           _preload_content=False, timeout_seconds=10)
    try:
        for i in range(5):
            core.create_namespaced_config_map(namespace, _cm(f"live-{i}"))
        lines = []
        for raw in resp.stream(amt=None):
            lines += [json.loads(x) for x in raw.splitlines() if x.strip()]
            if len(lines) >= 5:
                break
        assert [e["object"]["metadata"]["name"] for e in lines] == [f"live-{i}" for i in
                                                                    range(5)]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in lines]
        assert rvs == sorted(rvs) and rvs[0] > int(rv)
    finally:
        resp.release_conn()
        resp.close()


def test_expired_resource_version_gives_410_and_relist_recovers(
    ks: Kubesim, api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    old_rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, _cm("x"))
    ks.expire_history()
    with pytest.raises(client.ApiException) as info:
        for _ in watch.Watch().stream(core.list_namespaced_config_map, namespace,
                                      resource_version=old_rv, timeout_seconds=5):
            pass
    assert info.value.status == 410
    status = json.loads(info.value.body)
    assert (status["kind"], status["reason"], status["code"]) == ("Status", "Expired", 410)

    relisted = core.list_namespaced_config_map(namespace)
    assert [i.metadata.name for i in relisted.items] == ["x"]
    w = watch.Watch()
    stream = w.stream(core.list_namespaced_config_map, namespace,
                      resource_version=relisted.metadata.resource_version, timeout_seconds=10)
    core.create_namespaced_config_map(namespace, _cm("y"))
    event = next(stream)
    w.stop()
    stream.close()
    assert (event["type"], event["object"].metadata.name) == ("ADDED", "y")


def test_history_overflow_gives_410_from_small_history(
    new_client: Callable[..., client.ApiClient],
) -> None:
    with Kubesim(history=3) as small:
        core = client.CoreV1Api(new_client(server=small))
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        for i in range(4):
            core.create_namespaced_config_map("default", _cm(f"o-{i}"))
        with pytest.raises(client.ApiException) as info:
            core.list_namespaced_config_map("default", watch=True, resource_version=rv,
                                            timeout_seconds=2)
        assert info.value.status == 410
        # A paged list pinned to the old version is too old as well.
        with pytest.raises(client.ApiException) as info:
            core.list_namespaced_config_map("default", limit=1, resource_version=rv)
        assert info.value.status == 410
        recent = core.list_namespaced_config_map("default").metadata.resource_version
        resp = core.list_namespaced_config_map("default", watch=True, resource_version=recent,
                                               timeout_seconds=1, _preload_content=False)
        try:
            assert resp.status == 200
        finally:
            resp.release_conn()
            resp.close()


def test_missing_or_wrong_token_is_401(new_client: Callable[..., client.ApiClient]) -> None:
    for token in ("", "not-a-token"):
        core = client.CoreV1Api(new_client(token=token))
        with pytest.raises(client.ApiException) as info:
            core.list_namespaced_pod("default")
        assert info.value.status == 401
        body = json.loads(info.value.body)
        assert (body["kind"], body["reason"], body["code"]) == ("Status", "Unauthorized", 401)


def test_forbidden_verb_is_403(ks: Kubesim, new_client: Callable[..., client.ApiClient]) -> None:
    user = ks.add_token("reader-token", service_account="default/reader", rules=[
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"],
         "namespaces": ["default"]},
    ])
    assert user == "system:serviceaccount:default:reader"
    core = client.CoreV1Api(new_client(token="reader-token"))
    core.list_namespaced_pod("default")  # allowed
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_pod("default", {"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "busybox"}]}})
    assert info.value.status == 403
    body = json.loads(info.value.body)
    assert body["reason"] == "Forbidden"
    assert body["message"] == (
        'pods is forbidden: User "system:serviceaccount:default:reader" cannot create '
        'resource "pods" in API group "" in the namespace "default"')
    with pytest.raises(client.ApiException) as info:
        core.list_namespaced_pod("kube-system")
    assert json.loads(info.value.body)["message"] == (
        'pods is forbidden: User "system:serviceaccount:default:reader" cannot list '
        'resource "pods" in API group "" in the namespace "kube-system"')
    with pytest.raises(client.ApiException) as info:
        client.AppsV1Api(new_client(token="reader-token")).read_namespaced_deployment(
            "web", "default")
    assert json.loads(info.value.body)["message"] == (
        'deployments.apps "web" is forbidden: User "system:serviceaccount:default:reader" '
        'cannot get resource "deployments" in API group "apps" in the namespace "default"')
