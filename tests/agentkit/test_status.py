"""ServiceStatus: what a service says about itself never holds a secret."""

from __future__ import annotations

import secrets

from agentkit.events import EventBus
from agentkit.logs import register_secret
from agentkit.status import DEGRADED, ServiceStatus


async def test_detail_checks_and_the_status_event_are_masked() -> None:
    known = "pct_" + secrets.token_hex(12)
    register_secret(known)
    unknown = "pit_" + secrets.token_hex(12)  # never registered: caught by its shape
    bus = EventBus("registrar")
    status = ServiceStatus("registrar", "0.1.0", bus)
    echo = f"HTTP 502: bad gateway; authorization: Bearer {unknown} cluster {known}"

    with bus.subscribe(history=10) as sub:
        status.set(DEGRADED, f"heartbeats failing: {echo}")
        status.check("heartbeat", echo)
        events = [sub.queue.get_nowait() for _ in range(sub.queue.qsize())]

    info = status.to_proto()
    texts = [info.detail, *info.checks.values(), *(e.message for e in events)]
    assert len(texts) == 3 and events, texts
    for text in texts:
        assert "authorization: Bearer ***" in text and "cluster ***" in text, text
        assert unknown not in text and known not in text
    assert info.checks["heartbeat"].startswith("HTTP 502: bad gateway")
    status.check("heartbeat", "ok")
    assert status.to_proto().checks["heartbeat"] == "ok"
