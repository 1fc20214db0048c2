"""The hub and its SSE writer in-process: bounded ring and resume, the limit of clients,
and a client that stops reading is dropped (its connection aborted) without delaying
the others."""

from __future__ import annotations

import asyncio
import time
from typing import Any
from unittest import mock

import pytest

from agentkit.config import RealtimeConfig
from agentkit.events import KIND_EVENT, KIND_LOG, EventBus
from pipeops.agent.v1 import events_pb2
from pipeops_http_api.hub import Full, Hub, event_filter
from pipeops_http_api.realtime import ABORT, EventStream
from tests.tunnel.agent_helpers import until

ALL = event_filter(frozenset({"log", "status", "event"}))


def hub(**settings: Any) -> Hub:
    return Hub(RealtimeConfig(**settings), EventBus("http-api"), mock.Mock())


def event(n: int, kind: int = KIND_EVENT, source: str = "tunnel",
          level: str = "info") -> events_pb2.Event:
    return events_pb2.Event(source=source, kind=kind, level=level, message=f"e{n}",  # type: ignore[arg-type]
                            sequence=n)


async def test_the_ring_is_bounded_and_resume_says_what_was_lost() -> None:
    h = hub(buffer=10)
    for n in range(25):
        h.publish(event(n))
    assert h.last_id == 25
    items, lost = h.replay(20, ALL)
    assert [i.id for i in items] == [21, 22, 23, 24, 25] and lost == 0
    items, lost = h.replay(3, ALL)
    assert [i.id for i in items] == list(range(16, 26)) and lost == 12
    assert [i.id for i in h.recent(3, ALL)] == [23, 24, 25]


async def test_filters_by_kind_service_and_level() -> None:
    h = hub()
    h.publish(event(1, KIND_LOG, "tunnel", "info"))
    h.publish(event(2, KIND_LOG, "registrar", "warning"))
    h.publish(event(3, KIND_LOG, "tunnel", "error"))
    h.publish(event(4, KIND_EVENT, "tunnel", "error"))
    wants = event_filter(frozenset({"log"}), frozenset({"tunnel"}), "warning")
    assert [i.data["message"] for i in h.recent(10, wants)] == ["e3"]


async def test_more_clients_than_the_limit_are_refused() -> None:
    h = hub(max_connections=2)
    with h.connect(ALL), h.connect(ALL):
        with pytest.raises(Full, match="max_connections"), h.connect(ALL):
            pass
    with h.connect(ALL):
        assert len(h.clients) == 1


async def test_a_stalled_client_is_dropped_and_does_not_delay_the_others() -> None:
    h = hub(client_queue=10, keepalive=30)
    stalled_abort = mock.Mock()
    never = asyncio.Event()
    received: list[tuple[float, bytes]] = []

    async def stalled_send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and b"id: " in message.get("body", b""):
            await never.wait()  # a reader that stopped: the write never completes

    async def good_send(message: dict[str, Any]) -> None:
        received.append((time.monotonic(), message.get("body", b"")))

    async def receive() -> dict[str, Any]:
        await never.wait()
        return {"type": "http.disconnect"}

    def stream() -> EventStream:
        return EventStream(h, ALL, after=None, history=0, keepalive=30)

    stalled = asyncio.create_task(stream()({"type": "http", ABORT: stalled_abort},
                                           receive, stalled_send))
    good = asyncio.create_task(stream()({"type": "http"}, receive, good_send))
    await until(lambda: len(h.clients) == 2, 5, "both clients")
    published = []
    for n in range(40):
        published.append(time.monotonic())
        h.publish(event(n))
        await asyncio.sleep(0)
    await until(lambda: stalled.done(), 5, "the stalled client to be dropped")
    stalled_abort.assert_called_once()
    assert len(h.clients) == 1 and h.dropped_clients == 1
    await until(lambda: sum(b.count(b"id: ") for _, b in received) == 40, 5,
                "every event at the good client")
    assert received[-1][0] - published[-1] < 1.0
    good.cancel()
    await asyncio.gather(good, return_exceptions=True)
    assert len(h.clients) == 0
