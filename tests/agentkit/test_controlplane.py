"""agentkit.controlplane against the real dev control plane: replies as models, every
failure a typed error, ``Retry-After`` honoured by the retries, and no token ever in an
error message or a log line (a proxy echoing the request headers included)."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from agentkit import logs
from agentkit.config import ReconnectConfig
from agentkit.controlplane import (
    BadReply,
    Conflict,
    ConnectionFailed,
    ControlPlaneClient,
    ControlPlaneError,
    Invalid,
    NotFound,
    ReplyRecord,
    ServerError,
    Throttled,
    TimedOut,
    TunnelStatus,
    Unauthorized,
    excerpt,
    retry_after,
    transient,
)
from agentkit.retry import FailureReport, retrying
from pipeops_controlplane.testing import ControlPlane
from tests.helpers import free_port

INSTALL_TOKEN = "pit_cpclient_" + uuid.uuid4().hex
FAST = ReconnectConfig(backoff_base=0.01, backoff_max=0.05)


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    with ControlPlane([INSTALL_TOKEN]) as plane:
        yield plane


@pytest.fixture(autouse=True)
def _no_faults(cp: ControlPlane) -> Iterator[None]:
    cp.clear_fault()
    yield
    cp.clear_fault()


@pytest.fixture
async def client(cp: ControlPlane) -> AsyncIterator[ControlPlaneClient]:
    plane = ControlPlaneClient(cp.url, timeout=5.0, user_agent="cpclient-test")
    try:
        yield plane
    finally:
        await plane.aclose()


def register_body(**changes: Any) -> dict[str, Any]:
    return {"agent_id": "agent-" + uuid.uuid4().hex[:12], "name": "cpclient",
            "hostname": "pod-1", "agent_version": "0.1.0", "k8s_version": "v1.32.0",
            "server_ip": "10.0.0.1", "labels": {}, "k8s_service_token": "sa-" + uuid.uuid4().hex,
            "tunnel_port_config": {"kubernetes_api": 0, "kubelet": 0, "agent_http": 0},
            "features": {"tunnel": True}, **changes}


def heartbeat_body(cluster_id: str, agent_id: str) -> dict[str, Any]:
    return {"cluster_id": cluster_id, "agent_id": agent_id, "status": "active",
            "tunnel_status": "disconnected", "timestamp": "2026-01-02T03:04:05.678Z",
            "metadata": {"node_count": 1, "pod_count": 2, "k8s_version": "v1.32.0",
                         "agent_version": "0.1.0", "uptime_seconds": 1.0, "is_private": True,
                         "routing_mode": "tunnel", "gateway_routes": 0}}


async def test_register_heartbeat_and_tunnel_status_are_models(
        cp: ControlPlane, client: ControlPlaneClient) -> None:
    body = register_body()
    reply = await client.register(INSTALL_TOKEN, body)
    assert str(uuid.UUID(reply.cluster_id)) == reply.cluster_id and reply.token
    await client.heartbeat(reply.cluster_id, reply.token,
                           heartbeat_body(reply.cluster_id, body["agent_id"]))
    seen = cp.cluster(reply.cluster_id)
    assert seen is not None and seen["heartbeat_count"] == 1
    status = await client.tunnel_status(reply.cluster_id, body["agent_id"], reply.token)
    assert isinstance(status, TunnelStatus)
    assert status.status in ("pending", "ready", "disabled")
    if status.status == "ready":
        assert status.tunnel_url.startswith(("ws://", "wss://"))


async def test_the_generic_core_validates_any_model(client: ControlPlaneClient) -> None:
    class Health(ReplyRecord):
        status: str

    class Impossible(ReplyRecord):
        routes: list[str]

    assert (await client.request("GET", "/healthz", Health, token="t")).status
    with pytest.raises(BadReply, match=r"GET /healthz: required field routes is missing"):
        await client.request("GET", "/healthz", Impossible, token="t")
    assert await client.request("GET", "/healthz", None, token="t") is None


async def test_refusals_are_typed_and_never_hold_the_token(
        cp: ControlPlane, client: ControlPlaneClient) -> None:
    wrong = "pit_wrong_" + uuid.uuid4().hex
    with pytest.raises(Unauthorized) as refused:
        await client.register(wrong, register_body())
    assert refused.value.status == 401 and refused.value.kind == "unauthorized"
    assert not transient(refused.value)
    assert wrong not in str(refused.value)

    reply = await client.register(INSTALL_TOKEN, register_body())
    gone = str(uuid.uuid4())
    with pytest.raises(NotFound) as missing:
        await client.heartbeat(gone, reply.token, heartbeat_body(gone, "agent-x"))
    assert missing.value.status == 404 and reply.token not in str(missing.value)


async def test_a_conflict_and_an_invalid_request_are_not_worth_retrying(
        client: ControlPlaneClient) -> None:
    body = register_body()
    reply = await client.register(INSTALL_TOKEN, body)
    with pytest.raises(Conflict) as conflict:  # another agent's heartbeat for this cluster
        await client.heartbeat(reply.cluster_id, reply.token,
                               heartbeat_body(reply.cluster_id, "agent-someone-else"))
    assert conflict.value.status == 409 and "agent_id" in conflict.value.body
    with pytest.raises(Invalid) as invalid:
        await client.register(INSTALL_TOKEN, {"agent_id": "a"})
    assert invalid.value.status == 422
    assert not transient(conflict.value) and not transient(invalid.value)


@pytest.mark.parametrize(("mode", "error", "said"), [
    ("5xx", ServerError, "(HTTP 503)"),
    ("429", Throttled, "(HTTP 429)"),
    ("malformed", BadReply, "reply is not JSON"),
    ("no_cluster_id", BadReply, "required field cluster_id is missing"),
    ("close", ConnectionFailed, "connection failed before a reply"),
])
async def test_each_fault_is_a_typed_transient_error(
        cp: ControlPlane, client: ControlPlaneClient, mode: str,
        error: type[ControlPlaneError], said: str) -> None:
    cp.set_fault(mode, target="register")
    with pytest.raises(error) as failed:
        await client.register(INSTALL_TOKEN, register_body())
    assert said in str(failed.value) and transient(failed.value)
    assert INSTALL_TOKEN not in str(failed.value)


async def test_no_reply_in_time_and_nobody_listening(cp: ControlPlane) -> None:
    cp.set_fault("hang")
    slow = ControlPlaneClient(cp.url, timeout=0.3)
    nobody = ControlPlaneClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    try:
        with pytest.raises(TimedOut, match="no reply in time"):
            await slow.register(INSTALL_TOKEN, register_body())
        with pytest.raises(ConnectionFailed):
            await nobody.register(INSTALL_TOKEN, register_body())
    finally:
        await slow.aclose()
        await nobody.aclose()


async def test_retry_after_is_read_and_honoured_by_the_retries(
        cp: ControlPlane, client: ControlPlaneClient) -> None:
    cp.set_fault("429", target="register", times=1, retry_after=1)
    with pytest.raises(Throttled) as throttled:
        await client.register(INSTALL_TOKEN, register_body())
    assert throttled.value.retry_after == 1.0

    # with a 10 ms backoff policy, only the server's hint explains a second's wait
    cp.set_fault("5xx", target="register", times=2, retry_after=1)
    began = time.monotonic()
    retry = retrying(FAST, retry_on=transient)
    async for attempt in retry:
        with attempt:
            reply = await client.register(INSTALL_TOKEN, register_body())
    took = time.monotonic() - began
    assert reply.cluster_id
    assert attempt.retry_state.attempt_number == 3
    assert retry.statistics["idle_for"] == pytest.approx(2.0)
    assert took >= 2.0
    assert cp.faults()["hits"] == 2


def test_retry_after_as_an_http_date() -> None:
    import datetime as dt

    now = dt.datetime(2026, 12, 2, 0, 0, 0, tzinfo=dt.UTC)
    assert retry_after("Wed, 02 Dec 2026 00:00:30 GMT", now) == 30.0
    assert retry_after("Wed, 01 Dec 2026 00:00:30 GMT", now) == 0.0  # past: at once
    assert retry_after("7", now) == 7.0
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


async def test_a_proxy_echoing_the_token_never_reaches_an_error_or_a_log(
        cp: ControlPlane, client: ControlPlaneClient) -> None:
    """The excerpt of an echo of the request headers masks the bearer token, and the log
    line of a retry through it (the real JSON formatter) holds no token either."""
    body = register_body()
    reply = await client.register(INSTALL_TOKEN, body)
    cp.set_fault("echo_headers", times=2)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JSONFormatter("cpclient-test"))
    logger = logging.getLogger("test.cpclient.echo")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        errors: list[str] = []
        retry = retrying(FAST, report=FailureReport(logger, "registration"),
                         retry_on=lambda e: isinstance(e, ServerError))
        async for attempt in retry:
            with attempt:
                try:
                    await client.heartbeat(reply.cluster_id, reply.token,
                                           heartbeat_body(reply.cluster_id, body["agent_id"]))
                except ControlPlaneError as exc:
                    errors.append(str(exc))
                    raise
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(errors) == 2 and len(lines) == 2
    assert all("HTTP 502" in e and "authorization" in e.lower() for e in errors)
    for text in [*errors, stream.getvalue()]:
        assert reply.token not in text
        assert INSTALL_TOKEN not in text


def test_excerpts_are_bounded_and_token_free() -> None:
    secret = "cluster-token-" + uuid.uuid4().hex
    body = json.dumps({"token": secret, "nested": [{"cluster_token": secret}], "x": "y"})
    shown = excerpt(body)
    assert secret not in shown and '"x": "y"' in shown
    assert secret not in excerpt(f'oops token={secret} and more')
    assert len(excerpt("a" * 10_000)) == 200
