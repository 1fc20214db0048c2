"""TCP/UDP exposure settings (gateway.enabled): the seed's rules, one line and exit 2."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from agentkit.config import ConfigError, load
from tests.helpers import BIN

RUNNER = [{"name": "runner", "namespace": "pipeops-system", "port": 5000}]


def gwapi(listeners: Any, tcp: Any = (), udp: Any = ()) -> dict[str, Any]:
    return {"gateway.enabled": True, "gateway.gateway_api.enabled": True,
            "gateway.gateway_api.listeners": json.dumps(listeners),
            "gateway.gateway_api.tcp_routes": json.dumps(list(tcp)),
            "gateway.gateway_api.udp_routes": json.dumps(list(udp))}


def test_defaults_are_filled_in_as_the_seed_says() -> None:
    cfg = load(None, overrides=gwapi(
        [{"port": 5000}, {"port": 6000, "protocol": "udp"}],
        tcp=[{"name": "runner-tcp", "sectionName": "tcp-5000", "backendRefs": RUNNER}],
        udp=[{"name": "runner-udp", "sectionName": "udp-6000", "backendRefs": RUNNER}]))
    assert cfg.gateway.gateway_api.listeners == [
        {"name": "tcp-5000", "port": 5000, "protocol": "TCP"},
        {"name": "udp-6000", "port": 6000, "protocol": "UDP"}]
    istio = load(None, overrides={
        "gateway.enabled": True, "gateway.istio.enabled": True,
        "gateway.istio.servers": '[{"port": {"number": 6379}}]',
        "gateway.istio.tcp_routes": json.dumps([{"name": "redis", "port": 6379, "destination": {
            "host": "redis.default.svc.cluster.local", "port": 6379}}])})
    assert istio.gateway.istio.servers == [
        {"port": {"number": 6379, "protocol": "TCP", "name": "tcp-6379"}}]
    # off: nothing is checked (the chart may render partial settings for a disabled feature)
    assert load(None, overrides={"gateway.gateway_api.enabled": True}).gateway.enabled is False


@pytest.mark.parametrize("overrides,message", [
    (gwapi([]), "gateway.gateway_api.listeners: at least one listener is required"),
    (gwapi([{"port": 70000}]), "listeners[0].port must be a port number"),
    (gwapi([{"port": 5000, "protocol": "SCTP"}]), "listeners[0].protocol must be TCP or UDP"),
    (gwapi([{"port": 5000}, {"port": 5000}]), "listeners[1].name 'tcp-5000' is used twice"),
    (gwapi([{"port": 5000, "protocol": "UDP"}],
           tcp=[{"name": "r", "sectionName": "udp-5000", "backendRefs": RUNNER}]),
     "tcp_routes[0].sectionName must name a TCP listener (none), not 'udp-5000'"),
    (gwapi([{"port": 5000}], udp=[{"name": "r", "sectionName": "tcp-5000",
                                   "backendRefs": RUNNER}]),
     "udp_routes[0].sectionName must name a UDP listener"),
    (gwapi([{"port": 5000}], tcp=[{"name": "r", "sectionName": "tcp-5000"}]),
     "tcp_routes[0].backendRefs must list at least one backend"),
    (gwapi([{"port": 5000}], tcp=[{"name": "Bad Name", "sectionName": "tcp-5000",
                                   "backendRefs": RUNNER}]), "tcp_routes[0].name must be a DNS"),
    ({"gateway.enabled": True, "gateway.environment.mode": "single-vm"},
     "gateway.environment.vm_ip must be the node's IP address"),
    ({"gateway.enabled": True, "gateway.istio.enabled": True,
      "gateway.istio.servers": '[{"port": {"number": 443, "name": "tls"}}]',
      "gateway.istio.tls_routes": json.dumps([{"name": "app", "port": 443, "destination": {
          "host": "app.default.svc.cluster.local", "port": 443}}])},
     "tls_routes[0].sniHosts: a TLS route needs at least one SNI host"),
    ({"gateway.enabled": True, "gateway.istio.enabled": True,
      "gateway.istio.tcp_routes": json.dumps([{"name": "x", "port": 1, "destination": {
          "host": "x", "port": 1}}])}, "tcp_routes[0].port 1 has no server"),
])
def test_bad_settings_are_one_line(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(None, overrides=overrides)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "(from flag --set gateway" in text or "vm_ip" in text  # vm_ip: unset, a default


def test_the_process_exits_2_with_one_line_naming_the_env_var() -> None:
    result = subprocess.run(
        [str(BIN / "pipeops-gateway"), "--set", "gateway.enabled=true",
         "--set", "gateway.gateway_api.enabled=true"],
        env={"GATEWAY_GWAPI_LISTENERS_JSON": '[{"port": 5000, "protocol": "SCTP"}]',
             "HOME": "/nonexistent"}, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "config error: gateway.gateway_api.listeners[0].protocol must be TCP or UDP, not "
        "'SCTP' (from env GATEWAY_GWAPI_LISTENERS_JSON)"]


def test_the_seeds_yaml_layout_is_read(tmp_path: Any) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("""
gateway:
  enabled: true
  environment: {mode: single-vm, vmIP: 192.0.2.10}
  istio:
    enabled: true
    gateway:
      selector: {istio: ingressgateway}
      servers:
        - port: {number: 6379, name: tcp-redis, protocol: TCP}
    virtual_service:
      tcp_routes:
        - name: redis
          port: 6379
          destination: {host: redis.default.svc.cluster.local, port: 6379}
""")
    cfg = load(str(path))
    assert cfg.gateway.environment.vm_ip == "192.0.2.10"
    assert cfg.gateway.istio.servers[0]["port"]["number"] == 6379
    assert cfg.gateway.istio.tcp_routes[0]["name"] == "redis"
    path.write_text("gateway: {istio: {gateway: {selectr: {}}}}\n")
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert "gateway.istio.gateway" in str(info.value)
