"""The resource table: which kinds kubesim serves, and the discovery documents for them.

Everything that depends on "what is a pod" (plural, kind, scope, short names, verbs,
subresources, the versions a group is served at) lives here, so that discovery,
routing, RBAC and OpenAPI all read one table and cannot drift apart.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

VERBS_ALL = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass(frozen=True)
class ResourceType:
    """One resource at one group/version (storage is shared across versions)."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def storage_key(self) -> tuple[str, str]:
        """Objects are stored once per group+plural, whatever version they are read at."""
        return (self.group, self.plural)

    @property
    def group_resource(self) -> str:
        """How the real apiserver names the resource in messages: `deployments.apps`."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


@dataclass
class _Spec:
    plural: str
    kind: str
    namespaced: bool = True
    short: tuple[str, ...] = ()
    sub: tuple[str, ...] = ()
    cat: tuple[str, ...] = ()


_ALL = ("all",)
# group -> (served versions, preferred first; resources)
_TABLE: dict[str, tuple[tuple[str, ...], list[_Spec]]] = {
    "": (
        ("v1",),
        [
            _Spec("namespaces", "Namespace", False, ("ns",), ("status", "finalize")),
            _Spec("nodes", "Node", False, ("no",), ("status",)),
            _Spec("pods", "Pod", True, ("po",), ("status", "log"), _ALL),
            _Spec("services", "Service", True, ("svc",), ("status",), _ALL),
            _Spec("endpoints", "Endpoints", True, ("ep",)),
            _Spec("configmaps", "ConfigMap", True, ("cm",)),
            _Spec("secrets", "Secret"),
            _Spec("serviceaccounts", "ServiceAccount", True, ("sa",)),
            _Spec("events", "Event", True, ("ev",)),
            _Spec("persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), ("status",)),
        ],
    ),
    "apps": (
        ("v1",),
        [
            _Spec("deployments", "Deployment", True, ("deploy",), ("status", "scale"), _ALL),
            _Spec("replicasets", "ReplicaSet", True, ("rs",), ("status",), _ALL),
            _Spec("statefulsets", "StatefulSet", True, ("sts",), ("status",), _ALL),
            _Spec("daemonsets", "DaemonSet", True, ("ds",), ("status",), _ALL),
        ],
    ),
    "batch": (
        ("v1",),
        [
            _Spec("jobs", "Job", True, (), ("status",), _ALL),
            _Spec("cronjobs", "CronJob", True, ("cj",), ("status",), _ALL),
        ],
    ),
    "coordination.k8s.io": (("v1",), [_Spec("leases", "Lease")]),
    "networking.k8s.io": (
        ("v1",),
        [
            _Spec("ingresses", "Ingress", True, ("ing",), ("status",)),
            _Spec("ingressclasses", "IngressClass", False),
            _Spec("networkpolicies", "NetworkPolicy", True, ("netpol",)),
        ],
    ),
    "policy": (("v1",), [_Spec("poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",))]),
    "rbac.authorization.k8s.io": (
        ("v1",),
        [
            _Spec("roles", "Role"),
            _Spec("rolebindings", "RoleBinding"),
            _Spec("clusterroles", "ClusterRole", False),
            _Spec("clusterrolebindings", "ClusterRoleBinding", False),
        ],
    ),
    "gateway.networking.k8s.io": (
        ("v1", "v1beta1", "v1alpha2"),
        [
            _Spec("gatewayclasses", "GatewayClass", False, ("gc",), ("status",)),
            _Spec("gateways", "Gateway", True, ("gtw",), ("status",)),
            _Spec("httproutes", "HTTPRoute", True, (), ("status",)),
        ],
    ),
    "networking.istio.io": (
        ("v1", "v1beta1", "v1alpha3"),
        [
            _Spec("gateways", "Gateway", True, ("gw",)),
            _Spec("virtualservices", "VirtualService", True, ("vs",)),
        ],
    ),
    "monitoring.coreos.com": (
        ("v1",),
        [
            _Spec("servicemonitors", "ServiceMonitor", True, ("smon",)),
            _Spec("podmonitors", "PodMonitor", True, ("pmon",)),
        ],
    ),
}
# Resources served at only some versions of their group.
_EXTRA: dict[tuple[str, str], list[_Spec]] = {
    ("gateway.networking.k8s.io", "v1alpha2"): [
        _Spec("tcproutes", "TCPRoute", True, (), ("status",)),
        _Spec("udproutes", "UDPRoute", True, (), ("status",)),
        _Spec("tlsroutes", "TLSRoute", True, (), ("status",)),
    ],
}


@dataclass
class Registry:
    """Lookup of resource types by path coordinates, plus the discovery documents."""

    by_path: dict[tuple[str, str, str], ResourceType] = field(default_factory=dict)
    versions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def default(cls) -> Registry:
        reg = cls()
        for group, (versions, specs) in _TABLE.items():
            reg.versions[group] = versions
            for version in versions:
                for spec in specs + _EXTRA.get((group, version), []):
                    reg.by_path[(group, version, spec.plural)] = ResourceType(
                        group, version, spec.plural, spec.kind, spec.namespaced,
                        spec.short, spec.sub, spec.cat,
                    )
        return reg

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self.by_path.get((group, version, plural))

    def served(self, group: str, version: str) -> bool:
        return version in self.versions.get(group, ())

    def in_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for (g, v, _), rt in self.by_path.items() if g == group and v == version]

    def all_types(self) -> list[ResourceType]:
        return list(self.by_path.values())

    def for_kind(self, api_version: str, kind: str) -> ResourceType | None:
        group, _, version = api_version.rpartition("/")
        for rt in self.in_version(group, version):
            if rt.kind == kind:
                return rt
        return None

    # ---- discovery documents -------------------------------------------------------

    def api_versions(self, server_address: str) -> dict[str, Any]:
        return {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
            ],
        }

    def _group_doc(self, group: str) -> dict[str, Any]:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in self.versions[group]]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    def api_group_list(self) -> dict[str, Any]:
        groups = [self._group_doc(g) for g in self.versions if g]
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}

    def api_group(self, group: str) -> dict[str, Any] | None:
        if not group or group not in self.versions:
            return None
        return {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group)}

    def resource_list(self, group: str, version: str) -> dict[str, Any] | None:
        if not self.served(group, version):
            return None
        resources: list[dict[str, Any]] = []
        for rt in self.in_version(group, version):
            entry: dict[str, Any] = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                # the real server has no deletecollection for namespaces
                "verbs": [v for v in VERBS_ALL
                          if not (rt.plural == "namespaces" and v == "deletecollection")],
                "storageVersionHash": hashlib.sha256(
                    f"{rt.group}/{rt.plural}".encode()
                ).hexdigest()[:12],
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in rt.subresources:
                sub_entry: dict[str, Any] = {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": rt.kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "log":
                    sub_entry.update(kind="Pod", verbs=["get"])
                elif sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1", kind="Scale")
                elif sub == "finalize":
                    sub_entry["verbs"] = ["update"]
                resources.append(sub_entry)
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }
