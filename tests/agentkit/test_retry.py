"""Retry policy: full jitter within the cap, one warning per failure kind."""

from __future__ import annotations

import logging

import pytest
from tenacity import RetryCallState

from agentkit.config import ReconnectConfig
from agentkit.retry import FailureReport, full_jitter, retrying


def test_full_jitter_stays_within_cap() -> None:
    wait = full_jitter(0.5, 4.0)
    for attempt in range(1, 30):
        state = RetryCallState(None, None, (), {})  # type: ignore[arg-type]
        state.attempt_number = attempt
        for _ in range(20):
            assert 0 <= wait(state) <= 4.0


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
