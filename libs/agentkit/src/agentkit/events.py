"""The in-process event bus behind ``Events.Subscribe``.

Every service publishes its log records, status changes and notable events here; the
http-api subscribes over gRPC and fans them out. A bounded ring of recent events lets a
late subscriber see history. Each subscriber has a bounded queue: when it is full the
subscriber misses events (its ``dropped`` count grows and ``sequence`` shows the gap);
publishing never waits, so a slow reader never slows the service.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from agentkit.logs import masker, record_fields
from pipeops.agent.v1 import events_pb2, events_pb2_grpc

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
KIND_LOG = events_pb2.EVENT_KIND_LOG
KIND_STATUS = events_pb2.EVENT_KIND_STATUS
KIND_EVENT = events_pb2.EVENT_KIND_EVENT


@dataclass(eq=False)  # identity semantics: each subscription is its own
class Subscription:
    queue: asyncio.Queue[events_pb2.Event]
    kinds: frozenset[int]
    min_level: int
    dropped: int = 0

    def wants(self, event: events_pb2.Event) -> bool:
        if self.kinds and event.kind not in self.kinds:
            return False
        return LEVELS.get(event.level, 20) >= self.min_level


@dataclass(eq=False)
class EventBus:
    source: str
    history_size: int = 500
    queue_size: int = 256
    _history: collections.deque[events_pb2.Event] = field(init=False)
    _subscribers: set[Subscription] = field(init=False, default_factory=set)
    _sequence: int = field(init=False, default=0)
    _loop: asyncio.AbstractEventLoop | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._history = collections.deque(maxlen=self.history_size)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Events published from other threads are handed to this loop."""
        self._loop = loop

    def publish(
        self,
        kind: int,
        message: str,
        *,
        level: str = "info",
        attributes: dict[str, object] | None = None,
        when: float | None = None,
    ) -> None:
        """Record an event. Never blocks; safe to call from any thread."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(functools.partial(
                    self.publish, kind, message, level=level, attributes=attributes, when=when))
                return
        stamp = Timestamp()
        stamp.FromNanoseconds(int((when if when is not None else time.time()) * 1e9))
        self._sequence += 1
        event = events_pb2.Event(
            time=stamp,
            source=self.source,
            kind=kind,  # type: ignore[arg-type]
            level=level,
            message=masker.mask(message),
            attributes={k: masker.mask(str(v)) for k, v in (attributes or {}).items()},
            sequence=self._sequence,
        )
        self._history.append(event)
        for sub in self._subscribers:
            if sub.wants(event):
                try:
                    sub.queue.put_nowait(event)
                except asyncio.QueueFull:
                    sub.dropped += 1

    @contextlib.contextmanager
    def subscribe(
        self, kinds: frozenset[int] = frozenset(), min_level: str = "", history: int = 0
    ) -> collections.abc.Iterator[Subscription]:
        sub = Subscription(
            asyncio.Queue(self.queue_size), kinds, LEVELS.get(min_level.lower(), 0)
        )
        if history:
            recent = [e for e in self._history if sub.wants(e)][-history:]
            for event in recent[-self.queue_size :]:
                sub.queue.put_nowait(event)
        self._subscribers.add(sub)
        try:
            yield sub
        finally:
            self._subscribers.discard(sub)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


class BusLogHandler(logging.Handler):
    """Publishes every log record to the bus as an ``EVENT_KIND_LOG`` event."""

    def __init__(self, bus: EventBus, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.bus = bus
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "busy", False):  # a log line from inside publish
            return
        self._local.busy = True
        try:
            self.bus.publish(
                KIND_LOG,
                record.getMessage(),
                level=record.levelname.lower(),
                attributes={"logger": record.name, **record_fields(record)},
                when=record.created,
            )
        except Exception:  # a broken event must never break logging
            self.handleError(record)
        finally:
            self._local.busy = False


class EventsServicer(events_pb2_grpc.EventsServicer):
    def __init__(self, bus: EventBus) -> None:
        self.bus = bus

    async def Subscribe(
        self, request: events_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[events_pb2.Event]:
        with self.bus.subscribe(
            frozenset(request.kinds), request.min_level, request.history
        ) as sub:
            while True:
                yield await sub.queue.get()
