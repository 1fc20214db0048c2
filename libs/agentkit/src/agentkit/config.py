"""The agent's whole configuration: one pydantic model, loaded in layers.

Precedence, lowest first: built-in defaults, the YAML file (``--config``, else
``~/.pipeops-agent.yaml`` if present), environment variables (the table ``ENV_VARS``),
then command-line flags (``--set section.key=value`` and the few named flags each
service adds). Every leaf remembers where its value came from, so an invalid value is
reported as one line naming the key, the value's source and what was expected; the
process then exits with code 2 (``ConfigError.exit_code``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
)

DEFAULT_CONFIG_PATH = Path("~/.pipeops-agent.yaml")

_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    """Accept ``30s``, ``5m``, ``250ms``, ``1h`` or a bare number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like 30s, 5m or 1.5")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2)]
    raise ValueError("expected a duration like 30s, 5m or 1.5")


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0)]
Port = Annotated[int, Field(ge=0, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class AgentConfig(_Section):
    id: str = Field("", description="agent id; empty: the stored one, else generated once")
    name: str = Field("pipeops-agent", description="names its state Secret/ConfigMap: a DNS label")
    cluster_name: str = Field("default-cluster", description="its name at the control plane")
    labels: dict[str, str] = Field(default_factory=dict, description="sent at registration")
    port: Port = Field(8080, description="the http-api's listening port")
    host: str = Field("0.0.0.0", description="the http-api's listening address")
    enable_websocket: bool = Field(True, description="serve the WebSocket event stream")
    enable_sse: bool = Field(True, description="serve the SSE event stream")
    enable_ingress_sync: bool = Field(False, description="publish Ingress routes (gateway)")
    state_dir: Path = Field(Path("/var/run/pipeops"), description="the shared state volume")
    node_name: str = Field("", description="from the pod's fieldRef")
    node_ip: str = Field("", description="the node's IP (status.hostIP): replaces NODE_IP in "
                         "forward addresses, e.g. the kubelet forward NODE_IP:10250")
    pod_name: str = Field("", description="from the pod's fieldRef")
    pod_namespace: str = Field("", description="from the pod's fieldRef")

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
        return value.rstrip("/")

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr) -> SecretStr:
        # A token read with --from-file often ends with a newline: drop it. Anything
        # else a header cannot carry is refused here rather than retried forever.
        token = value.get_secret_value().strip()
        if any(ch.isspace() or not ch.isprintable() for ch in token):
            raise ValueError("the token contains whitespace or control characters")
        return SecretStr(token)


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


class TunnelConfig(_Section):
    enabled: bool = True
    forwards: list[ForwardConfig] = Field(
        default_factory=list, max_length=64,  # a control plane keeps 64 listeners a cluster
        description="what may be dialled; empty: kubernetes-api, kubelet (with a node_ip), "
                    "agent-http")
    window: int = Field(256 * 1024, ge=1024, le=16 * 1024 * 1024, description="per-stream credit")
    max_frame: int = Field(64 * 1024, ge=1024, le=1024 * 1024,
                           description="ignored: the DATA frame limit is fixed at 64 KiB")
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
    service: IstioServiceConfig = Field(default_factory=IstioServiceConfig)
    servers: list[dict[str, Any]] = Field(default_factory=list)
    tcp_routes: list[dict[str, Any]] = Field(default_factory=list)
    tls_routes: list[dict[str, Any]] = Field(default_factory=list)


class GatewayAPIConfig(_Section):
    enabled: bool = False
    gateway_class: str = "istio"
    listeners: list[dict[str, Any]] = Field(default_factory=list)
    tcp_routes: list[dict[str, Any]] = Field(default_factory=list)
    udp_routes: list[dict[str, Any]] = Field(default_factory=list)


class GatewayEnvironmentConfig(_Section):
    mode: Literal["managed", "single-vm"] = "managed"
    vm_ip: str = ""


class GatewayConfig(_Section):
    enabled: bool = Field(False, description="create Istio / Gateway API resources")
    environment: GatewayEnvironmentConfig = Field(default_factory=GatewayEnvironmentConfig)
    istio: IstioConfig = Field(default_factory=IstioConfig)
    gateway_api: GatewayAPIConfig = Field(default_factory=GatewayAPIConfig)
    sync_batch_size: int = Field(500, ge=1, description="ingresses per routes/sync request")
    public_wait: Duration = Field(120.0, description="how long to wait for a LoadBalancer address")


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


class Config(_Section):
    agent: AgentConfig = Field(default_factory=AgentConfig)
    pipeops: PipeopsConfig = Field(default_factory=PipeopsConfig)
    tunnel: TunnelConfig = Field(default_factory=TunnelConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)
    grpc: GrpcConfig = Field(default_factory=GrpcConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)

    def secrets(self) -> list[str]:
        """Values that must never be printed."""
        return [s for s in (self.pipeops.token.get_secret_value(),) if s]


# Environment variable -> dotted key. Values ending in _JSON are parsed as JSON.
ENV_VARS: dict[str, str] = {
    "PIPEOPS_API_URL": "pipeops.api_url",
    "PIPEOPS_TOKEN": "pipeops.token",
    "PIPEOPS_TIMEOUT": "pipeops.timeout",
    "PIPEOPS_HEARTBEAT_INTERVAL": "pipeops.heartbeat_interval",
    "PIPEOPS_CLUSTER_NAME": "agent.cluster_name",
    "PIPEOPS_AGENT_ID": "agent.id",
    "PIPEOPS_AGENT_NAME": "agent.name",
    "PIPEOPS_PORT": "agent.port",
    "PIPEOPS_ENABLE_WEBSOCKET": "agent.enable_websocket",
    "PIPEOPS_ENABLE_SSE": "agent.enable_sse",
    "PIPEOPS_ENABLE_INGRESS_SYNC": "agent.enable_ingress_sync",
    "PIPEOPS_STATE_DIR": "agent.state_dir",
    "PIPEOPS_NODE_NAME": "agent.node_name",
    "PIPEOPS_NODE_IP": "agent.node_ip",
    "PIPEOPS_POD_NAME": "agent.pod_name",
    "PIPEOPS_POD_NAMESPACE": "agent.pod_namespace",
    "PIPEOPS_LOG_LEVEL": "logging.level",
    "PIPEOPS_LOG_FORMAT": "logging.format",
    "PIPEOPS_TUNNEL_ENABLED": "tunnel.enabled",
    "PIPEOPS_KUBECONFIG": "kubernetes.kubeconfig",
    "PIPEOPS_IN_CLUSTER": "kubernetes.in_cluster",
    "PIPEOPS_NAMESPACE": "kubernetes.namespace",
    "GATEWAY_ENABLED": "gateway.enabled",
    "GATEWAY_ENVIRONMENT_MODE": "gateway.environment.mode",
    "GATEWAY_ENVIRONMENT_VM_IP": "gateway.environment.vm_ip",
    "GATEWAY_ISTIO_ENABLED": "gateway.istio.enabled",
    "GATEWAY_ISTIO_SERVICE_CREATE": "gateway.istio.service.create",
    "GATEWAY_ISTIO_SERVICE_NAMESPACE": "gateway.istio.service.namespace",
    "GATEWAY_ISTIO_SERVERS_JSON": "gateway.istio.servers",
    "GATEWAY_ISTIO_TCP_ROUTES_JSON": "gateway.istio.tcp_routes",
    "GATEWAY_ISTIO_TLS_ROUTES_JSON": "gateway.istio.tls_routes",
    "GATEWAY_GATEWAY_API_ENABLED": "gateway.gateway_api.enabled",
    "GATEWAY_GATEWAY_API_GATEWAY_CLASS": "gateway.gateway_api.gateway_class",
    "GATEWAY_GWAPI_LISTENERS_JSON": "gateway.gateway_api.listeners",
    "GATEWAY_GWAPI_TCP_ROUTES_JSON": "gateway.gateway_api.tcp_routes",
    "GATEWAY_GWAPI_UDP_ROUTES_JSON": "gateway.gateway_api.udp_routes",
}


class ConfigError(Exception):
    """Invalid configuration: ``str(err)`` is the one line to print before exiting 2."""

    exit_code = 2


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[leaf] = value


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and dotted not in _MAP_KEYS:
            out.update(_flatten(value, f"{dotted}."))
        else:
            out[dotted] = value
    return out


_MAP_KEYS = {"agent.labels"}  # dict-valued leaves: replaced whole, not merged key by key


def _scalar(text: str, dotted: str) -> Any:
    """A string from env or a flag: JSON for structured keys, else the string itself."""
    if text.strip().startswith(("[", "{")) or dotted in _MAP_KEYS:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    return text


def _describe_value(value: Any, secret: bool) -> str:
    if secret:
        return "'***'"
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "...'"


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> Config:
    """Build the config: defaults < file < env < flags.

    ``overrides`` maps dotted keys to flag values; ``flag_names`` maps the same keys to the
    flag that set them, for error messages. Raises ConfigError.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}

    file_path = Path(path).expanduser() if path else DEFAULT_CONFIG_PATH.expanduser()
    if path or file_path.is_file():
        try:
            text = file_path.read_text()
        except OSError as exc:
            raise ConfigError(f"config file {file_path}: cannot read it: {exc.strerror}") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {file_path}: not valid YAML{where}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {file_path}: expected a mapping of sections")
        for dotted, value in _flatten(data).items():
            _set(raw, dotted, value)
            sources[dotted] = f"file {file_path}"

    for name, dotted in ENV_VARS.items():
        if name in env:
            _set(raw, dotted, _scalar(env[name], dotted))
            sources[dotted] = f"env {name}"

    for dotted, value in (overrides or {}).items():
        _set(raw, dotted, _scalar(value, dotted) if isinstance(value, str) else value)
        sources[dotted] = f"flag {(flag_names or {}).get(dotted, '--set ' + dotted)}"

    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, raw, sources)) from None


def _explain(exc: ValidationError, raw: dict[str, Any], sources: dict[str, str]) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    dotted = ".".join(loc)
    # The source is recorded on the longest prefix of the location that was set.
    source, value_key = "default", dotted
    for end in range(len(loc), 0, -1):
        key = ".".join(loc[:end])
        if key in sources:
            source, value_key = sources[key], key
            break
    if error["type"] == "extra_forbidden":
        return f"config error: unknown key {dotted} (from {source})"
    if error["type"] == "missing":
        return f"config error: {dotted} is required (from {source})"
    value: Any = raw
    for part in error["loc"]:
        if isinstance(value, dict):
            value = value.get(str(part))
        elif isinstance(value, list) and isinstance(part, int) and part < len(value):
            value = value[part]
        else:
            value = None
    secret = loc[-1] in {"token"} or value_key.endswith(".token")
    expected = error["msg"].removeprefix("Value error, ")
    shown = _describe_value(value, secret)
    return f"config error: {dotted} = {shown} (from {source}): {expected}"


def parse_set(items: list[str]) -> dict[str, str]:
    """``--set a.b=c`` pairs into a dict; a malformed pair is a ConfigError."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[a-z_]+(\.[a-z_]+)*", key):
            # the key alone: the value may be a secret (--set PIPEOPS_TOKEN=... by mistake)
            raise ConfigError(f"config error: --set {key[:80]!r}{'=...' if sep else ''}: "
                              "expected section.key=value with a lower-case dotted key")
        out[key] = value
    return out
