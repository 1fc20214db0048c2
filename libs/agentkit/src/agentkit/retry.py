"""The retry policies every service uses, built on tenacity.

Exponential backoff with full jitter (AWS's "full jitter": a random wait between 0 and
``min(cap, base * 2**attempt)``), never giving up unless told to, and a server's own
hint first: an error with a ``retry_after`` (seconds, from ``Retry-After``) waits that
long instead, up to ``RETRY_AFTER_CAP``. ``FailureReport`` keeps logs readable during an
outage: one warning per *kind* of failure, the repeats at debug level, and one info line
when things recover.

A loop whose backoff starts over after progress (a heartbeat delivered, a connection
that lasted) ends its attempt normally on progress and begins a fresh ``retrying``:
tenacity's own ``attempt_number`` is then the count of failures in a row.
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
from tenacity.wait import wait_base

from agentkit.config import ReconnectConfig

# A server asking for more than this is waited out this long, then asked again.
RETRY_AFTER_CAP = 300.0


def full_jitter(base: float, cap: float) -> wait_random_exponential:
    """Wait a random time in [0, min(cap, base * 2**n)] before retry n."""
    return wait_random_exponential(multiplier=base, max=cap)


class wait_retry_after(wait_base):
    """The server's ``retry_after`` hint when the failure carries one, else ``fallback``."""

    def __init__(self, fallback: wait_base, cap: float = RETRY_AFTER_CAP) -> None:
        self.fallback = fallback
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None and outcome.failed else None
        hint = getattr(exc, "retry_after", None)
        if isinstance(hint, (int, float)) and hint >= 0:
            return min(float(hint), self.cap)
        return float(self.fallback(retry_state))


def policy_wait(policy: ReconnectConfig) -> wait_base:
    """The policy's wait: the server's hint, else full jitter."""
    return wait_retry_after(full_jitter(policy.backoff_base, policy.backoff_max))


class FailureReport:
    """Log a failure once per kind while it lasts; log the recovery once."""

    def __init__(self, logger: logging.Logger, what: str, *, message: str = "",
                 kind: Callable[[BaseException], str] | None = None) -> None:
        """``message`` is the line's format with the error as its one ``%s`` (default
        "<what> failed: %s"); ``kind`` names a failure's kind (default: its type)."""
        self.logger = logger
        self.what = what
        self.message = message or f"{what.replace('%', '%%')} failed: %s"
        self.kind_of = kind or (lambda exc: type(exc).__name__)
        self._kinds: set[str] = set()

    def failed(self, exc: BaseException, **context: Any) -> None:
        kind = self.kind_of(exc)
        level = logging.DEBUG if kind in self._kinds else logging.WARNING
        self._kinds.add(kind)
        self.logger.log(level, self.message, exc, extra={"failure": kind, **context})

    def reset(self) -> None:
        """Forget the kinds said, without a recovery line: progress made, the next
        failure is news again."""
        self._kinds.clear()

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
    before_sleep: Callable[[RetryCallState], None] | None = None,
) -> AsyncRetrying:
    """An ``AsyncRetrying`` for ``async for attempt in retrying(...): with attempt: ...``.

    Only ``Exception``s are ever retried, whatever ``retry_on`` says: a cancellation
    (SIGTERM) or ``KeyboardInterrupt`` inside an attempt always propagates.
    ``before_sleep`` runs after ``report``'s, with the same state (the wait to come is
    ``state.next_action.sleep``).
    """
    hooks = [hook for hook in (report.before_sleep if report else None, before_sleep) if hook]

    def announce(state: RetryCallState) -> None:
        for hook in hooks:
            hook(state)

    return AsyncRetrying(
        wait=policy_wait(policy),
        stop=stop_after_attempt(max_attempts) if max_attempts else stop_never,
        retry=retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_on(exc)),
        before_sleep=announce if hooks else None,
        reraise=True,
    )
