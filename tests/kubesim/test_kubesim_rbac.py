"""RBAC: tokens of ServiceAccounts are granted what stored Roles and bindings say, as the
real authorizer grants it; `kubectl auth can-i` asks through SelfSubjectAccessReview.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from kubesim.testing import Kubesim

RBAC = "rbac.authorization.k8s.io"


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _protobuf(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _field(1, api_version.encode()) + _field(2, kind.encode())
    return b"k8s\x00" + _field(1, type_meta) + _field(2, raw)


def test_stored_roles_and_bindings_grant_a_service_account(
    ks: Kubesim, namespace: str, new_client: Callable[..., client.ApiClient],
    kubectl: Callable[..., Any]
) -> None:
    token = f"{namespace}-agent"
    ks.add_token(token, service_account=f"{namespace}/agent")  # no rules of its own
    agent = client.CoreV1Api(new_client(token=token))
    with pytest.raises(client.ApiException) as info:
        agent.list_namespaced_config_map(namespace)
    assert info.value.status == 403

    admin = client.RbacAuthorizationV1Api(new_client())
    admin.create_namespaced_role(namespace, {"metadata": {"name": "cm"}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
         "resourceNames": ["agent-state"]}]})
    admin.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "cm"},
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "cm"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}]})
    assert agent.list_namespaced_config_map(namespace).items == []
    with pytest.raises(client.ApiException) as info:
        agent.list_namespaced_config_map("default")  # a RoleBinding is per namespace
    assert info.value.status == 403
    with pytest.raises(client.ApiException) as info:
        agent.read_namespaced_secret("other", namespace)  # resourceNames narrow it
    assert info.value.status == 403
    with pytest.raises(client.ApiException) as info:
        agent.read_namespaced_secret("agent-state", namespace)
    assert info.value.status == 404  # allowed, and simply not there

    # A ClusterRole bound cluster-wide to the group of all service accounts.
    admin.create_cluster_role({"metadata": {"name": f"{namespace}-nodes"}, "rules": [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]})
    admin.create_cluster_role_binding({
        "metadata": {"name": f"{namespace}-nodes"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": f"{namespace}-nodes"},
        "subjects": [{"kind": "Group", "name": "system:serviceaccounts"}]})
    try:
        agent.list_node()
        as_agent = ["--token", token]
        assert kubectl("auth", "can-i", "list", "configmaps", "-n", namespace,
                       *as_agent).stdout == "yes\n"
        no = kubectl("auth", "can-i", "delete", "configmaps", "-n", namespace, *as_agent,
                     check=False)
        assert (no.returncode, no.stdout.split(" ")[0]) == (1, "no")
        assert kubectl("auth", "can-i", "get", "secret/agent-state", "-n", namespace,
                       *as_agent).stdout == "yes\n"
        assert kubectl("auth", "can-i", "list", "nodes", *as_agent).stdout == "yes\n"
        assert kubectl("auth", "can-i", "delete", "nodes", "--all-namespaces").stdout == (
            "yes\n")  # the admin token may do anything
    finally:
        admin.delete_cluster_role_binding(f"{namespace}-nodes")
    with pytest.raises(client.ApiException) as info:
        agent.list_node()
    assert info.value.status == 403


def test_protobuf_bodies_are_decoded_or_refused_never_half_read(
    ks: Kubesim, namespace: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    entry = _field(1, b"mode") + _field(2, b"fast")
    config_map = _field(1, _field(1, b"pb")) + _field(2, entry)
    status, body = ks.request("POST", path, raw=_protobuf("v1", "ConfigMap", config_map),
                              content_type="application/vnd.kubernetes.protobuf")
    assert status == 201, body
    assert (body["metadata"]["name"], body["data"]) == ("pb", {"mode": "fast"})
    # A field kubesim does not know, with content: 415 rather than a silent loss.
    unknown = _field(1, _field(1, b"pb2")) + _field(9, b"surprise")
    status, body = ks.request("POST", path, raw=_protobuf("v1", "ConfigMap", unknown),
                              content_type="application/vnd.kubernetes.protobuf")
    assert status == 415 and body["reason"] == "UnsupportedMediaType"
    assert "field 9 of ConfigMap" in body["message"]
    # A kind it does not decode at all.
    status, body = ks.request("POST", f"/apis/{RBAC}/v1/namespaces/{namespace}/roles",
                              raw=_protobuf(f"{RBAC}/v1", "Role", _field(1, b"")),
                              content_type="application/vnd.kubernetes.protobuf")
    assert status == 415
    assert json.dumps(ks.request("GET", path)[1]["items"]).count('"pb"') == 1
