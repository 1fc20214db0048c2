"""Each process reports its own cost: RSS, CPU, threads, fds, event-loop lag, uptime."""

from __future__ import annotations

import asyncio
import contextlib
import time

from agentkit.runtime import TICK, RuntimeProbe
from tests.tunnel.agent_helpers import until


async def test_snapshot_reads_the_process_itself() -> None:
    probe = RuntimeProbe(started=time.time() - 5)
    snap = probe.snapshot()
    assert 10 * 2**20 < snap.rss_bytes < 2**33  # a Python process: tens of MiB, not GiB
    assert snap.cpu_seconds > 0
    assert snap.threads >= 1
    assert snap.open_fds >= 3
    assert snap.uptime_seconds >= 5
    assert snap.loop_lag_seconds == 0  # nothing measured yet


async def test_a_blocked_loop_shows_as_lag() -> None:
    probe = RuntimeProbe()
    task = asyncio.create_task(probe.run())
    try:
        await asyncio.sleep(TICK / 2)
        time.sleep(0.6)  # noqa: ASYNC251 -- the blocked loop the probe must see
        await until(lambda: probe.loop_lag >= 0.3, 5, "the lag to be recorded")
        assert 0.3 <= probe.snapshot().loop_lag_seconds < 2
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_imported_packages_name_third_party_top_levels_only() -> None:
    import yaml  # noqa: F401  (imported here so the answer must name it)

    from agentkit.runtime import imported_packages

    packages = imported_packages()
    assert "yaml" in packages and "agentkit" in packages
    assert not {"asyncio", "os", "sys", "collections"} & set(packages)
    assert packages == sorted(packages) and all("." not in p for p in packages)


async def test_snapshot_counts_the_loops_live_tasks() -> None:
    probe = RuntimeProbe()
    before = probe.snapshot().tasks
    assert before >= 1  # this test's own task
    started = [asyncio.create_task(asyncio.sleep(10)) for _ in range(5)]
    try:
        assert probe.snapshot().tasks == before + 5
    finally:
        for task in started:
            task.cancel()
        await asyncio.gather(*started, return_exceptions=True)
    assert probe.snapshot().tasks == before
