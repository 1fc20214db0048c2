"""Each sibling down: every endpoint still answers (never a 500), says which container
is missing and why, and an action that needs the missing sibling is refused with 503.

"Down" is an http-api started on the same pod whose ``grpc.<sibling>`` port has nothing
listening: to it, that sibling is exactly as absent as a crashed container."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import free_port
from tests.httpapi.pod import SIBLINGS, HttpApi, Pod

GETS = ("/health", "/version", "/metrics", "/api/health/detailed",
        "/api/status/features", "/api/metrics/runtime", "/api/status/connectivity",
        "/api/agent/status")


@pytest.fixture(scope="module", params=SIBLINGS)
def without(request: pytest.FixtureRequest, pod: Pod) -> Iterator[tuple[str, HttpApi]]:
    sibling = request.param
    api = pod.http_api(grpc={sibling: free_port()})
    yield sibling, api
    api.stop()


def test_every_endpoint_answers(without: tuple[str, HttpApi]) -> None:
    _, api = without
    for path in GETS:
        status, body, _ = api.request("GET", path)
        assert status == 200, (path, status, body)
    status, body, _ = api.request("GET", "/ready")  # not ready, and says why
    assert status in (200, 503) and "reasons" in body


def test_the_missing_container_is_named(without: tuple[str, HttpApi]) -> None:
    sibling, api = without
    detailed = api.get("/api/health/detailed")
    assert detailed["status"] == "degraded"
    missing = detailed["containers"][sibling]
    assert missing["state"] == "unreachable" and missing["grpc_health"] == "unreachable"
    assert "UNAVAILABLE" in missing["error"]
    for other in set(SIBLINGS) - {sibling}:
        assert detailed["containers"][other]["grpc_health"] == "SERVING"

    runtime = api.get("/api/metrics/runtime")
    assert "unreachable" in runtime[sibling]["error"]
    assert all(int(runtime[o]["rss_bytes"]) > 0 for o in set(SIBLINGS) - {sibling})

    metrics = api.get("/metrics", token="")
    assert f'pipeops_container_up{{container="{sibling}"}} 0.0' in metrics
    assert f'container="{sibling}",' not in metrics.replace(
        f'pipeops_container_up{{container="{sibling}"}}', "")
    assert f'process_resident_memory_bytes{{container="{sibling}"}}' not in metrics
    for other in set(SIBLINGS) - {sibling}:
        assert f'pipeops_container_up{{container="{other}"}} 1.0' in metrics

    status = api.get("/api/agent/status")
    assert status["status"] == "degraded"
    assert status["containers"][sibling]["state"] == "unreachable"


def test_parts_of_the_missing_sibling_say_why(without: tuple[str, HttpApi]) -> None:
    sibling, api = without
    detailed = api.get("/api/health/detailed")
    features = api.get("/api/status/features")
    connectivity = api.get("/api/status/connectivity")
    if sibling == "registrar":
        assert "unreachable" in detailed["identity"]["error"]
        assert "unreachable" in detailed["heartbeat"]["error"]
        assert features["heartbeat"]["available"] is False
        assert "unreachable" in features["heartbeat"]["detail"]
        assert connectivity["kubernetes"]["ok"] is False
        assert "registrar cannot be asked" in connectivity["kubernetes"]["detail"]
        assert connectivity["tunnel"]["ok"] is True
    elif sibling == "tunnel":
        assert "unreachable" in detailed["tunnel"]["error"]
        assert "unreachable" in detailed["sessions"]["error"]
        assert features["tunnel"]["available"] is False
        assert features["session_commands"]["available"] is False
        assert connectivity["tunnel"]["ok"] is False
        assert "unreachable" in connectivity["tunnel"]["detail"]
        assert connectivity["kubernetes"]["ok"] is True
    else:
        assert "unreachable" in detailed["gateway"]["error"]
        assert "unreachable" in detailed["routes"]["error"]
        assert "unreachable" in features["ingress_sync"]["detail"]
        assert connectivity["tunnel"]["ok"] and connectivity["kubernetes"]["ok"]
    assert connectivity["control_plane"]["ok"] is True


def test_actions_of_the_missing_sibling_are_refused(without: tuple[str, HttpApi]) -> None:
    sibling, api = without
    heartbeat = api.request("POST", "/api/agent/heartbeat")
    command = api.request("POST", "/api/runners/sessions/command",
                          {"action": "wake_session", "payload": {"sessionId": "x"}})
    message = api.request("POST", "/api/control-plane/message", {"type": "heartbeat"})
    if sibling == "registrar":
        assert heartbeat[0] == 503 and "registrar is unreachable" in heartbeat[1]["error"]
        assert message[0] == 503
        assert command[0] == 200
    elif sibling == "tunnel":
        assert command[0] == 503 and "tunnel" in command[1]["error"]
        assert heartbeat[0] == 200 and message[0] == 200
    else:
        assert heartbeat[0] == 200 and command[0] == 200 and message[0] == 200
