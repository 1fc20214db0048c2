"""Sibling calls: "down" degrades quietly; any other failure is an error, logged once per
kind and shown in Describe until the call succeeds again. Against real gRPC servers on
loopback in this process."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc
import pytest

from agentkit.config import load
from agentkit.events import EventBus
from agentkit.grpcclient import Siblings
from agentkit.status import ServiceStatus
from pipeops.agent.v1 import gateway_pb2, gateway_pb2_grpc, tunnel_pb2
from tests.helpers import free_port


class Gateway(gateway_pb2_grpc.GatewayServicer):
    """Answers CheckTarget with ``allowed``; GetStatus fails with ``code`` if set."""

    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None

    async def GetStatus(self, request: object, context: grpc.aio.ServicerContext
                        ) -> gateway_pb2.GatewayStatus:
        if self.code is not None:
            await context.abort(self.code, f"told to fail with {self.code.name}")
        return gateway_pb2.GatewayStatus(enabled=False)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, int]]:
    servicer = Gateway()
    server = grpc.aio.server()
    gateway_pb2_grpc.add_GatewayServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield servicer, port
    await server.stop(0)


def siblings_for(gateway_port: int) -> tuple[Siblings, ServiceStatus]:
    config = load(env={}, overrides={"grpc.gateway": gateway_port,
                                     "grpc.tunnel": free_port()})
    status = ServiceStatus("registrar", "1.0", EventBus("registrar"))
    return Siblings(config, status), status


async def test_an_error_answer_is_logged_once_and_shown_until_a_success(
        gateway: tuple[Gateway, int], caplog: pytest.LogCaptureFixture) -> None:
    servicer, port = gateway
    siblings, status = siblings_for(port)
    caplog.set_level(logging.DEBUG, "agentkit.grpcclient")
    try:
        request = gateway_pb2.GetGatewayStatusRequest()
        # UNIMPLEMENTED (the generated servicer's answer for a method it does not serve)
        # and INTERNAL are errors, each logged once at error level.
        unimplemented = await siblings.call("gateway", "Gateway/CheckTarget",
                                            gateway_pb2.CheckTargetRequest())
        assert unimplemented is None
        servicer.code = grpc.StatusCode.INTERNAL
        for _ in range(3):
            assert await siblings.call("gateway", "Gateway/GetStatus", request) is None
        errors = [r for r in caplog.records
                  if r.levelno == logging.ERROR and r.name == "agentkit.grpcclient"]
        assert [(r.sibling, r.method, r.code) for r in errors] == [  # type: ignore[attr-defined]
            ("gateway", "Gateway/CheckTarget", "UNIMPLEMENTED"),
            ("gateway", "Gateway/GetStatus", "INTERNAL")]
        shown = {e.method: e for e in status.to_proto().sibling_errors}
        assert shown["Gateway/CheckTarget"].code == "UNIMPLEMENTED"
        assert shown["Gateway/GetStatus"].code == "INTERNAL"
        assert shown["Gateway/GetStatus"].count == 3
        assert "told to fail with INTERNAL" in shown["Gateway/GetStatus"].detail
        assert shown["Gateway/GetStatus"].last_at.seconds > 0

        # A success clears that method's error; the other stays.
        servicer.code = None
        reply = await siblings.call("gateway", "Gateway/GetStatus", request)
        assert reply is not None and reply.enabled is False
        assert [e.method for e in status.to_proto().sibling_errors] == ["Gateway/CheckTarget"]
    finally:
        await siblings.close()


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE,
                                  grpc.StatusCode.DEADLINE_EXCEEDED])
async def test_down_is_not_an_error(gateway: tuple[Gateway, int], code: grpc.StatusCode,
                                    caplog: pytest.LogCaptureFixture) -> None:
    servicer, port = gateway
    servicer.code = code
    siblings, status = siblings_for(port)
    caplog.set_level(logging.DEBUG, "agentkit.grpcclient")
    try:
        assert await siblings.call("gateway", "Gateway/GetStatus",
                                   gateway_pb2.GetGatewayStatusRequest()) is None
        # nothing listens on the tunnel's port: UNAVAILABLE from the channel itself
        assert await siblings.call("tunnel", "Tunnel/GetStatus",
                                   tunnel_pb2.GetTunnelStatusRequest(), timeout=2) is None
    finally:
        await siblings.close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert {r.code for r in caplog.records} == {code.name, "UNAVAILABLE"}  # type: ignore[attr-defined]
    assert list(status.to_proto().sibling_errors) == []


async def test_an_unknown_method_or_sibling_is_a_programming_error(
        gateway: tuple[Gateway, int]) -> None:
    siblings, _ = siblings_for(gateway[1])
    try:
        with pytest.raises(ValueError, match="Service/Method"):
            await siblings.call("gateway", "CheckTarget", object())
        with pytest.raises(ValueError, match="no sibling"):
            await siblings.call("kubelet", "Service/Describe", object())
    finally:
        await siblings.close()
