"""Config: precedence file < env < flag, and one exact line per kind of bad value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agentkit.config import ConfigError, load, parse_set
from tests.helpers import tool


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    config = load(None, env={})
    assert config.agent.cluster_name == "default-cluster"
    assert config.pipeops.heartbeat_interval == 5.0
    assert config.grpc.registrar == 50051
    assert config.tunnel.window == 256 * 1024


def test_precedence_file_then_env_then_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "agent:\n  cluster_name: from-file\n  port: 7000\n"
                           "logging:\n  level: warning\n")
    config = load(path, env={})
    assert (config.agent.cluster_name, config.agent.port) == ("from-file", 7000)

    env = {"PIPEOPS_CLUSTER_NAME": "from-env", "PIPEOPS_PORT": "7001"}
    config = load(path, env=env)
    assert (config.agent.cluster_name, config.agent.port) == ("from-env", 7001)
    assert config.logging.level == "warning"  # untouched keys keep the file's value

    config = load(path, env=env, overrides={"agent.cluster_name": "from-flag"})
    assert (config.agent.cluster_name, config.agent.port) == ("from-flag", 7001)


def test_home_file_is_used_when_no_path_given(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".pipeops-agent.yaml").write_text("agent:\n  name: homely\n")
    assert load(None, env={}).agent.name == "homely"


def test_durations_and_json_env() -> None:
    env = {
        "PIPEOPS_TIMEOUT": "1m",
        "PIPEOPS_HEARTBEAT_INTERVAL": "250ms",
        "GATEWAY_GWAPI_LISTENERS_JSON": '[{"name": "tcp-a", "port": 5000, "protocol": "TCP"}]',
        "PIPEOPS_TUNNEL_ENABLED": "false",
    }
    config = load(None, env=env)
    assert config.pipeops.timeout == 60.0
    assert config.pipeops.heartbeat_interval == 0.25
    assert config.gateway.gateway_api.listeners[0]["port"] == 5000
    assert config.tunnel.enabled is False


@pytest.mark.parametrize(
    ("env", "overrides", "file_text", "line"),
    [
        ({"PIPEOPS_TIMEOUT": "soon"}, {}, None,
         "config error: pipeops.timeout = 'soon' (from env PIPEOPS_TIMEOUT): "
         "expected a duration like 30s, 5m or 1.5"),
        ({}, {"agent.port": "99999"}, None,
         "config error: agent.port = '99999' (from flag --port): "
         "expected an integer <= 65535"),
        ({"PIPEOPS_LOG_LEVEL": "loud"}, {}, None,
         "config error: logging.level = 'loud' (from env PIPEOPS_LOG_LEVEL): "
         "expected one of 'debug', 'info', 'warning', 'error'"),
        ({"PIPEOPS_API_URL": "ftp://x"}, {}, None,
         "config error: pipeops.api_url = 'ftp://x' (from env PIPEOPS_API_URL): "
         "expected an http:// or https:// URL"),
        ({"PIPEOPS_TUNNEL_ENABLED": "maybe"}, {}, None,
         "config error: tunnel.enabled = 'maybe' (from env PIPEOPS_TUNNEL_ENABLED): "
         "expected a boolean (true/false, yes/no, on/off, 1/0)"),
        ({"PIPEOPS_TIMEOUT": "0"}, {}, None,
         "config error: pipeops.timeout = '0' (from env PIPEOPS_TIMEOUT): "
         "expected a duration > 0"),
        ({}, {"pipeops.reconnect.backoff_base": "0"}, None,
         "config error: pipeops.reconnect.backoff_base = '0' "
         "(from flag --set pipeops.reconnect.backoff_base): expected a duration > 0"),
        ({}, {"pipeops.reconnect.backoff_max": "100ms"}, None,
         "config error: pipeops.reconnect.backoff_max = '100ms' "
         "(from flag --set pipeops.reconnect.backoff_max): "
         "must not be below backoff_base (0.5s)"),
        ({}, {}, "agent:\n  colour: blue\n",
         "config error: unknown key agent.colour (from file {path})"),
        ({}, {}, "tunnel:\n  forwards:\n    - name: " + "f" * 64 + "\n      local_addr: a:1\n",
         "config error: tunnel.forwards.0.name = '" + "f" * 64 + "' (from file {path}): "
         "expected a string of at most 63 characters"),
        ({}, {}, "tunnel:\n  forwards:\n    - name: api\n      local_addr: nowhere\n",
         "config error: tunnel.forwards.0.local_addr = 'nowhere' (from file {path}): "
         "expected host:port"),
    ],
)
def test_invalid_values_name_key_source_and_expectation(
    tmp_path: Path, env: dict[str, str], overrides: dict[str, str], file_text: str | None,
    line: str,
) -> None:
    path = write(tmp_path, file_text) if file_text else None
    with pytest.raises(ConfigError) as info:
        load(path, env=env, overrides=overrides, flag_names={"agent.port": "--port"})
    assert str(info.value) == line.format(path=path)


def test_broken_yaml_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, "agent: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line \d"):
        load(path, env={})
    with pytest.raises(ConfigError, match="cannot read it"):
        load(tmp_path / "absent.yaml", env={})


def test_token_value_is_not_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={"PIPEOPS_TOKEN": "x" * 5}, overrides={"pipeops.token": ["not", "str"]})
    assert "not" not in str(info.value).split("=")[1].split("(")[0]
    assert "'***'" in str(info.value)


def test_set_flag_parsing() -> None:
    assert parse_set(["tunnel.enabled=false", "agent.labels={\"a\": \"b\"}"]) == {
        "tunnel.enabled": "false", "agent.labels": '{"a": "b"}'}
    with pytest.raises(ConfigError, match=r"expected section\.key=value"):
        parse_set(["novalue"])
    for mistake in ("PIPEOPS_TOKEN=s3cr3t-install-token", "pipeops.token = s3cr3t-install-token"):
        with pytest.raises(ConfigError) as info:  # a malformed pair may carry a secret
            parse_set([mistake])
        assert "s3cr3t" not in str(info.value) and "expected section.key=value" in str(info.value)
    config = load(None, env={}, overrides=parse_set(["agent.labels={\"env\": \"prod\"}"]))
    assert config.agent.labels == {"env": "prod"}


@pytest.mark.parametrize("service", ["registrar", "tunnel", "gateway", "http-api"])
def test_process_exits_2_with_one_line(tmp_path: Path, service: str) -> None:
    result = subprocess.run(
        [tool(f"pipeops-{service}"), "--set", "pipeops.heartbeat_interval=-1"],
        capture_output=True, text=True, timeout=30, check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "config error: pipeops.heartbeat_interval = '-1' (from flag --set "
        "pipeops.heartbeat_interval): expected a duration > 0"
    ]
    assert result.stdout == ""


def test_example_config_documents_a_valid_config() -> None:
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    config = load(example, env={})
    assert config.tunnel.forwards, "the example shows the forwards"


def test_example_config_names_every_key() -> None:
    import msgspec
    import yaml

    from agentkit.config import Config

    example = yaml.safe_load(
        (Path(__file__).resolve().parents[2] / "config.example.yaml").read_text())
    missing: list[str] = []

    def walk(section: type[msgspec.Struct], data: dict[str, object], prefix: str) -> None:
        for field in msgspec.structs.fields(section):
            if field.name not in data:
                missing.append(prefix + field.name)
                continue
            sub = field.type
            if isinstance(sub, type) and issubclass(sub, msgspec.Struct):
                child = data[field.name]
                assert isinstance(child, dict)
                walk(sub, child, f"{prefix}{field.name}.")

    walk(Config, example, "")
    assert missing == []


@pytest.mark.parametrize("raw", ["pit_abc123\n", "  pit_abc123\r\n", "\tpit_abc123 "])
def test_surrounding_whitespace_of_the_token_is_dropped(raw: str) -> None:
    # kubectl create secret --from-file keeps the file's final newline
    config = load(None, env={"PIPEOPS_TOKEN": raw})
    assert config.pipeops.token.get_secret_value() == "pit_abc123"
    assert config.secrets() == ["pit_abc123"]


@pytest.mark.parametrize("raw", ["pit_abc 123", "pit_abc\n123", "pit_\x00abc", "pit_\x7fabc"])
def test_a_token_with_inner_whitespace_or_control_characters_is_a_config_error(
        raw: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={"PIPEOPS_TOKEN": raw})
    assert str(info.value) == (
        "config error: pipeops.token = '***' (from env PIPEOPS_TOKEN): "
        "the token contains whitespace or control characters")
    assert "abc" not in str(info.value)


@pytest.mark.parametrize("name", ["pipeops-agent", "a", "a1-b2", "x" * 57])
def test_agent_name_accepts_dns_labels(name: str) -> None:
    assert load(None, env={}, overrides={"agent.name": name}).agent.name == name


@pytest.mark.parametrize("name", ["", "Pipeops", "pipeops_agent", "-agent", "agent-",
                                  "pipeops.agent", "x" * 58])
def test_agent_name_must_be_a_dns_label_of_57_characters_at_most(name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={}, overrides={"agent.name": name})
    assert str(info.value) == (
        f"config error: agent.name = {name!r} (from flag --set agent.name): "
        "expected a DNS-1123 label (a-z, 0-9, '-') of at most 57 characters")


@pytest.mark.parametrize(("word", "value"), [
    ("true", True), ("TRUE", True), ("1", True), ("yes", True), ("Y", True), ("On", True),
    ("t", True), ("false", False), ("0", False), ("No", False), ("n", False), ("OFF", False),
    ("F", False)])
def test_booleans_from_env_take_the_usual_words(word: str, value: bool) -> None:
    config = load(None, env={"PIPEOPS_TUNNEL_ENABLED": word, "GATEWAY_ENABLED": word})
    assert (config.tunnel.enabled, config.gateway.enabled) == (value, value)


@pytest.mark.parametrize(("file_text", "line"), [
    ("gateway:\n  debounce: 61s\n", "gateway.debounce = '61s' (from file {path}): "
     "expected a duration <= 60s"),
    ("gateway:\n  watch_timeout: 0.5\n", "gateway.watch_timeout = 0.5 (from file {path}): "
     "expected a duration >= 1s"),
    ("gateway:\n  watch_timeout: 2h\n", "gateway.watch_timeout = '2h' (from file {path}): "
     "expected a duration <= 3600s"),
    ("gateway:\n  resync_interval: 500ms\n", "gateway.resync_interval = '500ms' (from file "
     "{path}): expected a duration >= 1s"),
    ("gateway:\n  public_wait: -1s\n", "gateway.public_wait = '-1s' (from file {path}): "
     "expected a duration >= 0"),
    ("pipeops:\n  timeout: 25h\n", "pipeops.timeout = '25h' (from file {path}): "
     "expected a duration of at most 86400s (24h)"),
    ("pipeops:\n  timeout: .inf\n", "pipeops.timeout = inf (from file {path}): "
     "expected a duration like 30s, 5m or 1.5"),
    ("pipeops:\n  timeout: true\n", "pipeops.timeout = True (from file {path}): "
     "expected a duration like 30s, 5m or 1.5"),
    ("pipeops:\n  reconnect:\n    backoff_base: 1m\n", "pipeops.reconnect.backoff_max = 30.0 "
     "(from default): must not be below backoff_base (60s)"),
    ("gateway:\n  mass_delete_share: .nan\n", "gateway.mass_delete_share = nan (from file "
     "{path}): expected a number > 0"),
    ("realtime:\n  buffer: true\n", "realtime.buffer = True (from file {path}): "
     "expected an integer, not true/false"),
    ("gateway:\n  ingress_controller: \"ns/name\\n\"\n", "gateway.ingress_controller = "
     "'ns/name\\n' (from file {path}): expected a string matching "
     "'^([a-z0-9-]+/[a-z0-9-]+)?\\\\Z'"),
    ("gateway:\n  routing_mode: sideways\n", "gateway.routing_mode = 'sideways' (from file "
     "{path}): expected one of 'auto', 'direct', 'tunnel'"),
    ("tunnel: 5\n", "tunnel = 5 (from file {path}): expected a mapping of settings, not an "
     "integer"),
    ("tunnel:\n  forwards: [{name: api}]\n", "tunnel.forwards.0.local_addr is required "
     "(from file {path})"),
    ("tunnel:\n  forwards: [{name: api, local_addr: 'a:1', colour: red}]\n",
     "unknown key tunnel.forwards.0.colour (from file {path})"),
    ("tunnel:\n  forwards:\n" + "    - {name: a, local_addr: 'a:1'}\n" * 65,
     "tunnel.forwards = [{'local_addr': 'a:1', 'name': 'a'}, {'local_addr': 'a:1', 'name': "
     "'a'}, {'lo...' (from file {path}): expected a list of at most 64 items"),
    ("agent:\n  labels: {team: 7}\n", "agent.labels = {'team': 7} (from file {path}): "
     "each value: expected a string, not an integer"),
    ("agent:\n  port: 8080.5\n", "agent.port = 8080.5 (from file {path}): "
     "expected an integer, not a number"),
    ("api:\n  tls_cert_file: /tls/crt\n", "api.tls_cert_file and api.tls_key_file go "
     "together (from file {path})"),
    ("pipeops:\n  api_url: http://example.com:0\n", "pipeops.api_url = "
     "'http://example.com:0' (from file {path}): expected an http:// or https:// URL with a "
     "port of 1-65535"),
])
def test_each_rule_of_the_schema_is_one_line_naming_its_key(
        tmp_path: Path, file_text: str, line: str) -> None:
    path = write(tmp_path, file_text)
    with pytest.raises(ConfigError) as info:
        load(path, env={})
    assert str(info.value) == "config error: " + line.replace("{path}", str(path))


def test_other_spellings_are_read_as_their_key_and_the_keys_own_wins(tmp_path: Path) -> None:
    path = write(tmp_path, "gateway:\n  environment: {vmIP: 192.0.2.1}\n  istio:\n"
                           "    gateway:\n      selector: {app.kubernetes.io/name: gw}\n"
                           "      servers: [{port: {number: 1}}]\n")
    config = load(path, env={})
    assert config.gateway.environment.vm_ip == "192.0.2.1"
    assert config.gateway.istio.selector == {"app.kubernetes.io/name": "gw"}
    assert config.gateway.istio.servers == [{"port": {"number": 1}}]
    path = write(tmp_path, "gateway:\n  environment: {vmIP: 192.0.2.1, vm_ip: 192.0.2.2}\n"
                           "  istio:\n    selector: {own: x}\n"
                           "    gateway: {selector: {nested: x}}\n")
    config = load(path, env={}, overrides={"gateway.istio.virtual_service.tcp_routes": "[{}]"})
    assert config.gateway.environment.vm_ip == "192.0.2.2"
    assert config.gateway.istio.selector == {"own": "x"}
    assert config.gateway.istio.tcp_routes == [{}]


def test_from_mapping_checks_as_load_does() -> None:
    from agentkit.config import from_mapping

    config = from_mapping({"agent": {"port": "7000"}, "tunnel": {"enabled": "no"}})
    assert (config.agent.port, config.tunnel.enabled) == (7000, False)
    with pytest.raises(ConfigError) as info:
        from_mapping({"agent": {"port": 70000}})
    assert str(info.value) == ("config error: agent.port = 70000 (from mapping): "
                               "expected an integer <= 65535")
    with pytest.raises(ConfigError, match=r"^config error: unknown key agent\.colour "
                                          r"\(from test\)$"):
        from_mapping({"agent": {"colour": "blue"}}, source="test")


def test_the_tokens_never_show_in_a_repr() -> None:
    config = load(None, env={"PIPEOPS_TOKEN": "pit_hidden1", "PIPEOPS_DASHBOARD_TOKEN": "dash"})
    assert "pit_hidden1" not in repr(config) and "dash'" not in repr(config)
    assert str(config.pipeops.token) == "**********" and "hidden" not in repr(config.api)
    assert config.api.token.get_secret_value() == "dash"
    assert config.secrets() == ["pit_hidden1", "dash"]


def test_an_undecodable_byte_in_env_is_one_line_without_the_value() -> None:
    with pytest.raises(ConfigError) as info:
        load(None, env={"PIPEOPS_TOKEN": "pit_secret\udcff"})
    assert str(info.value) == ("config error: pipeops.token (from env PIPEOPS_TOKEN): not "
                               "UTF-8 text (character 11 is an undecodable byte)")


def test_the_config_imports_no_pydantic(tmp_path: Path) -> None:
    """The point of the msgspec schema (issue 15): registrar, tunnel and gateway load the
    config without pydantic (~10 MiB each)."""
    example = Path(__file__).resolve().parents[2] / "config.example.yaml"
    code = ("import sys, agentkit.config as c; c.load(sys.argv[1], env={}); "
            "c.from_mapping({'gateway': {'enabled': True}}); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pydantic', 'pydantic_core')))")
    result = subprocess.run([sys.executable, "-c", code, str(example)], capture_output=True,
                            text=True, timeout=60, check=True, env={"HOME": str(tmp_path)})
    assert result.stdout.strip() == "[]", result.stdout
