"""A sibling that answers UNIMPLEMENTED is an error, not "down": the caller logs it once at
error level and shows it in its own Service.Describe. Real http-api process; its "gateway"
is a gRPC server in this process that serves health only (as a container of another
version would), its other siblings are ports where nothing listens (down: no error)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health, health_pb2_grpc

from tests.helpers import ServiceProcess, free_port, grpcurl, tool, wait_for


@pytest.fixture
def health_only_server() -> Iterator[int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(0)


def test_an_unimplemented_sibling_is_an_error_in_the_log_and_in_describe(
        state_dir: Path, health_only_server: int) -> None:
    port = free_port()
    argv = [tool("pipeops-http-api"), "--grpc-port", "0", "--state-dir", str(state_dir),
            "--host", "127.0.0.1", "--port", str(port),
            "--set", f"grpc.gateway={health_only_server}",
            "--set", f"grpc.registrar={free_port()}", "--set", f"grpc.tunnel={free_port()}"]
    with ServiceProcess(argv) as proc:
        address = proc.grpc_address

        def ask_ready() -> bool:
            try:
                httpx.get(f"http://127.0.0.1:{port}/ready", timeout=10)
            except httpx.TransportError:
                return False  # not listening yet: the HTTP socket comes after "started"
            return True

        for _ in range(3):  # three /ready: three Describe calls to each sibling
            wait_for(ask_ready, 15, what="/ready to answer")

        def described() -> dict[str, object] | None:
            out = grpcurl("-plaintext", address, "pipeops.agent.v1.Service/Describe")
            info = json.loads(out.stdout)
            return info if info.get("sibling_errors") else None

        info = wait_for(described, 10, what="sibling errors in Describe")

        # three /ready at least (the event hub and /metrics ask Describe too)
        first = info["sibling_errors"][0]  # type: ignore[index]
        assert info["sibling_errors"] == [{**first, "sibling": "gateway",
                                          "method": "Service/Describe",
                                          "code": "UNIMPLEMENTED"}]
        assert first["count"] >= 3
        assert proc.terminate(timeout=10) == 0
    errors = [r for r in proc.records() if r["level"] == "error"]
    assert len(errors) == 1, errors  # once per kind, however often it happens
    assert errors[0]["msg"].startswith(
        "sibling call failed: gateway Service/Describe answered UNIMPLEMENTED")
    assert (errors[0]["sibling"], errors[0]["code"]) == ("gateway", "UNIMPLEMENTED")
