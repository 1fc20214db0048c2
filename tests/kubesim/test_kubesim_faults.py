"""Fault injection through the admin API (kubesim.testing): what each fault does to clients.

drop watches (plain, or with a 410 ERROR event first), expire history, restart (watches
end, history expires, 503 for a while) and delay; every check uses the official client.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from kubesim.testing import Kubesim


def _events(resp: Any) -> Iterator[dict[str, Any]]:
    """Decoded watch events from a raw (`_preload_content=False`) response, until EOF."""
    buf = b""
    for chunk in resp.stream(amt=None):
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)


def _open_watch(core: client.CoreV1Api, namespace: str, rv: str) -> Any:
    return core.list_namespaced_config_map(
        namespace, watch=True, resource_version=rv, timeout_seconds=30,
        _preload_content=False, _request_timeout=15)


def _cm(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}}


def test_drop_watches_ends_open_streams(ks: Kubesim, api: client.ApiClient,
                                        namespace: str, wait_for: Callable[..., Any]) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    resp = _open_watch(core, namespace, rv)
    try:
        wait_for(lambda: ks.info()["watches"] >= 1)
        core.create_namespaced_config_map(namespace, _cm("one"))
        events = _events(resp)
        first = next(events)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "one")
        assert ks.drop_watches() >= 1
        assert list(events) == []  # the stream ends cleanly, nothing more
    finally:
        resp.release_conn()
    assert ks.info()["watches"] == 0
    # The client resumes from the last version it saw and misses nothing.
    core.create_namespaced_config_map(namespace, _cm("two"))
    resp = _open_watch(core, namespace, first["object"]["metadata"]["resourceVersion"])
    try:
        again = next(_events(resp))
        assert (again["type"], again["object"]["metadata"]["name"]) == ("ADDED", "two")
    finally:
        resp.release_conn()


def test_drop_watches_expired_sends_410_error_event(
    ks: Kubesim, api: client.ApiClient, namespace: str, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    resp = _open_watch(core, namespace, rv)
    try:
        wait_for(lambda: ks.info()["watches"] >= 1)
        ks.drop_watches(expired=True)
        events = list(_events(resp))
    finally:
        resp.release_conn()
    assert len(events) == 1
    assert events[0]["type"] == "ERROR"
    status = events[0]["object"]
    assert (status["kind"], status["code"], status["reason"]) == ("Status", 410, "Expired")


def test_expire_history_makes_old_versions_and_continue_tokens_410(
    ks: Kubesim, api: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api)
    for i in range(3):
        core.create_namespaced_config_map(namespace, _cm(f"c{i}"))
    page = core.list_namespaced_config_map(namespace, limit=1)
    # A write after the page, then the history is gone: the page's version is too old.
    core.create_namespaced_config_map(namespace, _cm("c3"))
    ks.expire_history()
    with pytest.raises(client.ApiException) as info:
        core.list_namespaced_config_map(namespace, limit=1, _continue=page.metadata._continue)
    assert info.value.status == 410
    assert json.loads(info.value.body)["reason"] == "Expired"
    with pytest.raises(client.ApiException) as info:
        core.list_namespaced_config_map(namespace, watch=True, timeout_seconds=1,
                                        resource_version=page.metadata.resource_version)
    assert info.value.status == 410
    # A fresh list works and its version can be watched from.
    fresh = core.list_namespaced_config_map(namespace, limit=1)
    assert fresh.metadata.remaining_item_count == 3
    resp = _open_watch(core, namespace, fresh.metadata.resource_version)
    try:
        core.delete_namespaced_config_map("c0", namespace)
        event = next(_events(resp))
        assert (event["type"], event["object"]["metadata"]["name"]) == ("DELETED", "c0")
    finally:
        resp.release_conn()


def test_restart_ends_watches_expires_history_and_is_unavailable_for_a_while(
    ks: Kubesim, api: client.ApiClient, namespace: str, wait_for: Callable[..., Any]
) -> None:
    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, _cm("kept"))
    resp = _open_watch(core, namespace, rv)
    try:
        events = _events(resp)
        assert next(events)["object"]["metadata"]["name"] == "kept"
        # Long enough that the next call surely lands inside it on a busy machine.
        ks.restart(downtime=2.0)
        assert list(events) == []
    finally:
        resp.release_conn()
    with pytest.raises(client.ApiException) as info:
        core.list_namespaced_config_map(namespace)
    assert info.value.status == 503
    assert json.loads(info.value.body)["reason"] == "ServiceUnavailable"

    def back() -> Any:
        try:
            return core.list_namespaced_config_map(namespace)
        except client.ApiException as e:
            assert e.status == 503
            return None

    listed = wait_for(back, timeout=20)
    # Objects survive a restart; watch history does not.
    assert [i.metadata.name for i in listed.items] == ["kept"]
    with pytest.raises(client.ApiException) as info:
        core.list_namespaced_config_map(namespace, watch=True, resource_version=rv,
                                        timeout_seconds=1)
    assert info.value.status == 410


def test_delay_slows_every_api_answer_until_turned_off(
    ks: Kubesim, api: client.ApiClient
) -> None:
    core = client.CoreV1Api(api)
    ks.set_delay(0.4)
    try:
        start = time.monotonic()
        core.list_namespace()
        # A lower bound only: the fault adds at least the delay (no speed is asserted).
        assert time.monotonic() - start >= 0.4
        # The admin API itself is never delayed: with a delay far longer than any
        # machine needs for one loopback call, admin calls still answer.
        ks.set_delay(20)
        start = time.monotonic()
        assert ks.info()["resourceVersion"] > 0
        admin_took = time.monotonic() - start
    finally:
        ks.set_delay(0)
    assert admin_took < 20
    start = time.monotonic()
    core.list_namespace()
    assert time.monotonic() - start < 20
    status, body = ks.request("POST", "/_kubesim/delay", {"seconds": "soon"})
    assert status == 400 and body["reason"] == "BadRequest"


def test_admin_api_needs_the_admin_token(ks: Kubesim) -> None:
    ks.add_token("plain-user-token", user="alice", rules=[
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])
    status, body = ks.request("GET", "/_kubesim/info", token="plain-user-token")
    assert status == 403 and body["reason"] == "Forbidden"
    status, body = ks.request("GET", "/_kubesim/info", token="")
    assert status == 401
    status, body = ks.request("POST", "/_kubesim/no-such-thing", {})
    assert status == 404


def test_hang_watches_keeps_streams_open_but_silent(
    ks: Kubesim, api: client.ApiClient, namespace: str, wait_for: Callable[..., Any]
) -> None:
    import urllib3

    core = client.CoreV1Api(api)
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version
    hung = core.list_namespaced_config_map(
        namespace, watch=True, resource_version=rv, timeout_seconds=30,
        _preload_content=False, _request_timeout=(5, 1.5))
    try:
        wait_for(lambda: ks.info()["watches"] >= 1)
        assert ks.hang_watches() >= 1
        core.create_namespaced_config_map(namespace, _cm("unseen"))
        with pytest.raises(urllib3.exceptions.ReadTimeoutError):
            next(_events(hung))  # open, and silent
        fresh = _open_watch(core, namespace, rv)  # a new watch gets the event
        try:
            event = next(_events(fresh))
            assert (event["type"], event["object"]["metadata"]["name"]) == ("ADDED", "unseen")
        finally:
            fresh.release_conn()
        ks.drop_watches()  # the hung one is closed too
        wait_for(lambda: ks.info()["watches"] == 0)
    finally:
        hung.release_conn()
