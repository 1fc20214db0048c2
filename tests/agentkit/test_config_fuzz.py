"""The config loader under hostile input, as hypothesis suites (thousands of cases each,
zero escapes): YAML files (random trees over the real keys, wrong types, huge numbers,
``.inf``/``.nan``, booleans for numbers, timestamps, aliases, bytes that are not UTF-8),
environment variable sets and command lines (``--set k=v`` and the named flags, through
the services' own parser). Every input either loads into a config whose every value is in
range, or is the loader's one error type (``ConfigError``, which every service prints as
one line and exits 2 on) with a one-line message that never shows a token; argparse's own
mistakes are one line and exit 2 as well. Nothing else ever escapes."""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentkit.config import ENV_VARS, Config, ConfigError, SecretStr, load
from agentkit.config.schema import MAX_DURATION, Duration, Range
from agentkit.runner import COMMON_FLAGS, build_parser, load_config

# 1,000 cases a suite in `make test` (about 10-15 s each on a loaded 2-core machine);
# PIPEOPS_FUZZ_PROFILE=config-fuzz-long runs 20,000 for a deliberate hunt.
for _name, _examples in (("config-fuzz", 1000), ("config-fuzz-long", 20_000)):
    settings.register_profile(_name, max_examples=_examples, deadline=None,
                              suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
FUZZ = settings.get_profile(os.environ.get("PIPEOPS_FUZZ_PROFILE", "config-fuzz"))

SECRET = "tok-SECRETVALUE-"  # every generated token starts so: never in an error line


def _leaves(section: type[msgspec.Struct], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for field in msgspec.structs.fields(section):
        annotation = field.type
        if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
            yield from _leaves(annotation, f"{prefix}{field.name}.")
        else:
            yield f"{prefix}{field.name}", annotation


LEAVES = dict(_leaves(Config))
KEYS = sorted(LEAVES)
SECTIONS = sorted({key.split(".")[0] for key in KEYS} | {key.rsplit(".", 1)[0] for key in KEYS})
PARTS = sorted({part for key in KEYS for part in key.split(".")})

# values a hostile or careless hand writes: numbers at and past every bound, the floats
# YAML reads (.inf/.nan), booleans where numbers go, strings that look like numbers,
# durations, URLs with bad hosts and ports, names that are not DNS labels.
numbers = st.one_of(
    st.integers(), st.integers(-2**70, 2**70),
    st.sampled_from([0, 1, -1, 1023, 1024, 65535, 65536, 99999, 86400, 86401, 10**12,
                     16 * 1024 * 1024 + 1]),
    st.floats(), st.sampled_from([math.inf, -math.inf, math.nan, -0.0, 1e-320, 1e12]),
    st.booleans())
LIGHT = ["", " ", "30s", "5m", "250ms", "1h", "25h", "-1s", "0", "0.0", "1e12", ".inf", "inf",
         "nan", "-0", "true", "false", "yes", "no", "null", "http://[::1",
         "http://127.0.0.1:99999", "http://a:0", "https://ok.example", "ftp://x", "http://",
         "http:// x", "debug", "INFO", "text", "json", "single-vm", "managed", "tunnel",
         "direct", "auto", "host:1", "host:0", ":80", "[::1]:65536", "pipeops-agent",
         "Bad_Name", "a" * 64, "-a", "/tmp", "/dev/null", "/dev/null/x", "é", "\x00",
         '{"a": 1}', "[1, 2]", '[{"port": true}]', "{not json",
         '[{"name": "tcp-a", "port": 5000, "protocol": "TCP"}]',
         '[{"name": "a", "local_addr": "127.0.0.1:1"}]']
# Few and large: drawn on their own (in a tree of 25 leaves they would be in every case)
HEAVY = ["x" * 300, "1" * 5000, "[" * 3000, "{" * 3000, "[" + "9" * 5000 + "]",
         "[" * 40 + "]" * 40, "d/" * 3000]
words = st.text(max_size=30) | st.sampled_from(LIGHT)
# what a non-UTF-8 environment or command line decodes to (surrogate escapes): no file holds it
undecodable = st.sampled_from(["café\udcff", "\udcff", "a\udc80b"])
heavy = st.sampled_from(HEAVY)
tokens = st.one_of(
    st.text(max_size=20).map(lambda s: SECRET + s),
    st.sampled_from(["\n", " x", "é", "\x7f"]).map(lambda s: SECRET + s))
scalars = st.one_of(st.none(), numbers, words)
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.sampled_from(PARTS) | st.text(max_size=8), inner, max_size=4), max_leaves=12)


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _merge(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for dotted, value in pairs:
        node = doc
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                break
            node = child
        else:
            node[leaf] = value
    return doc


TOKEN_KEYS = ["pipeops.token", "api.token"]
# a token goes only where tokens go; any other key gets any value (a token-looking text
# elsewhere is not a secret, and the error line may show it)
shaped_docs = st.tuples(
    st.lists(st.tuples(st.sampled_from(KEYS + SECTIONS), trees), max_size=6)
    | st.tuples(st.sampled_from(KEYS), heavy).map(lambda pair: [pair]),
    st.lists(st.tuples(st.sampled_from(TOKEN_KEYS), tokens | trees), max_size=2),
).map(lambda pairs: _merge(pairs[0] + pairs[1]))
random_docs = st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8),
                              trees, max_size=5)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper),
                     allow_unicode=True, width=10**6)


# a billion laughs: 12**8 mappings from ten lines
ALIAS_BOMB = "x0: &x0 {k: 1}\n" + "".join(
    f"x{i}: &x{i} {{" + ", ".join(f"k{j}: *x{i - 1}" for j in range(12)) + "}\n"
    for i in range(1, 9)) + "agent: *x8\n"
RAW_YAML = [
    "agent:\n  port: " + "1" * 5000 + "\n",          # past Python's int digit limit
    "agent:\n  name: 2001-13-45\n",                   # a timestamp that is no date
    "agent:\n  name: 2001-02-03\n",
    "pipeops:\n  heartbeat_interval: .inf\n", "pipeops:\n  timeout: .nan\n",
    "tunnel:\n  ping_interval: -.inf\n", "agent:\n  port: true\n", "agent:\n  port: 0x1F90\n",
    "agent:\n  port: 0o17\n", "agent:\n  port: 1_000\n", "agent:\n  port: 8080.0\n",
    "realtime:\n  max_connections: true\n", "realtime:\n  buffer: yes\n",
    "agent: &a {port: 8080, x: *a}\n",                # a mapping that contains itself
    "a: &a [*a]\nagent: {labels: *a}\n",
    ALIAS_BOMB,
    "agent:\n  labels: !!binary 'AAAA'\n", "!!python/object:os.system {}\n",
    "? [a]\n: 1\n", "agent: {? {a: 1} : 2}\n", "[1, 2]\n", "42\n", "'text'\n", "", "---\n---\n",
    "agent:\n" + "  " * 1 + "labels:\n" + "".join("  " * (i + 2) + f"k{i}:\n"
                                                 for i in range(200)),
    "gateway:\n  istio:\n    servers: [" + "[" * 900 + "]" * 900 + "]\n",
    "\ufeffagent:\n  port: 8080\n", "agent:\n  port: 80\x00\n", "agent:\t{port: 1}\n",
    "pipeops: scalar\n", "pipeops: [1]\n", "agent:\n  state_dir: " + "d/" * 3000 + "\n",
    "agent:\n  state_dir: /dev/null/x\n", "agent:\n  state_dir: " + "x" * 5000 + "\n",
]
raw_bytes = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(RAW_YAML).map(str.encode),
    st.sampled_from([b"agent:\n  cluster_name: caf\xe9\n", b"\xff\xfe\x00a", b"\xef\xbb\xbf"
                     b"agent: {}\n", "agent:\n  name: é\n".encode("utf-16")]),
    st.tuples(st.sampled_from(RAW_YAML), st.integers(0, 200), st.binary(max_size=4)).map(
        lambda t: t[0].encode()[:t[1]] + t[2]))     # truncated, with junk at the cut
documents = st.one_of(shaped_docs.map(lambda doc: (_dump(doc).encode(), _secrets_of(doc))),
                      random_docs.map(lambda doc: (_dump(doc).encode(), [])),
                      raw_bytes.map(lambda data: (data, [])))


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under ``Annotated[...]`` and its bounds (msgspec.Meta, schema.Range), with
    a type's own floor (Duration.FLOOR) last."""
    limits: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extras = typing.get_args(annotation)
        limits.extend(extra for extra in extras if isinstance(extra, msgspec.Meta | Range))
    if isinstance(getattr(annotation, "FLOOR", None), Range):
        limits.append(annotation.FLOOR)
    return annotation, limits


def _in_bounds(value: Any, limits: list[Any], where: str) -> None:
    for limit in limits:
        if limit.ge is not None:
            assert value >= limit.ge, where
        if limit.gt is not None:
            assert value > limit.gt, where
        if limit.le is not None:
            assert value <= limit.le, where
        if limit.lt is not None:
            assert value < limit.lt, where


def _in_length(value: Any, limits: list[Any], where: str) -> None:
    for limit in limits:
        if isinstance(limit, msgspec.Meta):
            assert limit.min_length is None or len(value) >= limit.min_length, where
            assert limit.max_length is None or len(value) <= limit.max_length, where
            assert limit.pattern is None or re.search(limit.pattern, value), where


def check_in_range(section: msgspec.Struct, prefix: str = "") -> None:
    """Every value of a loaded config is of its declared type and inside its bounds:
    no bool for a number, no .inf/.nan, no port outside 0-65535 (0: pick a free port)."""
    for field in msgspec.structs.fields(type(section)):
        name = field.name
        value = getattr(section, name)
        where = f"{prefix}{name} = {value!r}"
        if isinstance(value, msgspec.Struct):
            check_in_range(value, f"{prefix}{name}.")
            continue
        base, limits = _unwrap(field.type)
        if base is int:
            assert type(value) is int, where
            _in_bounds(value, limits, where)
        elif base is float or base is Duration:
            assert type(value) is base and math.isfinite(value), where
            _in_bounds(value, limits, where)
        elif base is bool:
            assert type(value) is bool, where
        elif base is str:
            assert type(value) is str, where
            _in_length(value, limits, where)
        elif typing.get_origin(base) is typing.Literal:
            assert value in typing.get_args(base), where
        elif base is SecretStr:
            secret = value.get_secret_value()
            assert secret == secret.strip() and secret.isascii() and secret.isprintable(), name
        elif base is Path:
            assert isinstance(value, Path) and "\x00" not in str(value), where
        elif typing.get_origin(base) is dict:
            assert all(type(k) is str and type(v) is str for k, v in value.items()), where
        elif typing.get_origin(base) is list:
            _in_length(value, limits, where)
            for item in value:
                if isinstance(item, msgspec.Struct):
                    check_in_range(item, f"{prefix}{name}[].")
        else:
            raise AssertionError(f"no check for {prefix}{name}: {base!r}")
    if prefix == "pipeops.":  # the URL's host and port parse, as the first request needs
        parts = urlsplit(section.api_url)  # type: ignore[attr-defined]
        assert parts.scheme in ("http", "https") and parts.hostname, section
        assert parts.port is None or 0 < parts.port < 65536, section
    if prefix.startswith("tunnel.forwards"):
        port = int(section.local_addr.rpartition(":")[2])  # type: ignore[attr-defined]
        assert 0 < port < 65536


def check_durations(config: Config) -> None:
    for key, annotation in LEAVES.items():
        if _unwrap(annotation)[0] is Duration:
            section: Any = config
            for part in key.split("."):
                section = getattr(section, part)
            assert math.isfinite(section) and 0 <= section <= MAX_DURATION, (key, section)


def outcome(run: Any, secrets: list[str]) -> Config | None:
    """The config ``run()`` loads (checked in range), or None after a ConfigError whose
    message is one non-empty line without any secret. Anything else raised escapes."""
    try:
        config = run()
    except ConfigError as exc:
        line = str(exc)
        assert line and "\n" not in line and len(line) < 2000, line
        for secret in secrets:
            assert secret not in line, "a token in the error line"
        assert ConfigError.exit_code == 2
        return None
    check_in_range(config)
    check_durations(config)
    return config


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("config-fuzz")


def _secrets_of(doc: Any) -> list[str]:
    """The tokens a document sets (only ``pipeops.token`` and ``api.token`` hold one)."""
    out = []
    for key in TOKEN_KEYS:
        node = doc
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str) and node.strip()[len(SECRET):]:
            out.append(node.strip())
    return out


@FUZZ
@given(document=documents)
def test_any_config_file_loads_in_range_or_is_one_config_error(
        folder: Path, document: tuple[bytes, list[str]]) -> None:
    data, secrets = document
    path = folder / "config.yaml"
    path.write_bytes(data)
    outcome(lambda: load(path, env={}), secrets)


TOKEN_ENV = ["PIPEOPS_TOKEN", "PIPEOPS_DASHBOARD_TOKEN"]
env_sets = st.tuples(
    st.dictionaries(st.sampled_from(sorted(ENV_VARS)), words | undecodable, max_size=6)
    | st.tuples(st.sampled_from(sorted(ENV_VARS)), heavy).map(lambda pair: dict([pair])),
    st.dictionaries(st.sampled_from(TOKEN_ENV), tokens, max_size=2),
).map(lambda sets: {**sets[0], **sets[1]})


@FUZZ
@given(env=env_sets, doc=st.none() | shaped_docs)
def test_any_environment_loads_in_range_or_is_one_config_error(
        folder: Path, env: dict[str, str], doc: dict[str, Any] | None) -> None:
    path = None
    if doc is not None:  # env on top of a file: a section a scalar in one, keys in another
        path = folder / "env-config.yaml"
        path.write_text(_dump(doc))
    secrets = [env[name].strip() for name in TOKEN_ENV if env.get(name, "").startswith(SECRET)]
    outcome(lambda: load(path, env=env), secrets + _secrets_of(doc))


FLAG_NAMES = [flag for flag, _key in COMMON_FLAGS.values()] + ["--grpc-port"]
argvs = st.lists(st.one_of(
    st.tuples(st.just("--set"), st.builds(lambda k, v: f"{k}={v}",
                                          st.sampled_from(KEYS) | st.text(max_size=12),
                                          words | undecodable | heavy
                                          | numbers.map(str))),
    st.tuples(st.just("--set"), st.text(max_size=20)),
    st.tuples(st.sampled_from(FLAG_NAMES), words | numbers.map(str)),
    st.tuples(st.just("--shutdown-grace"), words | numbers.map(str)),
    st.tuples(st.sampled_from(["--unknown", "-x", "--set", "--config", "--", "-"])),
    st.tuples(st.sampled_from(["--token", "--install-token", "x"]), tokens),  # no such flag
    tokens.map(lambda token: ("--token=" + token,)),
    st.tuples(st.sampled_from(["--set"]), st.sampled_from(["pipeops.token", "api.token"]).map(
        lambda k: k + "=").flatmap(lambda k: tokens.map(lambda t: k + t))),
), max_size=6).map(lambda groups: [arg for group in groups for arg in group])


PARSER = build_parser("fuzz", "the fuzzed service", "grpc.registrar")
FLAGS = {**COMMON_FLAGS, "grpc_port": ("--grpc-port", "grpc.registrar")}


@FUZZ
@given(argv=argvs)
def test_any_command_line_loads_in_range_or_is_one_line_and_exit_2(argv: list[str]) -> None:
    secrets = [arg[arg.index(SECRET):].strip() for arg in argv if SECRET in arg]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            args = PARSER.parse_args(argv)
        except SystemExit as exc:  # argparse's own mistakes: one line, exit 2
            assert exc.code == 2, exc.code
            lines = stderr.getvalue().splitlines()
            assert len(lines) == 1 and "error:" in lines[0], lines
            assert not any(secret in lines[0] for secret in secrets), "a token echoed"
            return
    outcome(lambda: load_config(args, FLAGS), secrets)
    assert stderr.getvalue() == ""


def test_the_checks_can_fail() -> None:
    """The range check is not vacuous: a value that slipped through is caught."""
    slipped: list[tuple[str, str, Any]] = [
        ("agent", "port", True), ("agent", "port", 65536), ("pipeops", "heartbeat_interval",
                                                          Duration(math.inf)),
        ("pipeops", "heartbeat_interval", Duration(0)), ("gateway", "debounce", Duration(61)),
        ("logging", "format", "xml"), ("tunnel", "forwards", [None] * 65),
        ("gateway", "ingress_controller", "ns/name\n"), ("agent", "state_dir", "/tmp"),
        ("agent", "labels", {"a": 1})]
    for section, key, value in slipped:
        bad = Config()
        setattr(getattr(bad, section), key, value)  # Structs check nothing on assignment
        with pytest.raises(AssertionError):
            check_in_range(bad)
    check_in_range(Config())


# What the suites above found, each kept as a named case (they fail without the fix).
FOUND = {
    "a YAML number past Python's digit limit": ("agent:\n  port: " + "1" * 5000 + "\n", {}),
    "a YAML timestamp that is no date": ("agent:\n  name: 2001-13-45\n", {}),
    "a YAML alias bomb": (ALIAS_BOMB, {}),
    "a mapping that contains itself": ("agent: &a {port: 8080, x: *a}\n", {}),
    "JSON in env nested past the recursion limit": (None, {
        "GATEWAY_ISTIO_SERVERS_JSON": "[" * 100_000}),
    "a JSON number in env past the digit limit": (None, {
        "GATEWAY_GWAPI_LISTENERS_JSON": "[" + "9" * 5000 + "]"}),
    "a boolean for a realtime number": ("realtime:\n  max_connections: true\n", {}),
    "a dashboard token with a space": (None, {"PIPEOPS_DASHBOARD_TOKEN": SECRET + " x"}),
    "an api_url with port 0": (None, {"PIPEOPS_API_URL": "http://example.com:0"}),
    "a state_dir name too long to check": ("agent:\n  state_dir: /" + "x" * 5000 + "\n", {}),
    "a key with a newline in it": ("? '\n\n  '\n: null\n", {}),
    # found when the schema moved to msgspec: its lax reading of a string as a boolean or
    # number encodes it to UTF-8, and a surrogate escape (an undecodable env byte) raised
    "an undecodable byte in env for a boolean": (None, {
        "GATEWAY_ALLOW_MASS_DELETE": "caf\udcff"}),
}


@pytest.mark.parametrize(("text", "env"), FOUND.values(), ids=FOUND.keys())
def test_each_input_the_fuzzers_found_is_one_config_error(
        folder: Path, text: str | None, env: dict[str, str]) -> None:
    path = None
    if text is not None:
        path = folder / "found.yaml"
        path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path, env=env)
    assert "\n" not in str(info.value) and SECRET not in str(info.value)


def test_an_unrecognized_argument_is_one_line_that_never_shows_its_value() -> None:
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        PARSER.parse_args(["--token", SECRET + "abc", "--install-token=" + SECRET + "d\ne"])
    assert info.value.code == 2
    line, = stderr.getvalue().splitlines()
    assert "--token" in line and "--install-token" in line and "1 value not shown" in line
    assert SECRET not in line


@pytest.mark.parametrize("argv", [["--config", "--token=" + SECRET + " x"],
                                  ["--api-url", "--token=" + SECRET + " x"],
                                  ["--set", "--token=" + SECRET + " x"]])
def test_an_option_given_as_another_options_value_is_refused_without_its_value(
        argv: list[str]) -> None:
    # argparse takes an argument with a space for a value: found by the command-line suite
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as info:
        PARSER.parse_args(argv)
    assert info.value.code == 2
    line, = stderr.getvalue().splitlines()
    assert f"argument {argv[0]}: expected a value, got the option --token" in line
    assert SECRET not in line
