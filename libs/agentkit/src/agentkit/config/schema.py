"""The agent's configuration schema: one pydantic model per section, and their validators.

Only what a setting is, its default and what values it accepts; where values come from
(file, env, flags) and how a bad one is reported is ``agentkit.config.loader``'s job.
A setting nothing reads does not belong here.

The ``gateway`` section is the gateway container's: route sync (``agent.enable_ingress_sync``
turns it on; what is watched and how it is published) and TCP/UDP exposure
(``gateway.enabled``: Gateway API / Istio objects from the seed's settings, checked here so
a bad setting is one line and exit 2 before anything is applied).
Over 400 lines because every section of the one config lives here, side by side.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# No interval or timeout of the agent is meant to be longer than a day: a larger one (or
# .inf, which YAML reads as a float) is a typo that would stop a loop for ever.
MAX_DURATION = 86400.0


def _parse_duration(value: Any) -> Any:
    """Accept ``30s``, ``5m``, ``250ms``, ``1h`` or a bare number of seconds, finite and
    at most ``MAX_DURATION``."""
    seconds: float | None = None
    if isinstance(value, bool):
        pass
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds is None or not math.isfinite(seconds):
        raise ValueError("expected a duration like 30s, 5m or 1.5")
    if seconds > MAX_DURATION:
        raise ValueError(f"expected a duration of at most {MAX_DURATION:g}s (24h)")
    return seconds


def _header_token(value: SecretStr) -> SecretStr:
    """A bearer token as a header can carry it. One read with --from-file often ends
    with a newline: dropped. Anything else a header cannot carry is refused here rather
    than retried forever (the install token) or never matched (the dashboard token)."""
    token = value.get_secret_value().strip()
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ValueError("the token contains whitespace or control characters")
    if not token.isascii():
        raise ValueError("the token contains non-ASCII characters")
    return SecretStr(token)


def _not_bool(value: Any) -> Any:
    """YAML's ``true`` is an int to pydantic (port 1): a number must be written as one."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true/false")
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]
Int = Annotated[int, BeforeValidator(_not_bool)]
Float = Annotated[float, BeforeValidator(_not_bool)]
Port = Annotated[Int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class AgentConfig(_Section):
    id: str = Field("", description="agent id; empty: the stored one, else generated once")
    name: str = Field("pipeops-agent", description="names its state Secret/ConfigMap: a DNS label")
    cluster_name: str = Field("default-cluster", description="its name at the control plane")
    labels: dict[str, str] = Field(default_factory=dict, description="sent at registration")
    port: Port = Field(8080, description="the http-api's listening port")
    host: str = Field("0.0.0.0", description="the http-api's listening address")
    enable_ingress_sync: bool = Field(False, description="publish Ingress routes (gateway)")
    state_dir: Path = Field(Path("/var/run/pipeops"), description="the shared state volume")
    node_ip: str = Field("", description="the node's IP (status.hostIP): replaces NODE_IP in "
                         "forward addresses, e.g. the kubelet forward NODE_IP:10250")
    pod_name: str = Field("", description="from the pod's fieldRef")
    pod_namespace: str = Field("", description="from the pod's fieldRef: the gateway's "
                               "Events about itself (a refused mass delete) name its Pod")

    @field_validator("state_dir")
    @classmethod
    def _a_directory(cls, value: Path) -> Path:
        # Found at use, a file here would be a traceback in the registrar and a tunnel
        # waiting for ever; the nearest existing ancestor must be a directory too.
        probe = value
        try:
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            is_file = probe.exists() and not probe.is_dir()
        except OSError as exc:  # a name too long, a directory we may not search
            raise ValueError(f"cannot be checked: {exc.strerror or exc}") from None
        if is_file:
            where = "is" if probe == value else f"is under {probe}, which is"
            raise ValueError(f"expected a directory, but it {where} a file")
        return value

    @field_validator("name")
    @classmethod
    def _dns_label(cls, value: str) -> str:
        # It names Kubernetes objects: <name>-state (Secret), <name>-identity (ConfigMap).
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,55}[a-z0-9])?", value):
            raise ValueError("expected a DNS-1123 label (a-z, 0-9, '-') of at most "
                             "57 characters")
        return value


class ReconnectConfig(_Section):
    """Every retry: full jitter, a random wait up to ``min(backoff_max, backoff_base *
    2**attempt)``. Retries never stop (a service that gave up would only be restarted by
    the kubelet); both must be above 0, or a failing control plane is hammered."""

    backoff_base: Duration = Field(0.5, gt=0, description="first retry waits up to this long")
    backoff_max: Duration = Field(30.0, gt=0, description="no retry waits longer than this")

    @field_validator("backoff_max")
    @classmethod
    def _not_below_base(cls, value: float, info: ValidationInfo) -> float:
        base = info.data.get("backoff_base")
        if base is not None and value < base:
            raise ValueError(f"must not be below backoff_base ({base}s)")
        return value


class TLSConfig(_Section):
    insecure_skip_verify: bool = Field(False, description="never in production")
    ca_file: str = Field("", description="CA bundle trusted besides the system's CAs")


class PipeopsConfig(_Section):
    api_url: str = Field("https://api.pipeops.sh", description="the control plane's base URL")
    token: SecretStr = Field(SecretStr(""), description="install token (never logged)")
    timeout: Duration = Field(30.0, gt=0, description="per-request timeout to the control plane")
    heartbeat_interval: Duration = Field(5.0, gt=0, description="seconds between heartbeats")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    tls: TLSConfig = Field(default_factory=TLSConfig)

    @field_validator("api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError("expected an http:// or https:// URL")
        try:  # the host and port must parse here, not in the first request
            parts = urlsplit(value)
            host, _port = parts.hostname, parts.port
        except ValueError as exc:
            raise ValueError(f"expected an http:// or https:// URL with a valid host and "
                             f"port ({exc})") from None
        if not host:
            raise ValueError("expected an http:// or https:// URL with a host")
        if _port == 0:
            raise ValueError("expected an http:// or https:// URL with a port of 1-65535")
        return value.rstrip("/")

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return _header_token(value)


class ForwardConfig(_Section):
    name: str = Field(min_length=1, max_length=63)  # as the control plane accepts them
    local_addr: str = Field(description="host:port the agent dials")
    remote_port: Port = Field(0, description="0: the control plane allocates one")

    @field_validator("local_addr")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected host:port")
        return value


class TunnelSessionsConfig(_Section):
    enabled: bool = Field(
        True, description="session commands (start/stop/hibernate/wake) and their status "
                          "reports; the Kubernetes client is loaded on the first command")


class TunnelConfig(_Section):
    enabled: bool = True
    sessions: TunnelSessionsConfig = Field(default_factory=TunnelSessionsConfig)
    forwards: list[ForwardConfig] = Field(
        default_factory=list, max_length=64,  # a control plane keeps 64 listeners a cluster
        description="what may be dialled; empty: kubernetes-api, kubelet (with a node_ip), "
                    "agent-http")
    window: Int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024, description="per-stream credit")
    ping_interval: Duration = Field(15.0, gt=0)
    ping_timeout: Duration = Field(20.0, gt=0)
    dial_timeout: Duration = Field(10.0, gt=0)
    status_poll_interval: Duration = Field(2.0, gt=0, description="while allocation is pending")


class KubernetesConfig(_Section):
    in_cluster: bool = Field(True, description="use the pod's ServiceAccount")
    kubeconfig: str = Field("", description="path; used when in_cluster is false")
    namespace: str = Field("pipeops-system", description="where the agent keeps its state")
    service_account_token_path: str = Field(
        "/var/run/secrets/kubernetes.io/serviceaccount/token",
        description="the agent's own token",
    )
    control_plane_token_path: str = Field(
        "", description="token handed to the control plane at registration; empty: the agent's"
    )
    session_namespace: str = Field("pipeops-sessions", description="where session commands act")


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"

    @field_validator("level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class IstioServiceConfig(_Section):
    create: bool = False
    namespace: str = "istio-system"


class IstioConfig(_Section):
    enabled: bool = False
    selector: dict[str, str] = Field(default_factory=lambda: {"istio": "ingressgateway"},
                                     description="labels of the Istio ingress gateway pods")
    service: IstioServiceConfig = Field(default_factory=IstioServiceConfig)
    servers: list[dict[str, Any]] = Field(default_factory=list)
    tcp_routes: list[dict[str, Any]] = Field(default_factory=list)
    tls_routes: list[dict[str, Any]] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _seed_layout(cls, data: Any) -> Any:
        """The seed's YAML nests these (``gateway: {selector, servers}``,
        ``virtual_service: {tcp_routes, tls_routes}``): both layouts are read."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for section, keys in (("gateway", ("selector", "servers")),
                              ("virtual_service", ("tcp_routes", "tls_routes"))):
            nested = data.pop(section, None)
            if isinstance(nested, dict):
                for key in keys:
                    if key in nested:
                        data.setdefault(key, nested.pop(key))
                if nested:  # anything else is a typo: said as an unknown key
                    data[section] = nested
            elif nested is not None:
                data[section] = nested
        return data


class GatewayAPIConfig(_Section):
    enabled: bool = False
    gateway_class: str = "istio"
    listeners: list[dict[str, Any]] = Field(default_factory=list)
    tcp_routes: list[dict[str, Any]] = Field(default_factory=list)
    udp_routes: list[dict[str, Any]] = Field(default_factory=list)


class GatewayEnvironmentConfig(_Section):
    mode: Literal["managed", "single-vm"] = "managed"
    vm_ip: str = Field("", validation_alias=AliasChoices("vm_ip", "vmIP"))  # seed: vmIP


class GatewayConfig(_Section):
    enabled: bool = Field(False, description="create Istio / Gateway API resources")
    environment: GatewayEnvironmentConfig = Field(default_factory=GatewayEnvironmentConfig)
    istio: IstioConfig = Field(default_factory=IstioConfig)
    gateway_api: GatewayAPIConfig = Field(default_factory=GatewayAPIConfig)
    # route sync (agent.enable_ingress_sync): what is watched and how it is published
    ingress_classes: list[str] = Field(
        default_factory=list, description="publish only Ingresses of these classes (the "
        "default class counts for those naming none); empty: every Ingress")
    ingress_controller: str = Field(
        "", pattern=r"^$|^[a-z0-9-]+/[a-z0-9-]+$",
        description="namespace/name of the ingress controller's Service; empty: the first "
        "of the well-known ones that exists (ingress-nginx, traefik, ...)")
    http_routes: bool = Field(True, description="publish Gateway API HTTPRoutes too (when "
                              "the cluster serves them)")
    routing_mode: Literal["auto", "direct", "tunnel"] = Field(
        "auto", description="auto: direct when the controller has a public LoadBalancer "
        "address, else tunnel")
    public_endpoint: str = Field("", description="the address published in direct mode; "
                                 "empty: the load balancer's")
    sync_batch_size: Int = Field(500, ge=1, le=5000,
                                 description="ingresses per routes/sync request")
    public_wait: Duration = Field(120.0, description="how long to wait for a LoadBalancer address")
    debounce: Duration = Field(0.02, le=60, description="changes settle this long before "
                               "they are sent (one request per host per burst)")
    resync_interval: Duration = Field(300.0, ge=1, description="a full diff with a fresh "
                                      "list this often (repairs a watch that hung)")
    watch_timeout: Duration = Field(300.0, ge=1, le=3600, description="one watch request "
                                    "lasts at most this long, then resumes")
    mass_delete_share: Float = Field(0.5, gt=0, le=1, description="refuse a pass deleting "
                                     "more than this share of the routes ...")
    mass_delete_min: Int = Field(3, ge=0, description="... and more than this many")
    allow_mass_delete: bool = Field(False, description="let every mass delete through")

    @model_validator(mode="after")
    def _exposure(self) -> GatewayConfig:
        """The seed's rules for TCP/UDP exposure, checked only when it is on; defaults
        filled in (listener protocol TCP and name ``<proto>-<port>``, server protocol TCP)."""
        if not self.enabled:
            return self
        if self.environment.mode == "single-vm" and not _is_ip(self.environment.vm_ip):
            raise ValueError("gateway.environment.vm_ip must be the node's IP address when "
                             "gateway.environment.mode is single-vm")
        if self.gateway_api.enabled:
            check_gateway_api(self.gateway_api)
        if self.istio.enabled:
            check_istio(self.istio)
        return self


class GrpcConfig(_Section):
    host: str = Field("127.0.0.1", description="siblings talk over localhost only")
    registrar: Port = 50051
    tunnel: Port = 50052
    gateway: Port = 50053
    http_api: Port = 50054
    deadline: Duration = Field(2.0, gt=0, description="default deadline of a sibling call")
    probe_host: str = Field("", description="health-only listener for kubelet gRPC probes; "
                            "empty: none")
    registrar_probe: Port = Field(50061, description="the registrar's probe port (0: free)")
    tunnel_probe: Port = Field(50062, description="the tunnel's probe port (0: free)")
    gateway_probe: Port = Field(50063, description="the gateway's probe port (0: free)")


class MetricsConfig(_Section):
    host: str = "127.0.0.1"
    registrar: Port = 9101
    tunnel: Port = 9102
    gateway: Port = 9103


class ApiConfig(_Section):
    token: SecretStr = Field(SecretStr(""), description="the dashboard/API bearer token "
                             "(never logged); empty: generated once into the state dir")
    tls_cert_file: str = Field("", description="serve HTTPS with this certificate (PEM); "
                               "kubectl sends a token only over TLS")
    tls_key_file: str = Field("", description="its private key (PEM)")

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        return _header_token(value)

    @model_validator(mode="after")
    def _both_or_neither(self) -> ApiConfig:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("api.tls_cert_file and api.tls_key_file go together")
        return self


class RealtimeConfig(_Section):
    max_connections: Int = Field(100, ge=1, le=10000,
                                 description="SSE and WebSocket clients at once; more get 503")
    buffer: Int = Field(2000, ge=10, le=100000,
                        description="recent events kept for Last-Event-ID resume")
    client_queue: Int = Field(1000, ge=10, le=100000,
                              description="events queued for one client; a client that "
                              "falls this far behind is dropped")
    keepalive: Duration = Field(15.0, gt=0, description="seconds between SSE keep-alives")


class Config(_Section):
    agent: AgentConfig = Field(default_factory=AgentConfig)
    pipeops: PipeopsConfig = Field(default_factory=PipeopsConfig)
    tunnel: TunnelConfig = Field(default_factory=TunnelConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    grpc: GrpcConfig = Field(default_factory=GrpcConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    realtime: RealtimeConfig = Field(default_factory=RealtimeConfig)

    def secrets(self) -> list[str]:
        """Values that must never be printed."""
        return [s for s in (self.pipeops.token.get_secret_value(),
                            self.api.token.get_secret_value()) if s]


# --- TCP/UDP exposure: the seed's validation rules ---------------------------------------

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _is_ip(value: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _port(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise ValueError(f"{where} must be a port number (1-65535), not {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not _LABEL.match(value):
        raise ValueError(f"{where} must be a DNS label (a-z, 0-9, '-'), not {value!r}")
    return value


def _backend_refs(route: dict[str, Any], where: str) -> None:
    refs = route.get("backendRefs")
    if not isinstance(refs, list) or not refs:
        raise ValueError(f"{where}.backendRefs must list at least one backend")
    for j, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise ValueError(f"{where}.backendRefs[{j}] must be an object")
        _name(ref.get("name"), f"{where}.backendRefs[{j}].name")
        _port(ref.get("port"), f"{where}.backendRefs[{j}].port")
        if "namespace" in ref:
            _name(ref["namespace"], f"{where}.backendRefs[{j}].namespace")


def check_gateway_api(cfg: GatewayAPIConfig) -> None:
    where = "gateway.gateway_api"
    if not cfg.listeners:
        raise ValueError(f"{where}.listeners: at least one listener is required when "
                         f"{where}.enabled is true")
    protocols: dict[str, str] = {}
    for i, listener in enumerate(cfg.listeners):
        at = f"{where}.listeners[{i}]"
        port = _port(listener.get("port"), f"{at}.port")
        protocol = str(listener.get("protocol") or "TCP").upper()
        if protocol not in ("TCP", "UDP"):
            raise ValueError(f"{at}.protocol must be TCP or UDP, not {protocol!r}")
        name = _name(listener.get("name") or f"{protocol.lower()}-{port}", f"{at}.name")
        if name in protocols:
            raise ValueError(f"{at}.name {name!r} is used twice")
        listener.update(name=name, port=port, protocol=protocol)
        protocols[name] = protocol
    for kind, routes in (("TCP", cfg.tcp_routes), ("UDP", cfg.udp_routes)):
        names: set[str] = set()
        for i, route in enumerate(routes):
            at = f"{where}.{kind.lower()}_routes[{i}]"
            name = _name(route.get("name"), f"{at}.name")
            if name in names:
                raise ValueError(f"{at}.name {name!r} is used twice")
            names.add(name)
            section = route.get("sectionName")
            if protocols.get(str(section)) != kind:
                known = ", ".join(n for n, p in protocols.items() if p == kind) or "none"
                raise ValueError(f"{at}.sectionName must name a {kind} listener ({known}), "
                                 f"not {section!r}")
            _backend_refs(route, at)


def check_istio(cfg: IstioConfig) -> None:
    where = "gateway.istio"
    ports: set[int] = set()
    for i, server in enumerate(cfg.servers):
        at = f"{where}.servers[{i}]"
        port = server.get("port")
        if not isinstance(port, dict):
            raise ValueError(f"{at}.port must be {{number, name, protocol}}")
        number = _port(port.get("number"), f"{at}.port.number")
        protocol = str(port.get("protocol") or "TCP").upper()
        port.update(number=number, protocol=protocol,
                    name=_name(port.get("name") or f"{protocol.lower()}-{number}",
                               f"{at}.port.name"))
        ports.add(number)
    for kind, routes in (("tcp", cfg.tcp_routes), ("tls", cfg.tls_routes)):
        for i, route in enumerate(routes):
            at = f"{where}.{kind}_routes[{i}]"
            _name(route.get("name"), f"{at}.name")
            port = _port(route.get("port"), f"{at}.port")
            if port not in ports:
                raise ValueError(f"{at}.port {port} has no server in {where}.servers")
            destination = route.get("destination")
            if not isinstance(destination, dict) or not destination.get("host"):
                raise ValueError(f"{at}.destination must be {{host, port}}")
            _port(destination.get("port"), f"{at}.destination.port")
            if kind == "tls" and not route.get("sniHosts"):
                raise ValueError(f"{at}.sniHosts: a TLS route needs at least one SNI host")
