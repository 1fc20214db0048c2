"""Server-side `Table` output (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`).

`kubectl get` prints whatever columns the server returns, so the columns here mirror
the real server's for the kinds people look at (pods, deployments, services, ingresses,
nodes, namespaces, ...); every other kind gets NAME and AGE, which is also what the
real server prints for custom resources without printer columns.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]
Cell = str | int
Column = tuple[str, str, int, Callable[[Obj], Cell]]  # name, type, priority, getter


def human_duration(seconds: float) -> str:
    """kubectl's duration.HumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = minutes // 60
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(obj: Obj) -> str:
    ts = obj.get("metadata", {}).get("creationTimestamp")
    if not ts:
        return "<unknown>"
    created = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - created).total_seconds())


def _get(obj: Any, *path: str | int, default: Any = None) -> Any:
    for p in path:
        if isinstance(obj, dict) and isinstance(p, str):
            obj = obj.get(p)
        elif isinstance(obj, list) and isinstance(p, int) and p < len(obj):
            obj = obj[p]
        else:
            return default
    return default if obj is None else obj


def _name(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def _pod_ready(o: Obj) -> str:
    statuses = _get(o, "status", "containerStatuses", default=[])
    total = len(_get(o, "spec", "containers", default=[]))
    return f"{sum(1 for s in statuses if s.get('ready'))}/{total}"


def _pod_restarts(o: Obj) -> int:
    return sum(int(s.get("restartCount", 0)) for s in _get(o, "status", "containerStatuses",
                                                             default=[]))


def _svc_ports(o: Obj) -> str:
    parts = []
    for p in _get(o, "spec", "ports", default=[]):
        text = f"{p.get('port')}"
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        parts.append(f"{text}/{p.get('protocol', 'TCP')}")
    return ",".join(parts) or "<none>"


def _lb_address(o: Obj) -> str:
    addrs = [i.get("ip") or i.get("hostname") or ""
             for i in _get(o, "status", "loadBalancer", "ingress", default=[])]
    return ",".join(a for a in addrs if a)


def _svc_external(o: Obj) -> str:
    kind = _get(o, "spec", "type", default="ClusterIP")
    if kind == "ExternalName":
        return str(_get(o, "spec", "externalName", default="<none>"))
    ext = _lb_address(o) or ",".join(_get(o, "spec", "externalIPs", default=[]))
    if kind == "LoadBalancer":
        return ext or "<pending>"
    return ext or "<none>"


def _ing_hosts(o: Obj) -> str:
    hosts = [r.get("host") for r in _get(o, "spec", "rules", default=[]) if r.get("host")]
    if not hosts:
        return "*"
    return ",".join(hosts[:4]) + (f" + {len(hosts) - 4} more..." if len(hosts) > 4 else "")


def _ing_ports(o: Obj) -> str:
    return "80, 443" if _get(o, "spec", "tls") else "80"


def _deploy_ready(o: Obj) -> str:
    ready = _get(o, "status", "readyReplicas", default=0)
    return f"{ready}/{_get(o, 'spec', 'replicas', default=1)}"


def _node_status(o: Obj) -> str:
    for c in _get(o, "status", "conditions", default=[]):
        if c.get("type") == "Ready":
            return "Ready" if c.get("status") == "True" else "NotReady"
    return "Unknown"


def _node_roles(o: Obj) -> str:
    prefix = "node-role.kubernetes.io/"
    roles = [k[len(prefix):] for k in (o["metadata"].get("labels") or {}) if k.startswith(prefix)]
    return ",".join(sorted(roles)) or "<none>"


_NAME: Column = ("Name", "string", 0, _name)
_AGE: Column = ("Age", "string", 0, _age)
_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        _NAME,
        ("Ready", "string", 0, _pod_ready),
        ("Status", "string", 0, lambda o: _get(o, "status", "phase", default="Pending")),
        ("Restarts", "string", 0, _pod_restarts),
        _AGE,
        ("IP", "string", 1, lambda o: _get(o, "status", "podIP", default="<none>")),
        ("Node", "string", 1, lambda o: _get(o, "spec", "nodeName", default="<none>")),
    ],
    ("apps", "deployments"): [
        _NAME,
        ("Ready", "string", 0, _deploy_ready),
        ("Up-to-date", "integer", 0, lambda o: _get(o, "status", "updatedReplicas", default=0)),
        ("Available", "integer", 0,
         lambda o: _get(o, "status", "availableReplicas", default=0)),
        _AGE,
    ],
    ("", "services"): [
        _NAME,
        ("Type", "string", 0, lambda o: _get(o, "spec", "type", default="ClusterIP")),
        ("Cluster-IP", "string", 0, lambda o: _get(o, "spec", "clusterIP", default="<none>")),
        ("External-IP", "string", 0, _svc_external),
        ("Port(s)", "string", 0, _svc_ports),
        _AGE,
    ],
    ("networking.k8s.io", "ingresses"): [
        _NAME,
        ("Class", "string", 0, lambda o: _get(o, "spec", "ingressClassName", default="<none>")),
        ("Hosts", "string", 0, _ing_hosts),
        ("Address", "string", 0, _lb_address),
        ("Ports", "string", 0, _ing_ports),
        _AGE,
    ],
    ("", "namespaces"): [
        _NAME, ("Status", "string", 0, lambda o: _get(o, "status", "phase", default="")), _AGE,
    ],
    ("", "nodes"): [
        _NAME,
        ("Status", "string", 0, _node_status),
        ("Roles", "string", 0, _node_roles),
        _AGE,
        ("Version", "string", 0,
         lambda o: _get(o, "status", "nodeInfo", "kubeletVersion", default="")),
    ],
    ("", "configmaps"): [
        _NAME, ("Data", "integer", 0,
                lambda o: len(o.get("data") or {}) + len(o.get("binaryData") or {})), _AGE,
    ],
    ("", "secrets"): [
        _NAME,
        ("Type", "string", 0, lambda o: o.get("type", "Opaque")),
        ("Data", "integer", 0, lambda o: len(o.get("data") or {})),
        _AGE,
    ],
    ("", "events"): [
        ("Last Seen", "string", 0, _age),
        ("Type", "string", 0, lambda o: o.get("type", "")),
        ("Reason", "string", 0, lambda o: o.get("reason", "")),
        ("Object", "string", 0, lambda o: f"{_get(o, 'involvedObject', 'kind', default='')}/"
                                          f"{_get(o, 'involvedObject', 'name', default='')}"),
        ("Message", "string", 0, lambda o: o.get("message", "")),
    ],
}


def columns_for(group: str, plural: str) -> list[Column]:
    return _COLUMNS.get((group, plural), [_NAME, _AGE])


def partial_metadata(obj: Obj) -> Obj:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
            "metadata": obj["metadata"]}


def table(
    group: str,
    plural: str,
    objs: list[Obj],
    list_meta: dict[str, Any],
    include_object: str = "Metadata",
    with_columns: bool = True,
) -> dict[str, Any]:
    cols = columns_for(group, plural)
    rows = []
    for obj in objs:
        row: dict[str, Any] = {"cells": [getter(obj) for _, _, _, getter in cols]}
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = partial_metadata(obj)
        rows.append(row)
    definitions = [
        {"name": name, "type": typ, "format": "name" if name == "Name" else "",
         "description": "", "priority": prio}
        for name, typ, prio, _ in cols
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": definitions if with_columns else [],
        "rows": rows,
    }
