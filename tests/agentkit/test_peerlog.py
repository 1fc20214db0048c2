"""``PeerLog``: peer-driven lines of one kind are rate-limited per period, the flood is
counted aloud at 10x, 100x... the burst, and the next period's first line says how many
were held back."""

from __future__ import annotations

import logging

import pytest

from agentkit.peerlog import MAX_KINDS, PeerLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_one_kind_is_a_burst_and_counted_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="peer")
    clock = Clock()
    peer = PeerLog(logging.getLogger("peer"), burst=5, period=60, clock=clock)
    written = sum(peer.warning("bad", "refused: %s", n) for n in range(20_000))
    lines = [r.getMessage() for r in caplog.records]
    assert written == len(lines) == 5 + 3  # the burst, then 50, 500 and 5000 held back
    assert lines[0] == "refused: 0"
    assert "counted, not logged" in lines[4]
    assert lines[-1] == "refused: 5004 (4997 more like this not logged so far)"
    assert peer.warning("other", "another kind") is True  # kinds are limited apart

    caplog.clear()
    clock.now = 61  # a new period: its first line says how many the last one held back
    assert peer.warning("bad", "refused: %s", "again")
    record = caplog.records[0]
    assert record.suppressed == 20_000 - 5 - 3  # type: ignore[attr-defined]
    assert "(19992 more like this were not logged)" in record.getMessage()


def test_disabled_levels_cost_nothing_and_kinds_are_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="peer2")
    peer = PeerLog(logging.getLogger("peer2"))
    assert peer.info("x", "not shown") is False
    for n in range(MAX_KINDS * 3):
        peer.warning(f"kind-{n}", "line")
    assert len(peer._windows) == MAX_KINDS
