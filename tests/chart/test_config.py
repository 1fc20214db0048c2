"""The config the chart renders loads with agentkit.config, and agrees with the pod spec.

This is where the chart and the services meet: a key the services do not know, a wrong
type or a port that differs from the container's would break the pod at start, so every
values set's config.yaml is loaded with the services' own loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agentkit.config import Config, ConfigError, load
from tests.chart.chart import NAMESPACE, TOKEN, Chart, Rendered


def _load(rendered: Rendered, tmp_path: Path, env: dict[str, str] | None = None) -> Config:
    path = tmp_path / "config.yaml"
    path.write_text(rendered.config_text)
    return load(path, env=env or {})


def _mount(rendered: Rendered, container: str, volume: str) -> str:
    c = rendered.container(container)
    (mount,) = [m["mountPath"] for m in c["volumeMounts"] if m["name"] == volume]
    return str(mount)


def test_config_loads_and_matches_the_pod(rendered: Rendered, tmp_path: Path) -> None:
    cfg = _load(rendered, tmp_path)
    assert cfg.grpc.registrar == rendered.port("registrar", "grpc-registrar")
    assert cfg.grpc.tunnel == rendered.port("tunnel", "grpc-tunnel")
    assert cfg.grpc.gateway == rendered.port("gateway", "grpc-gateway")
    assert cfg.grpc.http_api == rendered.port("http-api", "grpc-http-api")
    assert cfg.agent.port == rendered.port("http-api", "http")
    # gRPC servers listen on localhost only; the kubelet's probes reach a health-only
    # listener on the pod IP, at the port each probe names.
    assert cfg.grpc.host == "127.0.0.1"
    assert cfg.grpc.probe_host == "0.0.0.0"
    assert cfg.grpc.registrar_probe == rendered.port("registrar", "probe-registrar")
    assert cfg.grpc.tunnel_probe == rendered.port("tunnel", "probe-tunnel")
    assert cfg.grpc.gateway_probe == rendered.port("gateway", "probe-gateway")
    assert str(cfg.agent.state_dir) == _mount(rendered, "registrar", "state")
    assert cfg.kubernetes.in_cluster is True
    assert cfg.kubernetes.namespace == NAMESPACE
    sa_dir = _mount(rendered, "tunnel", "kube-api-access")
    assert cfg.kubernetes.service_account_token_path == f"{sa_dir}/token"
    cp_dir = _mount(rendered, "registrar", "control-plane-token")
    assert cfg.kubernetes.control_plane_token_path == f"{cp_dir}/token"
    assert cfg.pipeops.token.get_secret_value() == "", "the token never comes from the file"
    forwards = {f.name: f.local_addr for f in cfg.tunnel.forwards}
    assert forwards["agent-http"] == f"127.0.0.1:{cfg.agent.port}"
    assert forwards["kubernetes-api"] == "kubernetes.default.svc:443"
    # The kubelet of the pod's own node: NODE_IP is agent.node_ip, set from status.hostIP.
    assert forwards["kubelet"] == "NODE_IP:10250"
    for c in rendered_containers_env_node_ip(rendered):
        assert c == {"name": "PIPEOPS_NODE_IP",
                     "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}}
    for name in ("registrar", "tunnel", "gateway", "http-api"):
        assert rendered.container(name)["args"] == ["--config", "/etc/pipeops/config.yaml"]
        assert _mount(rendered, name, "config") == "/etc/pipeops"


def test_config_with_the_token_from_the_secret(rendered: Rendered, tmp_path: Path) -> None:
    """The registrar's env (PIPEOPS_TOKEN from the Secret) completes the file."""
    cfg = _load(rendered, tmp_path, env={"PIPEOPS_TOKEN": TOKEN})
    assert cfg.pipeops.token.get_secret_value() == TOKEN
    assert TOKEN not in rendered.config_text


def test_all_features_config(render: Callable[[str], Rendered], tmp_path: Path) -> None:
    get = render
    cfg = _load(get("all-features"), tmp_path)
    assert cfg.agent.enable_ingress_sync is True
    assert cfg.agent.cluster_name == "all-features"
    assert cfg.agent.labels == {"environment": "test"}
    assert cfg.gateway.enabled is True
    assert cfg.gateway.environment.mode == "single-vm"
    assert cfg.gateway.environment.vm_ip == "192.0.2.10"
    assert cfg.gateway.istio.enabled and cfg.gateway.gateway_api.enabled
    assert cfg.gateway.istio.service.create is True
    assert [r["name"] for r in cfg.gateway.gateway_api.tcp_routes] == ["runner-tcp", "other-tcp"]
    assert {f.name for f in cfg.tunnel.forwards} == {"kubernetes-api", "kubelet", "agent-http",
                                                     "grafana"}
    # With a ServiceMonitor the metrics servers listen on the pod IP.
    assert cfg.metrics.host == "0.0.0.0"
    assert cfg.metrics.registrar == get("all-features").port("registrar", "metrics-reg")

    # Helm owns the gateway objects: the agent must not create them as well.
    chart_owned = _load(get("all-features-chart-gateway"), tmp_path)
    assert chart_owned.gateway.enabled is False


def test_defaults_config_is_the_services_defaults(render: Callable[[str], Rendered],
                                                  tmp_path: Path) -> None:
    """With default values the chart changes only what a pod needs changed."""
    get = render
    cfg = _load(get("defaults"), tmp_path)
    defaults = Config()
    assert cfg.pipeops.api_url == defaults.pipeops.api_url
    assert cfg.pipeops.heartbeat_interval == defaults.pipeops.heartbeat_interval
    assert cfg.tunnel.ping_timeout == defaults.tunnel.ping_timeout
    assert cfg.metrics.host == "127.0.0.1"
    assert cfg.gateway.enabled is False
    assert cfg.agent.enable_ingress_sync is False


@pytest.mark.parametrize(("values", "expected"), [
    (["--set", "registrar.grpcPort=6001", "--set", "registrar.probePort=6011",
      "--set", "httpApi.port=9000"],
     {"registrar": 6001, "probe": 6011, "http": 9000}),
    (["--set", "pipeops.heartbeatInterval=1m", "--set", "agent.logLevel=debug"],
     {"heartbeat": 60.0, "level": "debug"}),
])
def test_values_flow_into_the_config(chart: Chart, tmp_path: Path, values: list[str],
                                     expected: dict[str, object]) -> None:
    rendered = chart.template("--set", f"pipeops.token={TOKEN}", *values)
    cfg = _load(rendered, tmp_path)
    if "registrar" in expected:
        assert cfg.grpc.registrar == expected["registrar"] == rendered.port(
            "registrar", "grpc-registrar")
        assert cfg.grpc.registrar_probe == expected["probe"] == rendered.port(
            "registrar", "probe-registrar")
        assert rendered.container("registrar")["startupProbe"]["grpc"]["port"] == 6011
        assert cfg.agent.port == expected["http"] == rendered.port("http-api", "http")
        forwards = {f.name: f.local_addr for f in cfg.tunnel.forwards}
        assert forwards["agent-http"] == "127.0.0.1:9000"
    else:
        assert cfg.pipeops.heartbeat_interval == expected["heartbeat"]
        assert cfg.logging.level == expected["level"]


def test_the_loader_rejects_what_the_chart_must_not_render(rendered: Rendered,
                                                          tmp_path: Path) -> None:
    """The check has teeth: a key the services do not know fails to load."""
    path = tmp_path / "config.yaml"
    path.write_text(rendered.config_text + "\nextra_section: {a: 1}\n")
    with pytest.raises(ConfigError, match="unknown key extra_section"):
        load(path, env={})


def rendered_containers_env_node_ip(rendered: Rendered) -> list[dict[str, object]]:
    """The PIPEOPS_NODE_IP env entry of the tunnel container (exactly one)."""
    env = rendered.container("tunnel").get("env", [])
    found = [e for e in env if e["name"] == "PIPEOPS_NODE_IP"]
    assert len(found) == 1
    return found
