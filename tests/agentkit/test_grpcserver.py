"""The gRPC bootstrap: the health-only probe listener beside the localhost server.

The kubelet's probes dial the pod IP, so a probed service opens a second listener there;
it must answer grpc.health.v1 with the same status as the main server and nothing else
(no reflection, no Events, no Service, no contract service).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentkit.events import KIND_EVENT, EventBus
from agentkit.grpcserver import GrpcServer
from agentkit.status import ServiceStatus
from pipeops.agent.v1 import events_pb2, events_pb2_grpc, service_pb2, service_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _server(**probe: str | int) -> GrpcServer:
    bus = EventBus("tunnel")
    return GrpcServer(ServiceStatus("tunnel", "1.0", bus), bus, [], "127.0.0.1", 0, **probe)


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = _server(probe_host="127.0.0.1", probe_port=0)
    srv.status.bus.publish(KIND_EVENT, "something to stream")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop(grace=0)


async def _check(port: int, service: str = "") -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5)
        return int(reply.status)


async def _code(port: int, call: str) -> grpc.StatusCode:
    """The status code of one call to something other than health on ``port``."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            if call == "events":
                stream = events_pb2_grpc.EventsStub(channel).Subscribe(
                    events_pb2.SubscribeRequest(history=10), timeout=5)
                async for _ in stream:
                    break
                stream.cancel()
            elif call == "describe":
                await service_pb2_grpc.ServiceStub(channel).Describe(
                    service_pb2.DescribeRequest(), timeout=5)
            else:
                stream = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
                async for _ in stream:
                    break
                stream.cancel()
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


async def test_probe_listener_serves_health_and_nothing_else(server: GrpcServer) -> None:
    assert server.probe_port not in (0, server.port)
    assert server.probe_address.startswith("127.0.0.1:")
    assert await _check(server.probe_port) == SERVING
    for call in ("events", "describe", "reflection"):
        assert await _code(server.probe_port, call) == grpc.StatusCode.UNIMPLEMENTED, call
        # The same calls work on the localhost server: the probe listener lacks them.
        assert await _code(server.port, call) == grpc.StatusCode.OK, call


async def test_probe_and_main_server_share_one_health_status(server: GrpcServer) -> None:
    name = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
    assert await _check(server.probe_port, name) == await _check(server.port, name) == SERVING
    await server.health.set("", NOT_SERVING)
    assert await _check(server.probe_port) == NOT_SERVING
    assert await _check(server.port) == NOT_SERVING
    await server.health.set("", SERVING)
    assert await _check(server.probe_port) == SERVING


async def test_no_probe_listener_without_a_probe_host() -> None:
    srv = _server()
    await srv.start()
    try:
        assert srv.probe_server is None
        assert (srv.probe_port, srv.probe_address) == (0, "")
        assert await _check(srv.port) == SERVING
    finally:
        await srv.stop(grace=0)


async def test_probe_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"gRPC health probe on 127.0.0.1:{port}: Address"):
            _server(probe_host="127.0.0.1", probe_port=port)
