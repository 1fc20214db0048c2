"""The resources beyond core/apps: Gateway API (v1 and v1alpha2), Istio, RBAC, network
policies, ServiceMonitors; selectors and metadata-only lists. Official client and kubectl.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client

from kubesim.testing import Kubesim

GW = "gateway.networking.k8s.io"
ISTIO = "networking.istio.io"


def _route(kind: str, version: str, name: str) -> dict[str, Any]:
    return {"apiVersion": f"{GW}/{version}", "kind": kind, "metadata": {"name": name},
            "spec": {"parentRefs": [{"name": "gw"}],
                     "rules": [{"backendRefs": [{"name": "svc", "port": 5432}]}]}}


def test_gateway_api_v1_and_v1alpha2(api: client.ApiClient, namespace: str,
                                     kubectl: Callable[..., Any]) -> None:
    custom = client.CustomObjectsApi(api)
    gw = {"apiVersion": f"{GW}/v1", "kind": "Gateway", "metadata": {"name": "gw"},
          "spec": {"gatewayClassName": "istio", "listeners": [
              {"name": "http", "port": 80, "protocol": "HTTP"}]}}
    made = custom.create_namespaced_custom_object(GW, "v1", namespace, "gateways", gw)
    assert made["metadata"]["uid"] and made["apiVersion"] == f"{GW}/v1"
    http = _route("HTTPRoute", "v1", "web")
    http["spec"]["hostnames"] = ["web.example.test"]
    custom.create_namespaced_custom_object(GW, "v1", namespace, "httproutes", http)
    # One object, served at every version of its group.
    for version in ("v1", "v1beta1", "v1alpha2"):
        got = custom.get_namespaced_custom_object(GW, version, namespace, "httproutes", "web")
        assert got["apiVersion"] == f"{GW}/{version}"
        assert got["spec"]["hostnames"] == ["web.example.test"]
    # TCP and UDP routes exist only at v1alpha2, as upstream.
    for kind, plural in (("TCPRoute", "tcproutes"), ("UDPRoute", "udproutes")):
        custom.create_namespaced_custom_object(GW, "v1alpha2", namespace, plural,
                                               _route(kind, "v1alpha2", "db"))
        listed = custom.list_namespaced_custom_object(GW, "v1alpha2", namespace, plural)
        assert [i["metadata"]["name"] for i in listed["items"]] == ["db"]
        with pytest.raises(client.ApiException) as info:
            custom.list_namespaced_custom_object(GW, "v1", namespace, plural)
        assert info.value.status == 404
    out = kubectl("get", "gateways.gateway.networking.k8s.io,httproutes,tcproutes,udproutes",
                  "-n", namespace, "-o", "name").stdout.split()
    assert out == [f"gateway.{GW}/gw", f"httproute.{GW}/web", f"tcproute.{GW}/db",
                   f"udproute.{GW}/db"]


def test_istio_gateways_and_virtual_services(api: client.ApiClient, namespace: str,
                                             kubectl: Callable[..., Any]) -> None:
    custom = client.CustomObjectsApi(api)
    custom.create_namespaced_custom_object(ISTIO, "v1beta1", namespace, "gateways", {
        "apiVersion": f"{ISTIO}/v1beta1", "kind": "Gateway", "metadata": {"name": "edge"},
        "spec": {"selector": {"istio": "ingressgateway"},
                 "servers": [{"port": {"number": 31400, "name": "tcp", "protocol": "TCP"},
                              "hosts": ["*"]}]}})
    custom.create_namespaced_custom_object(ISTIO, "v1", namespace, "virtualservices", {
        "apiVersion": f"{ISTIO}/v1", "kind": "VirtualService", "metadata": {"name": "db"},
        "spec": {"hosts": ["*"], "gateways": ["edge"],
                 "tcp": [{"match": [{"port": 31400}],
                          "route": [{"destination": {"host": "db", "port": {"number": 5432}}}]}]}})
    vs = custom.get_namespaced_custom_object(ISTIO, "v1alpha3", namespace, "virtualservices",
                                             "db")
    assert vs["spec"]["tcp"][0]["match"] == [{"port": 31400}]
    # The Istio and Gateway API kinds named Gateway are different resources.
    assert custom.list_namespaced_custom_object(GW, "v1", namespace, "gateways")["items"] == []
    out = kubectl("get", f"gateways.{ISTIO},virtualservices", "-n", namespace,
                  "-o", "name").stdout.split()
    assert out == [f"gateway.{ISTIO}/edge", f"virtualservice.{ISTIO}/db"]


def test_rbac_network_policies_and_service_monitors(api: client.ApiClient, namespace: str,
                                                    kubectl: Callable[..., Any]) -> None:
    rbac = client.RbacAuthorizationV1Api(api)
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "reader"}, "rules": [rule]})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": "reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}]})
    rbac.create_cluster_role({"metadata": {"name": f"{namespace}-nodes"}, "rules": [rule]})
    rbac.create_cluster_role_binding({
        "metadata": {"name": f"{namespace}-nodes"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": f"{namespace}-nodes"},
        "subjects": [{"kind": "ServiceAccount", "name": "agent", "namespace": namespace}]})
    assert rbac.read_namespaced_role("reader", namespace).rules[0].verbs == ["get", "list"]
    assert [r.metadata.name for r in rbac.list_cluster_role_binding(
        field_selector=f"metadata.name={namespace}-nodes").items] == [f"{namespace}-nodes"]
    net = client.NetworkingV1Api(api)
    net.create_namespaced_network_policy(namespace, {
        "metadata": {"name": "only-http"},
        "spec": {"podSelector": {"matchLabels": {"app": "web"}}, "policyTypes": ["Ingress"],
                 "ingress": [{"ports": [{"port": 80, "protocol": "TCP"}]}]}})
    assert net.read_namespaced_network_policy("only-http", namespace).spec.policy_types == [
        "Ingress"]
    client.CustomObjectsApi(api).create_namespaced_custom_object(
        "monitoring.coreos.com", "v1", namespace, "servicemonitors", {
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "endpoints": [{"port": "metrics"}]}})
    out = kubectl("get", "roles,rolebindings,networkpolicies,servicemonitors", "-n", namespace,
                  "-o", "name").stdout.split()
    assert out == ["role.rbac.authorization.k8s.io/reader",
                   "rolebinding.rbac.authorization.k8s.io/reader",
                   "networkpolicy.networking.k8s.io/only-http",
                   "servicemonitor.monitoring.coreos.com/agent"]


def test_label_and_field_selectors(api: client.ApiClient, namespace: str) -> None:
    core = client.CoreV1Api(api)
    for name, labels in (("a", {"tier": "web", "env": "prod"}), ("b", {"tier": "db"}),
                         ("c", {"tier": "web", "env": "dev"}), ("d", {})):
        core.create_namespaced_config_map(namespace, {"metadata": {"name": name,
                                                                   "labels": labels}})

    def names(**kw: Any) -> list[str]:
        return [i.metadata.name for i in core.list_namespaced_config_map(namespace, **kw).items]

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier==web,env!=prod") == ["c"]
    assert names(label_selector="tier in (db, web)") == ["a", "b", "c"]
    assert names(label_selector="tier notin (web)") == ["b", "d"]
    assert names(label_selector="env") == ["a", "c"]
    assert names(label_selector="!env") == ["b", "d"]
    assert names(label_selector="tier=web,env in (dev)") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.name!=b") == ["a", "c", "d"]
    everywhere = core.list_config_map_for_all_namespaces(
        field_selector=f"metadata.namespace={namespace},metadata.name=d")
    assert [(i.metadata.namespace, i.metadata.name) for i in everywhere.items] == [
        (namespace, "d")]


def test_metadata_only_list_and_table(ks: Kubesim, namespace: str) -> None:
    ks.request("POST", f"/api/v1/namespaces/{namespace}/configmaps",
               {"metadata": {"name": "m", "labels": {"x": "y"}}, "data": {"big": "z" * 1000}})
    status, body = ks.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps",
        headers={"Accept": "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"})
    assert status == 200
    assert (body["kind"], body["apiVersion"]) == ("PartialObjectMetadataList", "meta.k8s.io/v1")
    item = body["items"][0]
    assert item["kind"] == "PartialObjectMetadata" and "data" not in item
    assert item["metadata"]["labels"] == {"x": "y"}
    status, table = ks.request(
        "GET", f"/api/v1/namespaces/{namespace}/configmaps/m",
        headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"})
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert table["rows"][0]["cells"][:2] == ["m", 1]


def test_discovery_documents(ks: Kubesim) -> None:
    status, version = ks.request("GET", "/version", token="")
    assert status == 200 and version["major"] == "1"
    status, groups = ks.request("GET", "/apis")
    names = {g["name"]: [v["version"] for v in g["versions"]] for g in groups["groups"]}
    assert names[GW] == ["v1", "v1beta1", "v1alpha2"]
    assert names["rbac.authorization.k8s.io"] == ["v1"]
    assert names["monitoring.coreos.com"] == ["v1"]
    status, resources = ks.request("GET", "/apis/apps/v1")
    by_name = {r["name"]: r for r in resources["resources"]}
    assert by_name["deployments"]["shortNames"] == ["deploy"]
    assert by_name["deployments/scale"]["kind"] == "Scale"
    assert "watch" in by_name["deployments"]["verbs"]
    status, body = ks.request("GET", "/apis/example.com")
    assert status == 404 and json.dumps(body).count("NotFound") == 1
