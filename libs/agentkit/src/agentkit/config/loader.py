"""Loading the configuration in layers, with one clear line for a bad value.

Precedence, lowest first: built-in defaults, the YAML file (``--config``, else
``~/.pipeops-agent.yaml`` if present), environment variables (the table ``ENV_VARS``),
then command-line flags (``--set section.key=value`` and the few named flags each
service adds). Every leaf remembers where its value came from, so an invalid value is
reported as one line naming the key, the value's source and what was expected; the
process then exits with code 2 (``ConfigError.exit_code``).

The values are checked by ``msgspec.convert`` against ``schema.Config`` (lax: ``"8080"``
is a port); ``explain`` turns its messages into that line. Booleans from env and flags take
the words pydantic took (yes/no, on/off, y/n, t/f, in any case), read here before msgspec
sees them (its lax mode takes only true/false/1/0).

Why not pydantic-settings: its sources do not say which of them supplied a value (the
error line names the file, the env var or the flag), the env names here are a fixed
table rather than a prefix scheme (``GATEWAY_GWAPI_LISTENERS_JSON``), and the file and
flag layers would be custom sources anyway; and pydantic itself cost ~10 MiB a container.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, get_origin

import msgspec
import yaml

from agentkit.config.explain import explain, schema_leaves
from agentkit.config.schema import ALIASES, Config, dec_hook

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


def _canonical(dotted: str) -> str:
    """``dotted`` with an alias (``schema.ALIASES``) at its start replaced by its key."""
    for alias, key in ALIASES.items():
        if dotted == alias or dotted.startswith(alias + "."):
            return key + dotted[len(alias):]
    return dotted


def _flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys (aliases read as their key) to leaf values. A key given both as itself
    and through an alias keeps its own value."""
    own: dict[str, Any] = {}
    aliased: dict[str, Any] = {}
    for given, value in _walk(tree, ""):
        dotted = _canonical(given)
        (own if dotted == given else aliased)[dotted] = value
    return {**{k: v for k, v in aliased.items() if k not in own}, **own}


def _walk(tree: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        given = f"{prefix}{key}"
        if isinstance(value, Mapping) and value and _canonical(given) not in _MAP_KEYS:
            yield from _walk(value, f"{given}.")
        else:
            yield given, value


_LEAVES = schema_leaves(Config)
# dict-valued leaves (agent.labels, the Istio selector): replaced whole, not merged key by
# key, and their keys may hold dots (app.kubernetes.io/name)
_MAP_KEYS = {key for key, kind in _LEAVES.items() if get_origin(kind) is dict}
# pydantic's boolean words, which env and flags (and quoted YAML) may use
_BOOLEANS = {**dict.fromkeys(("true", "1", "yes", "on", "y", "t"), True),
             **dict.fromkeys(("false", "0", "no", "off", "n", "f"), False)}


def _read_booleans(raw: dict[str, Any]) -> None:
    """Each boolean setting given as one of pydantic's words becomes True or False."""
    for dotted, kind in _LEAVES.items():
        if kind is not bool:
            continue
        *parents, leaf = dotted.split(".")
        node: Any = raw
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str):
            word = _BOOLEANS.get(node[leaf].lower())
            if word is not None:
                node[leaf] = word


def _scalar(text: str, dotted: str, source: str) -> Any:
    """A string from env or a flag: JSON for structured keys, else the string itself.
    Text that is not JSON stays a string (the schema then says what it expected); JSON
    nested past ``MAX_NESTING`` or with a number too long to read is a ConfigError, and so
    is text with bytes that were not UTF-8 (Python keeps them as lone surrogates, which no
    request, file or log line can carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # the value itself is not shown: it may be a token
        raise ConfigError(f"config error: {dotted} (from {source}): not UTF-8 text (character "
                          f"{exc.start + 1} is an undecodable byte)") from None
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
        _layer(raw, sources, data, f"file {file_path}")

    for name, dotted in ENV_VARS.items():
        if name in env:
            _set(raw, dotted, _scalar(env[name], dotted, f"env {name}"), sources,
                 f"env {name}")
            sources[dotted] = f"env {name}"

    for given, value in (overrides or {}).items():
        flag = f"flag {(flag_names or {}).get(given, '--set ' + given)}"
        dotted = _canonical(given)
        _set(raw, dotted, _scalar(value, dotted, flag) if isinstance(value, str) else value,
             sources, flag)
        sources[dotted] = flag

    return _convert(raw, sources)


def from_mapping(data: Mapping[str, Any], *, source: str = "mapping") -> Config:
    """The config that ``data`` (shaped as the YAML file is) describes, over the defaults,
    checked as ``load`` checks it: a bad value is a ConfigError naming ``source``. For
    code and tests that build a config without a file, env or flags."""
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    _check_size(data, source)
    _layer(raw, sources, data, source)
    return _convert(raw, sources)


def _layer(raw: dict[str, Any], sources: dict[str, str], data: Mapping[str, Any],
           source: str) -> None:
    for dotted, value in _flatten(data).items():
        _set(raw, dotted, value, sources, source)
        sources[dotted] = source


def _convert(raw: dict[str, Any], sources: dict[str, str]) -> Config:
    _read_booleans(raw)
    try:
        return msgspec.convert(raw, Config, strict=False, dec_hook=dec_hook)
    except msgspec.ValidationError as exc:
        raise ConfigError(explain(str(exc), raw, sources)) from None


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
