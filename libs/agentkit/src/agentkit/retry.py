"""The retry policies every service uses, built on tenacity.

Exponential backoff with full jitter (AWS's "full jitter": a random wait between 0 and
``min(cap, base * 2**attempt)``), never giving up unless told to. ``FailureReport``
keeps logs readable during an outage: one warning per *kind* of failure, the repeats at
debug level, and one info line when things recover.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from agentkit.config import ReconnectConfig


def full_jitter(base: float, cap: float) -> wait_random_exponential:
    """Wait a random time in [0, min(cap, base * 2**n)] before retry n."""
    return wait_random_exponential(multiplier=base, max=cap)


def backoff_delay(policy: ReconnectConfig, attempt: int) -> float:
    """The policy's full-jitter wait before retry ``attempt`` (1, 2, ...), for loops that
    count their own failures; tenacity's arithmetic, so any count is safe (the cap holds
    where ``2**attempt`` would overflow a float)."""
    state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]  # no retrier: only the wait is wanted
    state.attempt_number = max(1, attempt)
    return float(full_jitter(policy.backoff_base, policy.backoff_max)(state))


class FailureReport:
    """Log a failure once per kind while it lasts; log the recovery once."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self._kinds: set[str] = set()

    @staticmethod
    def kind_of(exc: BaseException) -> str:
        return type(exc).__name__

    def failed(self, exc: BaseException, **context: Any) -> None:
        kind = self.kind_of(exc)
        level = logging.DEBUG if kind in self._kinds else logging.WARNING
        self._kinds.add(kind)
        self.logger.log(level, "%s failed: %s", self.what, exc,
                        extra={"failure": kind, **context})

    def recovered(self) -> None:
        if self._kinds:
            self.logger.info("%s recovered", self.what,
                             extra={"after": ",".join(sorted(self._kinds))})
            self._kinds.clear()

    @property
    def failing(self) -> bool:
        return bool(self._kinds)

    def before_sleep(self, state: RetryCallState) -> None:
        if state.outcome is not None and state.outcome.failed:
            exc = state.outcome.exception()
            if exc is not None:
                wait = state.next_action.sleep if state.next_action else 0.0
                self.failed(exc, attempt=state.attempt_number, retry_in=round(wait, 2))


def retrying(
    policy: ReconnectConfig,
    *,
    report: FailureReport | None = None,
    retry_on: Callable[[BaseException], bool] = lambda exc: isinstance(exc, Exception),
    max_attempts: int | None = None,
) -> AsyncRetrying:
    """An ``AsyncRetrying`` for ``async for attempt in retrying(...): with attempt: ...``.

    Only ``Exception``s are ever retried, whatever ``retry_on`` says: a cancellation
    (SIGTERM) or ``KeyboardInterrupt`` inside an attempt always propagates.
    """
    return AsyncRetrying(
        wait=full_jitter(policy.backoff_base, policy.backoff_max),
        stop=stop_after_attempt(max_attempts) if max_attempts else stop_never,
        retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_on(exc)),
        before_sleep=report.before_sleep if report else None,
        reraise=True,
    )
