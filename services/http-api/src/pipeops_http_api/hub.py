"""The pod's events in one place: every container's ``Events`` stream, fanned out.

One follower task per sibling subscribes to its ``Events.Subscribe`` (with history on
the first connection, and again after the sibling restarted); when the sibling is down
the follower waits and tries again (tenacity, random exponential wait) and says so once
as a status event. The http-api's own bus joins directly. Every event gets a hub id
(strictly increasing) and goes into a bounded ring (``realtime.buffer``) for
``Last-Event-ID`` resume, then into each client's bounded queue (``realtime.client_queue``).

A client that falls a whole queue behind is dropped (its ``dropped`` event is set and its
stream ends), so a reader that stopped reading never grows memory and never slows
anyone else: publishing never waits. At most ``realtime.max_connections`` clients are
connected at once; ``join`` raises :class:`Full` beyond that. When the hub stops (the
http-api shutting down), ``closing`` is set and every client's stream ends cleanly at
once, so an open dashboard never holds the server's shutdown for its graceful timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from tenacity import AsyncRetrying, retry_if_exception_type, wait_random_exponential

from agentkit.config import RealtimeConfig
from agentkit.events import LEVELS, EventBus
from agentkit.grpcclient import Siblings
from pipeops.agent.v1 import events_pb2, events_pb2_grpc, service_pb2
from pipeops_http_api.sibling import SIBLINGS

log = logging.getLogger(__name__)

KINDS = {events_pb2.EVENT_KIND_LOG: "log", events_pb2.EVENT_KIND_STATUS: "status",
         events_pb2.EVENT_KIND_EVENT: "event"}
HISTORY = 200  # events asked of a sibling when following it from its start
RESUBSCRIBE_PAUSE = 0.5  # seconds between a lost event stream and asking again


@dataclass(frozen=True)
class Item:
    id: int
    kind: str
    data: dict[str, Any]

    @functools.cached_property
    def frame(self) -> bytes:
        """The SSE frame, encoded once however many clients it goes to."""
        return (f"id: {self.id}\nevent: {self.kind}\n"
                f"data: {json.dumps(self.data, separators=(',', ':'))}\n\n").encode()

    @functools.cached_property
    def message(self) -> str:
        """The WebSocket message, encoded once."""
        return json.dumps({"type": "event", "event": self.data}, separators=(",", ":"))


Filter = Callable[[Item], bool]


def event_filter(kinds: frozenset[str], services: frozenset[str] = frozenset(),
                 min_level: str = "") -> Filter:
    floor = LEVELS.get(min_level.lower(), 0)

    def wants(item: Item) -> bool:
        return (item.kind in kinds
                and (not services or item.data["source"] in services)
                and LEVELS.get(item.data["level"], 20) >= floor)
    return wants


def to_item(hub_id: int, event: events_pb2.Event) -> Item:
    kind = KINDS.get(event.kind, "event")
    return Item(hub_id, kind, {
        "id": hub_id, "time": event.time.ToJsonString(), "source": event.source,
        "kind": kind, "level": event.level or "info", "message": event.message,
        "attributes": dict(event.attributes), "sequence": event.sequence})


class Full(Exception):
    """No room for another realtime client."""


class SiblingDown(Exception):
    """The sibling did not answer Describe: wait and ask again."""


@dataclass(eq=False)
class Client:
    wants: Filter
    queue: asyncio.Queue[Item]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    reason: str = ""

    def offer(self, item: Item) -> None:
        if self.dropped.is_set() or not self.wants(item):
            return
        try:
            self.queue.put_nowait(item)
        except asyncio.QueueFull:
            self.reason = f"too slow: {self.queue.maxsize} events behind"
            self.dropped.set()


class Hub:
    def __init__(self, config: RealtimeConfig, bus: EventBus, siblings: Siblings) -> None:
        self.config = config
        self.bus = bus
        self.siblings = siblings
        self._ring: collections.deque[Item] = collections.deque(maxlen=config.buffer)
        self._next = 1
        self.clients: set[Client] = set()
        self.following: dict[str, bool] = dict.fromkeys(SIBLINGS, False)
        self.dropped_clients = 0
        self.closing = asyncio.Event()

    # --- publishing ----------------------------------------------------------------------

    def publish(self, event: events_pb2.Event) -> Item:
        item = to_item(self._next, event)
        self._next += 1
        self._ring.append(item)
        for client in self.clients:
            client.offer(item)
        return item

    def replay(self, after: int, wants: Filter) -> tuple[list[Item], int]:
        """Buffered items newer than ``after`` that ``wants``, and how many newer ones
        were already gone from the ring (0 when the resume is complete)."""
        oldest = self._ring[0].id if self._ring else self._next
        lost = max(0, oldest - after - 1)
        return [i for i in self._ring if i.id > after and wants(i)], lost

    def recent(self, count: int, wants: Filter) -> list[Item]:
        return [i for i in self._ring if wants(i)][-count:] if count > 0 else []

    @property
    def last_id(self) -> int:
        return self._next - 1

    # --- clients -------------------------------------------------------------------------

    def join(self, wants: Filter) -> Client:
        """A new client (Full when there is no room); it must ``leave`` when it ends."""
        if len(self.clients) >= self.config.max_connections:
            raise Full(f"realtime.max_connections ({self.config.max_connections}) clients "
                       "are connected already")
        client = Client(wants, asyncio.Queue(self.config.client_queue))
        self.clients.add(client)
        return client

    def leave(self, client: Client) -> None:
        self.clients.discard(client)
        if client.dropped.is_set():
            self.dropped_clients += 1
            log.info("realtime client dropped", extra={"reason": client.reason})

    @contextlib.contextmanager
    def connect(self, wants: Filter) -> Iterator[Client]:
        """``join`` and ``leave`` around a block."""
        client = self.join(wants)
        try:
            yield client
        finally:
            self.leave(client)

    # --- following the containers ---------------------------------------------------------

    async def run(self) -> None:
        """Follow every container's events until cancelled; then no more events come:
        every client's stream ends (``closing``)."""
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._follow_own(), name="hub:http-api")
                for name in SIBLINGS:
                    group.create_task(self._follow(name), name=f"hub:{name}")
        finally:
            self.closing.set()

    async def _follow_own(self) -> None:
        with self.bus.subscribe(history=HISTORY) as sub:
            while True:
                self.publish(await sub.queue.get())

    async def _follow(self, name: str) -> None:
        """Follow one sibling's events for as long as the hub runs: wait for it (Describe,
        with a random exponential wait while it is down), subscribe, publish; when the
        stream ends, start over with a fresh wait."""
        started_at = ""  # the sibling's start time the last sequence belongs to
        last_seq = 0
        while True:
            async for attempt in AsyncRetrying(
                    wait=wait_random_exponential(multiplier=0.2, max=5),
                    retry=retry_if_exception_type(SiblingDown)):
                with attempt:
                    info = await self.siblings.ask(name, "Service/Describe",
                                                   service_pb2.DescribeRequest())
                    if not info.ok:
                        self._set_following(name, False, info.problem)
                        raise SiblingDown(info.problem)
            started = info.reply.started_at.ToJsonString()
            if started != started_at:
                started_at, last_seq = started, 0  # a new process: its sequence restarts
            stub = events_pb2_grpc.EventsStub(self.siblings.channel(name))
            stream = stub.Subscribe(events_pb2.SubscribeRequest(history=HISTORY))
            self._set_following(name, True, "")
            problem = "its event stream ended"
            try:
                async for event in stream:
                    if event.sequence <= last_seq:
                        continue  # replayed history already published
                    last_seq = event.sequence
                    self.publish(event)
            except grpc.aio.AioRpcError as exc:
                problem = f"{exc.code().name}: {exc.details()}"
            finally:
                stream.cancel()
            self._set_following(name, False, problem)
            await asyncio.sleep(RESUBSCRIBE_PAUSE)  # a stream that fails at once: no spin

    def _set_following(self, name: str, following: bool, problem: str) -> None:
        if self.following[name] == following:
            return
        self.following[name] = following
        if following:
            self.bus.publish(events_pb2.EVENT_KIND_STATUS, f"following the {name}'s events",
                             attributes={"container": name, "state": "up"})
        else:
            self.bus.publish(events_pb2.EVENT_KIND_STATUS,
                             f"lost the {name}'s events: {problem}", level="warning",
                             attributes={"container": name, "state": "down"})
