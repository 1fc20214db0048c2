"""The http-api's generated dashboard token on a full volume: the write fails, no half
token file is left to be read back at the next start, the failure is said (without the
token), and the container runs on with its token in memory.

A real refused write: this process's file size limit lowered for the one call
(RLIMIT_FSIZE; Python ignores SIGXFSZ, so the write fails with EFBIG)."""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentkit.config import load
from pipeops_http_api.auth import TOKEN_FILE, load_token


@contextlib.contextmanager
def _volume_full() -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (8, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_dashboard_token_that_cannot_be_stored_leaves_no_half_file(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = load(env={}, overrides={"agent.state_dir": str(tmp_path)})
    with caplog.at_level(logging.INFO), _volume_full():
        token = load_token(config)
    assert len(token) >= 32
    assert list(tmp_path.iterdir()) == []  # neither a truncated token nor a temp file
    said = [r for r in caplog.records if "cannot store it" in r.getMessage()]
    assert len(said) == 1 and said[0].levelname == "WARNING"
    assert "File too large" in said[0].getMessage()
    assert token not in caplog.text
    # room again: the next start generates one and keeps it
    again = load_token(config)
    assert (tmp_path / TOKEN_FILE).read_text().strip() == again
    assert load_token(config) == again
