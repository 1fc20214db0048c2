"""Loading the configuration in layers, with one clear line for a bad value.

Precedence, lowest first: built-in defaults, the YAML file (``--config``, else
``~/.pipeops-agent.yaml`` if present), environment variables (the table ``ENV_VARS``),
then command-line flags (``--set section.key=value`` and the few named flags each
service adds). Every leaf remembers where its value came from, so an invalid value is
reported as one line naming the key, the value's source and what was expected; the
process then exits with code 2 (``ConfigError.exit_code``).

Why not pydantic-settings: its sources do not say which of them supplied a value (the
error line names the file, the env var or the flag), the env names here are a fixed
table rather than a prefix scheme (``GATEWAY_GWAPI_LISTENERS_JSON``), and the file and
flag layers would be custom sources anyway: it would add a dependency and keep all of
this code.
"""

from __future__ import annotations

import json
import os
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agentkit.config.schema import Config

DEFAULT_CONFIG_PATH = Path("~/.pipeops-agent.yaml")

# Environment variable -> dotted key. Values ending in _JSON are parsed as JSON.
ENV_VARS: dict[str, str] = {
    "PIPEOPS_API_URL": "pipeops.api_url",
    "PIPEOPS_TOKEN": "pipeops.token",
    "PIPEOPS_DASHBOARD_TOKEN": "api.token",
    "PIPEOPS_TIMEOUT": "pipeops.timeout",
    "PIPEOPS_HEARTBEAT_INTERVAL": "pipeops.heartbeat_interval",
    "PIPEOPS_CLUSTER_NAME": "agent.cluster_name",
    "PIPEOPS_AGENT_ID": "agent.id",
    "PIPEOPS_AGENT_NAME": "agent.name",
    "PIPEOPS_PORT": "agent.port",
    "PIPEOPS_ENABLE_INGRESS_SYNC": "agent.enable_ingress_sync",
    "PIPEOPS_STATE_DIR": "agent.state_dir",
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
    "GATEWAY_INGRESS_CLASSES": "gateway.ingress_classes",
    "GATEWAY_ROUTING_MODE": "gateway.routing_mode",
    "GATEWAY_PUBLIC_ENDPOINT": "gateway.public_endpoint",
    "GATEWAY_ALLOW_MASS_DELETE": "gateway.allow_mass_delete",
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
    """Invalid configuration: ``str(err)`` is the one line to print before exiting 2.

    One line by construction: whatever a message quotes (a key with a newline in it, a
    value with control characters) is escaped, and the line is bounded."""

    exit_code = 2
    MAX_LINE = 500

    def __init__(self, message: str) -> None:
        line = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
        if len(line) > self.MAX_LINE:
            line = line[:self.MAX_LINE - 3] + "..."
        super().__init__(line)


def _set(tree: dict[str, Any], dotted: str, value: Any,
         sources: Mapping[str, str] | None = None, source: str = "") -> None:
    """Set ``dotted`` in ``tree``. A section that an earlier layer gave as a scalar is a
    ConfigError naming both sources, never silently replaced by the later key's mapping."""
    *parents, leaf = dotted.split(".")
    walked: list[str] = []
    for part in parents:
        walked.append(part)
        child = tree.setdefault(part, {})
        if not isinstance(child, dict):
            section = ".".join(walked)
            given = (sources or {}).get(section, "an earlier layer")
            raise ConfigError(f"config error: {section} = <{type(child).__name__}> (from "
                              f"{given}): expected a mapping of settings, as "
                              f"{source or 'a later layer'} sets {dotted}")
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


def _scalar(text: str, dotted: str, source: str) -> Any:
    """A string from env or a flag: JSON for structured keys, else the string itself.
    Text that is not JSON stays a string (the schema then says what it expected); JSON
    nested past ``MAX_NESTING`` or with a number too long to read is a ConfigError."""
    if text.strip().startswith(("[", "{")) or dotted in _MAP_KEYS:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
        except (ValueError, RecursionError) as exc:  # a 5,000-digit number, deep nesting
            why = "nested too deeply" if isinstance(exc, RecursionError) \
                else "a number too long to read"
            raise ConfigError(f"config error: {dotted} (from {source}): {why}") from None
    return text


# No setting of the agent nests deeper than a few levels or needs thousands of values:
# past these a document is a mistake (or a YAML alias bomb: ``&a [*a, *a, ...]`` repeated
# makes a few lines stand for billions of nodes) and is refused before anything walks it.
MAX_NESTING = 32
MAX_NODES = 20_000


def _check_size(document: Any, where: str) -> None:
    """ConfigError if ``document`` nests deeper than MAX_NESTING or has more than
    MAX_NODES nodes, counting a node reached through several aliases each time (so a
    mapping that contains itself is refused too). Iterative: no recursion to overflow."""
    todo: list[tuple[Any, int]] = [(document, 0)]
    seen = 0
    while todo:
        node, depth = todo.pop()
        seen += 1
        if seen > MAX_NODES:
            raise ConfigError(f"{where}: more than {MAX_NODES} values (a YAML alias "
                              "repeated too often?)")
        if isinstance(node, dict):
            children: list[Any] = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth >= MAX_NESTING:
            raise ConfigError(f"{where}: nested too deeply (more than {MAX_NESTING} levels)")
        todo.extend((child, depth + 1) for child in children)


_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 80
_SHOW.maxlevel = 3


def _describe_value(value: Any, secret: bool) -> str:
    if secret:
        return "'***'"
    shown = _SHOW.repr(value)  # bounded however large or self-containing the value is
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
            text = file_path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise ConfigError(f"config file {file_path}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {file_path}: not UTF-8 text (byte {exc.start} "
                              "cannot be decoded)") from None
        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"config file {file_path}: not valid YAML{where}") from None
        except RecursionError:
            raise ConfigError(f"config file {file_path}: nested too deeply") from None
        except ValueError as exc:  # a value YAML recognises but cannot build: a number
            # past Python's digit limit, a timestamp of month 13
            reason = str(exc).split(":", 1)[0][:80]
            raise ConfigError(f"config file {file_path}: a value cannot be read "
                              f"({reason})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {file_path}: expected a mapping of sections")
        _check_size(data, f"config file {file_path}")
        for dotted, value in _flatten(data).items():
            _set(raw, dotted, value)
            sources[dotted] = f"file {file_path}"

    for name, dotted in ENV_VARS.items():
        if name in env:
            _set(raw, dotted, _scalar(env[name], dotted, f"env {name}"), sources,
                 f"env {name}")
            sources[dotted] = f"env {name}"

    for dotted, value in (overrides or {}).items():
        flag = f"flag {(flag_names or {}).get(dotted, '--set ' + dotted)}"
        _set(raw, dotted, _scalar(value, dotted, flag) if isinstance(value, str) else value,
             sources, flag)
        sources[dotted] = flag

    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, raw, sources)) from None


def _source(key: str, sources: dict[str, str]) -> str:
    """Where the longest set prefix of ``key`` came from ("default" if none was set)."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in sources:
            return sources[".".join(parts[:end])]
    return "default"


def _explain(exc: ValidationError, raw: dict[str, Any], sources: dict[str, str]) -> str:
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    dotted = ".".join(loc)
    message = error["msg"].removeprefix("Value error, ")
    # A section's own check (several keys together) names the key it is about first:
    # the source is that key's, and the message says the rest.
    named = re.match(r"[a-z_]+(\.[a-z_]+)+", message) if error["type"] == "value_error" else None
    if named and named.group(0).startswith(dotted + "."):
        return f"config error: {message} (from {_source(named.group(0), sources)})"
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
