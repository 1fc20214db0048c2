"""The pod's four containers as real processes, with the config the chart renders.

Each container is started the way the Deployment starts it (its console script with the
Deployment's args, the ConfigMap's config.yaml, the registrar's token from env), and then
probed exactly as the kubelet would: a gRPC health Check on the port of each `grpc:`
probe, an HTTP GET on each `httpGet:` path and port. The ports are moved to free ones
through the chart's values, which also proves the values reach config and probes alike.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from pipeops.agent.v1 import events_pb2, events_pb2_grpc, service_pb2, service_pb2_grpc
from tests.chart.chart import AGENT_CONTAINERS, TOKEN, Chart, Rendered
from tests.helpers import BIN, ServiceProcess, free_port, wait_for

PORT_VALUES = ("registrar.grpcPort", "tunnel.grpcPort", "gateway.grpcPort", "httpApi.grpcPort",
               "registrar.probePort", "tunnel.probePort", "gateway.probePort",
               "httpApi.port", "registrar.metricsPort", "tunnel.metricsPort",
               "gateway.metricsPort")


@pytest.fixture(scope="module")
def pod(chart: Chart, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[Rendered, dict[str, ServiceProcess]]]:
    folder = tmp_path_factory.mktemp("pod")
    sets = [arg for key in PORT_VALUES for arg in ("--set", f"{key}={free_port()}")]
    # A control plane that is not there: the registrar keeps retrying, as in a real outage.
    sets += ["--set", f"pipeops.apiUrl=http://127.0.0.1:{free_port()}",
             "--set", "features.nativeSidecar=false"]
    rendered = chart.template("--set", f"pipeops.token={TOKEN}", *sets)
    mount = folder / "etc-pipeops"
    mount.mkdir()
    (mount / "config.yaml").write_text(rendered.config_text)
    state = folder / "state"
    state.mkdir()

    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PIPEOPS_", "KUBERNETES_", "GATEWAY_"))}
    processes: dict[str, ServiceProcess] = {}
    with contextlib.ExitStack() as stack:
        for name in AGENT_CONTAINERS:
            container = rendered.container(name)
            args = [a.replace("/etc/pipeops", str(mount)) for a in container["args"]]
            env = {**base_env,
                   # The emptyDir: the one path the image does not have here.
                   "PIPEOPS_STATE_DIR": str(state)}
            for var in container.get("env", []):
                if var["name"] == "PIPEOPS_TOKEN":  # from the Secret, as the kubelet does
                    env["PIPEOPS_TOKEN"] = TOKEN
            proc = ServiceProcess([str(BIN / f"pipeops-{name}"), *args], env=env)
            processes[name] = stack.enter_context(proc)
        for proc in processes.values():
            proc.wait_started()
        yield rendered, processes
        for name, proc in processes.items():
            assert proc.terminate(timeout=15) == 0, f"{name} did not exit cleanly on SIGTERM"


def _grpc_health(port: int) -> Any:
    """The kubelet's gRPC probe: Health/Check with the empty service name."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        except grpc.RpcError:
            return None


def _http(port: int, path: str) -> tuple[int, Any]:
    """Status and JSON body, whatever the status (a 503 from /ready has a body too)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _http_ok(port: int, path: str) -> bool:
    """What the kubelet counts as success: a 2xx/3xx answer (here: 200)."""
    try:
        return _http(port, path)[0] == 200
    except OSError:  # not listening yet
        return False


def _http_answer(port: int, path: str) -> tuple[int, Any] | None:
    try:
        return _http(port, path)
    except OSError:  # not listening yet
        return None


def _probe_port(rendered: Rendered, container: str, port: int | str) -> int:
    return port if isinstance(port, int) else rendered.port(container, port)


def test_every_probe_the_chart_declares_passes(
        pod: tuple[Rendered, dict[str, ServiceProcess]]) -> None:
    rendered, _ = pod
    probed = []
    for name in AGENT_CONTAINERS:
        c = rendered.container(name)
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind)
            if probe is None:
                continue
            if "grpc" in probe:
                port = _probe_port(rendered, name, probe["grpc"]["port"])
                assert wait_for(lambda p=port: _grpc_health(p) == health_pb2.HealthCheckResponse
                                .SERVING, timeout=15, what=f"{name} {kind}")
            elif kind == "readinessProbe":
                # No control plane here: the readiness probe fails, and says why.
                get = probe["httpGet"]
                port = _probe_port(rendered, name, get["port"])
                assert get["path"] == "/ready"
                code, body = wait_for(lambda p=port: _http_answer(p, "/ready"), timeout=15,
                                      what=f"{name} {kind}")
                assert code == 503
                assert "registrar: not registered (unregistered)" in body["reasons"]
            else:
                get = probe["httpGet"]
                port = _probe_port(rendered, name, get["port"])
                assert wait_for(lambda p=port, path=get["path"]: _http_ok(p, path),
                                timeout=15, what=f"{name} {kind}")
            probed.append((name, kind))
    assert {n for n, _ in probed} == set(AGENT_CONTAINERS)


def test_containers_wait_for_the_identity_on_the_shared_volume(
        pod: tuple[Rendered, dict[str, ServiceProcess]]) -> None:
    """No native sidecar: the tunnel runs, degraded, until the identity file appears."""
    rendered, _ = pod
    port = rendered.port("http-api", "http")

    def services() -> dict[str, Any] | None:
        answer = _http_answer(port, "/ready")
        if answer is None:
            return None
        _, body = answer
        found: dict[str, Any] = body["services"]
        settled = (found["tunnel"].get("state") == "SERVICE_STATE_DEGRADED"
                   and found["registrar"].get("name") == "registrar")
        return found if settled else None

    # The tunnel is degraded, not crashed; the registrar is up (its gRPC Describe answers
    # through the http-api) though it cannot register yet.
    found = wait_for(services, timeout=15, what="the tunnel to report itself degraded")
    assert found["gateway"].get("name") == "gateway"


def test_no_container_logs_the_install_token(
        pod: tuple[Rendered, dict[str, ServiceProcess]]) -> None:
    _, processes = pod
    processes["registrar"].wait_record(lambda r: r.get("level") in ("warning", "error"),
                                       what="the registrar's first failed attempt")
    for name, proc in processes.items():
        assert proc.lines, f"{name} logged nothing"
        assert TOKEN not in "\n".join(proc.lines + proc.stderr_lines), name


def test_the_probed_ports_serve_health_only(
        pod: tuple[Rendered, dict[str, ServiceProcess]]) -> None:
    """What the kubelet dials on the pod IP gives away nothing: Events (every log line),
    Describe and reflection answer only on the localhost gRPC port."""
    rendered, _ = pod
    for name in ("registrar", "tunnel", "gateway"):
        probe_port = rendered.container(name)["livenessProbe"]["grpc"]["port"]
        grpc_port = rendered.port(name, f"grpc-{name}")
        assert wait_for(lambda p=probe_port: _grpc_health(p) is not None, timeout=15,
                        what=f"{name}'s probe listener")
        for port, expected in ((probe_port, grpc.StatusCode.UNIMPLEMENTED),
                               (grpc_port, grpc.StatusCode.OK)):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                try:
                    service_pb2_grpc.ServiceStub(channel).Describe(
                        service_pb2.DescribeRequest(), timeout=5)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                assert code == expected, (name, port, "Describe")
                stream = events_pb2_grpc.EventsStub(channel).Subscribe(
                    events_pb2.SubscribeRequest(history=1), timeout=5)
                try:
                    next(stream)
                    code = grpc.StatusCode.OK
                except grpc.RpcError as exc:
                    code = exc.code()
                finally:
                    stream.cancel()
                assert code == expected, (name, port, "Events")
