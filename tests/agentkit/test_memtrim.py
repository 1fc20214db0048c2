"""The heap trimmer: glibc's malloc_trim is found and callable, and the task trims soon
after start and then periodically until cancelled."""

from __future__ import annotations

import asyncio

from agentkit.memtrim import malloc_trim, trim_forever


def test_malloc_trim_of_this_c_library_answers() -> None:
    trim = malloc_trim()
    assert trim is not None  # the images and CI run glibc
    assert trim() in (0, 1)


async def test_trims_after_the_first_delay_then_every_interval() -> None:
    calls: list[float] = []
    three = asyncio.Event()
    loop = asyncio.get_running_loop()
    start = loop.time()

    def trim() -> int:
        calls.append(loop.time() - start)
        if len(calls) >= 3:
            loop.call_soon_threadsafe(three.set)  # trim runs in a thread
        return 1

    task = asyncio.create_task(trim_forever(first=0.2, every=0.05, trim=trim))
    try:
        async with asyncio.timeout(10):
            await three.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls[0] >= 0.2  # none before the start-up burst is over
    assert task.cancelled()
