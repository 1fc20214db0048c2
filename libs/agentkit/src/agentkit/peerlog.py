"""Warnings a peer can cause, rate-limited per kind with a count of what was held back.

A hostile or broken peer must not decide how much we log: 20,000 bad commands would
otherwise be 20,000 warning lines. :class:`PeerLog` logs the first ``burst`` lines of a
kind in each ``period``; the rest of that period are counted, not written, and the next
line of that kind says how many were held back (``suppressed``); a flood is counted
aloud at 10x, 100x, ... the burst. Kinds are named by our
code (``"command refused"``), never taken from the peer, and at most ``MAX_KINDS`` are
tracked (the stalest is forgotten first), so the bookkeeping is bounded too.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_KINDS", "PeerLog"]

MAX_KINDS = 256


class _Window:
    __slots__ = ("logged", "over", "started", "suppressed")

    def __init__(self, started: float) -> None:
        self.started = started
        self.logged = 0  # lines written in full this period (the burst)
        self.over = 0  # lines past the burst this period
        self.suppressed = 0  # lines not written at all (carried into the next period)


class PeerLog:
    """``log(kind, level, msg, *args, extra=...)``: logged, or counted when over the
    limit. ``warning`` and ``info`` are shorthands; each returns whether it was written.

    Past the burst, a line still goes out when the count held back reaches 10, 100, 1000...
    times the burst (``"(N more like this not logged so far)"``), so a flood's size is
    visible while it lasts, in a number of lines that grows with its logarithm."""

    def __init__(self, logger: logging.Logger, *, burst: int = 5, period: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.period = period
        self.clock = clock
        self._windows: collections.OrderedDict[str, _Window] = collections.OrderedDict()
        self._milestones = {burst * 10**n for n in range(1, 10)}

    def log(self, kind: str, level: int, msg: str, *args: Any,
            extra: dict[str, Any] | None = None, exc_info: BaseException | None = None
            ) -> bool:
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        window = self._windows.get(kind)
        if window is None or now - window.started >= self.period:
            held = window.suppressed if window is not None else 0
            window = _Window(now)
            window.suppressed = held  # said with the first line of the new period
            self._windows[kind] = window
            while len(self._windows) > MAX_KINDS:
                self._windows.popitem(last=False)
        self._windows.move_to_end(kind)
        if window.logged >= self.burst:
            window.over += 1
            if window.over not in self._milestones:
                window.suppressed += 1
                return False
            # a flood is said at 10x, 100x... the burst: its size is known while it lasts
            self.logger.log(level, f"{msg} (%d more like this not logged so far)",
                            *args, window.suppressed,
                            extra={**(extra or {}), "suppressed": window.suppressed})
            return True
        window.logged += 1
        fields = dict(extra or {})
        if window.suppressed:
            fields["suppressed"] = window.suppressed
            msg = f"{msg} (%d more like this were not logged)"
            args = (*args, window.suppressed)
            window.suppressed = 0
        elif window.logged == self.burst:
            msg = f"{msg} (more like this in the next %.0fs are counted, not logged)"
            args = (*args, self.period)
        self.logger.log(level, msg, *args, extra=fields, exc_info=exc_info)
        return True

    def warning(self, kind: str, msg: str, *args: Any,
                extra: dict[str, Any] | None = None) -> bool:
        return self.log(kind, logging.WARNING, msg, *args, extra=extra)

    def info(self, kind: str, msg: str, *args: Any, extra: dict[str, Any] | None = None) -> bool:
        return self.log(kind, logging.INFO, msg, *args, extra=extra)
