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


def _raw_events(resp: Any) -> list[dict[str, Any]]:
    """Every event of a raw watch response, read until the server ends it."""
    events = []
    buf = b""
    for chunk in resp.stream(amt=None):
        buf += chunk
    for line in buf.splitlines():
        if line.strip():
            events.append(json.loads(line))
    return events


def test_watch_timeout_ends_with_a_bookmark(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, _cm("seen"))
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, _cm("after"))
    resp = core.list_namespaced_config_map(
        namespace, watch=True, resource_version=rv, allow_watch_bookmarks=True,
        timeout_seconds=1, _preload_content=False, _request_timeout=15)
    try:
        events = _raw_events(resp)
    finally:
        resp.release_conn()
    assert [e["type"] for e in events] == ["ADDED", "BOOKMARK"]
    assert events[0]["object"]["metadata"]["name"] == "after"
    bookmark = events[1]["object"]
    assert (bookmark["kind"], bookmark["apiVersion"]) == ("ConfigMap", "v1")
    # A bookmark carries only a resourceVersion: the newest, so a resume skips nothing.
    assert int(bookmark["metadata"]["resourceVersion"]) >= int(
        events[0]["object"]["metadata"]["resourceVersion"])
    # Without allowWatchBookmarks the same watch ends with no bookmark.
    resp = core.list_namespaced_config_map(
        namespace, watch=True, resource_version=rv, timeout_seconds=1,
        _preload_content=False, _request_timeout=15)
    try:
        assert [e["type"] for e in _raw_events(resp)] == ["ADDED"]
    finally:
        resp.release_conn()


def test_watch_list_sends_initial_events_then_an_end_bookmark(
    api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    for name in ("a", "b"):
        core.create_namespaced_config_map(namespace, _cm(name))
    resp = core.list_namespaced_config_map(
        namespace, watch=True, send_initial_events=True, resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True, timeout_seconds=1, _preload_content=False,
        _request_timeout=15)
    try:
        events = _raw_events(resp)
    finally:
        resp.release_conn()
    assert [(e["type"], e["object"]["metadata"].get("name")) for e in events[:3]] == [
        ("ADDED", "a"), ("ADDED", "b"), ("BOOKMARK", None)]
    assert events[2]["object"]["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"}


def test_delete_collection_by_label(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "keep"}})
    for i in range(3):
        core.create_namespaced_config_map(namespace, _cm(f"drop-{i}"))
    core.delete_collection_namespaced_config_map(namespace, label_selector="kind=test")
    assert [c.metadata.name for c in core.list_namespaced_config_map(namespace).items] == [
        "keep"]


def test_pod_log_through_the_python_client(ks: Kubesim, api: client.ApiClient,
                                           namespace: str) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod(namespace, {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}})
    ks.append_log(namespace, "p", ["one", "two", "three"], container="b")
    assert core.read_namespaced_pod_log("p", namespace, container="b") == "one\ntwo\nthree\n"
    assert core.read_namespaced_pod_log("p", namespace, container="b", tail_lines=2) == (
        "two\nthree\n")
    assert core.read_namespaced_pod_log("p", namespace, container="a") == ""
    with pytest.raises(client.ApiException) as info:
        core.read_namespaced_pod_log("p", namespace)
    assert info.value.status == 400
    assert "a container name must be specified" in json.loads(info.value.body)["message"]
    pod = core.read_namespaced_pod("p", namespace)
    assert pod.status.phase == "Running"
    assert [s.ready for s in pod.status.container_statuses] == [True, True]
