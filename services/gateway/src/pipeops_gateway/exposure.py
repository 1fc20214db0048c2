"""TCP/UDP exposure: the Gateway API / Istio objects the seed's ``gateway:`` settings
describe, as the chart's ``features.gateway`` (managedBy: chart) renders them.

* Gateway API (``gateway.gateway_api.enabled``): a ``Gateway`` named ``agent.name`` in the
  agent's namespace (``gatewayClassName``, one listener per setting, routes from the same
  namespace of the listener's kind; ``addresses`` with the VM's IP in ``single-vm``
  mode), and a ``TCPRoute`` / ``UDPRoute`` (v1alpha2) per route, attached by
  ``sectionName``.
* Istio (``gateway.istio.enabled``): a ``Gateway`` (selector, servers with ``hosts: ["*"]``
  unless given), a ``VirtualService`` for the TCP and TLS routes, and with
  ``istio.service.create`` a LoadBalancer ``Service`` ``<agent.name>-istio-ingress`` in
  ``istio.service.namespace`` (one port per server; ``externalIPs`` in single-vm mode).

Every object carries :data:`LABELS` (ours, and whose); :mod:`.exposer` applies them with
server-side apply under :data:`FIELD_MANAGER` and deletes the labelled ones no longer
described. Pure: config in, objects out (the settings were checked by the config schema).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agentkit.config import Config
from agentkit.kube import Resource
from agentkit.kube.resources import SERVICES

FIELD_MANAGER = "pipeops-gateway"
MANAGED_BY = "app.kubernetes.io/managed-by"
OWNER = "pipeops.io/exposure-of"  # the agent (agent.name) whose settings made the object

GW_GATEWAY = Resource("gateway.networking.k8s.io/v1", "gateways", "Gateway")
TCP_ROUTE = Resource("gateway.networking.k8s.io/v1alpha2", "tcproutes", "TCPRoute")
UDP_ROUTE = Resource("gateway.networking.k8s.io/v1alpha2", "udproutes", "UDPRoute")
ISTIO_GATEWAY = Resource("networking.istio.io/v1", "gateways", "Gateway")
VIRTUAL_SERVICE = Resource("networking.istio.io/v1", "virtualservices", "VirtualService")
KINDS = (GW_GATEWAY, TCP_ROUTE, UDP_ROUTE, ISTIO_GATEWAY, VIRTUAL_SERVICE, SERVICES)


def labels(config: Config) -> dict[str, str]:
    return {MANAGED_BY: "pipeops-agent", OWNER: config.agent.name}


def selector(config: Config) -> str:
    return f"{OWNER}={config.agent.name}"


@dataclass(frozen=True)
class Desired:
    resource: Resource
    namespace: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def label(self) -> str:
        return f"{self.resource.kind} {self.namespace}/{self.name}"


def _object(resource: Resource, name: str, namespace: str, config: Config,
            spec: dict[str, Any]) -> Desired:
    return Desired(resource, namespace, {
        "apiVersion": resource.api_version, "kind": resource.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels(config)},
        "spec": spec})


def desired(config: Config) -> list[Desired]:
    """The objects the settings describe (none when ``gateway.enabled`` is false)."""
    g = config.gateway
    if not g.enabled:
        return []
    name, namespace = config.agent.name, config.kubernetes.namespace
    single_vm = g.environment.mode == "single-vm"
    out: list[Desired] = []
    if g.gateway_api.enabled:
        spec: dict[str, Any] = {
            "gatewayClassName": g.gateway_api.gateway_class,
            "listeners": [{"name": lst["name"], "port": lst["port"],
                           "protocol": lst["protocol"],
                           "allowedRoutes": {"namespaces": {"from": "Same"},
                                             "kinds": [{"kind": f"{lst['protocol']}Route"}]}}
                          for lst in g.gateway_api.listeners]}
        if single_vm:
            spec["addresses"] = [{"type": "IPAddress", "value": g.environment.vm_ip}]
        out.append(_object(GW_GATEWAY, name, namespace, config, spec))
        for resource, routes in ((TCP_ROUTE, g.gateway_api.tcp_routes),
                                 (UDP_ROUTE, g.gateway_api.udp_routes)):
            for route in routes:
                refs = [{"name": ref["name"], "namespace": ref.get("namespace") or namespace,
                         "port": ref["port"],
                         **({"weight": ref["weight"]} if "weight" in ref else {})}
                        for ref in route["backendRefs"]]
                out.append(_object(resource, route["name"], namespace, config, {
                    "parentRefs": [{"name": name, "sectionName": route["sectionName"]}],
                    "rules": [{"backendRefs": refs}]}))
    if g.istio.enabled:
        servers = [{"port": dict(server["port"]), "hosts": server.get("hosts") or ["*"],
                    **({"tls": server["tls"]} if server.get("tls") else {})}
                   for server in g.istio.servers]
        out.append(_object(ISTIO_GATEWAY, name, namespace, config,
                           {"selector": dict(g.istio.selector), "servers": servers}))
        if g.istio.tcp_routes or g.istio.tls_routes:
            spec = {"hosts": ["*"], "gateways": [name]}
            if g.istio.tcp_routes:
                spec["tcp"] = [{"match": [{"port": r["port"]}],
                                "route": [_destination(r)]} for r in g.istio.tcp_routes]
            if g.istio.tls_routes:
                spec["tls"] = [{"match": [{"port": r["port"], "sniHosts": list(r["sniHosts"])}],
                                "route": [_destination(r)]} for r in g.istio.tls_routes]
            out.append(_object(VIRTUAL_SERVICE, name, namespace, config, spec))
        if g.istio.service.create:
            spec = {"type": "LoadBalancer", "selector": dict(g.istio.selector),
                    "ports": [{"name": s["port"]["name"], "port": s["port"]["number"],
                               "targetPort": s["port"]["number"], "protocol": "TCP"}
                              for s in g.istio.servers]}
            if single_vm:
                spec["externalIPs"] = [g.environment.vm_ip]
            out.append(_object(SERVICES, f"{name}-istio-ingress", g.istio.service.namespace,
                               config, spec))
    return out


def _destination(route: dict[str, Any]) -> dict[str, Any]:
    destination = route["destination"]
    return {"destination": {"host": destination["host"],
                            "port": {"number": destination["port"]}}}


def ours(obj: dict[str, Any], config: Config) -> bool:
    """Made by this agent's settings (its labels), so ours to change or delete."""
    found = (obj.get("metadata") or {}).get("labels") or {}
    return bool(found.get(OWNER) == config.agent.name
                and found.get(MANAGED_BY) == "pipeops-agent")
