"""What the apiserver does to an object on its way in: validation and defaulting.

Validation covers what clients trip over (kind/apiVersion must match the path, name
required and DNS-1123, namespace must match the URL); defaulting fills the fields the
agent and `kubectl get` read (uid, timestamps, generation, a ready Deployment status, a
Running Pod, a Service clusterIP, an Active Namespace). There is no scheduler and no
kubelet: a Deployment is ready as soon as it is written.
"""

from __future__ import annotations

import base64
import re
import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from kubesim.errors import bad_request, invalid
from kubesim.resources import ResourceType

Obj = dict[str, Any]

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is "
    r"'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
# Kinds whose names must be DNS labels rather than subdomains.
_LABEL_NAMED = {"Namespace", "Service"}
# Kinds whose names the real server checks only loosely (path segment rules).
_PATH_NAMED = {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "Event", "Node"}

LOG_ANNOTATION = "kubesim.pipeops.dev/log"


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_type(rt: ResourceType, body: Any) -> Obj:
    """400 unless the body is an object of the kind and group the path names."""
    if not isinstance(body, dict):
        raise bad_request(f"the object provided is unrecognized (must be of type {rt.kind})")
    kind = body.get("kind")
    api_version = body.get("apiVersion")
    if kind is not None and kind != rt.kind:
        version = (api_version or rt.group_version).rpartition("/")[2]
        internal = rt.group.split(".")[0] or "core"
        raise bad_request(
            f'{kind} in version "{version}" cannot be handled as a {rt.kind}: converting '
            f"({version}.{kind}) to ({internal}.{rt.kind}): unknown conversion"
        )
    if api_version is not None:
        group = api_version.rpartition("/")[0]
        if group != rt.group:
            raise bad_request(
                f"the API version in the data ({api_version}) does not match the expected "
                f"API version ({rt.group_version})"
            )
    meta = body.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise bad_request("metadata must be an object")
    return {**body, "kind": rt.kind, "apiVersion": rt.group_version, "metadata": dict(meta)}


def validate_name(rt: ResourceType, name: str) -> None:
    if not name:
        raise invalid(rt, "", [("metadata.name", "Required value",
                                "name or generateName is required")])
    if rt.kind in _PATH_NAMED:
        if name in (".", "..") or "/" in name or "%" in name:
            raise invalid(rt, name, [("metadata.name", "Invalid value",
                                      f'"{name}": may not contain \'/\' or \'%\'')])
        return
    if rt.kind in _LABEL_NAMED:
        ok, msg = bool(_DNS1123_LABEL.match(name)) and len(name) <= 63, _LABEL_MSG
    else:
        ok, msg = bool(_DNS1123_SUBDOMAIN.match(name)) and len(name) <= 253, _SUBDOMAIN_MSG
    if not ok:
        raise invalid(rt, name, [("metadata.name", "Invalid value", f'"{name}": {msg}')])


def prepare_create(rt: ResourceType, body: Any, namespace: str | None, ordinal: int) -> Obj:
    """A new object as the server would store it (before its resourceVersion)."""
    obj = check_type(rt, body)
    meta = obj["metadata"]
    if not meta.get("name") and meta.get("generateName"):
        suffix = "".join(secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        meta["name"] = meta["generateName"] + suffix
    validate_name(rt, meta.get("name") or "")
    if rt.namespaced:
        given = meta.get("namespace")
        if given and namespace and given != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request"
            )
        meta["namespace"] = namespace or given or "default"
    else:
        meta.pop("namespace", None)
    meta.pop("resourceVersion", None)
    meta.pop("deletionTimestamp", None)
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now_rfc3339()
    if has_generation(rt):
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    return default(rt, obj, ordinal)


# As the real server: custom resources and the kinds whose strategy tracks a spec get a
# metadata.generation; ConfigMaps, Secrets, Services, Nodes, Namespaces... do not.
_CUSTOM_GROUPS = {"gateway.networking.k8s.io", "networking.istio.io", "monitoring.coreos.com"}
_NO_GENERATION = {"Namespace", "Node", "Service", "PersistentVolumeClaim"}
_GENERATION = {"NetworkPolicy", "IngressClass", "Ingress", "PodDisruptionBudget"}


def has_generation(rt: ResourceType) -> bool:
    if rt.group in _CUSTOM_GROUPS or rt.kind in _GENERATION:
        return True
    return rt.has_status and rt.kind not in _NO_GENERATION


def prepare_update(rt: ResourceType, old: Obj, body: Any, name: str, status_only: bool) -> Obj:
    """The replacement for `old`; raises on a name mismatch. RV checks are the caller's."""
    new = check_type(rt, body)
    meta = new["metadata"]
    if meta.get("name", name) != name:
        raise bad_request(
            f"the name of the object ({meta.get('name')}) does not match the name on the URL "
            f"({name})"
        )
    old_meta = old["metadata"]
    if status_only:
        new = {**old, "status": new.get("status", {})}
        meta = dict(old_meta)
    else:
        for k in ("uid", "creationTimestamp", "namespace", "generation", "name"):
            if k in old_meta:
                meta[k] = old_meta[k]
            else:
                meta.pop(k, None)
        if rt.has_status and "status" in old:
            new["status"] = old["status"]
        if "generation" in old_meta and _spec_of(new) != _spec_of(old):
            meta["generation"] = old_meta.get("generation", 1) + 1
    new["metadata"] = meta
    return default(rt, new, 0)


def _spec_of(obj: Obj) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def default(rt: ResourceType, obj: Obj, ordinal: int) -> Obj:
    kind = rt.kind if not rt.group or rt.group in ("apps",) else ""
    if kind == "Deployment":
        return _deployment(obj)
    if kind == "Pod":
        return _pod(obj)
    if kind == "Service":
        return _service(obj, ordinal)
    if kind == "Namespace":
        meta = obj["metadata"]
        labels = dict(meta.get("labels") or {})
        labels["kubernetes.io/metadata.name"] = meta["name"]
        meta["labels"] = labels
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    if kind == "Secret":
        return _secret(obj)
    return obj


def _deployment(obj: Obj) -> Obj:
    spec = dict(obj.get("spec") or {})
    replicas = spec.setdefault("replicas", 1)
    spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {
        "maxUnavailable": "25%", "maxSurge": "25%"}})
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.get("template")
    if isinstance(template, dict) and isinstance(template.get("spec"), dict):
        spec["template"] = {**template, "spec": _pod_spec_defaults(template["spec"])}
    obj["spec"] = spec
    obj["status"] = deployment_status(obj["metadata"].get("generation", 1), replicas)
    return obj


def deployment_status(generation: int, replicas: int) -> dict[str, Any]:
    """Everything ready at once; zero counts omitted as the real server omits them."""
    now = now_rfc3339()
    status: dict[str, Any] = {"observedGeneration": generation}
    if replicas:
        status.update(replicas=replicas, updatedReplicas=replicas, readyReplicas=replicas,
                      availableReplicas=replicas)
    status["conditions"] = [
        {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
         "message": "Deployment has minimum availability.", "lastUpdateTime": now,
         "lastTransitionTime": now},
        {"type": "Progressing", "status": "True", "reason": "NewReplicaSetAvailable",
         "message": "ReplicaSet has successfully progressed.", "lastUpdateTime": now,
         "lastTransitionTime": now},
    ]
    return status


def _pod_spec_defaults(spec: dict[str, Any]) -> dict[str, Any]:
    """Container ports default to TCP, as the real server defaults them."""
    def container(c: Any) -> Any:
        if not isinstance(c, dict) or not isinstance(c.get("ports"), list):
            return c
        ports = [{**p, "protocol": p.get("protocol") or "TCP"} if isinstance(p, dict) else p
                 for p in c["ports"]]
        return {**c, "ports": ports}

    out = dict(spec)
    for key in ("containers", "initContainers"):
        if isinstance(out.get(key), list):
            out[key] = [container(c) for c in out[key]]
    return out


def _pod(obj: Obj) -> Obj:
    if isinstance(obj.get("spec"), dict):
        obj["spec"] = _pod_spec_defaults(obj["spec"])
    if obj.get("status"):
        return obj
    now = now_rfc3339()
    containers = (obj.get("spec") or {}).get("containers") or []
    obj["status"] = {
        "phase": "Running",
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "podIP": "10.244.0.10",
        "podIPs": [{"ip": "10.244.0.10"}],
        "hostIP": "10.0.0.10",
        "startTime": now,
        "containerStatuses": [
            {"name": c.get("name", ""), "image": c.get("image", ""), "imageID": "",
             "ready": True, "started": True, "restartCount": 0,
             "state": {"running": {"startedAt": now}}}
            for c in containers if isinstance(c, dict)
        ],
    }
    return obj


def _service(obj: Obj, ordinal: int) -> Obj:
    spec = dict(obj.get("spec") or {})
    spec.setdefault("type", "ClusterIP")
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        spec["clusterIP"] = f"10.96.{(ordinal // 250) % 250}.{ordinal % 250 + 1}"
        spec["clusterIPs"] = [spec["clusterIP"]]
    ports = []
    for port in spec.get("ports") or []:
        if isinstance(port, dict):
            port = {"protocol": "TCP", **port}
            port.setdefault("targetPort", port.get("port"))
        ports.append(port)
    if ports:
        spec["ports"] = ports
    spec.setdefault("sessionAffinity", "None")
    obj["spec"] = spec
    obj.setdefault("status", {"loadBalancer": {}})
    return obj


def _secret(obj: Obj) -> Obj:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict):
        data = dict(obj.get("data") or {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(str(v).encode()).decode()
        obj["data"] = data
    return obj
