"""Preloading: the built-in namespaces, `--seed` manifests and the `--demo` cluster.

Seed files are YAML (multi-document) or JSON; a `kind: List` is unpacked. Namespaces
are created first, and a namespace an object names but no document creates is created
implicitly, so a seed never fails on ordering. Objects go through the same create path
as the API (validation, defaults), except that a seed may set `status` freely. Pods may
carry initial log lines in the `kubesim.pipeops.dev/log` annotation (see logs.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from kubesim.api import Cluster

Obj = dict[str, Any]
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def read_manifests(path: Path) -> list[Obj]:
    text = path.read_text()
    if path.suffix == ".json":
        docs: list[Any] = [json.loads(text)]
    else:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        docs = list(yaml.load_all(text, Loader=loader))
    out: list[Obj] = []
    for doc in docs:
        if not doc:
            continue
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: a document is not a mapping")
        if doc.get("kind") == "List" or (doc.get("kind", "").endswith("List")
                                         and "items" in doc):
            out.extend(doc.get("items") or [])
        else:
            out.append(doc)
    return out


def load(cluster: Cluster, manifests: list[Obj]) -> int:
    reg = cluster.registry
    ns_rt = reg.lookup("", "v1", "namespaces")
    assert ns_rt is not None
    ordered = sorted(manifests, key=lambda o: o.get("kind") != "Namespace")
    count = 0
    for obj in ordered:
        rt = reg.for_kind(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
        if rt is None:
            raise ValueError(f"seed: unknown kind {obj.get('apiVersion')}/{obj.get('kind')}")
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "default" if rt.namespaced else None
        if ns and not cluster.exists(ns_rt, None, ns):
            cluster.create(ns_rt, None, {"metadata": {"name": ns}})
        if rt.storage_key == ns_rt.storage_key and cluster.exists(rt, None, meta.get("name", "")):
            continue
        cluster.create(rt, ns, obj)
        count += 1
    return count


def many_pods(count: int, namespace: str = "load") -> list[Obj]:
    """`count` small running pods named pod-00000..., for scale tests and benchmarks."""
    width = max(5, len(str(count - 1)))
    ns: list[Obj] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}]
    return ns + [
        {"apiVersion": "v1", "kind": "Pod",
         "metadata": {"name": f"pod-{i:0{width}d}", "namespace": namespace,
                      "labels": {"app": "load", "shard": str(i % 10)}},
         "spec": {"nodeName": "kubesim-worker",
                  "containers": [{"name": "main", "image": "busybox:1.36"}]}}
        for i in range(count)
    ]


def builtins(cluster: Cluster) -> None:
    load(cluster, [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                   for n in BUILTIN_NAMESPACES])


def demo_cluster() -> list[Obj]:
    """A small cluster worth looking at: nodes, an app with a public ingress, ingress-nginx."""
    labels = {"app": "demo"}

    def node(name: str, role: str) -> Obj:
        return {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, f"node-role.kubernetes.io/{role}": ""}},
                "status": {"conditions": [{"type": "Ready", "status": "True"}],
                           "nodeInfo": {"kubeletVersion": "v1.32.0",
                                        "architecture": "amd64", "osImage": "kubesim"},
                           "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                           "addresses": [{"type": "InternalIP", "address": "10.0.0.10"}]}}

    def pod(name: str, ns: str, lab: dict[str, str], image: str, node_name: str) -> Obj:
        return {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "labels": lab, "annotations": {
                    "kubesim.pipeops.dev/log": f"{name} started\n{name} ready"}},
                "spec": {"nodeName": node_name,
                         "containers": [{"name": "main", "image": image}]}}

    return [
        node("kubesim-control-plane", "control-plane"),
        node("kubesim-worker", "worker"),
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "demo"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ingress-nginx"}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "demo", "namespace": "demo", "labels": labels},
         "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                  "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                      {"name": "main", "image": "nginx:1.27", "ports": [
                          {"containerPort": 80}]}]}}}},
        pod("demo-7d4b9c-abcde", "demo", labels, "nginx:1.27", "kubesim-worker"),
        pod("demo-7d4b9c-fghij", "demo", labels, "nginx:1.27", "kubesim-worker"),
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "demo", "namespace": "demo", "labels": labels},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80,
                                                  "targetPort": 80}]}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
         "metadata": {"name": "nginx", "annotations": {
             "ingressclass.kubernetes.io/is-default-class": "true"}},
         "spec": {"controller": "k8s.io/ingress-nginx"}},
        {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
         "metadata": {"name": "demo", "namespace": "demo"},
         "spec": {"ingressClassName": "nginx", "rules": [{
             "host": "demo.example.test", "http": {"paths": [{
                 "path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "demo", "port": {"number": 80}}}}]}}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "ingress-nginx-controller", "namespace": "ingress-nginx",
                      "labels": {"app.kubernetes.io/name": "ingress-nginx",
                                 "app.kubernetes.io/component": "controller"}},
         "spec": {"type": "LoadBalancer",
                  "selector": {"app.kubernetes.io/name": "ingress-nginx"},
                  "ports": [{"name": "http", "port": 80, "targetPort": 80},
                            {"name": "https", "port": 443, "targetPort": 443}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.1"}]}}},
        pod("ingress-nginx-controller-5c8d-xyz12", "ingress-nginx",
            {"app.kubernetes.io/name": "ingress-nginx"},
            "registry.k8s.io/ingress-nginx/controller:v1.12.0", "kubesim-control-plane"),
    ]
