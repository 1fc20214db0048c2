"""The agent's configuration schema: one ``msgspec.Struct`` per section, and their checks.

Only what a setting is, its default and what values it accepts; where values come from
(file, env, flags) and how a bad one is reported is ``agentkit.config.loader``'s job.
A setting nothing reads does not belong here.

msgspec, not pydantic: registrar, tunnel and gateway needed pydantic for this schema alone,
and pydantic, pydantic_core and the built schema cost ~10 MiB in each container (issue 15).
How a rule is said here:
* a bound on a plain type is ``msgspec.Meta`` (``Annotated[int, Meta(ge=0, le=65535)]``);
* a bound on a ``Duration`` is ``Range`` beside it, checked for every field by
  ``_Section.__post_init__`` (msgspec's Meta takes no bound on a custom type);
* the custom types (``Duration``, ``SecretStr``, ``Path``) are read by ``dec_hook``;
* a rule over several fields is the section's ``check()``, whose ``ValueError`` starts with
  the field it is about (``backoff_max: ...``) or with a full dotted key
  (``gateway.environment.vm_ip ...``): msgspec reports it at the section's path, and the
  loader names the key from that.
* other spellings of a key (the Istio seed's layout, ``vmIP``) are ``ALIASES``, which the
  loader reads as the key.

The ``gateway`` section is the gateway container's: route sync (``agent.enable_ingress_sync``
turns it on; what is watched and how it is published) and TCP/UDP exposure
(``gateway.enabled``: Gateway API / Istio objects from the seed's settings, checked here so
a bad setting is one line and exit 2 before anything is applied).
Over 400 lines because every section of the one config lives here, side by side.
"""

from __future__ import annotations

import functools
import math
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, field

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
# No interval or timeout of the agent is meant to be longer than a day: a larger one (or
# .inf, which YAML reads as a float) is a typo that would stop a loop for ever.
MAX_DURATION = 86400.0


@dataclass(frozen=True)
class Range:
    """Bounds of a ``Duration`` field: ``Annotated[Duration, Range(gt=0, le=60)]``."""

    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    def violated(self, value: float) -> str | None:
        """The bound ``value`` breaks, as ``> 0`` or ``<= 60s``; None if it keeps all."""
        for sign, bound, holds in (("<=", self.le, operator.le), ("<", self.lt, operator.lt),
                                   (">=", self.ge, operator.ge), (">", self.gt, operator.gt)):
            if bound is not None and not holds(value, bound):
                return f"{sign} {bound:g}s" if bound else f"{sign} 0"
        return None


class Duration(float):
    """Seconds, written ``30s``, ``5m``, ``250ms``, ``1h`` or as a number: finite, at most
    ``MAX_DURATION``, and never negative (``FLOOR``, checked after the field's own Range)."""

    FLOOR: ClassVar[Range] = Range(ge=0)

    @classmethod
    def parse(cls, value: Any) -> Duration:
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
        return cls(seconds)


class SecretStr:
    """A value that must never be printed: its repr and str are masked; the services read
    it with ``get_secret_value()``."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"SecretStr({str(self)!r})"

    def __str__(self) -> str:
        return "**********" if self._value else ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SecretStr) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _header_token(value: Any) -> SecretStr:
    """A bearer token as a header can carry it (every secret of this config is one). One
    read with --from-file often ends with a newline: dropped. Anything else a header cannot
    carry is refused here rather than retried forever (the install token) or never matched
    (the dashboard token)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not isinstance(value, str):
        raise ValueError("expected a string")
    token = value.strip()
    if any(ch.isspace() or not ch.isprintable() for ch in token):
        raise ValueError("the token contains whitespace or control characters")
    if not token.isascii():
        raise ValueError("the token contains non-ASCII characters")
    return SecretStr(token)


def dec_hook(kind: type, value: Any) -> Any:
    """Read the schema's custom types for ``msgspec.convert`` (a ValueError is the error
    line's expectation)."""
    if kind is Duration:
        return value if type(value) is Duration else Duration.parse(value)
    if kind is SecretStr:
        return _header_token(value)
    if kind is Path:
        if isinstance(value, Path):
            return value
        if isinstance(value, str) and "\x00" not in value:  # no file name holds a NUL
            return Path(value)
        raise ValueError("expected a path")
    raise NotImplementedError(f"no reader for {kind!r}")


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under ``Annotated[...]`` and its metadata."""
    extras: list[Any] = []
    while get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        extras.extend(more)
    return annotation, extras


@functools.cache
def _ranges(section: type[msgspec.Struct]) -> tuple[tuple[str, tuple[Range, ...]], ...]:
    """Each field's Ranges (the field's own, then its type's FLOOR), read once a class."""
    out = []
    for info in msgspec.structs.fields(section):
        base, extras = _unwrap(info.type)
        ranges = [extra for extra in extras if isinstance(extra, Range)]
        floor = getattr(base, "FLOOR", None)
        if isinstance(floor, Range):
            ranges.append(floor)
        if ranges:
            out.append((info.name, tuple(ranges)))
    return tuple(out)


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    def __post_init__(self) -> None:
        for name, ranges in _ranges(type(self)):
            value = getattr(self, name)
            for bounds in ranges:
                broken = bounds.violated(value)
                if broken:
                    raise ValueError(f"{name}: expected a duration {broken}")
        self.check()

    def check(self) -> None:
        """The section's rules over several fields: ValueError('<field>: expected ...')."""


Port = Annotated[int, Meta(ge=0, le=65535)]
Positive = Annotated[Duration, Range(gt=0)]  # an interval or timeout a loop waits on
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,55}[a-z0-9])?")


class AgentConfig(_Section):
    id: str = ""  # agent id; empty: the stored one, else generated once
    name: str = "pipeops-agent"  # names its state Secret/ConfigMap: a DNS label
    cluster_name: str = "default-cluster"  # its name at the control plane
    labels: dict[str, str] = field(default_factory=dict)  # sent at registration
    port: Port = 8080  # the http-api's listening port
    host: str = "0.0.0.0"  # the http-api's listening address
    enable_ingress_sync: bool = False  # publish Ingress routes (gateway)
    state_dir: Path = field(default_factory=lambda: Path("/var/run/pipeops"))  # shared volume
    # the node's IP (status.hostIP): replaces NODE_IP in forward addresses, e.g. the
    # kubelet forward NODE_IP:10250
    node_ip: str = ""
    pod_name: str = ""  # from the pod's fieldRef
    # from the pod's fieldRef: the gateway's Events about itself (a refused mass delete)
    # name its Pod
    pod_namespace: str = ""

    def check(self) -> None:
        # It names Kubernetes objects: <name>-state (Secret), <name>-identity (ConfigMap).
        if not _DNS_LABEL.fullmatch(self.name):
            raise ValueError("name: expected a DNS-1123 label (a-z, 0-9, '-') of at most "
                             "57 characters")
        # Found at use, a file here would be a traceback in the registrar and a tunnel
        # waiting for ever; the nearest existing ancestor must be a directory too.
        probe = self.state_dir
        try:
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            is_file = probe.exists() and not probe.is_dir()
        except (OSError, ValueError) as exc:  # a name too long, a NUL, no search permission
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise ValueError(f"state_dir: cannot be checked: {why}") from None
        if is_file:
            where = "is" if probe == self.state_dir else f"is under {probe}, which is"
            raise ValueError(f"state_dir: expected a directory, but it {where} a file")


class ReconnectConfig(_Section):
    """Every retry: full jitter, a random wait up to ``min(backoff_max, backoff_base *
    2**attempt)``. Retries never stop (a service that gave up would only be restarted by
    the kubelet); both must be above 0, or a failing control plane is hammered."""

    backoff_base: Positive = Duration(0.5)  # the first retry waits up to this long
    backoff_max: Positive = Duration(30.0)  # no retry waits longer than this

    def check(self) -> None:
        if self.backoff_max < self.backoff_base:
            raise ValueError(f"backoff_max: must not be below backoff_base "
                             f"({self.backoff_base:g}s)")


class TLSConfig(_Section):
    insecure_skip_verify: bool = False  # never in production
    ca_file: str = ""  # a CA bundle trusted besides the system's CAs


class PipeopsConfig(_Section):
    api_url: str = "https://api.pipeops.sh"  # the control plane's base URL
    token: SecretStr = field(default_factory=lambda: SecretStr(""))  # install token
    timeout: Positive = Duration(30.0)  # per-request timeout to the control plane
    heartbeat_interval: Positive = Duration(5.0)  # seconds between heartbeats
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)

    def check(self) -> None:
        if not re.match(r"^https?://[^\s/]+", self.api_url):
            raise ValueError("api_url: expected an http:// or https:// URL")
        try:  # the host and port must parse here, not in the first request
            parts = urlsplit(self.api_url)
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise ValueError(f"api_url: expected an http:// or https:// URL with a valid "
                             f"host and port ({exc})") from None
        if not host:
            raise ValueError("api_url: expected an http:// or https:// URL with a host")
        if port == 0:
            raise ValueError("api_url: expected an http:// or https:// URL with a port of "
                             "1-65535")
        self.api_url = self.api_url.rstrip("/")


class ForwardConfig(_Section):
    name: Annotated[str, Meta(min_length=1, max_length=63)]  # as the control plane takes it
    local_addr: str  # host:port the agent dials
    remote_port: Port = 0  # 0: the control plane allocates one

    def check(self) -> None:
        host, sep, port = self.local_addr.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("local_addr: expected host:port")


class TunnelSessionsConfig(_Section):
    # session commands (start/stop/hibernate/wake) and their status reports; the
    # Kubernetes client is loaded on the first command
    enabled: bool = True


class TunnelConfig(_Section):
    enabled: bool = True
    sessions: TunnelSessionsConfig = field(default_factory=TunnelSessionsConfig)
    # what may be dialled; empty: kubernetes-api, kubelet (with a node_ip), agent-http.
    # At most 64: a control plane keeps 64 listeners a cluster.
    forwards: Annotated[list[ForwardConfig], Meta(max_length=64)] = field(default_factory=list)
    window: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024  # stream credit
    ping_interval: Positive = Duration(15.0)
    ping_timeout: Positive = Duration(20.0)
    dial_timeout: Positive = Duration(10.0)
    status_poll_interval: Positive = Duration(2.0)  # while allocation is pending


class KubernetesConfig(_Section):
    in_cluster: bool = True  # use the pod's ServiceAccount
    kubeconfig: str = ""  # a path; used when in_cluster is false
    namespace: str = "pipeops-system"  # where the agent keeps its state
    # the agent's own token; in_cluster reads the API server's CA from ca.crt beside it
    service_account_token_path: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    # the token handed to the control plane at registration; empty: the agent's own
    control_plane_token_path: str = ""
    session_namespace: str = "pipeops-sessions"  # where session commands act


LEVELS = ("debug", "info", "warning", "error")


class LoggingConfig(_Section):
    level: str = "info"  # one of LEVELS, in any case
    format: Literal["json", "text"] = "json"

    def check(self) -> None:
        self.level = self.level.lower()
        if self.level not in LEVELS:
            raise ValueError("level: expected one of " + ", ".join(map(repr, LEVELS)))


class IstioServiceConfig(_Section):
    create: bool = False
    namespace: str = "istio-system"


class IstioConfig(_Section):
    enabled: bool = False
    # labels of the Istio ingress gateway pods
    selector: dict[str, str] = field(default_factory=lambda: {"istio": "ingressgateway"})
    service: IstioServiceConfig = field(default_factory=IstioServiceConfig)
    servers: list[dict[str, Any]] = field(default_factory=list)
    tcp_routes: list[dict[str, Any]] = field(default_factory=list)
    tls_routes: list[dict[str, Any]] = field(default_factory=list)


class GatewayAPIConfig(_Section):
    enabled: bool = False
    gateway_class: str = "istio"
    listeners: list[dict[str, Any]] = field(default_factory=list)
    tcp_routes: list[dict[str, Any]] = field(default_factory=list)
    udp_routes: list[dict[str, Any]] = field(default_factory=list)


class GatewayEnvironmentConfig(_Section):
    mode: Literal["managed", "single-vm"] = "managed"
    vm_ip: str = ""  # the seed spells it vmIP: see ALIASES


# Other spellings of a key, read as the key (a key given both ways: the key's own wins).
# The seed's YAML nests the Istio settings (``gateway: {selector, servers}``,
# ``virtual_service: {tcp_routes, tls_routes}``) and spells ``vmIP``.
ALIASES = {
    "gateway.istio.gateway.selector": "gateway.istio.selector",
    "gateway.istio.gateway.servers": "gateway.istio.servers",
    "gateway.istio.virtual_service.tcp_routes": "gateway.istio.tcp_routes",
    "gateway.istio.virtual_service.tls_routes": "gateway.istio.tls_routes",
    "gateway.environment.vmIP": "gateway.environment.vm_ip",
}


class GatewayConfig(_Section):
    enabled: bool = False  # create Istio / Gateway API resources
    environment: GatewayEnvironmentConfig = field(default_factory=GatewayEnvironmentConfig)
    istio: IstioConfig = field(default_factory=IstioConfig)
    gateway_api: GatewayAPIConfig = field(default_factory=GatewayAPIConfig)
    # route sync (agent.enable_ingress_sync): what is watched and how it is published.
    # Publish only Ingresses of these classes (the default class counts for those naming
    # none); empty: every Ingress.
    ingress_classes: list[str] = field(default_factory=list)
    # namespace/name of the ingress controller's Service; empty: the first of the
    # well-known ones that exists (ingress-nginx, traefik, ...)
    ingress_controller: Annotated[str, Meta(pattern=r"^([a-z0-9-]+/[a-z0-9-]+)?\Z")] = ""
    http_routes: bool = True  # publish Gateway API HTTPRoutes too (when the cluster has them)
    # auto: direct when the controller has a public LoadBalancer address, else tunnel
    routing_mode: Literal["auto", "direct", "tunnel"] = "auto"
    public_endpoint: str = ""  # the address published in direct mode; empty: the LB's
    sync_batch_size: Annotated[int, Meta(ge=1, le=5000)] = 500  # ingresses a routes/sync
    public_wait: Duration = Duration(120.0)  # how long to wait for a LoadBalancer address
    # changes settle this long before they are sent (one request per host per burst)
    debounce: Annotated[Duration, Range(le=60)] = Duration(0.02)
    # a full diff with a fresh list this often (repairs a watch that hung)
    resync_interval: Annotated[Duration, Range(ge=1)] = Duration(300.0)
    # one watch request lasts at most this long, then resumes
    watch_timeout: Annotated[Duration, Range(ge=1, le=3600)] = Duration(300.0)
    # refuse a pass deleting more than this share of the routes ...
    mass_delete_share: Annotated[float, Meta(gt=0, le=1)] = 0.5
    mass_delete_min: Annotated[int, Meta(ge=0)] = 3  # ... and more than this many
    allow_mass_delete: bool = False  # let every mass delete through

    def check(self) -> None:
        """The seed's rules for TCP/UDP exposure, checked only when it is on; defaults
        filled in (listener protocol TCP and name ``<proto>-<port>``, server protocol TCP)."""
        if not self.enabled:
            return
        if self.environment.mode == "single-vm" and not _is_ip(self.environment.vm_ip):
            raise ValueError("gateway.environment.vm_ip must be the node's IP address when "
                             "gateway.environment.mode is single-vm")
        if self.gateway_api.enabled:
            check_gateway_api(self.gateway_api)
        if self.istio.enabled:
            check_istio(self.istio)


class GrpcConfig(_Section):
    host: str = "127.0.0.1"  # siblings talk over localhost only
    registrar: Port = 50051
    tunnel: Port = 50052
    gateway: Port = 50053
    http_api: Port = 50054
    deadline: Positive = Duration(2.0)  # the default deadline of a sibling call
    probe_host: str = ""  # health-only listener for kubelet gRPC probes; empty: none
    registrar_probe: Port = 50061  # the registrar's probe port (0: a free one)
    tunnel_probe: Port = 50062  # the tunnel's probe port (0: a free one)
    gateway_probe: Port = 50063  # the gateway's probe port (0: a free one)


class MetricsConfig(_Section):
    host: str = "127.0.0.1"
    registrar: Port = 9101
    tunnel: Port = 9102
    gateway: Port = 9103


class ApiConfig(_Section):
    # the dashboard/API bearer token; empty: generated once into the state dir
    token: SecretStr = field(default_factory=lambda: SecretStr(""))
    # serve HTTPS with this certificate (PEM): kubectl sends a token only over TLS
    tls_cert_file: str = ""
    tls_key_file: str = ""  # its private key (PEM)

    def check(self) -> None:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("api.tls_cert_file and api.tls_key_file go together")


class RealtimeConfig(_Section):
    # SSE and WebSocket clients at once; more get 503
    max_connections: Annotated[int, Meta(ge=1, le=10000)] = 100
    buffer: Annotated[int, Meta(ge=10, le=100000)] = 2000  # kept for Last-Event-ID resume
    # events queued for one client; a client that falls this far behind is dropped
    client_queue: Annotated[int, Meta(ge=10, le=100000)] = 1000
    keepalive: Positive = Duration(15.0)  # seconds between SSE keep-alives


class Config(_Section):
    agent: AgentConfig = field(default_factory=AgentConfig)
    pipeops: PipeopsConfig = field(default_factory=PipeopsConfig)
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)
    kubernetes: KubernetesConfig = field(default_factory=KubernetesConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    gateway: GatewayConfig = field(default_factory=GatewayConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    realtime: RealtimeConfig = field(default_factory=RealtimeConfig)

    def secrets(self) -> list[str]:
        """Values that must never be printed."""
        return [s for s in (self.pipeops.token.get_secret_value(),
                            self.api.token.get_secret_value()) if s]


# --- TCP/UDP exposure: the seed's validation rules ---------------------------------------

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")


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
