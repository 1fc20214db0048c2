"""The event bus: history for late subscribers, filters, slow subscribers never block."""

from __future__ import annotations

import asyncio
import logging
import threading

from agentkit.events import KIND_EVENT, KIND_LOG, KIND_STATUS, BusLogHandler, EventBus
from agentkit.logs import register_secret


async def test_late_subscriber_sees_recent_history() -> None:
    bus = EventBus("tunnel", history_size=3)
    for n in range(5):
        bus.publish(KIND_EVENT, f"e{n}")
    with bus.subscribe(history=10) as sub:
        got = [sub.queue.get_nowait().message for _ in range(sub.queue.qsize())]
    assert got == ["e2", "e3", "e4"]


async def test_filters_by_kind_and_level() -> None:
    bus = EventBus("gateway")
    with bus.subscribe(kinds=frozenset({KIND_STATUS}), min_level="warning") as sub:
        bus.publish(KIND_STATUS, "fine", level="info")
        bus.publish(KIND_EVENT, "other kind", level="error")
        bus.publish(KIND_STATUS, "degraded", level="warning")
        event = await asyncio.wait_for(sub.queue.get(), 1)
        assert (event.message, event.source, event.sequence) == ("degraded", "gateway", 3)
        assert sub.queue.empty()


async def test_slow_subscriber_loses_events_and_never_blocks() -> None:
    bus = EventBus("registrar", queue_size=4)
    with bus.subscribe() as slow, bus.subscribe() as other:
        for n in range(100):
            bus.publish(KIND_EVENT, f"e{n}")  # returns at once though nobody reads
            if n % 2 == 0:
                while not other.queue.empty():
                    other.queue.get_nowait()
        assert slow.queue.qsize() == 4
        assert slow.dropped == 96
        assert [slow.queue.get_nowait().sequence for _ in range(4)] == [1, 2, 3, 4]
    assert bus.subscriber_count == 0


async def test_log_handler_publishes_masked_records_from_any_thread() -> None:
    bus = EventBus("tunnel")
    bus.bind(asyncio.get_running_loop())
    logger = logging.getLogger("test.events.handler")
    handler = BusLogHandler(bus)
    logger.addHandler(handler)
    register_secret("hunter2-is-secret")
    try:
        with bus.subscribe() as sub:
            thread = threading.Thread(
                target=logger.warning, args=("from a thread: hunter2-is-secret",))
            thread.start()
            thread.join()
            event = await asyncio.wait_for(sub.queue.get(), 2)
    finally:
        logger.removeHandler(handler)
    assert event.kind == KIND_LOG
    assert event.level == "warning"
    assert event.message == "from a thread: ***"
