"""Each service starts as a real process: grpcurl lists it, health answers SERVING,
Service.Describe says honestly what it does, Events streams, SIGTERM exits 0 in 2 s."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ServiceProcess, free_port, grpcurl, tool

SERVICES = {
    "registrar": "pipeops.agent.v1.Registrar",
    "tunnel": "pipeops.agent.v1.Tunnel",
    "gateway": "pipeops.agent.v1.Gateway",  # idle answers: route sync is off
    "http-api": None,
}
SECRET = "install-token-do-not-print-0123456789"


def start(service: str, state_dir: Path) -> ServiceProcess:
    """The install token comes from the config file: no log line may show it."""
    config = state_dir.parent / "config.yaml"
    config.write_text(f"pipeops:\n  token: {SECRET}\n")
    argv = [tool(f"pipeops-{service}"), "--config", str(config),
            "--grpc-port", "0", "--state-dir", str(state_dir),
            "--set", "metrics.registrar=0", "--set", "metrics.tunnel=0",
            "--set", "metrics.gateway=0", "--api-url", "http://127.0.0.1:9"]
    if service == "http-api":
        argv += ["--port", str(free_port()), "--host", "127.0.0.1"]
    return ServiceProcess(argv).start()


@pytest.mark.parametrize("service", list(SERVICES))
def test_service_serves_health_reflection_and_stops_on_sigterm(
    service: str, state_dir: Path
) -> None:
    proc = start(service, state_dir)
    try:
        address = proc.grpc_address
        listed = grpcurl("-plaintext", address, "list")
        assert listed.returncode == 0, listed.stderr
        names = set(listed.stdout.split())
        assert {"grpc.health.v1.Health", "pipeops.agent.v1.Events",
                "pipeops.agent.v1.Service"} <= names
        if SERVICES[service]:
            assert SERVICES[service] in names

        check = grpcurl("-plaintext", address, "grpc.health.v1.Health/Check")
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout) == {"status": "SERVING"}

        described = grpcurl("-plaintext", address, "pipeops.agent.v1.Service/Describe")
        info = json.loads(described.stdout)
        assert info["name"] == service
        assert info["state"] in {"SERVICE_STATE_IDLE", "SERVICE_STATE_READY",
                                 "SERVICE_STATE_DEGRADED", "SERVICE_STATE_STARTING"}
        assert info["detail"]
        runtime = info["runtime"]  # the process's own cost, measured when asked
        assert int(runtime["rss_bytes"]) > 10 * 2**20
        assert runtime["threads"] >= 1 and runtime["open_fds"] >= 3
        assert runtime["uptime_seconds"] > 0

        events = grpcurl("-plaintext", "-max-time", "4", "-d", '{"history": 50}', address,
                         "pipeops.agent.v1.Events/Subscribe")
        assert '"message": "started"' in events.stdout

        code = proc.terminate(timeout=10)
        assert code == 0
        assert proc.stop_seconds() < 2.0
    finally:
        proc.stop()
    records = proc.records()
    assert records, "logs are JSON lines on stdout"
    assert all({"time", "level", "service", "msg"} <= r.keys() for r in records)
    assert all(r["service"] == service for r in records)
    assert records[-1]["msg"] == "stopped"
    assert SECRET not in "\n".join(proc.lines + proc.stderr_lines)


@pytest.mark.parametrize("service", list(SERVICES))
def test_help(service: str) -> None:
    import subprocess

    result = subprocess.run([tool(f"pipeops-{service}"), "--help"], capture_output=True,
                            text=True, timeout=30, check=False)
    assert result.returncode == 0
    assert f"usage: pipeops-{service}" in result.stdout
    assert "--config" in result.stdout


def test_http_api_port_in_use_is_one_clear_line_and_exit_2(state_dir: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = ServiceProcess([tool("pipeops-http-api"), "--grpc-port", "0", "--state-dir",
                               str(state_dir), "--host", "127.0.0.1", "--port", str(port)])
        with proc:
            assert proc.proc is not None
            assert proc.proc.wait(timeout=15) == 2
            proc.stop()
    errors = [r for r in proc.records() if r["level"] == "error"]
    assert [r["msg"] for r in errors] == [
        f"cannot listen on 127.0.0.1:{port}: Address already in use"]
    assert proc.records()[-1] == {**proc.records()[-1], "msg": "stopped", "exit_code": 2}
    assert not proc.stderr_lines, proc.stderr_lines


def test_probe_listener_serves_only_health(state_dir: Path) -> None:
    """With grpc.probe_host, the kubelet's listener answers health and nothing else."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.helpers import ROOT

    probe = free_port()
    config = state_dir.parent / "config.yaml"
    config.write_text("grpc:\n  probe_host: 127.0.0.1\n")
    argv = [tool("pipeops-tunnel"), "--config", str(config), "--grpc-port", "0",
            "--state-dir", str(state_dir), "--set", "metrics.tunnel=0",
            "--set", f"grpc.tunnel_probe={probe}", "--api-url", "http://127.0.0.1:9"]
    with ServiceProcess(argv) as proc:
        started = proc.wait_started()
        address, probed = started["grpc"], f"127.0.0.1:{probe}"
        assert started["grpc_probe"] == probed
        # Health answers on both, with one status (a Check as the kubelet sends it).
        for target in (address, probed):
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, target
        # No reflection on the probe listener: grpcurl cannot even list it.
        listed = grpcurl("-plaintext", probed, "list")
        assert listed.returncode != 0
        assert "does not support the reflection API" in listed.stderr
        assert grpcurl("-plaintext", address, "list").returncode == 0
        # Events (every log line) and Describe are not served there.
        for method in ("pipeops.agent.v1.Events/Subscribe", "pipeops.agent.v1.Service/Describe"):
            call = grpcurl("-plaintext", "-max-time", "5", "-import-path", str(ROOT / "proto"),
                           "-proto", "pipeops/agent/v1/events.proto",
                           "-proto", "pipeops/agent/v1/service.proto", probed, method)
            assert call.returncode != 0, method
            assert "Code: Unimplemented" in call.stderr, (method, call.stderr)
        assert proc.terminate(timeout=5) == 0


def test_gateway_answers_that_route_sync_is_off(state_dir: Path) -> None:
    """Every Gateway method answers (no UNIMPLEMENTED) and says route sync is off."""
    proc = start("gateway", state_dir)
    try:
        address = proc.grpc_address

        def call(method: str, body: str = "{}") -> subprocess.CompletedProcess[str]:
            return grpcurl("-plaintext", "-d", body, address, f"pipeops.agent.v1.Gateway/{method}")

        status = call("GetStatus")
        assert status.returncode == 0, status.stderr
        reply = json.loads(status.stdout)
        assert reply.get("enabled", False) is False
        assert reply["detail"] == ("route sync is off (agent.enable_ingress_sync is false): "
                                   "no routes are published")
        assert reply.get("route_count", 0) == 0

        routes = call("ListRoutes")
        assert routes.returncode == 0, routes.stderr
        assert json.loads(routes.stdout) == {}

        resync = call("Resync")
        assert resync.returncode != 0
        assert "Code: FailedPrecondition" in resync.stderr
        assert "nothing to resync: route sync is off" in resync.stderr

        check = call("CheckTarget", '{"namespace": "apps", "service": "web", "port": 80}')
        assert check.returncode == 0, check.stderr
        assert json.loads(check.stdout) == {
            "reason": "no synced route points at apps/web:80: route sync is off; "
                      "configure a tunnel forward to reach it"}  # allowed: false is omitted

        info = json.loads(grpcurl("-plaintext", address,
                                  "pipeops.agent.v1.Service/Describe").stdout)
        assert info["state"] == "SERVICE_STATE_IDLE"
        assert info["detail"] == reply["detail"]
        assert proc.terminate(timeout=10) == 0
    finally:
        proc.stop()
    assert not [r for r in proc.records() if r["level"] == "error"]
