"""Retry policy: full jitter within the cap, one warning per failure kind."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from tenacity import AsyncRetrying, RetryCallState

from agentkit.config import ReconnectConfig
from agentkit.retry import RETRY_AFTER_CAP, FailureReport, full_jitter, policy_wait, retrying


def _state(attempt: int, exc: BaseException | None = None) -> RetryCallState:
    """The state a real retrier hands its wait before retry ``attempt``."""
    state = RetryCallState(AsyncRetrying(), None, (), {})
    state.attempt_number = attempt
    if exc is not None:
        state.set_exception((type(exc), exc, None))
    return state


def test_full_jitter_stays_within_cap() -> None:
    wait = full_jitter(0.5, 4.0)
    for attempt in range(1, 30):
        for _ in range(20):
            assert 0 <= wait(_state(attempt)) <= 4.0


def test_the_policy_wait_grows_to_the_cap_and_never_overflows() -> None:
    """A long outage counts past 1,024 attempts: the wait stays within the cap instead of
    raising."""
    wait = policy_wait(ReconnectConfig(backoff_base=1.0, backoff_max=30.0))
    for attempt in (1, 2, 3, 1023, 1024, 5000, 10**6):
        for _ in range(20):
            assert 0 <= wait(_state(attempt)) <= min(30.0, 2.0 ** min(attempt - 1, 64))
    assert max(wait(_state(5000)) for _ in range(200)) > 15.0  # jitter up to the cap


class _Hinted(Exception):
    def __init__(self, retry_after: Any) -> None:
        super().__init__("throttled")
        self.retry_after = retry_after


def test_a_server_hint_replaces_the_jitter_within_its_cap() -> None:
    wait = policy_wait(ReconnectConfig(backoff_base=0.5, backoff_max=1.0))
    assert wait(_state(1, _Hinted(7.0))) == 7.0  # above backoff_max: the server knows
    assert wait(_state(9, _Hinted(0.0))) == 0.0
    assert wait(_state(1, _Hinted(10**9))) == RETRY_AFTER_CAP
    for hint in (None, -1, "soon"):  # no usable hint: full jitter
        assert all(0 <= wait(_state(3, _Hinted(hint))) <= 1.0 for _ in range(20))


async def test_retrying_waits_what_the_server_asked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    report = FailureReport(logging.getLogger("test.retry"), "route sync")
    policy = ReconnectConfig(backoff_base=0.001, backoff_max=0.002)
    hints = [_Hinted(0.2), _Hinted(0.1)]
    retry = retrying(policy, report=report)
    async for attempt in retry:
        with attempt:
            if hints:
                raise hints.pop(0)
    assert attempt.retry_state.attempt_number == 3  # tenacity's own count
    assert retry.statistics["idle_for"] == pytest.approx(0.3)
    assert [r.retry_in for r in caplog.records] == [0.2, 0.1]  # type: ignore[attr-defined]


def test_a_custom_message_and_kind_and_a_silent_reset(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    report = FailureReport(logging.getLogger("test.retry"), "heartbeats",
                           message="refused (%s); again", kind=lambda e: str(e))
    for exc in (KeyError("a"), KeyError("a"), KeyError("b")):
        report.failed(exc)
    report.reset()
    report.failed(KeyError("a"))
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "refused ('a'); again"), ("DEBUG", "refused ('a'); again"),
        ("WARNING", "refused ('b'); again"), ("WARNING", "refused ('a'); again")]
    assert report.failing  # the kind said after the reset is still failing
    assert not any("recovered" in r.getMessage() for r in caplog.records)


async def test_retrying_logs_each_failure_kind_once(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    report = FailureReport(logging.getLogger("test.retry"), "registration")
    failures = [ConnectionError("refused")] * 3 + [TimeoutError("slow")] * 2
    calls = 0
    policy = ReconnectConfig(backoff_base=0.001, backoff_max=0.002)
    async for attempt in retrying(policy, report=report):
        with attempt:
            calls += 1
            if failures:
                raise failures.pop(0)
    report.recovered()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.failure for r in warnings] == ["ConnectionError", "TimeoutError"]  # type: ignore[attr-defined]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 3
    assert calls == 6
    assert caplog.records[-1].getMessage() == "registration recovered"


async def test_retrying_gives_up_on_non_retryable() -> None:
    policy = ReconnectConfig(backoff_base=0.001, backoff_max=0.002)
    with pytest.raises(PermissionError):
        async for attempt in retrying(policy, retry_on=lambda e: isinstance(e, OSError)
                                      and not isinstance(e, PermissionError)):
            with attempt:
                raise PermissionError("401")


async def test_cancellation_is_never_retried_even_by_a_lenient_predicate() -> None:
    """SIGTERM cancels the task mid-attempt: the cancellation must end the loop, not
    become one more retry (a predicate like ``not isinstance(e, Fatal)`` says yes to it)."""
    import asyncio

    policy = ReconnectConfig(backoff_base=0.001, backoff_max=0.002)
    attempts = 0
    started = asyncio.Event()

    async def forever() -> None:
        nonlocal attempts
        async for attempt in retrying(policy, retry_on=lambda e: not isinstance(e, KeyError)):
            with attempt:
                attempts += 1
                started.set()
                await asyncio.Event().wait()

    task = asyncio.create_task(forever())
    await started.wait()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert done, "the cancellation was swallowed and retried"
    assert task.cancelled()
    assert attempts == 1
