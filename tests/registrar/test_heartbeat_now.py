"""``Registrar.HeartbeatNow``: the heartbeat loop's next beat, brought forward, with its
outcome (what the http-api's ``POST /api/agent/heartbeat`` asks for)."""

from __future__ import annotations

import contextlib
import time

import grpc
import pytest

from pipeops.agent.v1 import events_pb2, events_pb2_grpc, registrar_pb2, registrar_pb2_grpc
from pipeops_controlplane.testing import ControlPlane
from tests.registrar.conftest import StartRegistrar
from tests.registrar.harness import RegistrarRun, beats, cluster_with_beats

SLOW = ["--set", "pipeops.heartbeat_interval=60"]  # no beat of the loop's own meanwhile


def heartbeat_now(registrar: RegistrarRun) -> registrar_pb2.HeartbeatNowResponse:
    with grpc.insecure_channel(registrar.grpc_address) as channel:
        reply: registrar_pb2.HeartbeatNowResponse = registrar_pb2_grpc.RegistrarStub(
            channel).HeartbeatNow(registrar_pb2.HeartbeatNowRequest(), timeout=10)
    return reply


def test_a_beat_asked_for_is_sent_at_once(start_registrar: StartRegistrar,
                                          controlplane: ControlPlane) -> None:
    registrar = start_registrar(extra=SLOW)
    cluster_id = registrar.wait_registered()["cluster_id"]
    cluster_with_beats(controlplane, cluster_id, 1)  # the loop's first beat went out
    before = registrar.heartbeat_state().sent_total
    at_plane = beats(controlplane, cluster_id)
    started = time.monotonic()
    reply = heartbeat_now(registrar)
    assert time.monotonic() - started < 10
    assert reply.delivered and reply.error == ""
    assert reply.heartbeat.sent_total == before + 1
    assert registrar.metric("pipeops_heartbeat_total") == before + 1
    assert beats(controlplane, cluster_id) == at_plane + 1


def test_a_beat_the_plane_fails_says_why(start_registrar: StartRegistrar,
                                         controlplane: ControlPlane) -> None:
    registrar = start_registrar(extra=SLOW)
    registrar.wait_registered()
    controlplane.set_fault("5xx", target="heartbeat")
    reply = heartbeat_now(registrar)
    assert not reply.delivered
    assert reply.error
    assert reply.heartbeat.errors_total >= 1
    controlplane.clear_fault()
    assert heartbeat_now(registrar).delivered


def test_no_beat_before_registration(start_registrar: StartRegistrar,
                                     controlplane: ControlPlane) -> None:
    controlplane.set_fault("5xx", target="register")
    registrar = start_registrar(extra=SLOW)
    registrar.wait_started()
    with pytest.raises(grpc.RpcError) as caught:
        heartbeat_now(registrar)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "not registered" in (caught.value.details() or "")


def beat_events(registrar: RegistrarRun) -> list[events_pb2.Event]:
    """The heartbeat events the registrar's Events stream still holds."""
    with grpc.insecure_channel(registrar.grpc_address) as channel:
        stream = events_pb2_grpc.EventsStub(channel).Subscribe(
            events_pb2.SubscribeRequest(kinds=[events_pb2.EVENT_KIND_EVENT], history=500),
            timeout=2)
        found: list[events_pb2.Event] = []
        with contextlib.suppress(grpc.RpcError):  # the deadline ends the stream
            for event in stream:
                if event.message.startswith("heartbeat "):
                    found.append(event)
    return found


def test_each_beat_is_an_event(start_registrar: StartRegistrar,
                               controlplane: ControlPlane) -> None:
    registrar = start_registrar(extra=SLOW)
    cluster_id = registrar.wait_registered()["cluster_id"]
    reply = heartbeat_now(registrar)
    assert reply.delivered
    delivered = [e for e in beat_events(registrar) if e.message == "heartbeat delivered"]
    assert delivered and delivered[-1].level == "info"
    assert delivered[-1].attributes["sent_total"] == str(reply.heartbeat.sent_total)
    assert delivered[-1].attributes["cluster_id"] == cluster_id
    assert delivered[-1].source == "registrar"

    controlplane.set_fault("5xx", target="heartbeat")
    assert not heartbeat_now(registrar).delivered
    controlplane.clear_fault()
    failed = [e for e in beat_events(registrar) if e.message == "heartbeat failed"]
    assert len(failed) == 1 and failed[0].level == "warning"
    assert failed[0].attributes["kind"] and failed[0].attributes["error"]
    assert controlplane.token not in failed[0].attributes["error"]
