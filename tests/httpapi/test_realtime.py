"""Real time against the whole pod: SSE of events and logs with filters and resume,
keep-alives, the WebSocket with its requests, and the limit of clients."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from tests.helpers import wait_for
from tests.httpapi.pod import Pod
from tests.httpapi.sse import SseReader


def sse(pod: Pod, path: str, **kw: Any) -> SseReader:
    return SseReader(pod.api.port, path, pod.api.token, **kw)


def degrade_and_recover(pod: Pod) -> None:
    """A live status change in the registrar: heartbeats failing, then working again."""
    pod.cp.set_fault("5xx", target="heartbeat")
    try:
        wait_for(lambda: pod.api.get("/api/health/detailed")["containers"]["registrar"]
                 ["state"] == "degraded", 20, what="the registrar to be degraded")
    finally:
        pod.cp.clear_fault()


def test_events_of_all_containers_live_and_resumed(pod: Pod) -> None:
    with sse(pod, "/api/realtime/events?history=500") as stream:
        assert stream.status == 200
        stream.wait(lambda e: e["data"]["source"] == "tunnel"
                    and e["data"]["message"] == "tunnel connected", what="tunnel history")
        last = max(e["id"] for e in stream.events)
        degrade_and_recover(pod)
        live = stream.wait(lambda e: e["id"] > last and e["event"] == "status"
                           and e["data"]["source"] == "registrar"
                           and e["data"]["attributes"].get("state") == "degraded",
                           what="the registrar's status change, live")
        assert live["data"]["level"] == "warning"
        recovered = stream.wait(lambda e: e["id"] > live["id"] and e["event"] == "status"
                                and e["data"]["source"] == "registrar"
                                and e["data"]["attributes"].get("state") == "ready",
                                what="the registrar ready again")
        assert all(e["event"] in ("status", "event") for e in stream.events)
        ids = [e["id"] for e in stream.events]
        assert ids == sorted(set(ids))
    with sse(pod, "/api/realtime/events", headers={"Last-Event-ID": str(live["id"])}) \
            as resumed:
        first = resumed.wait(lambda e: True, what="the resumed stream")
        assert first["id"] > live["id"]
        resumed.wait(lambda e: e["id"] == recovered["id"], what="the missed event, replayed")
        assert resumed.comments[0] == "connected"


def test_logs_of_every_container_filtered(pod: Pod) -> None:
    with sse(pod, "/api/realtime/logs") as everything, \
            sse(pod, "/api/realtime/logs?service=tunnel&level=warning") as warnings:
        status, body, _ = pod.api.request("POST", "/api/runners/sessions/command", {
            "action": "wake_session", "payload": {"sessionId": "not-there"},
            "id": "realtime-logs-1"})
        assert status == 200 and body["type"] == "failed"
        received = everything.wait(
            lambda e: e["data"]["source"] == "tunnel"
            and e["data"]["message"] == "command received"
            and e["data"]["attributes"].get("command_id") == "realtime-logs-1",
            what="the tunnel's info line")
        assert received["event"] == "log" and received["data"]["level"] == "info"
        failed = warnings.wait(lambda e: e["data"]["attributes"].get("command_id")
                               == "realtime-logs-1", what="the tunnel's warning")
        assert failed["data"]["level"] == "warning"
        assert failed["data"]["message"].startswith("command failed")
        everything.wait(lambda e: e["id"] == failed["id"], what="the warning in the full view")
        assert all(e["data"]["source"] == "tunnel" and e["data"]["level"] in
                   ("warning", "error") for e in warnings.events)
        sources = {e["data"]["source"] for e in everything.events}
        assert "tunnel" in sources


def test_logs_history_carries_every_container(pod: Pod) -> None:
    with sse(pod, "/api/realtime/logs?history=2000") as stream:
        wait_for(lambda: {e["data"]["source"] for e in stream.events} >=
                 {"registrar", "tunnel", "gateway", "http-api"}, 20,
                 what="log records of all four containers")


def test_bad_filters_are_refused(pod: Pod) -> None:
    status, body, _ = pod.api.request("GET", "/api/realtime/logs?level=loud")
    assert status == 422 and "level" in json.dumps(body)


def test_keepalive_comments(pod: Pod) -> None:
    api = pod.http_api("--set", "realtime.keepalive=0.3")
    with SseReader(api.port, "/api/realtime/events?service=nobody", api.token) as stream:
        wait_for(lambda: stream.comments.count("keep-alive") >= 2, 10, what="keep-alives")


def test_the_limit_of_clients(pod: Pod) -> None:
    api = pod.http_api("--set", "realtime.max_connections=2")
    one = SseReader(api.port, "/api/realtime/events", api.token)
    two = SseReader(api.port, "/api/realtime/logs", api.token)
    try:
        assert (one.status, two.status) == (200, 200)
        with SseReader(api.port, "/api/realtime/events", api.token) as three:
            assert three.status == 503
            assert "max_connections (2)" in three.body()["detail"]
        assert api.metric("pipeops_sse_connections", container="http-api") == 2

        async def ws_refused() -> tuple[int, str]:
            try:
                async with connect(api.url.replace("http", "ws") + "/ws", additional_headers={
                        "Authorization": f"Bearer {api.token}"}):
                    return 101, ""
            except InvalidStatus as exc:
                return exc.response.status_code, exc.response.body.decode()

        status, reason = asyncio.run(ws_refused())
        assert status == 503 and "max_connections (2)" in reason
    finally:
        one.close()
        two.close()
    wait_for(lambda: api.metric("pipeops_sse_connections", container="http-api") == 0, 10,
             what="the streams to be counted as closed")
    with SseReader(api.port, "/api/realtime/events", api.token) as again:
        assert again.status == 200


def test_websocket(pod: Pod) -> None:
    url = pod.api.url.replace("http", "ws") + "/ws"

    async def session() -> dict[str, Any]:
        got: dict[str, Any] = {}
        async with connect(url, additional_headers={
                "Authorization": f"Bearer {pod.api.token}"}, max_size=2**22) as ws:
            await asyncio.to_thread(wait_for, lambda: pod.api.metric(
                "pipeops_websocket_connections") == 1, 10, 0.05, "the gauge")
            for kind in ("ping", "get_status", "get_metrics"):
                await ws.send(json.dumps({"type": kind, "request_id": kind}))
            await ws.send("not json")
            await ws.send(json.dumps({"type": "dance"}))
            await asyncio.to_thread(degrade_and_recover, pod)
            async with asyncio.timeout(30):
                while not {"ping", "get_status", "get_metrics", "errors",
                           "event"} <= got.keys():  # ("error" holds the first error)
                    message = json.loads(await ws.recv())
                    if message["type"] == "event":
                        event = message["event"]  # the status change (not a heartbeat)
                        if event["source"] == "registrar" and event["kind"] == "status":
                            got.setdefault("event", event)
                    elif message["type"] == "error":
                        got.setdefault("error", []).append(message["error"])
                        if len(got["error"]) == 2:
                            got["errors"] = got.pop("error")
                    else:
                        got[message["request_id"]] = message
        return got

    got = asyncio.run(session())
    assert got["ping"] == {"type": "ping_response", "request_id": "ping", "data": {"pong": True}}
    status = got["get_status"]["data"]
    assert status["identity"]["cluster_id"] == pod.cluster_id
    assert set(status["containers"]) == {"http-api", "registrar", "tunnel", "gateway"}
    assert int(got["get_metrics"]["data"]["tunnel"]["rss_bytes"]) > 0
    assert "JSON object" in got["errors"][0] and "unknown request type" in got["errors"][1]
    assert got["event"]["attributes"]["state"] in ("degraded", "ready")
    wait_for(lambda: pod.api.metric("pipeops_websocket_connections") == 0, 10,
             what="the WebSocket gauge back to 0")


def test_open_streams_do_not_hold_the_shutdown(pod: Pod) -> None:
    """SIGTERM with a dashboard's SSE streams and a WebSocket open: the http-api stops at
    once (its own log: "stopping on signal" to "stopped" well under uvicorn's 2 s graceful
    timeout), each SSE response ended cleanly (no broken chunked body), the WebSocket
    closed by the server."""
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect as sync_connect

    api = pod.http_api()
    with SseReader(api.port, "/api/realtime/events", api.token) as events, \
            SseReader(api.port, "/api/realtime/logs", api.token) as logs, \
            sync_connect(api.url.replace("http", "ws") + "/ws", additional_headers={
                "Authorization": f"Bearer {api.token}"}) as ws:
        wait_for(lambda: "connected" in events.comments and "connected" in logs.comments, 10,
                 what="both streams open")
        ws.send(json.dumps({"type": "ping", "request_id": "p"}))
        while json.loads(ws.recv(timeout=10))["type"] != "ping_response":
            pass
        assert api.terminate(timeout=10) == 0
        assert api.stop_seconds() < 1.0
        wait_for(lambda: events.ended and logs.ended, 5, what="both streams to end")
        assert (events.error, logs.error) == ("", "")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
