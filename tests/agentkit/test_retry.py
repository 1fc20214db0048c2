"""Retry policy: full jitter within the cap, one warning per failure kind."""

from __future__ import annotations

import logging

import pytest
from tenacity import RetryCallState

from agentkit.config import ReconnectConfig
from agentkit.retry import FailureReport, backoff_delay, full_jitter, retrying


def test_full_jitter_stays_within_cap() -> None:
    wait = full_jitter(0.5, 4.0)
    for attempt in range(1, 30):
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        for _ in range(20):
            assert 0 <= wait(state) <= 4.0


def test_backoff_delay_grows_to_the_cap_and_never_overflows() -> None:
    """A loop counting its own failures (the tunnel's refused handshakes) may count past
    1,024 in a long outage: the wait stays within the cap instead of raising."""
    policy = ReconnectConfig(backoff_base=1.0, backoff_max=30.0)
    for attempt in (1, 2, 3, 1023, 1024, 5000, 10**6):
        for _ in range(20):
            assert 0 <= backoff_delay(policy, attempt) <= min(30.0, 2.0 ** min(attempt - 1, 64))
    assert max(backoff_delay(policy, 5000) for _ in range(200)) > 15.0  # jitter up to the cap


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
