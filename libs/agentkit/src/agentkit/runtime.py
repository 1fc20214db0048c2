"""What a process costs right now: memory, CPU, threads, file descriptors, tasks, loop
lag, and the third-party packages it has imported (what its memory holds).

Every container reports its own (``Service.Describe``'s ``runtime``), so the http-api's
``/api/metrics/runtime`` and the dashboard read each process from the inside instead of
guessing from outside. The event-loop lag is measured by a small task that sleeps a
fixed tick and records how late it woke; the worst of the last ``WINDOW`` ticks is
reported. Everything else is read from ``/proc/self`` when asked (a few syscalls).
"""

from __future__ import annotations

import asyncio
import collections
import os
import resource
import sys
import time

from pipeops.agent.v1 import service_pb2

TICK = 0.25  # seconds between lag samples
WINDOW = 20  # samples kept: the worst lag of the last ~5 s is reported
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:  # not Linux: the peak is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def imported_packages() -> list[str]:
    """Top-level packages imported from outside the standard library, sorted."""
    tops = {name.partition(".")[0] for name in list(sys.modules)}
    return sorted(top for top in tops
                  if top not in sys.stdlib_module_names and not top.startswith("_"))


def _count(folder: str) -> int:
    try:
        return len(os.listdir(folder))
    except OSError:
        return 0


def _tasks() -> int:
    """The event loop's unfinished tasks (0 when asked outside a running loop)."""
    try:
        return sum(1 for task in asyncio.all_tasks() if not task.done())
    except RuntimeError:
        return 0


class RuntimeProbe:
    """Owns one lag-sampling task (``run``); ``snapshot`` may be called at any time."""

    def __init__(self, started: float | None = None) -> None:
        self.started = started if started is not None else time.time()
        self._lags: collections.deque[float] = collections.deque(maxlen=WINDOW)

    async def run(self) -> None:
        """Sample the loop's lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(TICK)
            self._lags.append(max(0.0, loop.time() - before - TICK))

    @property
    def loop_lag(self) -> float:
        return max(self._lags, default=0.0)

    def snapshot(self) -> service_pb2.Runtime:
        times = os.times()
        return service_pb2.Runtime(
            rss_bytes=_rss_bytes(),
            cpu_seconds=round(times.user + times.system, 3),
            threads=_count("/proc/self/task"),
            open_fds=_count("/proc/self/fd"),
            loop_lag_seconds=round(self.loop_lag, 6),
            uptime_seconds=round(time.time() - self.started, 3),
            packages=imported_packages(),
            tasks=_tasks(),
        )
