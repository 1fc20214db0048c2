"""Which objects the pod touches, as ``Resource`` values: group/version, plural, kind.

A :class:`Resource` is all the layer needs to address any kind, built-in or custom
(Gateway API, Istio): ``agentkit.kube.transport`` fills the path template as the official
client's ``ApiClient`` does, so names are quoted in one place and no URL is assembled by
hand elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Resource:
    """One resource of the API: ``api_version`` as in manifests (``v1``, ``apps/v1``,
    ``gateway.networking.k8s.io/v1``), the plural used in paths, the kind, and whether
    objects live in a namespace."""

    api_version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    def at(self, api_version: str) -> Resource:
        """The same resource served at another version (discovered at run time)."""
        return Resource(api_version, self.plural, self.kind, self.namespaced)

    def template(self, namespace: str | None, named: bool, subresource: str = "") -> str:
        """The path template for ``Transport.param_serialize`` (``{namespace}``,
        ``{name}`` are filled and quoted there)."""
        root = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        path = root
        if self.namespaced and namespace:
            path += "/namespaces/{namespace}"
        path += f"/{self.plural}"
        if named:
            path += "/{name}"
        if subresource:
            path += f"/{subresource}"
        return path


NODES = Resource("v1", "nodes", "Node", namespaced=False)
NAMESPACES = Resource("v1", "namespaces", "Namespace", namespaced=False)
PODS = Resource("v1", "pods", "Pod")
SERVICES = Resource("v1", "services", "Service")
SECRETS = Resource("v1", "secrets", "Secret")
CONFIGMAPS = Resource("v1", "configmaps", "ConfigMap")
EVENTS = Resource("v1", "events", "Event")
PVCS = Resource("v1", "persistentvolumeclaims", "PersistentVolumeClaim")
DEPLOYMENTS = Resource("apps/v1", "deployments", "Deployment")
INGRESSES = Resource("networking.k8s.io/v1", "ingresses", "Ingress")
INGRESS_CLASSES = Resource("networking.k8s.io/v1", "ingressclasses", "IngressClass",
                           namespaced=False)
HTTP_ROUTES = Resource("gateway.networking.k8s.io/v1", "httproutes", "HTTPRoute")
GATEWAYS = Resource("gateway.networking.k8s.io/v1", "gateways", "Gateway")
