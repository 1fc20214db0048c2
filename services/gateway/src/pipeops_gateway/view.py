"""The gateway's picture of the cluster: the watched objects and the routes they make.

Fed by list+watch (``replace`` for a list, ``apply`` for one event), it keeps each
object's extraction (:mod:`.ingress`, :mod:`.httproute`) and an index hostname -> the
objects claiming it, so one change costs the re-extraction of the objects it affects and
names the hosts to reconcile (before and after the change). What depends on what:

* an Ingress: itself;
* a Service: the Ingresses of its namespace whose backends name it (named ports), and
  the routing mode if it is the ingress controller's;
* an IngressClass: every Ingress (the default class or the filter's answer may change);
* a Gateway: the HTTPRoutes of any namespace (listener hostnames).

``desired(hosts)`` resolves host conflicts (:mod:`.conflicts`) among the claims on those
hosts and returns the winning routes with every problem to report.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from pipeops_gateway import httproute, ingress
from pipeops_gateway.conflicts import resolve
from pipeops_gateway.routes import Extraction, Problem, Route, RouteKey

ObjKey = tuple[str, str, str]  # kind, namespace, name
KINDS = ("Ingress", "IngressClass", "Service", "HTTPRoute", "Gateway")
# ingress controllers' Services, looked for in this order when none is configured
KNOWN_CONTROLLERS = (("ingress-nginx", "ingress-nginx-controller"),
                     ("kube-system", "rke2-ingress-nginx-controller"),
                     ("kube-system", "traefik"), ("traefik", "traefik"),
                     ("haproxy-controller", "haproxy-ingress"),
                     ("istio-system", "istio-ingressgateway"))


def _key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (str(meta.get("namespace") or ""), str(meta.get("name") or ""))


_KEPT_META = ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
_DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)
_WITH_STATUS = ("Service", "HTTPRoute")  # the LoadBalancer address; Accepted parents


def slim(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """What the routes depend on, and no more: the view holds every object of five kinds
    (10,000 Ingresses are a real cluster), so managedFields, kubectl's copy of the
    whole object in an annotation, and statuses nobody reads are left out."""
    meta = obj.get("metadata") or {}
    kept: dict[str, Any] = {k: meta[k] for k in _KEPT_META if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items()
                   if k not in _DROPPED_ANNOTATIONS}
    if annotations:
        kept["annotations"] = annotations
    out = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind") or kind,
           "metadata": kept, "spec": obj.get("spec")}
    if kind in _WITH_STATUS and "status" in obj:
        out["status"] = obj["status"]
    return out


def _backend_services(obj: Mapping[str, Any]) -> set[str]:
    spec = obj.get("spec") or {}
    names: set[str] = set()
    backends = [spec.get("defaultBackend") or {}]
    for rule in spec.get("rules") or []:
        if isinstance(rule, Mapping):
            for path in (rule.get("http") or {}).get("paths") or []:
                if isinstance(path, Mapping):
                    backends.append(path.get("backend") or {})
    for backend in backends:
        service = backend.get("service") if isinstance(backend, Mapping) else None
        if isinstance(service, Mapping) and isinstance(service.get("name"), str):
            names.add(service["name"])
    return names


class ClusterView:
    def __init__(self, *, ingress_classes: Collection[str] = (),
                 controller: tuple[str, str] | None = None) -> None:
        self.class_filter = tuple(ingress_classes)
        self.controller_ref = controller
        self.objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in KINDS}
        self._extracted: dict[ObjKey, Extraction] = {}
        self._claims: dict[str, set[ObjKey]] = {}  # hostname -> objects with routes on it
        self.controller_changed = False  # set when the controller's Service changes

    # --- feeding ----------------------------------------------------------------------

    def replace(self, kind: str, items: Iterable[dict[str, Any]]) -> set[str]:
        """A full list of ``kind``: what is not in it is gone. The hosts touched."""
        fresh = {_key(obj): obj for obj in items}
        touched: set[str] = set()
        for key in set(self.objects[kind]) - set(fresh):
            touched |= self.apply(kind, "DELETED", self.objects[kind][key])
        for key, obj in fresh.items():
            if self.objects[kind].get(key) != slim(kind, obj):
                touched |= self.apply(kind, "MODIFIED", obj)
        return touched

    def apply(self, kind: str, change: str, obj: dict[str, Any]) -> set[str]:
        """One watch event (ADDED, MODIFIED, DELETED). The hosts touched."""
        key = _key(obj)
        obj = slim(kind, obj)
        store = self.objects[kind]
        if change == "DELETED":
            store.pop(key, None)
        else:
            store[key] = obj
        if kind in ("Ingress", "HTTPRoute"):
            return self._extract(kind, key)
        if kind == "Service":
            if self.controller_key() == key:
                self.controller_changed = True
            return self._extract_many(
                ("Ingress", k) for k, ing in self.objects["Ingress"].items()
                if k[0] == key[0] and key[1] in _backend_services(ing))
        if kind == "IngressClass":
            return self._extract_many(("Ingress", k) for k in list(self.objects["Ingress"]))
        return self._extract_many(("HTTPRoute", k) for k in list(self.objects["HTTPRoute"]))

    def _extract_many(self, keys: Iterable[tuple[str, tuple[str, str]]]) -> set[str]:
        touched: set[str] = set()
        for kind, key in list(keys):
            touched |= self._extract(kind, key)
        return touched

    def _extract(self, kind: str, key: tuple[str, str]) -> set[str]:
        obj_key: ObjKey = (kind, *key)
        before = self._extracted.pop(obj_key, None)
        old_hosts = {r.hostname for r in before.routes} if before else set()
        obj = self.objects[kind].get(key)
        after = self._extraction(kind, obj) if obj is not None else None
        new_hosts = {r.hostname for r in after.routes} if after else set()
        if after is not None and (after.routes or after.problems):
            self._extracted[obj_key] = after
        for host in old_hosts - new_hosts:
            claims = self._claims.get(host)
            if claims is not None:
                claims.discard(obj_key)
                if not claims:
                    del self._claims[host]
        for host in new_hosts:
            self._claims.setdefault(host, set()).add(obj_key)
        if before is not None and after is not None and before.routes == after.routes:
            return set()
        return old_hosts | new_hosts

    def _extraction(self, kind: str, obj: dict[str, Any]) -> Extraction:
        if kind == "HTTPRoute":
            return httproute.extract(obj, self.objects["Gateway"])
        default = ingress.default_class(list(self.objects["IngressClass"].values()))
        if not ingress.selected(ingress.class_of(obj, default), self.class_filter):
            return Extraction()
        return ingress.extract(obj, self.objects["Service"])

    # --- reading ----------------------------------------------------------------------

    def hostnames(self) -> set[str]:
        return set(self._claims)

    def desired(self, hosts: Iterable[str] | None = None
                ) -> tuple[dict[RouteKey, Route], list[Problem]]:
        """The winning routes of ``hosts`` (None: every host) and the problems: each
        object's own and every host conflict's loser."""
        wanted = self.hostnames() if hosts is None else set(hosts)
        claims: set[ObjKey] = set()
        for host in wanted:
            claims |= self._claims.get(host, set())
        routes = [r for key in claims for r in self._extracted[key].routes
                  if r.hostname in wanted]
        won, lost = resolve(routes)
        problems = [p for key in sorted(claims) for p in self._extracted[key].problems]
        return won, problems + lost

    def problems(self) -> list[Problem]:
        """Every object's own problems (not conflicts), for Events."""
        return [p for key in sorted(self._extracted) for p in self._extracted[key].problems]

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objects[kind].get((namespace, name))

    def controller_key(self) -> tuple[str, str] | None:
        if self.controller_ref is not None:
            return self.controller_ref
        for key in KNOWN_CONTROLLERS:
            if key in self.objects["Service"]:
                return key
        return None

    def controller(self) -> dict[str, Any] | None:
        key = self.controller_key()
        return self.objects["Service"].get(key) if key is not None else None
