"""Bad input gets what the real server gives: a `Status` body with the right code.

Each case goes through a real client: raw HTTPS (for bodies no client would build),
the official Python client, and `kubectl`, which prints the server's message.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from kubesim.testing import Kubesim


def _status(body: Any, code: int, reason: str) -> dict[str, Any]:
    assert isinstance(body, dict), body
    assert (body["kind"], body["apiVersion"], body["status"]) == ("Status", "v1", "Failure")
    assert (body["code"], body["reason"]) == (code, reason), body
    return body


def test_malformed_json_is_400(ks: Kubesim, namespace: str,
                               kubectl: Callable[..., Any]) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    status, body = ks.request("POST", path, raw=b'{"metadata": {"name": ')
    assert status == 400
    assert "json parse error" in _status(body, 400, "BadRequest")["message"]
    # Not an object at all.
    status, body = ks.request("POST", path, raw=b"[1, 2]")
    assert status == 400 and _status(body, 400, "BadRequest")
    out = kubectl("create", "--raw", path, "-f", "-", stdin='{"metadata": {"name": ',
                  check=False)
    assert out.returncode == 1
    assert out.stderr.startswith("Error from server (BadRequest): the object provided is "
                                 "unrecognized (must be of type ConfigMap)")
    # Nothing was stored by any of it.
    assert ks.request("GET", path)[1]["items"] == []


def test_wrong_kind_for_the_path_is_400(ks: Kubesim, api: client.ApiClient,
                                        namespace: str) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_config_map(namespace, {
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}})
    assert info.value.status == 400
    body = _status(json.loads(info.value.body), 400, "BadRequest")
    assert "cannot be handled as a ConfigMap" in body["message"]  # the real wording
    # Right kind, wrong group.
    status, body = ks.request("POST", f"/api/v1/namespaces/{namespace}/configmaps", {
        "apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
    assert status == 400
    assert "apps/v1" in _status(body, 400, "BadRequest")["message"]
    assert core.list_namespaced_config_map(namespace).items == []


def test_missing_or_invalid_name_is_422(api: client.ApiClient, namespace: str,
                                        kubectl: Callable[..., Any]) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_config_map(namespace, {"metadata": {}, "data": {"a": "b"}})
    assert info.value.status == 422
    body = _status(json.loads(info.value.body), 422, "Invalid")
    assert body["message"] == ('ConfigMap "" is invalid: metadata.name: Required value: '
                               "name or generateName is required")
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "Not_Valid"}})
    assert info.value.status == 422
    out = kubectl("create", "--raw", f"/api/v1/namespaces/{namespace}/configmaps", "-f", "-",
                  stdin='{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}',
                  check=False)
    assert out.returncode == 1
    assert 'ConfigMap "" is invalid: metadata.name: Required value' in out.stderr
    # generateName fills the name in.
    made = core.create_namespaced_config_map(namespace, {"metadata": {"generateName": "gen-"}})
    assert made.metadata.name.startswith("gen-") and len(made.metadata.name) == 9


def test_unknown_resource_is_404_with_status(ks: Kubesim, api: client.ApiClient,
                                             kubectl: Callable[..., Any]) -> None:
    for path in ("/api/v1/namespaces/default/widgets", "/apis/example.com/v1/widgets",
                 "/api/v2/pods", "/apis/apps/v1/namespaces/default/pods",
                 "/api/v1/namespaces/default/pods/p/exec-nothing"):
        status, body = ks.request("GET", path)
        assert status == 404, path
        assert _status(body, 404, "NotFound")["message"] == (
            "the server could not find the requested resource")
    custom = client.CustomObjectsApi(api)
    with pytest.raises(client.ApiException) as info:
        custom.list_namespaced_custom_object("example.com", "v1", "default", "widgets")
    assert info.value.status == 404
    _status(json.loads(info.value.body), 404, "NotFound")
    out = kubectl("get", "--raw", "/api/v1/namespaces/default/widgets", check=False)
    assert out.returncode == 1
    assert out.stderr == ("Error from server (NotFound): the server could not find the "
                          "requested resource\n")
    out = kubectl("get", "widgets", check=False)
    assert 'the server doesn\'t have a resource type "widgets"' in out.stderr


def test_missing_object_and_namespace_are_404(ks: Kubesim, api: client.ApiClient,
                                              kubectl: Callable[..., Any]) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as info:
        core.read_namespaced_config_map("nope", "default")
    body = _status(json.loads(info.value.body), 404, "NotFound")
    assert body["message"] == 'configmaps "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "configmaps"}
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "a"}})
    assert json.loads(info.value.body)["message"] == 'namespaces "no-such-ns" not found'
    out = kubectl("get", "configmap", "nope", check=False)
    assert out.stderr == 'Error from server (NotFound): configmaps "nope" not found\n'


def test_conflicts_are_409(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    first = core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"},
                                                          "data": {"v": "1"}})
    with pytest.raises(client.ApiException) as info:
        core.create_namespaced_config_map(namespace, {"metadata": {"name": "c"}})
    body = _status(json.loads(info.value.body), 409, "AlreadyExists")
    assert body["message"] == 'configmaps "c" already exists'
    core.patch_namespaced_config_map("c", namespace, {"data": {"v": "2"}})
    stale = {"metadata": {"name": "c", "resourceVersion": first.metadata.resource_version},
             "data": {"v": "3"}}
    with pytest.raises(client.ApiException) as info:
        core.replace_namespaced_config_map("c", namespace, stale)
    body = _status(json.loads(info.value.body), 409, "Conflict")
    assert body["message"].startswith('Operation cannot be fulfilled on configmaps "c"')
    assert core.read_namespaced_config_map("c", namespace).data == {"v": "2"}


def test_bad_query_parameters_are_400(ks: Kubesim) -> None:
    for query, words in (("labelSelector=a%20in%20(b", "unable to parse requirement"),
                         ("limit=abc", "invalid limit"),
                         ("watch=1&resourceVersion=abc", "invalid resource version"),
                         ("continue=garbage", "continue key is not valid")):
        status, body = ks.request("GET", f"/api/v1/pods?{query}")
        assert status == 400, query
        assert words in _status(body, 400, "BadRequest")["message"]


def test_unsupported_bodies(ks: Kubesim, namespace: str) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    status, body = ks.request("POST", path, raw=b"k8s\x00\x0a\x02",
                              content_type="application/vnd.kubernetes.protobuf")
    assert status == 400
    assert "protobuf" in _status(body, 400, "BadRequest")["message"]
    status, body = ks.request("PATCH", f"{path}/x", raw=b"{}", content_type="text/plain")
    assert status == 415
    _status(body, 415, "UnsupportedMediaType")
    status, body = ks.request("POST", path, raw=b"{" + b" " * (4 << 20) + b"}")
    assert status == 413
    _status(body, 413, "RequestEntityTooLarge")
