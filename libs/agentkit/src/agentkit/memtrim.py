"""Hand freed heap memory back to the OS: glibc's ``malloc_trim(0)``, soon after start and
then every ``EVERY`` seconds.

CPython frees objects into glibc's malloc, which keeps the pages: free space in the middle
of the heap is never given back by itself, and start-up (imports, config validation, the
first connections, a burst of requests) leaves several MiB resident that nothing uses
again. Measured under ``make run`` (bench/memory_notes.md): about 4.4 MiB less per
container idle (1.5 for the http-api). The call walks the heap (milliseconds), so it runs
in a thread; where the C library has no ``malloc_trim`` (not glibc) nothing runs.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

FIRST = 5.0  # seconds after start: the start-up burst is over
EVERY = 30.0  # seconds between trims afterwards


def malloc_trim() -> Callable[[], int] | None:
    """``malloc_trim(0)`` of the process's C library (1: memory was released), or None
    when it has none."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return lambda: int(function(0))


async def trim_forever(first: float = FIRST, every: float = EVERY,
                       trim: Callable[[], int] | None = None) -> None:
    """Trim after ``first`` seconds, then every ``every`` seconds, until cancelled."""
    trim = trim or malloc_trim()
    if trim is None:
        log.debug("no malloc_trim in this C library: freed heap memory stays resident")
        return
    await asyncio.sleep(first)
    while True:
        await asyncio.to_thread(trim)
        await asyncio.sleep(every)
