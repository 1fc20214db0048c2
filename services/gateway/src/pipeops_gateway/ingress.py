"""Ingress (``networking.k8s.io/v1``) -> routes, faithful to the Ingress spec.

* Class: ``spec.ingressClassName``, else the deprecated ``kubernetes.io/ingress.class``
  annotation, else the cluster's default IngressClass (the one annotated
  ``ingressclass.kubernetes.io/is-default-class: "true"``; two or more defaults is
  ambiguous, as the API server's admission says, so none). The class filter
  (``gateway.ingress_classes``) keeps only those classes; empty keeps every Ingress,
  with or without a class.
* Hosts: each rule's ``host`` (lower-case RFC 1123, optionally one leading ``*.``
  label: a wildcard covers exactly one label). A rule with no host cannot be published
  and is reported (not an error of the object).
* Paths: ``pathType`` is required; ``Exact`` and ``Prefix`` paths start with ``/``;
  ``ImplementationSpecific`` with no path means ``/``. The type is sent as it is; the
  control plane matches ``ImplementationSpecific`` as ``Prefix`` (element-wise), the
  behaviour of ingress-nginx without regex annotations.
* Backends: a Service by name and port number, or by port name resolved through the
  Service's ``spec.ports`` (a Service or port not found skips that path, reported; it is
  retried when the Service changes). A ``resource`` backend cannot be reached through the
  tunnel: skipped, reported.
* ``defaultBackend``: requests to a rule's host that match none of its paths go there,
  so each host without a ``/`` prefix path gets ``/`` (``Prefix``) to the default
  backend. A default backend with no rule has no hostname to publish: reported.
* TLS: a route is ``tls`` when a ``spec.tls`` entry lists its host (or a wildcard that
  covers it); only the Secret's name is kept.

Malformed objects (missing metadata, a bad host or path, no ``pathType``) are skipped
whole with one :class:`~pipeops_gateway.routes.Problem`; they never stop the others.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any

from pipeops_gateway.routes import Extraction, Problem, Route

CLASS_ANNOTATION = "kubernetes.io/ingress.class"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
PATH_TYPES = ("Exact", "Prefix", "ImplementationSpecific")
_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$")

ServiceIndex = Mapping[tuple[str, str], Mapping[str, Any]]


class Invalid(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def default_class(ingress_classes: Collection[Mapping[str, Any]]) -> str | None:
    """The cluster's default IngressClass name, or None (none, or ambiguous)."""
    defaults = [c["metadata"]["name"] for c in ingress_classes
                if ((c.get("metadata") or {}).get("annotations") or {})
                .get(DEFAULT_CLASS_ANNOTATION) == "true"]
    return defaults[0] if len(defaults) == 1 else None


def class_of(ingress: Mapping[str, Any], default: str | None) -> str | None:
    spec = ingress.get("spec") or {}
    annotations = (ingress.get("metadata") or {}).get("annotations") or {}
    return spec.get("ingressClassName") or annotations.get(CLASS_ANNOTATION) or default


def selected(ingress_class: str | None, allowed: Collection[str]) -> bool:
    return not allowed or ingress_class in allowed


def valid_host(host: str) -> bool:
    return len(host) <= 253 and bool(HOST.match(host))


def covers(pattern: str, host: str) -> bool:
    """Does a TLS host (maybe a wildcard) cover ``host``?"""
    if pattern == host:
        return True
    if pattern.startswith("*."):
        head, dot, rest = host.partition(".")
        return bool(dot and head and head != "*" and rest == pattern[2:])
    return False


def _port(backend: Mapping[str, Any], namespace: str, services: ServiceIndex) -> tuple[str, int]:
    service = backend.get("service")
    if not isinstance(service, Mapping):
        if "resource" in backend:
            raise Invalid("UnsupportedBackend", "a resource backend cannot be published")
        raise Invalid("InvalidBackend", "a backend needs service.name and service.port")
    name = service.get("name")
    port = service.get("port") or {}
    if not isinstance(name, str) or not name or not isinstance(port, Mapping):
        raise Invalid("InvalidBackend", "a backend needs service.name and service.port")
    number = port.get("number")
    if isinstance(number, int) and not isinstance(number, bool):
        if not 0 < number < 65536:
            raise Invalid("InvalidBackend", f"service {name} port {number} is out of range")
        return name, number
    port_name = port.get("name")
    if not isinstance(port_name, str) or not port_name:
        raise Invalid("InvalidBackend", f"service {name}: port needs a number or a name")
    svc = services.get((namespace, name))
    if svc is None:
        raise Invalid("ServiceNotFound",
                      f"service {namespace}/{name} not found (port {port_name!r} is named)")
    for entry in (svc.get("spec") or {}).get("ports") or []:
        if isinstance(entry, Mapping) and entry.get("name") == port_name \
                and isinstance(entry.get("port"), int):
            return name, int(entry["port"])
    raise Invalid("PortNotFound", f"service {namespace}/{name} has no port named {port_name!r}")


def _path(entry: Mapping[str, Any]) -> tuple[str, str]:
    path_type = entry.get("pathType")
    if path_type not in PATH_TYPES:
        raise Invalid("InvalidPath", f"pathType must be one of {', '.join(PATH_TYPES)}, "
                                     f"not {path_type!r}")
    path = entry.get("path") or ""
    if not isinstance(path, str):
        raise Invalid("InvalidPath", "path must be a string")
    if not path and path_type == "ImplementationSpecific":
        path = "/"
    if not path.startswith("/") or any(c in path for c in " \t\r\n") or len(path) > 2048:
        raise Invalid("InvalidPath", f"path {path[:80]!r} must start with '/' "
                                     "and hold no spaces")
    return path, path_type


def extract(ingress: Mapping[str, Any], services: ServiceIndex) -> Extraction:
    """The routes of one Ingress, and what was skipped and why."""
    meta = ingress.get("metadata") or {}
    namespace, name = meta.get("namespace") or "", meta.get("name") or ""
    out = Extraction()
    if not namespace or not name:
        out.problems.append(Problem("Ingress", namespace, name, "InvalidObject",
                                    "metadata.name and metadata.namespace are required"))
        return out
    try:
        routes, problems = _extract(ingress, namespace, name, meta.get("creationTimestamp")
                                    or "", services)
    except Invalid as exc:
        out.problems.append(Problem("Ingress", namespace, name, exc.reason, exc.message))
        return out
    except (TypeError, AttributeError, KeyError) as exc:  # a shape the schema forbids
        out.problems.append(Problem("Ingress", namespace, name, "InvalidObject",
                                    f"unexpected shape: {exc!r}"[:300]))
        return out
    out.routes, out.problems = routes, problems
    return out


def _extract(ingress: Mapping[str, Any], namespace: str, name: str, created: str,
             services: ServiceIndex) -> tuple[list[Route], list[Problem]]:
    spec = ingress.get("spec") or {}
    problems: list[Problem] = []

    def skipped(exc: Invalid, where: str) -> None:
        problems.append(Problem("Ingress", namespace, name, exc.reason,
                                f"{where}: {exc.message}", whole=False))

    tls_hosts: list[tuple[str, str]] = []
    for entry in spec.get("tls") or []:
        for host in entry.get("hosts") or []:
            tls_hosts.append((str(host), str(entry.get("secretName") or "")))
    rules = spec.get("rules") or []
    hosts = [rule.get("host") or "" for rule in rules]
    for host in hosts:
        if host and not valid_host(host):
            raise Invalid("InvalidHost", f"host {host[:80]!r} is not a lower-case DNS name "
                                         "(one leading '*.' allowed)")
    # every path is checked before anything is kept: a malformed one skips the object
    parsed = [[_path(p) for p in ((rule.get("http") or {}).get("paths") or [])]
              for rule in rules]
    default = spec.get("defaultBackend")
    default_target: tuple[str, int] | None = None
    if default is not None:
        try:
            default_target = _port(default, namespace, services)
        except Invalid as exc:
            if exc.reason not in ("ServiceNotFound", "PortNotFound", "UnsupportedBackend"):
                raise
            skipped(exc, "defaultBackend")
    if default is not None and not any(hosts):
        problems.append(Problem("Ingress", namespace, name, "NoHostname",
                                "defaultBackend alone names no host to publish",
                                whole=False))
    routes: dict[tuple[str, str], Route] = {}
    for index, (rule, host, paths) in enumerate(zip(rules, hosts, parsed, strict=True)):
        if not host:
            problems.append(Problem("Ingress", namespace, name, "NoHostname",
                                    f"rule {index} has no host: not published", whole=False))
            continue
        tls_secret = next((s for h, s in tls_hosts if covers(h, host)), None)

        def add(path: str, path_type: str, target: tuple[str, int], host: str = host,
                tls_secret: str | None = tls_secret) -> None:
            routes.setdefault((host, path), Route(
                host, path, path_type, namespace, name, target[0], target[1],
                tls=tls_secret is not None, tls_secret=tls_secret or "", created=created))

        entries = (rule.get("http") or {}).get("paths") or []
        for (path, path_type), entry in zip(paths, entries, strict=True):
            try:
                target = _port(entry.get("backend") or {}, namespace, services)
            except Invalid as exc:
                if exc.reason in ("InvalidBackend",):
                    raise
                skipped(exc, f"host {host} path {path}")
                continue
            add(path, path_type, target)
        has_root = any(p == "/" and t != "Exact" for p, t in paths)
        if default_target is not None and not has_root:
            add("/", "Prefix", default_target)
    return sorted(routes.values()), problems
